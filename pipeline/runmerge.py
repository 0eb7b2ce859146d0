"""Stable k-way merge of sorted Parquet runs in bounded memory (what ``pipeline.io.ShardWriter`` merges its
spilled runs with)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def merge_sorted_runs(paths: list[Path], keys: list[str], batch_rows: int) -> Iterator[pa.Table]:
    """Stable k-way merge of Parquet runs, each sorted by ``keys``; memory ~ ``batch_rows`` per run.

    Each step takes the smallest of the runs' last buffered keys as a bound, emits every buffered
    row up to it (sorted together), and refills the runs it drained. Ties are broken by run, then
    by position, so the result equals a stable sort of the runs concatenated in order.
    """
    tie = ["__run", "__pos"]
    order = [(k, "ascending") for k in [*keys, *tie]]
    readers = [pq.ParquetFile(p).iter_batches(batch_size=batch_rows) for p in paths]
    offsets = [0] * len(paths)
    buffers: dict[int, pa.Table] = {}

    def refill(i: int) -> None:
        for batch in readers[i]:
            if batch.num_rows:
                n = batch.num_rows
                buffers[i] = pa.Table.from_batches([batch]).append_column(
                    "__run", pa.array([i] * n, pa.int64())).append_column(
                    "__pos", pa.array(range(offsets[i], offsets[i] + n), pa.int64()))
                offsets[i] += n
                return
        buffers.pop(i, None)

    for i in range(len(paths)):
        refill(i)
    cols = [*keys, *tie]
    while buffers:
        bound = min((tuple(t.column(c)[t.num_rows - 1].as_py() for c in cols) for t in buffers.values()),
                    key=_nulls_last)
        parts = []
        for i in sorted(buffers):
            t = buffers[i]
            n = _count_at_most(t, cols, bound)
            if n:
                parts.append(t.slice(0, n))
            if n == t.num_rows:
                refill(i)
            else:
                buffers[i] = t.slice(n)
        merged = pa.concat_tables(parts)
        yield merged.take(pc.sort_indices(merged, sort_keys=order)).drop_columns(tie)


def _nulls_last(key: tuple) -> tuple:
    """A key tuple as ``pc.sort_indices`` orders it: a null after every value (a rejects ``row`` may be null)."""
    return tuple((v is None, v if v is not None else 0) for v in key)


def _less_equal(col: pa.ChunkedArray, value: pa.Scalar) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """(``col`` < ``value``, ``col`` == ``value``), nulls last (after every value, equal to each other)."""
    if not value.is_valid:
        return pc.is_valid(col), pc.is_null(col)
    return pc.fill_null(pc.less(col, value), False), pc.fill_null(pc.equal(col, value), False)


def _count_at_most(table: pa.Table, cols: list[str], bound: tuple) -> int:
    """Rows of ``table`` whose ``cols`` are lexicographically <= ``bound`` (a prefix: the table is sorted), nulls
    last as ``pc.sort_indices`` puts them."""
    less, equal = _less_equal(table.column(cols[-1]), pa.scalar(bound[-1], table.schema.field(cols[-1]).type))
    mask = pc.or_(less, equal)
    for c, b in zip(reversed(cols[:-1]), reversed(bound[:-1]), strict=True):
        less, equal = _less_equal(table.column(c), pa.scalar(b, table.schema.field(c).type))
        mask = pc.or_(less, pc.and_(equal, mask))
    return pc.sum(mask).as_py() or 0
