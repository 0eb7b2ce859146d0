"""Reader of CSV sources (``.csv``, and ``.tsv`` separated by tabs; a header row first): each record a ``RawRow``
(``pipeline.rawrows``)."""

from __future__ import annotations

import csv
import io as _io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline import limits
from pipeline.encodings import RE_ENCODE, not_utf8_field
from pipeline.jsontext import preview_of
from pipeline.rawrows import UNREADABLE, RawRow, cannot_read, open_binary, unreadable_rest

_NAMES = {",": "commas", "\t": "tabs"}


def iter_tsv(path: Path, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """Tab-separated values (``.tsv``): ``iter_csv`` with a tab for the comma, the same limits and rejects."""
    return iter_csv(path, max_record_bytes, delimiter="\t")


def iter_csv(path: Path, max_record_bytes: int | None = None, delimiter: str = ",") -> Iterator[RawRow]:
    """CSV with a header row, streamed record by record (quoted fields may span lines).

    A field may be as long as ``max_record_bytes``, and so may a row (``limits.CsvLines``); a row the csv module
    cannot read, or one over the limit, is an error row. ``delimiter`` is "," or a tab (``iter_tsv``).
    """
    limit = max_record_bytes or 1 << 30
    csv.field_size_limit(limits.csv_field_limit(limit))  # the module's limit is global: set for each file
    # Bad bytes are kept as lone surrogates (not replaced by U+FFFD), so the row that holds them is an error row.
    with (open_binary(path) as raw,
          _io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="") as f):
        lines = limits.CsvLines(f, limit, delimiter)
        # strict: a quote the excel dialect cannot read (`"a"b"`, a quoted field never closed) is an error row, not
        # text that silently swallows the quotes, or the rest of the file
        reader = csv.DictReader(lines, strict=True, delimiter=delimiter)
        i = line = served = 0
        written: list[str] | None = None  # the header as the file writes it, where its empty names were given names
        while True:
            try:
                if not reader.line_num:  # the header, on a budget of its own (line_num is 0 until it is read)
                    lines.start_row()
                    while reader.fieldnames is not None and len(reader.fieldnames) <= 1 and \
                            not "".join(reader.fieldnames).strip():  # blank lines before it (the csv module skips
                        reader.fieldnames = None  # them between rows): the header was read as a row of no columns
                        lines.start_row()
                    if reader.fieldnames and delimiter.join(reader.fieldnames).lower() == f"sep={delimiter}":
                        reader.fieldnames = None  # Excel's "sep=," line, naming the separator (every row was a
                        lines.start_row()  # "missing field" reject): the header is the next line
                    if reader.fieldnames and lines.over:
                        raise limits.RowTooLong(f"over max_record_bytes={limit}")
                    if reader.fieldnames and reader.fieldnames.count("") > 1:  # Excel's empty columns ("id,text,,"):
                        # each its own name, so no value is lost (the whole file was a "names [''] twice" reject)
                        written = reader.fieldnames
                        reader.fieldnames = [n or f"unnamed column {j + 1}" for j, n in enumerate(written)]
                line, served = reader.line_num, lines.served
                lines.start_row()
                rec = next(reader, None)
            except limits.RowTooLong as e:  # line is 0 if it was the header
                i += 1
                yield RawRow(str(path), i, error=limits.over_limit(limit, note=" (a CSV row; reading goes on at the next line)")
                             if line else f"the header row is {e}; none of the file is read: raise {limits.SETTING} "
                                          "to read it")
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
            if i == 0 and reader.fieldnames and reader.fieldnames[0].lstrip().startswith(("{", "[")):
                yield RawRow(str(path), 1, error=f"the header row starts with {reader.fieldnames[0].lstrip()[0]!r}: the "
                                                 "file holds JSON, not CSV; name it .jsonl (JSON lines) or .json")
                return  # it was one 'missing field' reject per line, or 'holds no records' for one line
            if i == 0 and (other := _other_delimiter(reader.fieldnames, delimiter)):
                yield RawRow(str(path), 1, error=f"the header row is one column holding {other!r}: the file is separated "
                                                 f"by {other!r}, not by {_NAMES[delimiter]}; none of it is read: "
                                                 f"{_resave(delimiter, other)}")
                return  # it was one 'missing field' reject per row, none saying why
            if rec is None:
                return
            if i == 0 and (twice := sorted({c for c in reader.fieldnames if reader.fieldnames.count(c) > 1})):
                yield RawRow(str(path), 1, error=f"the header names column(s) {twice} twice (csv keeps the last one "
                                                 "only): rename them so each column has its own name")
                return
            i += 1
            if lines.over:  # read to its end through stand-ins (limits.CsvLines), so the next row is read right
                yield RawRow(str(path), i, error=limits.over_limit(limit, note=" (a CSV row)"))
                continue
            if (shape := _field_count_error(rec, reader.fieldnames, delimiter)) is not None:
                yield RawRow(str(path), i, error=shape, raw=preview_of(rec))
                continue
            if _repeats_header(rec, written or reader.fieldnames):  # it was a record whose text is the column's name
                yield RawRow(str(path), i, raw=preview_of(rec), error="the row repeats the header row (CSV files joined "
                             "with `cat`?): not a record; join them without their headers (`tail -n +2`)")
                continue
            bad = not_utf8_field(rec)
            yield RawRow(str(path), i, value=None if bad else dict(rec), raw=preview_of(rec),
                         error=f"invalid UTF-8 in field {bad!r}: {RE_ENCODE}" if bad else None)


def _repeats_header(rec: dict[str | None, Any], header: list[str]) -> bool:
    """Whether a CSV row holds the header's names (as the file writes them), column for column (a byte order mark
    before the first one: the second of two files joined with ``cat``)."""
    first = next(iter(rec.values()), None)  # most rows differ here: no list is built for them
    if not any(header) or str(first).lstrip("\ufeff") != header[0].lstrip("\ufeff"):
        return False
    values = [str(v) for v in rec.values()]
    return len(values) == len(header) and values[1:] == header[1:]


def _other_delimiter(header: list[str] | None, delimiter: str = ",") -> str | None:
    """The delimiter a header of one column is split by instead of ``delimiter`` (Excel in many locales writes ';'),
    or None."""
    if header is None or len(header) != 1:
        return None
    return next((d for d in (";", "\t", "|", ",") if d != delimiter and d in header[0]), None)


def _resave(delimiter: str, other: str) -> str:
    """What to do with a file separated by ``other`` where ``delimiter`` was expected: save it again, or rename it
    (a tab-separated file as .tsv, a comma-separated one as .csv)."""
    if delimiter == ",":
        return "save it as comma-separated CSV" + (", or name it .tsv (tab-separated)" if other == "\t" else "")
    return ("name it .csv (comma-separated), or " if other == "," else "") + "save it as tab-separated values"


def _field_count_error(rec: dict[str | None, Any], header: list[str], delimiter: str = ",") -> str | None:
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
    return (f"the row has {n} field(s), the header names {len(header)} column(s): quote fields that hold a "
            f"{_NAMES[delimiter][:-1]}, and give every row one field per column")
