"""Benchmark: Curry-DPO pair building, vectorised (stages/curry.py) against a naive per-prompt Python loop.

    python bench/curry.py                      # 1,000,000 prompts x 4 responses, naive on 50,000 prompts
    python bench/curry.py --prompts 100000 --naive-prompts 20000
    python bench/curry.py --smoke              # 2,000 prompts: checks the bench runs

Synthetic input: UltraFeedback-style integer ratings 1..10 (so ties occur and are dropped), short
texts, one user message per prompt. Both implementations do the same work: drop unscored
responses, rank per prompt, keep one response per answer (``pipeline.checks.answer_key``: whitespace,
case and loose sentence punctuation ignored), pair (R1, Rk), drop
ties, level by gap rank within the prompt, xxh3 pair ids, order by level then the seeded xxh3 shuffle,
and build an Arrow table of pair rows (ids, messages, scores, level, lineage) — the vectorised one in
the full pairs contract, the naive one without its three constant columns.
The vectorised build runs on all prompts; the naive one runs on ``--naive-prompts`` of them and its
time is extrapolated linearly to the full count (it is O(n) per prompt: no cross-prompt work except
the final sort, which is O(n log n), so linear extrapolation slightly flatters the naive one).
Each implementation runs in its own child process, so peak memory (resident set) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import xxhash  # noqa: E402

from pipeline.checks import _LOOSE_PUNCT  # noqa: E402
from pipeline.config import Curry  # noqa: E402
from pipeline.records import SCHEMAS, check_table  # noqa: E402

CFG = Curry(inputs=[{"prompts": "-", "responses": "-", "scores": "rated"}], pairing="best_vs_rest", min_gap=0.0,
            relative_min_gap=0.05,
            levels="per_prompt", n_levels=3, seed=0, histogram_bins=10)
PER_PROMPT = 4


def make_data(n_prompts: int, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    pid = pl.Series("prompt_id", np.arange(n_prompts)).cast(pl.String).str.zfill(12)
    prompts = pl.DataFrame({"prompt_id": pid}).with_columns(
        messages=pl.concat_list(pl.struct(role=pl.lit("user"), content=pl.lit("Question number ") + pl.col("prompt_id"))),
        source=pl.lit("bench"),
        input=pl.lit(0, pl.Int32),
    )
    n = n_prompts * PER_PROMPT
    responses = pl.DataFrame({
        "prompt_id": pid.gather(np.repeat(np.arange(n_prompts), PER_PROMPT)),
        "k": np.tile(np.arange(PER_PROMPT), n_prompts),
        "score": rng.integers(1, 11, n).astype(np.float64),
    }).with_columns(
        response_id=pl.col("prompt_id") + "-" + pl.col("k").cast(pl.String),
        text=pl.lit("An answer to question ") + pl.col("prompt_id") + " variant " + pl.col("k").cast(pl.String),
        generator=pl.lit("bench"), scorer=pl.lit("bench"), detail=pl.lit(None, pl.String), input=pl.lit(0, pl.Int32),
    ).drop("k")
    return prompts, responses


def as_contract_tables(prompts: pl.DataFrame, responses: pl.DataFrame) -> tuple[pa.Table, pa.Table]:
    inp = pa.array(np.zeros(prompts.height, np.int32))
    p = pa.Table.from_arrays(
        [prompts[c].to_arrow().cast(SCHEMAS["prompts"].field(c).type) for c in ("prompt_id", "messages", "source")],
        names=["prompt_id", "messages", "source"]).append_column("input", inp)
    r = check_table(responses.drop("input").to_arrow(), "responses")
    return p, r.append_column("input", pa.array(np.zeros(r.num_rows, np.int32)))


# --- the naive implementation: a dict of prompts, a Python loop per prompt ---------------------------

NAIVE_SCHEMA = pa.schema([f for f in SCHEMAS["pairs"] if f.name not in ("confidence", "label_smoothing", "noisy")])


def _hex_id(*values: str, seed: int = 0) -> str:
    """pipeline.ids.hex_id, one row at a time: xxh3-64 of "<UTF-8 length>:<value>" per value."""
    key = "".join(f"{len(v.encode())}:{v}" for v in values).encode()
    return f"{xxhash.xxh3_64_intdigest(key, seed=seed):016x}"


LOOSE = re.compile(_LOOSE_PUNCT)


def naive_build(prompts: list[dict], responses: list[dict], cfg: Curry) -> list[dict]:
    messages = {p["prompt_id"]: p for p in prompts}
    groups: dict[tuple, list[dict]] = {}
    for r in responses:
        if r["score"] is None or r["prompt_id"] not in messages:
            continue
        groups.setdefault((r["prompt_id"], r["scorer"]), []).append(r)
    out = []
    for (prompt_id, scorer), rs in groups.items():
        rs.sort(key=lambda r: (-r["score"], r["response_id"]))
        seen: set[str] = set()
        distinct = []  # one response per answer (pipeline.checks.answer_key), the best-ranked
        for r in rs:
            norm = " ".join(LOOSE.sub(" ", r["text"].lower()).split())
            if norm not in seen:
                seen.add(norm)
                distinct.append(r)
        best = distinct[0]
        pairs = [(best, r) for r in distinct[1:] if best["score"] - r["score"] > cfg.min_gap]
        gaps = sorted({b["score"] - r["score"] for b, r in pairs}, reverse=True)
        m = len(gaps)
        for b, r in pairs:
            gap = b["score"] - r["score"]
            level = gaps.index(gap) * cfg.n_levels // max(m, cfg.n_levels)
            pair_id = _hex_id(prompt_id, scorer, b["response_id"], r["response_id"])
            out.append({
                "pair_id": pair_id, "prompt": messages[prompt_id]["messages"],
                "chosen": [{"role": "assistant", "content": b["text"]}],
                "rejected": [{"role": "assistant", "content": r["text"]}],
                "score_chosen": b["score"], "score_rejected": r["score"], "margin": gap, "level": level,
                "method": "curry", "source": messages[prompt_id]["source"],
                "lineage": json.dumps({"stage": "curry", "prompt_id": prompt_id, "scorer": scorer,
                                       "chosen_id": b["response_id"], "rejected_id": r["response_id"]}),
            })
    shuffle = {p["pair_id"]: xxhash.xxh3_64_intdigest(f"16:{p['pair_id']}".encode(), seed=cfg.seed) for p in out}
    out.sort(key=lambda p: (p["level"], shuffle[p["pair_id"]], p["pair_id"]))
    return out


# --- measurement -------------------------------------------------------------------------------------


class PeakRSS:
    """Samples this process's resident set every 5 ms; ``peak`` is the highest seen."""

    def __init__(self) -> None:
        self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()

    def __enter__(self) -> PeakRSS:
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def child(impl: str, n_prompts: int) -> dict:
    from stages.curry import build_pairs

    prompts, responses = make_data(n_prompts)
    if impl == "naive":
        p_rows, r_rows = prompts.to_dicts(), responses.to_dicts()
        with PeakRSS() as mem:
            t, cpu = time.perf_counter(), time.process_time()
            rows = naive_build(p_rows, r_rows, CFG)
            loop, loop_cpu = time.perf_counter() - t, time.process_time() - cpu
            # The same artifact as the vectorised build: an Arrow table of the pairs.
            pairs = pa.Table.from_pylist(rows, schema=NAIVE_SCHEMA)
            dt, dcpu = time.perf_counter() - t, time.process_time() - cpu
        n_pairs = pairs.num_rows
        extra = {"loop_seconds": loop, "loop_cpu_seconds": loop_cpu}
    else:
        p_tbl, r_tbl = as_contract_tables(prompts, responses)  # what load_inputs gives: Arrow contract tables
        del prompts, responses
        with PeakRSS() as mem:
            t, cpu = time.perf_counter(), time.process_time()
            table, _ = build_pairs(p_tbl, r_tbl, CFG)
            dt, dcpu = time.perf_counter() - t, time.process_time() - cpu
        n_pairs, extra = table.num_rows, {}
    return {"impl": impl, "prompts": n_prompts, "pairs": n_pairs, "seconds": dt, "cpu_seconds": dcpu,
            "peak_rss_mib": mem.peak / 2**20, "extra_rss_mib": (mem.peak - mem.base) / 2**20, **extra}


def run_child(impl: str, n: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", impl, "--prompts", str(n)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=1_000_000)
    ap.add_argument("--naive-prompts", type=int, default=50_000)
    ap.add_argument("--child", choices=["vectorised", "naive"])
    ap.add_argument("--smoke", action="store_true", help="2,000 prompts, naive on 500 (checks the bench runs)")
    args = ap.parse_args()
    if args.smoke:
        args.prompts, args.naive_prompts = 2_000, 500
    if args.child:
        print(json.dumps(child(args.child, args.prompts)))
        return
    vec = run_child("vectorised", args.prompts)
    naive = run_child("naive", args.naive_prompts)
    naive_full = naive["seconds"] * args.prompts / args.naive_prompts
    load = os.getloadavg()[0]
    print(f"curry pairs, {args.prompts:,} prompts x {PER_PROMPT} responses (best_vs_rest, per_prompt levels, "
          f"{psutil.cpu_count()} CPUs, load average {load:.1f} at the end)")
    print(f"  vectorised : {vec['seconds']:7.2f} s wall, {vec['cpu_seconds']:7.2f} s CPU  {vec['pairs']:,} pairs  "
          f"peak RSS {vec['peak_rss_mib']:,.0f} MiB (+{vec['extra_rss_mib']:,.0f} MiB during the build)")
    naive_cpu = naive["cpu_seconds"] * args.prompts / args.naive_prompts
    print(f"  naive      : {naive['seconds']:7.2f} s wall on {args.naive_prompts:,} prompts ({naive['pairs']:,} pairs), "
          f"extrapolated x{args.prompts / args.naive_prompts:g} -> {naive_full:7.2f} s wall, {naive_cpu:7.2f} s CPU; "
          f"peak RSS {naive['peak_rss_mib']:,.0f} MiB (+{naive['extra_rss_mib']:,.0f} MiB during the build)")
    scale = args.prompts / args.naive_prompts
    print(f"               of which the per-prompt loop (Python dict rows, before the Arrow table): "
          f"{naive['loop_seconds'] * scale:7.2f} s wall, {naive['loop_cpu_seconds'] * scale:7.2f} s CPU extrapolated")
    print(f"  speed-up   : {naive_full / vec['seconds']:.1f}x wall, {naive_cpu / vec['cpu_seconds']:.1f}x CPU "
          f"(loop only: {naive['loop_seconds'] * scale / vec['seconds']:.1f}x wall, "
          f"{naive['loop_cpu_seconds'] * scale / vec['cpu_seconds']:.1f}x CPU; goal >= 10x, vectorised < 10 s)")


if __name__ == "__main__":
    main()
