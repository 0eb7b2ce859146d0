"""Text that is not UTF-8, found at the boundary: every reader reads UTF-8 (a leading byte order mark is skipped).

A file in another encoding is one error row saying how to convert it, not a reject per line with a
reason that names no cause (UTF-16 from a Windows export, an XML dump that declares ISO-8859-1); a CSV
field holding bytes that are not UTF-8 makes its row an error row, as a JSON line's would.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Callable, Iterator
from typing import IO, Any

import pyarrow as pa

# A character that shows: not white space, a control character, a zero-width / direction / joiner mark (the bidi
# embeddings, overrides and isolates, U+061C, U+180E), a Hangul filler, which renders blank, or U+FFFD, which stands
# for bytes that did not decode (a model's answer of "\ufffd" alone says nothing) (a regex that Python's ``re`` and
# polars read alike). A text without one shows nothing: ingest rejects such a message
# (``pipeline.formats.common.blank``), export drops such a pair (``pipeline.checks.unprintable_text``).
VISIBLE = (r"[^\s\x00-\x1f\x7f-\x9f\u00ad\u061c\u115f\u1160\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2069"
           r"\u3164\ufeff\uffa0\ufffd]")

# Characters no released text holds: C0 controls but tab, line feed and carriage return; DEL and C1 controls (a NUL,
# an ESC colour code, U+0085), which a tokenizer or viewer drops or shows apart from what the text says; the bidi
# embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069), which make a text read otherwise than its
# characters run ("Trojan Source"). The marks right-to-left text needs (U+200E/U+200F, U+061C) stay. Export drops
# a pair holding one (``pipeline.checks.unprintable_text``); a structured answer holding one is invalid
# (``pipeline.llm.structured.PrintableStr``).
UNPRINTABLE = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"
# Chat-template control strings of the common instruct models (``pipeline.checks.control_token_text``, the openai
# backend's ``openai_requests.control_text``): ChatML, Llama 3, Phi (``<|im_end|>``, ``<|eot_id|>``, ``<|end|>``: any
# ``<|name|>``), DeepSeek's full-width ``<｜end▁of▁sentence｜>``, Llama 2 and Mistral (``[INST]``, ``<<SYS>>``,
# ``</s>``), Gemma (``<start_of_turn>``). Not ``<s>`` alone: HTML's strikethrough tag.
CONTROL_TOKEN = r"<\|[A-Za-z0-9_.-]+\|>|<｜[^｜<>]{1,40}｜>|\[/?INST\]|<</?SYS>>|</s>|<(?:start|end)_of_turn>"

_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}
_XML_ENCODING = re.compile(rb"""\A(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?\sencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_UTF8 = {"utf-8", "utf8", "us-ascii", "ascii"}
# What to do about a line or row whose bytes are not UTF-8 (most often a file saved as Latin-1 / Windows-1252).
RE_ENCODE = "re-encode the file as UTF-8 (Latin-1 or Windows-1252 text: `iconv -f WINDOWS-1252 -t UTF-8`)"
REWRITE_UTF8 = "rewrite the file with that column's text as UTF-8"  # a Parquet string column: no tool re-encodes it


# Files that are not text at all, by their first bytes: compressed streams, archives and columnar formats, named as
# a text file (``.jsonl``, ``.csv``, ...). Read as text, a gzip stream was hundreds of "invalid UTF-8 ... re-encode the
# file as UTF-8 (Latin-1 ...)" rejects, one per chance line break in its bytes, none of them naming the cause.
_MAGIC = [(b"\x1f\x8b", "gzip-compressed data", "name it with .gz at the end (e.g. {stem}.gz), which is read through gzip"),
          (b"\x28\xb5\x2f\xfd", "Zstandard-compressed data", "decompress it (`zstd -d`) or recompress it with gzip"),
          (b"\xfd7zXZ\x00", "xz-compressed data", "decompress it (`xz -d`) or recompress it with gzip"),
          (b"BZh", "bzip2-compressed data", "decompress it (`bunzip2`) or recompress it with gzip"),
          (b"PK\x03\x04", "a zip archive", "unzip it and point the path at the files it holds"),
          (b"PAR1", "a Parquet file", "name it .parquet"),
          (b"ARROW1", "an Arrow IPC (Feather) file", "write it as Parquet (`pyarrow.parquet.write_table`)"),
          (b"\xff\xff\xff\xff", "an Arrow IPC stream (a `datasets` save_to_disk shard?)",
           "write it as Parquet (`datasets.load_from_disk(folder).to_parquet(...)`)")]


def _binary_after(magic: bytes, rest: bytes) -> bool:
    """Whether what follows a magic that text could start with too ("BZh", "PAR1", "ARROW1") is no text: bzip2's
    block header, or a control byte (a Parquet page header, Arrow's padding)."""
    if magic == b"BZh":
        return rest[1:7] == b"1AY&SY"
    return magic not in (b"PAR1", b"ARROW1") or (rest[:1] < b" " and rest[:1] not in b"\t\n\r")


def binary_file_error(head: bytes, name: str) -> str | None:
    """Why a file named ``name`` as text (JSON lines, JSON, CSV, XML; after gzip where it ends in .gz) whose first
    bytes (after any gzip) are ``head`` is no text at all, saying what it is and what to do, or None."""
    for magic, what, todo in _MAGIC:
        if head.startswith(magic) and _binary_after(magic, head[len(magic):]):
            if magic == b"\x1f\x8b" and name.lower().endswith(".gz"):
                todo = "it was compressed twice: gunzip it once"
            return (f"the file is {what}, not text (its first bytes say so); none of it is read: "
                    + todo.format(stem=name))
    return None


def encoding_error(f: IO[bytes]) -> str | None:
    """Why the text file open as ``f`` (at its start) is not UTF-8, judged from its first bytes, or None."""
    head = f.read(256)
    encoding = next((name for bom, name in _BOMS.items() if head.startswith(bom)), None)
    where = "it starts with a byte order mark"
    if encoding is None and (m := _XML_ENCODING.match(head)) and m.group(1).decode().lower() not in _UTF8:
        encoding, where = m.group(1).decode(), "its XML declaration says so"
    if encoding is None and (encoding := _wide_without_bom(head)):
        where = "every other byte of its start is a NUL, without a byte order mark"
    if encoding is None:
        return None
    return (f"the file is {encoding} text ({where}), not UTF-8; none of it is read: re-encode it as UTF-8 "
            f"(e.g. `iconv -f {encoding} -t UTF-8`)")


def _wide_without_bom(head: bytes) -> str | None:
    """"UTF-16LE" or "UTF-16BE" when ``head`` looks like mostly-ASCII text in it (each character a byte and a NUL,
    which is valid UTF-8, so it would be read as lines of NULs and text no parser takes), else None."""
    if len(head) < 8 or head.count(0) < len(head) // 3:
        return None
    even, odd = head[0::2], head[1::2]
    for zeros, other, name in ((odd, even, "UTF-16LE"), (even, odd, "UTF-16BE")):
        if zeros.count(0) >= 0.9 * len(zeros) and other.count(0) <= 0.1 * len(other):
            return name
    return None


def not_utf8_field(rec: dict[str | None, Any]) -> str | None:
    """The first field of a CSV row (decoded with surrogateescape) whose name or value held bytes that are not UTF-8."""
    for key, value in rec.items():
        for text in (key, *(value if isinstance(value, list) else [value])):  # extra fields: a list under None
            if isinstance(text, str) and not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    return key
    return None


def batch_rows(batch: pa.RecordBatch) -> Iterator[tuple[dict[str, Any] | None, str | None]]:
    """``(row, None)`` for each row of a Parquet batch; a row whose string column holds bytes that are not UTF-8
    (a file another tool wrote), or a value Python cannot hold (a timestamp or date past year 9999), is
    ``(None, reason naming the column)``, and the batch's other rows are kept."""
    try:
        rows = python_values(batch)
    except UNCONVERTIBLE:
        rows = None
    if rows is not None:
        yield from ((row, None) for row in rows)
        return
    for j in range(batch.num_rows):
        row = batch.slice(j, 1)
        try:
            value = python_values(row)[0]
        except UNCONVERTIBLE as e:
            yield None, unconvertible_reason(row, e)
            continue
        yield value, None


# What turning Arrow values into Python ones raises: bytes that are not UTF-8 in a string column, a timestamp,
# date or duration outside what ``datetime`` holds (OverflowError, or ValueError "year ... is out of range"), a map
# that names a key twice (KeyError).
UNCONVERTIBLE = (UnicodeDecodeError, OverflowError, ValueError, KeyError)
# A map column (``map<string, ...>``, as Spark and DuckDB write a JSON object) is a dict, as the object it holds: as a
# list of (key, value) pairs, its fields were not found ("metadata.score_chosen") and messages were rejects.
MAPS = "strict"


def python_values(data: pa.RecordBatch | pa.Array | pa.ChunkedArray) -> list[Any]:
    """``data.to_pylist()``, a map column as dicts (``MAPS``). pyarrow takes a slower path for every column once
    ``maps_as_pydicts`` is given (7x: 0.2 -> 1.5 s for 200k conversations), so it is given only where a map is.
    A timestamp in a time zone this machine's zone database does not know is the same instant in UTC (``_in_utc``)."""
    schema_types = [f.type for f in data.schema] if isinstance(data, pa.RecordBatch) else [data.type]
    if any(_in_utc(t) != t for t in schema_types):
        data = (data.cast(pa.schema([f.with_type(_in_utc(f.type)) for f in data.schema]))
                if isinstance(data, pa.RecordBatch) else data.cast(_in_utc(data.type)))
    return data.to_pylist(maps_as_pydicts=MAPS) if any(map(_holds_map, schema_types)) else data.to_pylist()


@functools.cache
def _zone_known(tz: str) -> bool:
    """Whether pyarrow can make a Python time zone of ``tz``: a fixed offset, or a name the zone database holds."""
    if re.fullmatch(r"[+-]\d\d:\d\d", tz):
        return True
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _in_utc(t: pa.DataType) -> pa.DataType:
    """``t`` with each timestamp whose zone is not known here (a name newer than, or missing from, this machine's
    zone database, as on a slim container without tzdata) in UTC as the offset +00:00, which needs no database: its
    rows were each a reject, "column 'ts' holds a value Python cannot represent (ArrowInvalid: The zoneinfo module or
    pytz package must be installed.)", whether or not the record's fields were read from it."""
    return _leaves(t, lambda u: pa.timestamp(u.unit, "+00:00")
                   if pa.types.is_timestamp(u) and u.tz and not _zone_known(u.tz) else u)


def _holds_map(t: pa.DataType) -> bool:
    return pa.types.is_map(t) or any(_holds_map(t.field(i).type) for i in range(t.num_fields))


def unconvertible_reason(row: pa.RecordBatch, e: Exception) -> str:
    """Why the one-row batch ``row`` cannot be made Python values (``UNCONVERTIBLE``), naming the column."""
    bad = next((name for name, col in zip(row.schema.names, row.columns, strict=True) if not _decodes(col)), "?")
    if isinstance(e, UnicodeDecodeError):
        return f"column {bad!r} holds bytes that are not UTF-8 ({e.reason} at byte {e.start}): {REWRITE_UTF8}"
    if isinstance(e, KeyError):
        key = re.search(r"duplicate key was (.*?)\)?\.?$", str(e.args[0] if e.args else e))
        return (f"column {bad!r} holds a map that names the key {key.group(1) if key else '?'} twice (a record would keep "
                "one of them): give each key once")
    return (f"column {bad!r} holds a value Python cannot represent ({type(e).__name__}: {e}); drop that column "
            f"or cast it to a string when writing the file")


def _decodes(column: pa.Array) -> bool:
    try:
        python_values(column)
    except UNCONVERTIBLE:
        return False
    return True


# A Parquet byte-array column the writer did not mark as text (older Spark and parquet-mr wrote no UTF8 annotation):
# Arrow reads it as binary, each value Python bytes; it is read as the text it holds where that text is UTF-8.
_TEXT_OF = {pa.binary(): pa.string(), pa.large_binary(): pa.large_string(), pa.binary_view(): pa.string_view()}


def _as_text(t: pa.DataType) -> pa.DataType:
    """``t`` with every binary type in it (at any depth: a list of structs of messages) the string type of its width."""
    return _leaves(t, lambda u: _TEXT_OF.get(u, u))


def _leaves(t: pa.DataType, leaf: Callable[[pa.DataType], pa.DataType]) -> pa.DataType:
    """``t`` with ``leaf`` applied to every type in it that holds no other (at any depth)."""
    if pa.types.is_dictionary(t):
        return pa.dictionary(t.index_type, _leaves(t.value_type, leaf), t.ordered)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return (pa.list_ if pa.types.is_list(t) else pa.large_list)(t.value_field.with_type(_leaves(t.value_type, leaf)))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(t.value_field.with_type(_leaves(t.value_type, leaf)), t.list_size)
    if pa.types.is_map(t):
        return pa.map_(t.key_field.with_type(_leaves(t.key_type, leaf)), t.item_field.with_type(_leaves(t.item_type, leaf)))
    if pa.types.is_struct(t):
        return pa.struct([t.field(i).with_type(_leaves(t.field(i).type, leaf)) for i in range(t.num_fields)])
    return leaf(t)


def has_binary(schema: pa.Schema) -> bool:
    """Whether a column of ``schema`` holds binary values (``binary_as_text`` reads them as text)."""
    return any(_as_text(t) != t for t in schema.types)


def binary_as_text(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, set[str]]:
    """``batch`` with each column that holds binary values read as text where every value of it in the batch is
    UTF-8 (Arrow's cast checks it), and the names of those that are not: their values are ``decoded`` row by row."""
    columns, left, cast = list(batch.columns), set(), False
    for j, column in enumerate(columns):
        kind = _as_text(column.type)
        if kind != column.type:
            try:
                columns[j], cast = column.cast(kind), True
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                left.add(batch.schema.names[j])
    return (pa.RecordBatch.from_arrays(columns, names=batch.schema.names) if cast else batch), left


def decoded(value: Any) -> Any:
    """``value`` with the bytes in it that are UTF-8 as text; bytes that are not stay bytes (a reader of the field
    rejects its record, ``not_text``; a field no adapter reads, an image, costs nothing)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    if isinstance(value, dict):
        return {decoded(k): decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decoded(v) for v in value]
    return value


def not_text(value: Any) -> str:
    """What a value that is not text is, for a reject reason: its type, and of bytes whether they are UTF-8."""
    if not isinstance(value, bytes):
        return type(value).__name__
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"bytes that are not UTF-8 ({e.reason} at byte {e.start}; {REWRITE_UTF8})"
    return "bytes"
