"""Reader of Parquet sources: each record a ``RawRow`` (``pipeline.rawrows``), a row group (or a run of small ones) at a
time within ``max_record_bytes`` decoded, planned from the page headers (``pipeline.limits``, ``pipeline.parquetpages``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import limits, parquetpages
from pipeline.encodings import binary_as_text, decoded, has_binary
from pipeline.errors import one_line
from pipeline.jsontext import parse_json
from pipeline.rawrows import RawRow, cannot_read


def iter_parquet(path: Path, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """Rows of a Parquet file, a row group at a time, in batches of about ``max_record_bytes`` decoded (by its
    page headers, ``limits.group_plan``); consecutive row groups that fit in one batch together are read as one
    (``_read_run``). A row group that cannot be read within that bound or cannot be
    decoded is one error row naming how many of its rows are lost, and reading goes on with the next; a file
    whose footer cannot be read is one error row; an empty file (0 bytes) holds no record, as any other empty file."""
    if path.stat().st_size == 0:  # was "not a readable Parquet file", a reject of a record that never was
        return
    # Opened by its bytes: pyarrow refuses a str name that is not UTF-8 (a byte Python holds as a surrogate,
    # bad\udcff.parquet), which failed the stage where a JSON lines, CSV or XML file so named is read.
    with pa.OSFile(os.fsencode(path)) as source:
        yield from _iter_parquet(path, source, max_record_bytes)


def _iter_parquet(path: Path, source: pa.NativeFile, max_record_bytes: int | None) -> Iterator[RawRow]:
    try:
        pf = pq.ParquetFile(source, page_checksum_verification=True)  # where the writer stored page CRCs
        meta = pf.metadata
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        names = pf.schema_arrow.names
    except (pa.ArrowException, OSError) as e:
        if cannot_read(e):
            raise
        yield RawRow(str(path), 1, error=f"not a readable Parquet file ({one_line(e)}); none of it is read: write it "
                                         "again, or copy it whole if it was cut short")
        return
    if twice := sorted({c for c in names if names.count(c) > 1}):  # a row as a dict would keep the last one only
        yield RawRow(str(path), 1, error=f"the file names column(s) {twice} twice (a row keeps the last one only): "
                                         "rename them so each column has its own name; none of the file is read",
                     records=max(sum(sizes), 1))
        return
    if field := field_named_twice(pf.schema_arrow):  # a struct of it: every row was a reject saying to drop the column
        yield RawRow(str(path), 1, error=f"the field {field} is named twice in its struct (a record would keep one of "
                                         "them only): rename them so each field has its own name; none of the file is "
                                         "read", records=max(sum(sizes), 1))
        return
    limit = max_record_bytes or 1 << 30
    cols = Columns(has_binary(pf.schema_arrow), json_columns(pf))
    run: list[tuple[int, int, int, Plan]] = []  # row groups to read in one batch: (group, rows, first row, plan)
    run_rows = run_bytes = 0
    first = 1  # row number of the group's first row
    with open(path, "rb") as f:  # the page headers
        for g, size in enumerate(sizes):
            try:
                plan: Plan = limits.group_plan(parquetpages.row_group_chunks(f, meta.row_group(g)), size, limit,
                                               lambda chunk: parquetpages.longest_entry(f, chunk), g)
            except (pa.ArrowException, OSError, ValueError) as e:
                if cannot_read(e):
                    raise
                plan = e
            whole = not isinstance(plan, Exception) and plan[1] is None and plan[0] >= size  # in one batch
            if run and (not whole or run_rows + size > limits.PARQUET_BATCH_ROWS or run_bytes + plan[2] > limit):
                yield from _read_run(pf, path, run, limit, cols)
                run, run_rows, run_bytes = [], 0, 0
            if whole:
                run.append((g, size, first, plan))
                run_rows, run_bytes = run_rows + size, run_bytes + plan[2]
            else:
                yield from _read_group(pf, path, g, size, first, plan, limit, cols)
            first += size
        yield from _read_run(pf, path, run, limit, cols)


def field_named_twice(schema: pa.Schema) -> str | None:
    """The first struct field, at any depth, whose struct names it twice, as ``column.field`` (``[]`` for a list's
    element: ``conversation[].content``), or None. Arrow cannot make such a struct a dict, so each row of the file was
    a reject saying its column "holds a value Python cannot represent", and told to drop the column."""
    def twice(t: pa.DataType, at: str) -> str | None:
        if pa.types.is_struct(t):
            names = [t.field(i).name for i in range(t.num_fields)]
            if dup := next((n for n in names if names.count(n) > 1), None):
                return f"{at}.{dup}"
            return next((f for i in range(t.num_fields) if (f := twice(t.field(i).type, f"{at}.{names[i]}"))), None)
        if pa.types.is_dictionary(t):
            return twice(t.value_type, at)
        inner = [t.field(i).type for i in range(t.num_fields)]  # a list's element, a map's key and item
        return next((f for u in inner if (f := twice(u, f"{at}[]"))), None)
    return next((f for name, t in zip(schema.names, schema.types, strict=True) if (f := twice(t, name))), None)


class Columns(NamedTuple):
    """What a Parquet file's rows need after ``to_pylist``: binary columns read as text (``has_binary``), and the
    top-level columns typed JSON (``json_columns``) parsed."""

    binary: bool
    json: frozenset[str]


def json_columns(pf: pq.ParquetFile) -> frozenset[str]:
    """The top-level columns of ``pf`` typed JSON (Parquet's JSON logical type, as DuckDB and BigQuery write a JSON
    column; Arrow's ``arrow.json``): each value is JSON text, which was taken for the text itself, so that messages
    in such a column were a reject, "conversation is str ... write the file as JSON lines or Parquet"."""
    arrow = {f.name for f in pf.schema_arrow if getattr(f.type, "extension_name", None) == "arrow.json"}
    columns = (pf.schema.column(i) for i in range(len(pf.schema)))
    return frozenset(arrow | {c.path for c in columns if str(c.logical_type) == "JSON" and "." not in c.path})


def json_values(rec: dict[str, Any], names: frozenset[str]) -> tuple[dict[str, Any] | None, str | None]:
    """``rec`` with the JSON text of its columns ``names`` parsed, or ``(None, reason)`` naming the first that does not
    parse (a null stays null)."""
    for name in names & rec.keys():
        if isinstance(rec[name], str):
            value, error = parse_json(rec[name])
            if error:
                return None, f"column {name!r} is typed JSON but holds {error}: write the column's values as JSON text"
            rec[name] = value
    return rec, None


Plan = tuple[int, str | None, int] | Exception  # limits.group_plan's, or why the group's page headers cannot be read


def _read_run(pf: pq.ParquetFile, path: Path, run: list[tuple[int, int, int, Plan]], limit: int,
              cols: Columns) -> Iterator[RawRow]:
    """The rows of consecutive row groups that each fit in one batch and together in ``limit`` bytes, read in one
    batch: a file written with row groups of a row or a few was read a group at a time, at about 0.1 ms each (1M
    rows: minutes). Where the batch cannot be decoded, each group is read on its own, so a bad one costs its rows
    only; the rows, their numbers and their rejects are those of reading each group on its own."""
    if len(run) == 1:
        yield from _read_group(pf, path, *run[0], limit, cols)
        return
    try:  # a batch's rows are Python values at once (``batch_rows``): listed, they hold no more than that
        rows = list(_batch_rows(path, pf.iter_batches(batch_size=sum(r[1] for r in run), row_groups=[r[0] for r in run]),
                                run[0][2], limit, cols))
    except (pa.ArrowException, OSError, ValueError) as e:
        if cannot_read(e):
            raise
        for group in run:
            yield from _read_group(pf, path, *group, limit, cols)
        return
    yield from rows


def _batch_rows(path: Path, batches: Iterable[pa.RecordBatch], first: int, limit: int,
                cols: Columns) -> Iterator[RawRow]:
    """The rows of ``batches`` of a Parquet file, numbered from ``first``."""
    i = first
    for batch in batches:
        if cols.binary:  # text a writer stored as binary
            batch, left = binary_as_text(batch)
        for rec, error, preview in limits.sized_rows(batch, limit):
            if cols.binary and left and rec is not None:
                rec = {k: decoded(v) if k in left else v for k, v in rec.items()}
            if cols.json and rec is not None:
                rec, error = json_values(rec, cols.json)
            yield RawRow(str(path), i, value=rec, error=error, raw=preview)
            i += 1


def _read_group(pf: pq.ParquetFile, path: Path, g: int, size: int, first: int, plan: Plan, limit: int,
                cols: Columns) -> Iterator[RawRow]:
    """The rows of row group ``g`` (``size`` rows from row ``first``) in batches as ``plan`` says, or the error row
    of what cannot be read (``plan`` refuses it or is an exception, or a batch cannot be decoded)."""
    i = first - 1
    try:
        if isinstance(plan, Exception):
            raise plan
        rows, refusal, _ = plan
        if refusal:
            yield RawRow(str(path), first, error=refusal, records=max(size, 1))
            return
        for row in _batch_rows(path, pf.iter_batches(batch_size=rows, row_groups=[g]), first, limit, cols):
            i += 1
            yield row
    except (pa.ArrowException, OSError, ValueError) as e:
        if cannot_read(e):
            raise
        lost = first + size - 1 - i
        yield RawRow(str(path), i + 1, error=f"Parquet row group {g} cannot be decoded ({lost} of its {size} "
                                             f"rows lost; {one_line(e)})", records=max(lost, 1))
