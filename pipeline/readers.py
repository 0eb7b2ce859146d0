"""Read sources record by record: every record comes back as a value or as the reason it is unusable.

Reading yields raw records with their row numbers, so a bad row can be quarantined by position
instead of crashing the stage. Whatever the bytes, a reader does not raise for a bad record: JSON
that Python cannot hold (an integer literal over 4,300 digits, nesting deeper than
``pipeline.jsontext.MAX_JSON_DEPTH``, a lone UTF-16 surrogate escape such as ``"\\ud800"``) is an error row; a
compressed file that breaks off, a Parquet row group that cannot be decoded or a malformed XML
``<row>`` is an error row and reading goes on with what can still be read. Only a source that
cannot be opened at all (no such file, unknown type, an unreachable ``hf://`` set), or an ``hf://``
stream that breaks off (a rerun reads it whole), raises ``SourceError``, with one line naming it.
Whatever the bytes, reading holds about ``max_record_bytes`` at a time (``pipeline.limits``).
"""

from __future__ import annotations

import csv
import errno
import glob
import gzip
import io as _io
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import limits, parquetpages
from pipeline.encodings import encoding_error, not_utf8_field
from pipeline.errors import SourceError
from pipeline.hub_source import HF_PREFIX, hub_rows
from pipeline.jsontext import (
    DATA_WRAPPER,
    array_elements,
    check_value,
    loads,
    parse_json,
    preview_of,
    text_risks,
)
from pipeline.xmlrows import xml_rows

BOM = b"\xef\xbb\xbf"
# What reading a damaged file raises: a truncated gzip stream (EOFError), a corrupt one
# (zlib.error, gzip.BadGzipFile, an OSError), an I/O error.
UNREADABLE = (EOFError, zlib.error, OSError)


@dataclass(frozen=True)
class RawRow:
    """One input record, or the reason it could not be parsed."""

    file: str
    row: int  # 1-based line/record number within ``file``
    value: Any = None
    error: str | None = None
    raw: str = ""


def cannot_read(e: BaseException) -> bool:
    """An error of the file system (no permission, a disk error), not of the file's bytes: the file cannot be read
    at all, or may read differently next time, so ``iter_records`` fails the source instead of rejecting rows."""
    return isinstance(e, OSError) and e.errno is not None


def unreadable_rest(e: BaseException, after: str | None) -> str:
    """The error row for the part of a file that cannot be read (after ``after``, or at all)."""
    where = f" after {after}" if after else ""
    return f"the file cannot be read{where} ({type(e).__name__}: {e}); the rest of it is lost"


# --- files ---------------------------------------------------------------------------------------


def expand_paths(path: str) -> list[Path]:
    """A file, a folder (all data files below it, sorted) or a glob."""
    p = Path(path)
    if p.is_dir():
        found = [f for f in p.rglob("*") if not f.name.startswith(("_", "."))]
        _no_broken_links(found)
        files = sorted(f for f in found if f.is_file())
        if not files:
            raise SourceError(f"{path}: the folder holds no data files (names starting with _ or . are left out)")
    elif any(ch in path for ch in "*?["):
        found = [Path(f) for f in glob.glob(path, recursive=True)]
        _no_broken_links(found)
        files = sorted(f for f in found if f.is_file())
    else:
        if p.exists() and not p.is_file():  # reading would block (a pipe) or never end (/dev/zero)
            raise SourceError(f"{path}: not a regular file (a pipe, socket or device); a source is read more than "
                              "once, so write the data to a file and point the path at it")
        files = [p] if p.exists() else []
    if not files:
        raise SourceError(f"{path}: no such file, folder or matching glob (paths are relative to the project root)")
    return files


def _no_broken_links(paths: list[Path]) -> None:
    """SourceError naming the first link that leads nowhere (its target moved or removed): its data would be left
    out of the source without a word."""
    for f in paths:
        if f.is_symlink() and not f.exists():
            raise SourceError(f"{f}: a link to {os.readlink(f)}, which does not exist (or links back to itself); "
                              "restore its target or remove the link")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _suffix(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return suffixes[-1].lower() if suffixes else ""


def iter_jsonl(path: Path, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """JSON lines split on b"\\n" only (U+2028 inside strings is content, not a line break).

    Streams the file: memory holds one line at a time, and never more than ``max_record_bytes`` of it.
    A UTF-8 byte order mark at the start of a line is skipped.
    """
    with _open_binary(path) as f:
        lines = limits.bounded_lines(f, max_record_bytes)
        i = 0
        while True:
            try:
                item = next(lines, None)
            except UNREADABLE as e:
                if cannot_read(e):
                    raise
                yield RawRow(str(path), i + 1, error=unreadable_rest(e, f"line {i}" if i else None))
                return
            if item is None:
                return
            line, size = item
            i += 1
            if line.startswith(BOM):  # the file's, or one of files joined with `cat` (never JSON)
                line, size = line[len(BOM):], size - len(BOM)
            if not line.strip():
                continue
            preview = line[:500].decode("utf-8", errors="replace")
            if max_record_bytes and size > max_record_bytes:
                yield RawRow(str(path), i, error=f"record is {size} bytes, over max_record_bytes={max_record_bytes}",
                             raw=preview)
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield RawRow(str(path), i, error=f"invalid UTF-8 at byte {e.start}", raw=preview)
                continue
            value, error = parse_json(text)
            if error and "\r" in text.rstrip("\r") and error.startswith("invalid JSON: Extra data"):
                error += "; the line holds bare CR line breaks (old Mac style): convert them to \\n (`tr '\\r' '\\n'`)"
            yield RawRow(str(path), i, value=value, error=error, raw=preview)


def iter_json(path: Path, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """A JSON array (or {"data": [...]}) of records; falls back to JSON lines (files named .json often are).

    An array that does not parse whole (an element Python cannot hold, such as a huge integer or
    deep nesting, a syntax error, a file cut short) is split into its elements without parsing them
    and each is parsed on its own: only the bad ones are error rows.
    """
    cap = limits.JSON_FILE_RECORDS * (max_record_bytes or 1 << 30)
    try:
        data = limits.read_capped(path, cap)
    except UNREADABLE as e:
        if cannot_read(e):
            raise
        yield RawRow(str(path), 1, error=unreadable_rest(e, None))
        return
    if len(data) > cap:  # JSON lines (its first line a record on its own) stream; an array is not read
        lines = parse_json(data.split(b"\n", 1)[0].decode("utf-8-sig", "replace"))[1] is None
        yield from iter_jsonl(path, max_record_bytes) if lines else [RawRow(str(path), 1,
                                                                            error=limits.json_too_big(cap))]
        return
    try:
        text, utf8 = data.decode("utf-8-sig"), True
    except UnicodeDecodeError:  # bad bytes are kept as lone surrogates, so the elements around them still parse
        text, utf8 = data.decode("utf-8-sig", "surrogateescape"), False
    del data
    whole, broken = False, not utf8
    if utf8:
        try:
            value, whole = loads(text), True
        except json.JSONDecodeError:
            broken = True
        except (ValueError, RecursionError):  # a value Python cannot hold (huge integer, deep nesting), a key twice
            pass
    if broken and not text.lstrip().startswith("[") and not _broken_data_wrapper(text):  # not an array: JSON lines
        yield from iter_jsonl(path, max_record_bytes)
        return
    if whole:
        if isinstance(value, dict) and isinstance(value.get("data"), list):
            value = value["data"]
        risks = text_risks(text)
        for i, rec in enumerate(value if isinstance(value, list) else [value], start=1):
            error = check_value(rec, risks=risks)
            yield RawRow(str(path), i, value=None if error else rec, error=error, raw=preview_of(rec))
        return
    for i, (element, error) in enumerate(array_elements(text), start=1):
        preview = (element or "")[:500].encode("utf-8", "replace").decode("utf-8")
        if element is not None and not utf8:
            try:
                element.encode("utf-8")
            except UnicodeEncodeError as e:
                element, error = None, f"invalid UTF-8 at byte {len(element[:e.start].encode('utf-8', 'replace'))}"
        value, error = (None, error) if element is None else parse_json(element)
        yield RawRow(str(path), i, value=value, error=error, raw=preview)


def _broken_data_wrapper(text: str) -> bool:
    """Whether ``text``, which does not parse, is ``{"data": [...]}`` (split into its elements like an array) rather
    than JSON lines that happen to start with a "data" key (their first line parses on its own)."""
    return DATA_WRAPPER.match(text) is not None and parse_json(text.split("\n", 1)[0])[1] is not None


def iter_csv(path: Path, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """CSV with a header row, streamed record by record (quoted fields may span lines).

    A field may be as long as ``max_record_bytes``, and so may a row (``limits.CsvLines``); a row the csv module
    cannot read, or one over the limit, is an error row.
    """
    limit = max_record_bytes or 1 << 30
    csv.field_size_limit(limits.csv_field_limit(limit))  # the module's limit is global: set for each file
    # Bad bytes are kept as lone surrogates (not replaced by U+FFFD), so the row that holds them is an error row.
    with (_open_binary(path) as raw,
          _io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="") as f):
        lines = limits.CsvLines(f, limit)
        # strict: a quote the excel dialect cannot read (`"a"b"`, a quoted field never closed) is an error row, not
        # text that silently swallows the quotes, or the rest of the file
        reader = csv.DictReader(lines, strict=True)
        i = line = served = 0
        while True:
            try:
                if not reader.line_num:  # the header, on a budget of its own (line_num is 0 until it is read)
                    lines.start_row()
                    if reader.fieldnames and lines.over:
                        raise limits.RowTooLong(f"over max_record_bytes={limit}")
                line, served = reader.line_num, lines.served
                lines.start_row()
                rec = next(reader, None)
            except limits.RowTooLong as e:  # line is 0 if it was the header
                i += 1
                yield RawRow(str(path), i, error=f"record is {e} (a CSV row; reading goes on at the next line)"
                             if line else f"the header row is {e}; none of the file is read")
                if not line:
                    return
                continue
            except csv.Error as e:
                i += 1
                hint = ("; a quoted field opened in this row is never closed, so the rest of the file was read into it"
                        if "end of data" in str(e) else "")
                yield RawRow(str(path), i, error=f"invalid CSV: {e}{hint}" if line else
                             f"the header row is invalid CSV: {e}{hint}; none of the file is read")
                if not line or lines.served == served:  # the header, or no progress: the reader cannot go on
                    return
                continue
            except UNREADABLE as e:
                if cannot_read(e):
                    raise
                yield RawRow(str(path), i + 1, error=unreadable_rest(e, f"record {i}" if i else None))
                return
            if rec is None:
                return
            if i == 0 and (twice := sorted({c for c in reader.fieldnames if reader.fieldnames.count(c) > 1})):
                yield RawRow(str(path), 1, error=f"the header names column(s) {twice} twice (csv keeps the last one "
                                                 "only): rename them so each column has its own name")
                return
            i += 1
            if lines.over:  # read to its end through stand-ins (limits.CsvLines), so the next row is read right
                yield RawRow(str(path), i, error=f"record is over max_record_bytes={limit} (a CSV row)")
                continue
            if (shape := _field_count_error(rec, reader.fieldnames)) is not None:
                yield RawRow(str(path), i, error=shape, raw=preview_of(rec))
                continue
            bad = not_utf8_field(rec)
            yield RawRow(str(path), i, value=None if bad else dict(rec), raw=preview_of(rec),
                         error=f"invalid UTF-8 in field {bad!r}" if bad else None)


def _field_count_error(rec: dict[str | None, Any], header: list[str]) -> str | None:
    """Why a CSV row's fields do not line up with the header's columns, or None. ``csv.DictReader`` puts extra
    fields in a list under ``None`` and fills missing ones with ``None``: either way the row's text would be
    cut or shifted without a word (``p1,Hello, world`` would be the text "Hello"). Extra fields that are empty (a
    trailing comma some exports write) lose nothing: they are dropped from ``rec``."""
    extra = rec.get(None) or []
    if extra and all(v == "" for v in extra):
        del rec[None]
        extra = []
    missing = sum(1 for k, v in rec.items() if k is not None and v is None)
    if not extra and not missing:
        return None
    n = len(header) + len(extra) - missing
    return (f"the row has {n} field(s), the header names {len(header)} column(s): quote fields that hold a comma, "
            "and give every row one field per column")


def iter_parquet(path: Path, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """Rows of a Parquet file, a row group at a time, in batches of about ``max_record_bytes`` decoded (by its
    page headers, ``limits.parquet_plan``). A row group that cannot be read within that bound or cannot be
    decoded is one error row naming how many of its rows are lost, and reading goes on with the next; a file
    whose footer cannot be read is one error row."""
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)  # where the writer stored page CRCs
        meta = pf.metadata
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        names = pf.schema_arrow.names
    except (pa.ArrowException, OSError) as e:
        if cannot_read(e):
            raise
        yield RawRow(str(path), 1, error=f"not a readable Parquet file ({type(e).__name__}: {e})")
        return
    if twice := sorted({c for c in names if names.count(c) > 1}):  # a row as a dict would keep the last one only
        yield RawRow(str(path), 1, error=f"the file names column(s) {twice} twice (a row keeps the last one only): "
                                         "rename them so each column has its own name; none of the file is read")
        return
    limit = max_record_bytes or 1 << 30
    first = 1  # row number of the group's first row
    with open(path, "rb") as f:  # the page headers
        for g, size in enumerate(sizes):
            i = first - 1
            try:
                rows, refusal = limits.parquet_plan(parquetpages.row_group_chunks(f, meta.row_group(g)), size, limit,
                                                    lambda chunk: parquetpages.longest_entry(f, chunk), g)
                if refusal:
                    yield RawRow(str(path), first, error=refusal)
                for batch in [] if refusal else pf.iter_batches(batch_size=rows, row_groups=[g]):
                    for rec, error, preview in limits.sized_rows(batch, limit):
                        i += 1
                        yield RawRow(str(path), i, value=rec, error=error, raw=preview)
            except (pa.ArrowException, OSError, ValueError) as e:
                if cannot_read(e):
                    raise
                lost = first + size - 1 - i
                yield RawRow(str(path), i + 1, error=f"Parquet row group {g} cannot be decoded ({lost} of its {size} "
                                                     f"rows lost; {type(e).__name__}: {e})")
            first += size


def iter_xml_rows(path: Path, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """``<row .../>`` elements (Stack Exchange dumps) as attribute dicts (``pipeline.xmlrows``): a malformed
    row is an error row and reading goes on at the next ``<row``."""
    with _open_binary(path) as f:
        rows = xml_rows(f, max_record_bytes or 64 << 20)
        i = 0
        while True:
            try:
                item = next(rows, None)
            except UNREADABLE as e:
                if cannot_read(e):
                    raise
                yield RawRow(str(path), i + 1, error=unreadable_rest(e, f"row {i}" if i else None))
                return
            if item is None:
                return
            i += 1
            value, error, preview = item
            yield RawRow(str(path), i, value=value, error=error, raw=preview)


READERS = {
    ".jsonl": iter_jsonl,
    ".ndjson": iter_jsonl,
    ".json": iter_json,
    ".csv": iter_csv,
    ".parquet": iter_parquet,
    ".xml": iter_xml_rows,
}


def _encoding_error(path: Path) -> str | None:
    try:
        with _open_binary(path) as f:
            return encoding_error(f)
    except UNREADABLE as e:  # the reader reports it
        if cannot_read(e):
            raise
        return None


def source_files(path: str) -> list[Path]:
    """The files of a local source (``expand_paths``), each of a type a reader knows, or SourceError
    naming the first that is not (a README.md or LICENSE in a dataset folder), before any is read."""
    files = expand_paths(path)
    # the suggested glob ends as a data file's name does (".jsonl.gz", ".JSONL"), so that it matches it
    known = [("".join(f.suffixes[-2:]) if f.suffix == ".gz" else f.suffix) for f in files if _suffix(f) in READERS]
    for file in files:
        if _suffix(file) not in READERS:
            hint = f"; point the path at the data files only, e.g. {Path(path) / '**' / ('*' + known[0])}" if known else ""
            raise SourceError(f"{file}: unknown file type {_suffix(file)!r}; expected one of {sorted(READERS)} "
                              f"(optionally .gz, but for .parquet){hint}")
        if _suffix(file) == ".parquet" and file.suffix == ".gz":  # read by row group, which needs to seek
            raise SourceError(f"{file}: a gzipped Parquet file cannot be read by row group: gunzip it (Parquet "
                              "compresses its pages itself)")
    return files


def iter_records(path: str, max_record_bytes: int | None = None,
                 empty_files: list[str] | None = None) -> Iterator[RawRow]:
    """Every record of a source, in a deterministic order, with its file and row number.

    Files that hold no record at all (empty, or only blank lines) are appended to ``empty_files``.
    """
    if path.startswith(HF_PREFIX):  # streamed by ``datasets``, each record a dict already
        yield from (RawRow(path, i, value=rec) for i, rec in hub_rows(path))
        return
    for file in source_files(path):
        n = 0
        reader = READERS[_suffix(file)]
        try:
            encoding = _encoding_error(file) if reader is not iter_parquet else None
            rows = [RawRow(str(file), 1, error=encoding)] if encoding else reader(file, max_record_bytes)
            for row in rows:
                n += 1
                yield row
        except OSError as e:
            if not cannot_read(e):
                raise
            code = errno.errorcode.get(e.errno, str(e.errno))
            raise SourceError(f"{file}: cannot be read ({os.strerror(e.errno)}, {code}); make it readable (its "
                              "permissions, owner or disk) and run again") from None
        if n == 0 and empty_files is not None:
            empty_files.append(str(file))
