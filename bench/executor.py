"""Executor overhead: rows/s of a trivial batch function through `local` and `ray`, against a naive
per-row Python loop over the same rows, side by side in one run.

    python bench/executor.py --rows 1000000
    python bench/executor.py --smoke          # 20,000 rows: checks the bench runs
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, whatever is installed
from pipeline.execute import map_batches  # noqa: E402
from tests.llm_configs import execution_config  # noqa: E402


def add_one(batch: pa.Table) -> pa.Table:
    return batch.set_column(1, "x", pc.add(batch["x"], 1))


def naive(table: pa.Table) -> list[dict]:
    return [{"id": r["id"], "x": r["x"] + 1} for r in table.to_pylist()]


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="rows per batch (default: params.yaml's execution.batch_size, what the stages use)")
    ap.add_argument("--smoke", action="store_true", help="20,000 rows (checks the bench runs; figures mean nothing)")
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.batch_size = 20_000, 4_096
    if args.batch_size is None:
        args.batch_size = execution_config().batch_size

    table = pa.table({"id": pa.array(range(args.rows), pa.int64()), "x": pa.array(range(args.rows), pa.int64())})
    base = dict(batch_size=args.batch_size, checkpoint_rows=10**9, row_group_bytes=1 << 27, on_gate_failure="error")
    _, t_naive = timed(naive, table)
    local, t_local = timed(map_batches, table, add_one, execution=execution_config(backend="local", **base))
    from pipeline.execute_ray import ray_init

    ray_init(None)
    map_batches(table.slice(0, 10), add_one, execution=execution_config(backend="ray", **base))  # warm the workers
    remote, t_ray = timed(map_batches, table, add_one, execution=execution_config(backend="ray", **base))
    assert local.equals(remote)

    print(f"rows: {args.rows:,}  batch_size: {args.batch_size:,}")
    print(f"{'runner':<28}{'seconds':>10}{'rows/s':>16}{'vs naive':>10}")
    for name, t in [("naive per-row Python loop", t_naive), ("map_batches local", t_local), ("map_batches ray", t_ray)]:
        print(f"{name:<28}{t:>10.3f}{args.rows / t:>16,.0f}{t_naive / t:>9.1f}x")


if __name__ == "__main__":
    main()
