"""The page headers of a Parquet column chunk, read without reading its pages.

The footer gives a column chunk's size, not how its bytes decode: a dictionary page of one large string that
a million rows refer to is a few bytes on disk per row, and one page may hold a cell far bigger than a record
may be. pyarrow decompresses a page whole and decodes a batch's values in full, and it keeps page headers to
itself, so they are read here: each header (Thrift compact protocol, a few dozen bytes) is read and the
page's body is skipped. ``pipeline.limits.group_plan`` turns what they say into a batch size, or a refusal.
``bench/bounded_readers.py`` runs it against the footer-sized reader it replaced (bench/README.md: a dictionary
bomb read at an 8 MiB Arrow peak instead of 512 MiB, normal input at about 1.05x the time).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

DICTIONARY_PAGE = 2  # PageType; DATA_PAGE is 0, DATA_PAGE_V2 3, INDEX_PAGE 1
DICTIONARY_ENCODINGS = {2, 8}  # PLAIN_DICTIONARY, RLE_DICTIONARY
DELTA_BYTE_ARRAY = 7  # prefix-compressed: a value may repeat the bytes of the one before it
_MAX_ITEMS = 1 << 16  # a page header holds a few fields (and statistics): more is not a page header
_MAX_DEPTH = 8
_WINDOW = 4096  # bytes read for a page header (with its page statistics), 16 times more while it is longer
# pyarrow's names of Parquet codecs, and of its own for them ("LZ4" is pyarrow's name of LZ4_RAW)
_CODECS = {"UNCOMPRESSED": None, "SNAPPY": "snappy", "GZIP": "gzip", "BROTLI": "brotli", "ZSTD": "zstd",
           "LZ4": "lz4_raw", "LZ4_RAW": "lz4_raw"}
_LENGTH = struct.Struct("<I")  # a PLAIN byte array's length prefix


@dataclass(frozen=True)
class Page:
    """One page of a column chunk: its type, bytes once decompressed, values (entries, for a dictionary
    page) and encoding; where its body starts in the file, and its bytes there."""

    kind: int
    size: int
    values: int
    encoding: int
    at: int = 0
    stored: int = 0


class _Cut(Exception):
    """The header runs past the bytes read so far."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if pos >= len(buf):
            raise _Cut
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, pos
        shift += 7
        if shift > 63:
            raise ValueError("a page header holds an integer over 64 bits")


def _int(buf: bytes, pos: int) -> tuple[int, int]:
    n, pos = _varint(buf, pos)
    return (n >> 1) ^ -(n & 1), pos


def _byte(buf: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise _Cut
    return buf[pos], pos + 1


def _value(buf: bytes, pos: int, kind: int, depth: int) -> tuple[Any, int]:
    """A value of Thrift compact type ``kind`` at ``pos``: integers and structs kept, the rest skipped."""
    if depth > _MAX_DEPTH:
        raise ValueError("a page header nests too deep")
    if kind in (1, 2):  # a boolean field: its value is its type
        return kind == 1, pos
    if kind == 3:
        return _byte(buf, pos)
    if kind in (4, 5, 6):
        return _int(buf, pos)
    if kind in (7, 8):  # a double, or bytes (page statistics)
        n, pos = (8, pos) if kind == 7 else _varint(buf, pos)
        if pos + n > len(buf):
            raise _Cut
        return None, pos + n
    if kind in (9, 10, 11):  # list, set, map
        if kind == 11:
            n, pos = _varint(buf, pos)
            head, pos = _byte(buf, pos) if n else (0, pos)
            kinds: tuple[int, ...] = divmod(head, 16)
        else:
            head, pos = _byte(buf, pos)
            n, pos = (head >> 4, pos) if head >> 4 != 15 else _varint(buf, pos)
            kinds = (head & 15,)
        if n > _MAX_ITEMS:
            raise ValueError("a page header holds a list too long to be one")
        for _ in range(n):
            for k in kinds:
                _, pos = _byte(buf, pos) if k in (1, 2) else _value(buf, pos, k, depth + 1)  # a boolean: a byte
        return None, pos
    if kind == 12:
        return _struct(buf, pos, depth + 1)
    raise ValueError(f"a page header holds an unknown Thrift type {kind}")


def _struct(buf: bytes, pos: int, depth: int = 0) -> tuple[dict[int, Any], int]:
    """The struct at ``pos`` and where it ends: its integer and struct fields (the rest skipped), the commonest
    kinds of field read here rather than through ``_value`` (a page header is read for every page)."""
    fields: dict[int, Any] = {}
    field, end = 0, len(buf)
    for _ in range(_MAX_ITEMS):
        if pos >= end:
            raise _Cut
        head = buf[pos]
        pos += 1
        if head == 0:
            return fields, pos
        if head >> 4:
            field += head >> 4
        else:
            field, pos = _int(buf, pos)
        kind = head & 15
        if kind in (5, 6, 8):  # an integer, or the length of bytes to skip
            out = shift = 0
            while True:
                if pos >= end:
                    raise _Cut
                b = buf[pos]
                pos += 1
                out |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
                if shift > 63:
                    raise ValueError("a page header holds an integer over 64 bits")
            if kind == 8:
                pos += out
                if pos > end:
                    raise _Cut
            else:
                fields[field] = (out >> 1) ^ -(out & 1)
        elif kind in (1, 2):
            fields[field] = kind == 1
        elif kind == 12:
            if depth >= _MAX_DEPTH:
                raise ValueError("a page header nests too deep")
            fields[field], pos = _struct(buf, pos, depth + 1)
        else:
            fields[field], pos = _value(buf, pos, kind, depth)
    raise ValueError("a page header holds too many fields to be one")


def _header(f: IO[bytes], pos: int, end: int) -> tuple[dict[int, Any], int]:
    """The page header at ``pos`` (before ``end``) and its length, read in windows of growing size."""
    window = _WINDOW
    while True:
        f.seek(pos)
        buf = f.read(min(window, end - pos))
        try:
            return _struct(buf, 0)
        except _Cut:
            if len(buf) < min(window, end - pos) or window >= end - pos:
                raise ValueError(f"the page header at byte {pos} is cut short") from None
            window *= 16


def chunk_pages(f: IO[bytes], start: int, length: int) -> Iterator[Page]:
    """The pages of the column chunk at ``start`` (its dictionary page, if any, else its first data page),
    ``length`` bytes long (its compressed size), read from the open file ``f``; ValueError if a header is not one."""
    pos, end = start, start + length
    while pos < end:
        header, size_of_header = _header(f, pos, end)
        kind, size, stored = header.get(1), header.get(2), header.get(3)
        if not all(isinstance(v, int) and v >= 0 for v in (kind, size, stored)):
            raise ValueError(f"the page header at byte {pos} gives no page type or size")
        detail = header.get({0: 5, 2: 7, 3: 8}.get(kind, -1))
        detail = detail if isinstance(detail, dict) else {}
        values, encoding = detail.get(1), detail.get(4 if kind == 3 else 2)
        pos += size_of_header
        yield Page(kind, size, values if isinstance(values, int) and values > 0 else 0,
                   encoding if isinstance(encoding, int) else 0, pos, stored)
        pos += stored


@dataclass(frozen=True)
class Chunk:
    """A column chunk of a row group: its column's name, pages, codec, and whether its values are byte arrays."""

    column: str
    pages: list[Page]
    compression: str
    byte_array: bool

    @property
    def dictionary(self) -> Page | None:
        return next((p for p in self.pages if p.kind == DICTIONARY_PAGE), None)


def row_group_chunks(f: IO[bytes], group: pq.RowGroupMetaData) -> Iterator[Chunk]:
    """The column chunks of row group ``group`` of the Parquet file open as ``f``, with their page headers."""
    for c in range(group.num_columns):
        chunk = group.column(c)
        start = min([o for o in (chunk.dictionary_page_offset, chunk.data_page_offset) if o] or [0])
        yield Chunk(chunk.path_in_schema, list(chunk_pages(f, start, chunk.total_compressed_size)),
                    chunk.compression, chunk.physical_type == "BYTE_ARRAY")


@functools.cache
def _codec(name: str) -> pa.Codec:
    return pa.Codec(name)


def longest_entry(f: IO[bytes], chunk: Chunk) -> int | None:
    """The longest entry (bytes) of the byte-array dictionary of ``chunk``, read from its dictionary page
    (decompressed by pyarrow's codec); None where it has none, its codec is not one pyarrow can decompress
    alone (LZ4 in Hadoop's framing does not decode to exactly its entries) or the page is damaged (reading
    the chunk then says how): its bound is then what the page's size allows."""
    page = chunk.dictionary
    if page is None or chunk.compression not in _CODECS or page.stored > 2 * page.size + 4096:
        return None  # (no codec stores a page in more than about its size)
    f.seek(page.at)
    data = f.read(page.stored)
    codec = _CODECS[chunk.compression]
    try:
        view = memoryview(_codec(codec).decompress(data, decompressed_size=page.size) if codec else data)
    except (pa.ArrowException, OSError):
        return None
    pos = longest = 0
    last, unpack = len(view) - 4, _LENGTH.unpack_from
    for _ in range(page.values):
        if pos > last:
            return None
        n = unpack(view, pos)[0]
        pos += 4 + n
        if n > longest:
            longest = n
    return longest if pos == len(view) else None  # a dictionary page holds its entries and nothing else
