"""The cost of bounding reads by max_record_bytes (pipeline/limits.py) on normal input, same data, same process:

- CSV: csv.DictReader over the text file (before) against over ``CsvLines`` (a row budget per line read);
- Parquet: 10,000-row batches (before) against batches sized from the row group's metadata
  (``parquet_batch_size``), each batch turned into Python rows as iter_parquet does.

    python bench/bounded_readers.py            # 100,000 rows of ~3-5 KB
    python bench/bounded_readers.py --rows 20000
    python bench/bounded_readers.py --smoke    # a tiny run that checks the script works
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.encodings import batch_rows  # noqa: E402
from pipeline.limits import CsvLines, parquet_batch_size  # noqa: E402

LIMIT = 4 << 20  # the shipped max_record_bytes


def _csv_rows(path: Path, bounded: bool) -> int:
    with open(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as f:
        lines = CsvLines(f, LIMIT) if bounded else f
        n = 0
        for _ in csv.DictReader(lines):
            if bounded:
                lines.start_row()
            n += 1
        return n


def _parquet_rows(path: Path, sized: bool) -> tuple[int, int]:
    pf, n, size = pq.ParquetFile(path), 0, 10_000
    for g in range(pf.metadata.num_row_groups):
        meta = pf.metadata.row_group(g)
        size = parquet_batch_size(meta.total_byte_size, meta.num_rows, LIMIT) if sized else 10_000
        for batch in pf.iter_batches(batch_size=size, row_groups=[g]):
            n += sum(1 for _ in batch_rows(batch))
    return n, size


def _time(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="a tiny run that checks the script works")
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.repeat = 500, 1
    rng = random.Random(0)
    texts = ["word " * rng.randint(100, 1800) for _ in range(args.rows)]
    with tempfile.TemporaryDirectory() as tmp:
        csv_path, pq_path = Path(tmp) / "t.csv", Path(tmp) / "t.parquet"
        csv_path.write_text("id,text\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(texts)))
        pq.write_table(pa.table({"id": [str(i) for i in range(args.rows)], "text": texts}), pq_path)
        for r in range(args.repeat):
            (n0, a), (n1, b) = _time(lambda: _csv_rows(csv_path, False)), _time(lambda: _csv_rows(csv_path, True))
            assert n0 == n1 == args.rows
            print(f"csv     run {r + 1}: DictReader {a:.3f} s, through CsvLines {b:.3f} s: {b / a:.2f}x the time")
            ((n0, _), a), ((n1, size), b) = (_time(lambda: _parquet_rows(pq_path, False)),
                                             _time(lambda: _parquet_rows(pq_path, True)))
            assert n0 == n1 == args.rows
            print(f"parquet run {r + 1}: 10,000-row batches {a:.3f} s, {size}-row batches {b:.3f} s: "
                  f"{b / a:.2f}x the time")


if __name__ == "__main__":
    main()
