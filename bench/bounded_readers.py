"""The cost of bounding reads by max_record_bytes (pipeline/limits.py) on normal input, same data, same process:

- CSV: csv.DictReader over the text file (before) against over ``CsvLines`` (a row budget per line read);
- Parquet: 10,000-row batches against batches sized from the row group's footer size (``parquet_batch_size``
  over ``total_byte_size``, the reader before page headers), and that against ``iter_parquet`` today
  (batches sized from the page headers, ``limits.parquet_plan``), each batch turned into Python rows, on the
  same rows as one row group and on 20,000 of them in 20 columns and row groups of 100 rows;
- ``--real``: the footer-sized reader against ``iter_parquet`` on the real sets in ../shared/data/real written
  as Parquet (pyarrow's defaults), the rows compared value for value, and ingest of the WildChat sample
  (read, adapt, validate) with each;
- ``--hostile``: a dictionary bomb (one 256 KiB string 2,000 times) and a 100 MiB cell in a one-row row group,
  each reader in a fresh process: rows, rejects, peak Arrow memory, peak RSS, seconds.

    python bench/bounded_readers.py            # 100,000 rows of ~3-5 KB
    python bench/bounded_readers.py --rows 20000
    python bench/bounded_readers.py --real --hostile
    python bench/bounded_readers.py --smoke    # a tiny run that checks the script works
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.encodings import batch_rows  # noqa: E402
from pipeline.limits import CsvLines, parquet_batch_size  # noqa: E402
from pipeline.readers import RawRow, iter_parquet  # noqa: E402

LIMIT = 4 << 20  # the shipped max_record_bytes
REAL = ROOT.parent / "shared" / "data" / "real"


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


def _footer_iter_parquet(path: Path, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """iter_parquet before page headers (e2b60e6), verbatim: batches of about max_record_bytes by the row
    group's footer size."""
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)  # where the writer stored page CRCs
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
    except (pa.ArrowException, OSError) as e:
        yield RawRow(str(path), 1, error=f"not a readable Parquet file ({type(e).__name__}: {e})")
        return
    first = 1  # row number of the group's first row
    for g, size in enumerate(sizes):
        i = first - 1
        rows = parquet_batch_size(pf.metadata.row_group(g).total_byte_size, size, max_record_bytes or 1 << 30)
        try:
            for batch in pf.iter_batches(batch_size=rows, row_groups=[g]):
                for rec, error in batch_rows(batch):
                    i += 1
                    yield RawRow(str(path), i, value=rec, error=error, raw="")
        except (pa.ArrowException, OSError, ValueError) as e:
            lost = first + size - 1 - i
            yield RawRow(str(path), i + 1, error=f"Parquet row group {g} cannot be decoded ({lost} of its {size} "
                                                 f"rows lost; {type(e).__name__}: {e})")
        first += size


def _footer_rows(path: Path) -> Iterator[tuple]:
    return ((r.row, r.value, r.error) for r in _footer_iter_parquet(path, LIMIT))


def _planned_rows(path: Path) -> Iterator[tuple]:
    return ((r.row, r.value, r.error) for r in iter_parquet(path, LIMIT))


def _footer_sized(path: Path) -> list:
    return list(_footer_rows(path))


def _page_planned(path: Path) -> list:
    return list(_planned_rows(path))


def _rss_peak_mib() -> int:
    """This process's peak RSS since it started (VmHWM; ru_maxrss would count the parent's, from the fork)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) // 1024


def _measure(reader: str, path: Path) -> None:
    """One reader over one file in this (fresh) process: one JSON line."""
    pool = pa.proxy_memory_pool(pa.default_memory_pool())
    pa.set_memory_pool(pool)
    t = time.perf_counter()
    rows = [error for _, _, error in (_footer_rows if reader == "footer" else _planned_rows)(path)]  # values dropped
    seconds = time.perf_counter() - t
    print(json.dumps({"rows": len(rows), "rejected": sum(1 for error in rows if error),
                      "first_error": next((error for error in rows if error), None),
                      "arrow_peak_mib": round(pool.max_memory() / 2**20, 1),
                      "rss_peak_mib": _rss_peak_mib(),
                      "seconds": round(seconds, 2)}))


def _hostile(tmp: Path) -> None:
    bomb, cell = tmp / "bomb.parquet", tmp / "cell.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(2000)], "text": ["x" * (256 << 10)] * 2000}), bomb)
    pq.write_table(pa.table({"id": ["a"], "text": ["q" * (100 << 20)]}), cell)
    for path, what in ((bomb, "one 256 KiB string x 2,000 rows (dictionary-encoded)"),
                       (cell, "one 100 MiB cell in a one-row row group")):
        meta = pq.ParquetFile(path).metadata.row_group(0)
        print(f"hostile {path.name}: {what}; {path.stat().st_size} bytes on disk, footer total_byte_size "
              f"{meta.total_byte_size}")
        for reader in ("footer", "pages"):
            out = subprocess.run([sys.executable, __file__, "--measure", reader, str(path)], check=True,
                                 capture_output=True, text=True).stdout.strip()
            print(f"  {reader:6} {out}")


def _real_tables(tmp: Path) -> list[Path]:
    """The real JSON-lines sets, each written as Parquet with pyarrow's defaults (those pyarrow can type)."""
    out = []
    for src in sorted([*REAL.rglob("*.jsonl"), *REAL.rglob("*.jsonl.gz")]):
        with (gzip.open(src, "rt") if src.suffix == ".gz" else open(src)) as f:
            records = [json.loads(line) for line in f if line.strip()]
        path = tmp / (src.relative_to(REAL).as_posix().replace("/", "__") + ".parquet")
        try:
            pq.write_table(pa.Table.from_pylist(records), path)
        except (pa.ArrowException, ValueError):
            continue  # a field of mixed types, an empty struct: not a Parquet file anyone writes
        out.append(path)
    return out


def _real(tmp: Path, repeat: int) -> None:
    files = _real_tables(tmp)
    assert all(_footer_sized(f) == _page_planned(f) for f in files)  # the same rows, values, order
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    size = sum(f.stat().st_size for f in files)
    print(f"real: {len(files)} sets from {REAL}, {rows} rows, {size} bytes of Parquet; same rows from both readers")
    for r in range(repeat):
        (_, a), (_, b) = (_time(lambda: [_footer_sized(f) for f in files]),
                          _time(lambda: [_page_planned(f) for f in files]))
        print(f"real    run {r + 1}: footer-sized batches {a:.3f} s, iter_parquet (page headers) {b:.3f} s: "
              f"{b / a:.2f}x the time")


def _ingest(tmp: Path, repeat: int) -> None:
    """Ingest (read, adapt, validate) of the real WildChat sample written as Parquet, with each reader."""
    from pipeline import readers
    from pipeline.config import Source
    from stages.ingest import ingest_source

    with open(REAL / "wildchat_sample" / "conversations.jsonl") as f:
        pq.write_table(pa.Table.from_pylist([json.loads(line) for line in f]), tmp / "wildchat.parquet")
    src = Source(name="w", kind="conversations", path=str(tmp / "wildchat.parquet"), format="wildchat")

    def run(reader):
        readers.READERS[".parquet"] = readers.iter_parquet = reader
        try:
            res = ingest_source(src, LIMIT)
            return len(res.rejects), sum(len(v) for v in res.rows.values())
        finally:
            readers.READERS[".parquet"] = readers.iter_parquet = iter_parquet

    for r in range(repeat):
        (old, a), (new, b) = _time(lambda: run(_footer_iter_parquet)), _time(lambda: run(iter_parquet))
        assert old == new
        print(f"ingest  run {r + 1}: WildChat sample ({new[0]} rejects, {new[1]} rows): footer-sized reader {a:.3f} s, "
              f"iter_parquet {b:.3f} s: {b / a:.2f}x the time")


def _time(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="a tiny run that checks the script works")
    ap.add_argument("--real", action="store_true", help="also the real sets written as Parquet")
    ap.add_argument("--hostile", action="store_true", help="also the dictionary bomb and the huge cell")
    ap.add_argument("--measure", nargs=2, metavar=("READER", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        _measure(args.measure[0], Path(args.measure[1]))
        return
    if args.smoke:
        args.rows, args.repeat = 500, 1
    rng = random.Random(0)
    texts = ["word " * rng.randint(100, 1800) for _ in range(args.rows)]
    with tempfile.TemporaryDirectory() as tmp:
        csv_path, pq_path = Path(tmp) / "t.csv", Path(tmp) / "t.parquet"
        csv_path.write_text("id,text\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(texts)))
        pq.write_table(pa.table({"id": [str(i) for i in range(args.rows)], "text": texts}), pq_path)
        groups_path = Path(tmp) / "groups.parquet"  # many small row groups: the fixed cost per group and column
        pq.write_table(pa.table({f"c{j}": [t[: 40 + 97 * j] if j % 2 else f"v{i % 51}" for i, t in
                                           enumerate(texts[:20_000])] for j in range(20)}), groups_path,
                       row_group_size=100)
        for r in range(args.repeat):
            (n0, a), (n1, b) = _time(lambda: _csv_rows(csv_path, False)), _time(lambda: _csv_rows(csv_path, True))
            assert n0 == n1 == args.rows
            print(f"csv     run {r + 1}: DictReader {a:.3f} s, through CsvLines {b:.3f} s: {b / a:.2f}x the time")
            ((n0, _), a), ((n1, size), b) = (_time(lambda: _parquet_rows(pq_path, False)),
                                             _time(lambda: _parquet_rows(pq_path, True)))
            assert n0 == n1 == args.rows
            print(f"parquet run {r + 1}: 10,000-row batches {a:.3f} s, {size}-row batches {b:.3f} s: "
                  f"{b / a:.2f}x the time")
            (old, a), (new, b) = _time(lambda: _footer_sized(pq_path)), _time(lambda: _page_planned(pq_path))
            assert old == new
            print(f"parquet run {r + 1}: footer-sized batches {a:.3f} s, iter_parquet (page headers) {b:.3f} s: "
                  f"{b / a:.2f}x the time")
            (old, a), (new, b) = _time(lambda: _footer_sized(groups_path)), _time(lambda: _page_planned(groups_path))
            assert old == new
            print(f"groups  run {r + 1}: {len(new)} rows in row groups of 100 x 20 columns: footer-sized batches "
                  f"{a:.3f} s, iter_parquet (page headers) {b:.3f} s: {b / a:.2f}x the time")
        if args.real:
            _real(Path(tmp), args.repeat)
            _ingest(Path(tmp), args.repeat)
        if args.hostile:
            _hostile(Path(tmp))


if __name__ == "__main__":
    main()
