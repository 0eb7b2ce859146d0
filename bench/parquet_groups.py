"""Parquet files written with tiny row groups: ``iter_parquet`` reading several small row groups per batch
(bounded by max_record_bytes, ``readers_parquet._read_run``) against the reader before it, which read one row group per
``iter_batches`` call (main at 0843f3b, verbatim below), side by side in one process, alternating, the rows
compared value for value (row numbers, values, reject reasons).

Files: N synthetic documents (~60-300 bytes of text, an id, a score) written with row groups of 1, 10 and 100
rows and as one row group.

    python bench/parquet_groups.py                 # 20,000 rows, best of 3
    python bench/parquet_groups.py --rows 100000 --repeat 2
    python bench/parquet_groups.py --smoke         # a tiny run that checks the script works
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline import limits, parquetpages  # noqa: E402
from pipeline.errors import one_line  # noqa: E402
from pipeline.rawrows import RawRow, cannot_read  # noqa: E402
from pipeline.readers import iter_parquet  # noqa: E402

LIMIT = 4 << 20  # the shipped max_record_bytes


def _group_at_a_time(path: Path, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """iter_parquet of main at 0843f3b, verbatim but for its footer checks: one row group per ``iter_batches``."""
    pf = pq.ParquetFile(path, page_checksum_verification=True)
    meta = pf.metadata
    sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
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
                                                     f"rows lost; {one_line(e)})")
            first += size


def _rows(reader, path: Path) -> tuple[list[tuple], float]:
    t = time.perf_counter()
    rows = [(r.row, r.value, r.error) for r in reader(path, LIMIT)]
    return rows, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="a tiny run that checks the script works")
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.repeat = 300, 1
    rng = random.Random(0)
    table = pa.table({"id": [f"d{i}" for i in range(args.rows)],
                      "text": ["word " * rng.randint(12, 60) for _ in range(args.rows)],
                      "score": [rng.random() for _ in range(args.rows)]})
    print(f"{args.rows} rows, best of {args.repeat}, one row group per call (before) against several (after)")
    print("| row group rows | row groups | before | after | speed-up |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for group_rows in (1, 10, 100, args.rows):
            path = Path(tmp) / f"g{group_rows}.parquet"
            pq.write_table(table, path, row_group_size=group_rows)
            before, after = [], []
            for _ in range(args.repeat):
                old, a = _rows(_group_at_a_time, path)
                new, b = _rows(iter_parquet, path)
                assert old == new and len(new) == args.rows, "the readers differ"
                before.append(a)
                after.append(b)
            a, b = min(before), min(after)
            groups = pq.ParquetFile(path).metadata.num_row_groups
            print(f"| {group_rows} | {groups} | {a:.3f} s | {b:.3f} s | {a / b:.1f}x |")


if __name__ == "__main__":
    main()
