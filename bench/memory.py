"""Peak memory of every stage of the DAG on synthetic WildChat-style logs of growing size.

For each size, a fresh copy of the project gets a synthetic log of that many conversations as its
conversation source (the other shipped samples stay), and each stage runs as
`python -m pipeline.cli run STAGE` (what dvc.yaml calls) in dependency order. The table prints each
stage's seconds and the child's peak RSS side by side across sizes, so growth is visible: a stage
that streams stays flat, one that materialises its input grows with it.

WildFeedback runs its cheap path (rules detector, natural revisions; `summarize: []`), since a
1M-conversation log would otherwise ask the `tiny` model for hundreds of thousands of answers on a
CPU; the model stages (PUGC, Selfie, DOVE) run on the samples and measure model-load memory.

    python bench/memory.py                          # 100k and 1M conversations (about 10 minutes)
    python bench/memory.py --sizes 20000 100000     # quicker
    python bench/memory.py --smoke                  # 300 conversations; ingest and wildfeedback
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from repro import copy_project, stage_order  # noqa: E402  (the sibling bench script's helpers)

USER = ["How do I {x}?", "Thanks, that worked!", "No, that's wrong, {x} is not right.", "Can you make it shorter?",
        "ok got it", "Now write a poem about {x}."]
TOPICS = ["sort a list", "bake bread", "tune a guitar", "learn polars", "fix a bike", "plan a trip"]
SENTENCES = [f"Point {n} holds here." for n in range(40)]  # as long as the loop's "Here is an answer." was
RSS_PROBE = ("import resource, runpy, sys; sys.argv = ['pipeline.cli', 'run', sys.argv[1]]\n"
             "try:\n    runpy.run_module('pipeline.cli', run_name='__main__')\n"
             "finally:\n    print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")


def synth(path: Path, n: int, seed: int = 0) -> None:
    """``n`` WildChat-format conversations of 3-5 user turns; about a third of user turns carry feedback."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            turns = []
            for _ in range(rng.randint(3, 5)):
                turns.append({"role": "user", "content": rng.choice(USER).format(x=rng.choice(TOPICS))})
                said = rng.sample(SENTENCES, rng.randint(5, 40))  # distinct sentences: export drops a looping answer
                turns.append({"role": "assistant", "content": f"Answer {i}. " + " ".join(said)})
            f.write(json.dumps({"conversation_id": f"c{i}", "conversation": turns, "language": "English",
                                "model": "synthetic", "toxic": False, "redacted": False}) + "\n")


def prepare(n: int, tmp: Path) -> Path:
    repo = copy_project(tmp / f"p{n}")
    synth(repo / "log.jsonl", n)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for src in params["ingest"]["sources"]:
        if src["name"] == "sample_conversations":
            src.update(path="log.jsonl", format="wildchat", mapping={}, limit=None)
    params["wildfeedback"]["summarize"] = []  # rules + natural revisions: no model call per signal
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return repo


def run_stage(repo: Path, stage: str) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one stage run as its own process."""
    env = {**os.environ, "PYTHONPATH": str(repo), "PREFPIPE_PROGRESS": "0"}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RSS_PROBE, stage], cwd=repo, capture_output=True, text=True, env=env)
    secs = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return secs, int(proc.stdout.rsplit("MAXRSS", 1)[1].split()[0]) / 1024


def rows_out(repo: Path, stage: str) -> str:
    """The stage's main output rows, from its shard manifests."""
    main = {"ingest": "conversations", "wildfeedback": "pairs", "pugc": "pairs", "selfie": "pairs", "dove": "pairs",
            "export": "all"}
    out = repo / "data" / ("release" if stage == "export" else stage)
    if stage == "export":  # Hub layout: parquet files without a manifest
        import pyarrow.parquet as pq

        return f"{sum(pq.ParquetFile(f).metadata.num_rows for f in (out / 'all').glob('*.parquet')):,}"
    if stage == "curry":
        return f"{sum(json.loads(m.read_text())['rows'] for m in out.glob('pairs/*/_manifest.json')):,}"
    manifests = list((out / main[stage]).rglob("_manifest.json"))
    return f"{sum(json.loads(m.read_text())['rows'] for m in manifests):,}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--smoke", action="store_true",
                    help="300 conversations through ingest and wildfeedback (checks the bench runs)")
    args = ap.parse_args()
    stages = stage_order()
    if args.smoke:
        args.sizes, stages = [300], ["ingest", "wildfeedback"]  # export needs every method stage (held_out)
    results: dict[int, dict[str, tuple[float, float, str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            repo = prepare(n, Path(tmp))
            print(f"{n:,} conversations: log is {(repo / 'log.jsonl').stat().st_size / 2**20:,.0f} MiB", flush=True)
            results[n] = {}
            for stage in stages:
                secs, mib = run_stage(repo, stage)
                results[n][stage] = (secs, mib, rows_out(repo, stage))
                print(f"  {stage:<13}{secs:>8.1f} s{mib:>9,.0f} MiB  rows out {results[n][stage][2]}", flush=True)
    head = "".join(f"{f'{n:,} conv: s':>18}{'peak MiB':>10}{'rows out':>12}" for n in args.sizes)
    print(f"\n{'stage':<14}{head}")
    for stage in stages:
        cells = "".join(f"{results[n][stage][0]:>18.1f}{results[n][stage][1]:>10,.0f}{results[n][stage][2]:>12}"
                        for n in args.sizes)
        print(f"{stage:<14}{cells}")


if __name__ == "__main__":
    main()
