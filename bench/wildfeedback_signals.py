"""WildFeedback `rules` detector throughput: a synthetic log of N conversations, streamed shard by
shard through the stage's own select + feedback-turn + rules path (context features included: the
previous user turn and the one before it of every judged turn), against a naive per-message Python ``re`` loop of the text
cues alone (same normalisation, same combined regex per category, no context features: it does less
work than the polars path, so the speed-up is a lower bound) in the same run.

    python bench/wildfeedback_signals.py --n 1000000 --per-read-batch   # as the stage reads: params.yaml's batch sizes
    python bench/wildfeedback_signals.py --n 100000 --naive-n 20000 --shard 100000
    python bench/wildfeedback_signals.py --smoke      # 2,000 conversations: the path runs end to end
    python bench/wildfeedback_signals.py --n 300000 --compare ../main   # another checkout's detector vs this one
    python bench/wildfeedback_signals.py --n 300000 --compare ../main --as-stage --small 20   # as the stage streams

The naive loop runs on the first ``--naive-n`` conversations and is extrapolated to N (the output
says so). Peak memory is the process RSS high-water mark sampled every 50 ms by psutil during the
streaming pass, and its growth over the RSS before it; generation happens before, in shards on disk.
The detector settings are params.yaml's ``wildfeedback`` section (rules detector, synthetic source).

``--compare DIR`` times another checkout's ``stages`` (e.g. main's, before a speed change) against this one in
the same process: each batch runs through both, in alternating order, for ``--rounds`` rounds, so that a load
that comes and goes on a shared machine falls on both alike; every output column must be identical (else it
stops), and the CPU and wall seconds of each side are printed. ``--as-stage`` runs each checkout's own streaming scan
over the whole log instead (its rules batching included, rules calls counted); ``--small N`` first times rules calls
on N conversations each (10 a round), which is about the fixed cost of a call.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, not an installed copy

from pipeline.config import Wildfeedback, load_params  # noqa: E402
from pipeline.io import iter_batches, write_parquet  # noqa: E402
from stages import wildfeedback as stage  # noqa: E402
from stages.wildfeedback_rules import (  # noqa: E402
    _CONTRAST,
    _MATERIAL,
    _NEGATIONS,
    _OPENING,
    _OPENS_POSITIVE,
    _QUOTED,
    _TASK_PROMPT,
    PATTERNS,
    SAT_CATEGORIES,
)

ROOT = Path(__file__).resolve().parents[1]

FIRST = [
    "How do I reverse a list in Python?", "Write a short poem about the sea.", "What is the capital of Peru?",
    "Explain how vaccines work.", "Give me a recipe for banana bread.", "Summarise the plot of Hamlet.",
    "How can I improve my sleep?", "Translate 'good morning' into German.", "What's a good name for a cat?",
    "Help me write a cover letter for a data analyst job.",
]
ANSWERS = [
    "You can use slicing: my_list[::-1] returns a reversed copy, or call my_list.reverse() in place.",
    "The sea rolls in with silver light,\nit hums of salt and endless night.",
    "Lima is the capital of Peru. It sits on the Pacific coast and is the country's largest city.",
    "Vaccines train the immune system by showing it a harmless piece or copy of a pathogen. " * 3,
    "Mash three ripe bananas, mix with melted butter, sugar, an egg, flour and baking soda, bake 60 min.",
    "Prince Hamlet seeks revenge on his uncle Claudius, who murdered Hamlet's father to take the throne.",
    "Keep a regular schedule, avoid screens before bed, and keep your room cool and dark. " * 2,
    "Guten Morgen.", "How about Whiskers, Luna or Miso?", "Dear hiring manager, I am excited to apply... " * 4,
]
NEW_TASK = [
    "Now tell me about the history of Rome.", "What time zone is Lima in?", "Can you list five fruits?",
    "How long should I bake it?", "Who wrote Macbeth?", "What is a good stretching routine?",
    "And how do I sort a dictionary by value?", "Make a shopping list for the recipe.", "Is coffee bad for sleep?",
    "Write another poem, this time about mountains.", "Make it shorter.",
]
FEEDBACK = [
    "Thanks, that's perfect!", "That's wrong, Lima is not on the coast. Try again.", "ok", "Way too long.",
    "I don't get it, can you explain it more simply?", "Great answer, thank you!", "That's not what I asked.",
    "Not bad, but can you make it shorter?", "You didn't answer my question.", "haha nice one",
]


def synth(n: int, seed: int) -> pl.DataFrame:
    """n conversations of 2-4 user turns; about 15% of later user turns carry a feedback phrase and
    about 5% re-send the first request (some narrowed: "... Please be brief.")."""
    rng = np.random.default_rng(seed)
    pick = lambda pool, k: pl.Series(pool).gather(rng.integers(0, len(pool), k))  # noqa: E731
    cols = {"u0": pick(FIRST, n)}
    for i in range(4):
        cols[f"a{i}"] = pick(ANSWERS, n)
        if i < 3:
            r = pl.Series(rng.random(n))
            resend = pl.col("u0") + pl.when(pl.Series(rng.random(n) < 0.5)).then(pl.lit(" Please be brief.")).otherwise(pl.lit(""))
            cols[f"u{i + 1}"] = pl.DataFrame(cols).select(
                pl.when(r < 0.15).then(pick(FEEDBACK, n)).when(r < 0.2).then(resend).otherwise(pick(NEW_TASK, n))
            ).to_series()
    cols["n_msgs"] = pl.Series(rng.integers(2, 5, n) * 2)
    msgs = []
    for i in range(4):
        msgs += [pl.struct(role=pl.lit("user"), content=pl.col(f"u{i}")),
                 pl.struct(role=pl.lit("assistant"), content=pl.col(f"a{i}"))]
    return pl.DataFrame(cols).select(
        pl.format("syn-{}-{}", pl.lit(seed), pl.int_range(0, n)).alias("conversation_id"),
        pl.concat_list(msgs).list.head(pl.col("n_msgs")).alias("messages"),
        pl.lit("synthetic").alias("source"), pl.lit("en").alias("language"),
        pl.lit(None, dtype=pl.String).alias("model"), pl.lit([], dtype=pl.List(pl.String)).alias("flags"),
    )


def generate(n: int, shard: int, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, n, shard)):
        write_parquet(synth(min(shard, n - start), seed=i).to_arrow(), out / f"part-{i:05d}.parquet")


class PeakRSS:
    """Samples the process RSS every ``interval`` seconds in a thread; ``peak`` is the high-water mark."""

    def __init__(self, interval: float = 0.05):
        self.proc, self.interval, self.peak, self._stop = psutil.Process(), interval, 0, threading.Event()

    def __enter__(self):
        self.start = self.peak = self.proc.memory_info().rss
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def _py(regex: str) -> str:
    return regex.replace("${1}", r"\1")


def stream(log: Path, cfg: Wildfeedback, batch: int) -> tuple[float, float, int, int, PeakRSS]:
    """The stage's own streaming scan (select per read batch, rules per ``rules_batch_conversations``) over the
    log: (wall s, CPU s, judged turns, flagged turns, peak RSS)."""
    turns = flagged = 0
    with PeakRSS() as mem:
        t0, c0 = time.perf_counter(), time.process_time()
        for t, _, counts in stage.scanned_partitions(log, cfg, batch, cfg.partition_conversations):
            turns += counts["turns"]
            flagged += t.filter(pl.col("sat") | pl.col("dsat")).height
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, turns, flagged, mem


def naive(conversations: list[dict], cfg: Wildfeedback) -> int:
    """Per message, in Python: the same normalisation and one combined ``re`` per category (text cues only)."""
    quoted, material, space = re.compile(_QUOTED), re.compile(_MATERIAL), re.compile(r"\s+")
    prompt, first = re.compile(_TASK_PROMPT), re.compile(_OPENING)
    chars = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'", "“": '"', "”": '"', "„": '"'})
    negs = [(re.compile(p), _py(r)) for p, r in _NEGATIONS]
    cats = {c: re.compile("|".join(f"(?:{p})" for p in pats.values())) for c, pats in PATTERNS.items()}
    opens, contrast = re.compile(_OPENS_POSITIVE), re.compile(_CONTRAST)
    flagged = 0
    for conv in conversations:
        msgs = conv["messages"]
        if sum(m["role"] == "user" for m in msgs) < cfg.min_user_turns:
            continue
        for i in range(1, len(msgs)):
            if msgs[i]["role"] != "user" or msgs[i - 1]["role"] != "assistant":
                continue
            prev, raw = msgs[i - 1]["content"], msgs[i]["content"][: cfg.window_chars]
            sents = [x.strip() for x in re.sub(r"([.!?])\s+", "\\1\n", raw).split("\n")]
            t = " ".join(x for x in sents if len(x) < cfg.paste_min_chars or x not in prev)
            t = space.sub(" ", material.sub(' "q"', quoted.sub(' "q" ', t.lower().translate(chars)), count=1)).strip()
            for rx, repl in negs:
                t = rx.sub(repl, t)
            s = first.match(t).group(1)
            hits = set() if prompt.search(t) else {c for c, rx in cats.items() if rx.search(s if c in SAT_CATEGORIES else t)}
            no_contrast = not contrast.search(t)
            if opens.search(t) and no_contrast:
                hits -= {"Revision", "Insufficient_Detail", "Style"}
            if no_contrast and {"Negative_Feedback", "Gratitude"} <= hits:
                hits -= set(SAT_CATEGORIES)
            flagged += bool(hits)
    return flagged


def load_stages(root: Path):
    """The ``stages.wildfeedback`` module of the checkout at ``root``, imported beside this checkout's (whose
    modules stay what ``stages`` names)."""
    ours = {k: sys.modules.pop(k) for k in [k for k in sys.modules if k == "stages" or k.startswith("stages.")]}
    sys.path.insert(0, str(root))
    try:
        other = importlib.import_module("stages.wildfeedback")
    finally:
        sys.path.remove(str(root))
        for k in [k for k in sys.modules if k == "stages" or k.startswith("stages.")]:
            del sys.modules[k]
        sys.modules.update(ours)
    if not Path(other.__file__).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"--compare {root}: imported {other.__file__}, not that checkout's stages/wildfeedback.py")
    return other


def compare(log: Path, cfg: Wildfeedback, root: Path, batch: int, rounds: int) -> None:
    """Each batch through ``root``'s detector and this one, alternating which goes first; outputs must match."""
    other = load_stages(root)
    sides = {"baseline": other, "this": stage}
    cpu, wall = dict.fromkeys(sides, 0.0), dict.fromkeys(sides, 0.0)
    loads, k = [], 0
    for _ in range(rounds):
        for b in iter_batches(log, batch_size=batch):
            conv, out = pl.from_arrow(b), {}
            for name in (("baseline", "this") if k % 2 == 0 else ("this", "baseline")):
                mod = sides[name]
                t0, c0 = time.perf_counter(), time.process_time()
                selected, _ = mod.select_conversations(conv, cfg)
                out[name] = mod.rules_signals(mod.feedback_turns(selected), cfg)
                wall[name] += time.perf_counter() - t0
                cpu[name] += time.process_time() - c0
            if not out["baseline"].equals(out["this"]):
                raise SystemExit(f"--compare: batch {k}: this checkout's verdicts differ from {root}'s")
            loads.append(os.getloadavg()[0])
            k += 1
    print(f"compare ({rounds} rounds of the log, {k} batches, outputs identical): baseline {root}: "
          f"{cpu['baseline']:.1f} s CPU / {wall['baseline']:.1f} s wall; this checkout: {cpu['this']:.1f} s CPU / "
          f"{wall['this']:.1f} s wall: {100 * (1 - cpu['this'] / cpu['baseline']):.0f}% less CPU, "
          f"{100 * (1 - wall['this'] / wall['baseline']):.0f}% less wall; load average {min(loads):.1f}-{max(loads):.1f}")


def compare_stream(log: Path, cfg: Wildfeedback, root: Path, batch: int, rounds: int) -> None:
    """The whole log through each checkout's own streaming scan (its rules batching included), alternating which
    goes first, for ``rounds`` rounds: rules calls, CPU and wall seconds of each; outputs must match."""
    sides = {"baseline": load_stages(root), "this": stage}
    cpu, wall, calls, out = dict.fromkeys(sides, 0.0), dict.fromkeys(sides, 0.0), dict.fromkeys(sides, 0), {}
    loads = []
    for r in range(rounds):
        for name in (("baseline", "this") if r % 2 == 0 else ("this", "baseline")):
            mod, real = sides[name], sides[name].judge_selected
            mod.judge_selected = lambda sel, c, _real=real, _name=name: calls.__setitem__(_name, calls[_name] + 1) or _real(sel, c)
            try:
                t0, c0 = time.perf_counter(), time.process_time()
                out[name] = [t for t, _, _ in mod.scanned_partitions(log, cfg, batch, cfg.partition_conversations)]
                wall[name] += time.perf_counter() - t0
                cpu[name] += time.process_time() - c0
            finally:
                mod.judge_selected = real
            loads.append(os.getloadavg()[0])
        if not pl.concat(out["baseline"]).equals(pl.concat(out["this"])):
            raise SystemExit(f"--compare --as-stage: this checkout's verdicts differ from {root}'s")
    print(f"compare as the stage streams ({rounds} rounds, read batches of {batch:,}, rules batch "
          f"{cfg.rules_batch_conversations:,}, outputs identical): baseline {root}: {calls['baseline'] // rounds} rules "
          f"calls, {cpu['baseline']:.1f} s CPU / {wall['baseline']:.1f} s wall; this checkout: {calls['this'] // rounds} "
          f"calls, {cpu['this']:.1f} s CPU / {wall['this']:.1f} s wall: {100 * (1 - cpu['this'] / cpu['baseline']):.0f}% "
          f"less CPU; load average {min(loads):.1f}-{max(loads):.1f}")


def compare_small(cfg: Wildfeedback, root: Path, n: int, calls: int) -> None:
    """``calls`` rules calls on ``n`` synthetic conversations each (~ the fixed cost of a call), alternating."""
    sides = {"baseline": load_stages(root), "this": stage}
    cpu = dict.fromkeys(sides, 0.0)
    for k in range(calls):
        conv, out = synth(n, seed=k), {}
        for name in (("baseline", "this") if k % 2 == 0 else ("this", "baseline")):
            mod = sides[name]
            c0 = time.process_time()
            out[name] = mod.rules_signals(mod.feedback_turns(mod.select_conversations(conv, cfg)[0]), cfg)
            cpu[name] += time.process_time() - c0
        if not out["baseline"].equals(out["this"]):
            raise SystemExit(f"--small: call {k}: this checkout's verdicts differ from {root}'s")
    print(f"small calls ({calls} of {n} conversations each, alternating, outputs identical): baseline {root}: "
          f"{1000 * cpu['baseline'] / calls:.0f} ms CPU a call; this checkout: {1000 * cpu['this'] / calls:.0f} ms; "
          f"load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="conversations in the synthetic log")
    ap.add_argument("--shard", type=int, default=100_000, help="conversations per shard file")
    ap.add_argument("--batch", type=int, help="conversations per read batch (default: params.yaml's execution.batch_size)")
    ap.add_argument("--rules-batch", type=int, help="selected conversations per rules call "
                    "(default: params.yaml's wildfeedback.rules_batch_conversations)")
    ap.add_argument("--per-read-batch", action="store_true",
                    help="also time one rules call per read batch (the stage before rules_batch_conversations), same run")
    ap.add_argument("--naive-n", type=int, default=20_000, help="conversations the naive loop runs on")
    ap.add_argument("--min-user-turns", type=int, default=3)
    ap.add_argument("--compare", type=Path, metavar="DIR", help="time DIR's detector against this one (see above)")
    ap.add_argument("--rounds", type=int, default=2, help="passes over the log in --compare")
    ap.add_argument("--as-stage", action="store_true",
                    help="--compare each checkout's own streaming scan (its rules batching included), not per read batch")
    ap.add_argument("--small", type=int, metavar="N", help="--compare rules calls on N conversations (~ a call's fixed cost)")
    ap.add_argument("--smoke", action="store_true", help="2,000 conversations (naive loop on 500): runs in seconds")
    args = ap.parse_args()
    if args.smoke:
        args.n, args.shard, args.batch, args.naive_n, args.per_read_batch = 2_000, 1_000, 250, 500, True
    params = load_params(ROOT / "params.yaml")
    args.batch = args.batch or params.execution.batch_size
    section = params.wildfeedback.model_dump(mode="json")
    if args.rules_batch:
        section["rules_batch_conversations"] = args.rules_batch
    cfg = Wildfeedback.model_validate(section | {
        "sources": ["synthetic"], "languages": ["en"], "min_user_turns": args.min_user_turns, "detector": "rules",
    })
    tmp = Path(tempfile.mkdtemp(prefix="wf-bench-"))
    try:
        t0 = time.perf_counter()
        generate(args.n, args.shard, tmp / "log")
        print(f"generated {args.n:,} conversations in {time.perf_counter() - t0:.1f} s "
              f"({sum(f.stat().st_size for f in (tmp / 'log').iterdir()) / 2**20:.0f} MiB Parquet)")
        if args.compare:
            if args.small:
                compare_small(cfg, args.compare, args.small, 10 * args.rounds)
            (compare_stream if args.as_stage else compare)(tmp / "log", cfg, args.compare, args.batch, args.rounds)
            return

        fast, fast_cpu, turns, flagged, mem = stream(tmp / "log", cfg, args.batch)
        print(f"rules (polars, streamed as the stage does: read batches of {args.batch:,}, rules calls of "
              f"{cfg.rules_batch_conversations:,} selected conversations): {args.n:,} conversations, {turns:,} judged "
              f"turns, {flagged:,} flagged in {fast:.1f} s = {args.n / fast:,.0f} conversations/s ({fast_cpu:.1f} s CPU, "
              f"all threads); peak RSS {mem.peak / 2**20:.0f} MiB "
              f"(+{(mem.peak - mem.start) / 2**20:.0f} MiB over the {mem.start / 2**20:.0f} MiB before)")
        if args.per_read_batch:
            per_batch = cfg.model_copy(update={"rules_batch_conversations": 1})  # one rules call per read batch
            slow, slow_cpu, turns_b, flagged_b, mem_b = stream(tmp / "log", per_batch, args.batch)
            assert (turns_b, flagged_b) == (turns, flagged), "the rules batch changed the verdicts"
            print(f"baseline, one rules call per read batch of {args.batch:,} (the stage before): {slow:.1f} s wall, "
                  f"{slow_cpu:.1f} s CPU, peak RSS {mem_b.peak / 2**20:.0f} MiB: {slow / fast:.1f}x wall, "
                  f"{slow_cpu / fast_cpu:.1f}x CPU the rules batch's time, same {flagged:,} flagged")

        sample = pl.from_arrow(next(iter_batches(tmp / "log", batch_size=args.naive_n))).head(args.naive_n)
        rows = sample.to_dicts()
        t0, c0 = time.perf_counter(), time.process_time()
        n_flag = naive(rows, cfg)
        slow, slow_cpu = time.perf_counter() - t0, time.process_time() - c0
        rate = len(rows) / slow
        sub_t = stage.scan(sample, cfg)[0]
        same = sub_t.filter(pl.col("sat") | pl.col("dsat")).height
        print(f"naive (python re per message): {len(rows):,} conversations in {slow:.1f} s ({slow_cpu:.1f} s CPU) = {rate:,.0f} "
              f"conversations/s; EXTRAPOLATED to {args.n:,}: {args.n / rate:.0f} s "
              f"(flagged {n_flag:,} by text cues vs polars {same:,} by text cues + context on the same subsample)")
        print(f"speed-up: {(args.n / fast) / rate:.1f}x wall, {(slow_cpu * args.n / len(rows)) / fast_cpu:.1f}x CPU   "
              f"load average {os.getloadavg()[0]:.1f}   cores: {psutil.cpu_count()} "
              f"(POLARS_MAX_THREADS={os.environ.get('POLARS_MAX_THREADS', 'default')}, polars {pl.__version__})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
