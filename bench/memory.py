"""Peak memory of the ingest stage on synthetic WildChat-style logs of growing size.

Each size runs `python -m pipeline.cli run ingest` (what dvc.yaml calls) in a fresh copy of the
project whose only source is the synthetic log, and reports the child's peak RSS, so the growth of
memory with input size is visible (a streaming stage stays flat; one that materialises grows).

    python bench/memory.py --sizes 25000 50000 100000
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
from repro import copy_project  # noqa: E402  (the sibling bench script's fresh-copy helper)

USER = ["How do I {x}?", "Thanks, that worked!", "No, that's wrong, {x} is not right.", "Can you make it shorter?",
        "ok got it", "Now write a poem about {x}."]
TOPICS = ["sort a list", "bake bread", "tune a guitar", "learn polars", "fix a bike", "plan a trip"]


def synth(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            turns = []
            for _ in range(rng.randint(3, 5)):
                turns.append({"role": "user", "content": rng.choice(USER).format(x=rng.choice(TOPICS))})
                turns.append({"role": "assistant", "content": "Here is an answer. " * rng.randint(5, 40)})
            f.write(json.dumps({"conversation_id": f"c{i}", "conversation": turns, "language": "English",
                                "model": "synthetic", "toxic": False, "redacted": False}) + "\n")


def run_ingest(n: int, tmp: Path) -> tuple[float, float]:
    repo = copy_project(tmp / f"p{n}")
    synth(repo / "log.jsonl", n)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ingest"]["sources"] = [{"name": "log", "kind": "conversations", "path": "log.jsonl", "format": "wildchat",
                                    "mapping": {}, "limit": None}]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    script = ("import resource, runpy, sys; sys.argv = ['pipeline.cli', 'run', 'ingest']\n"
              "try:\n    runpy.run_module('pipeline.cli', run_name='__main__')\n"
              "finally:\n    print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    secs = time.perf_counter() - t
    if proc.returncode != 0 and "MAXRSS" not in proc.stdout:
        raise SystemExit(proc.stdout + proc.stderr)
    kib = int(proc.stdout.rsplit("MAXRSS", 1)[1].split()[0])
    return secs, kib / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[25_000, 50_000, 100_000])
    args = ap.parse_args()
    print(f"{'conversations':>14}{'seconds':>10}{'conv/s':>10}{'peak RSS MiB':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            secs, mib = run_ingest(n, Path(tmp))
            print(f"{n:>14,}{secs:>10.1f}{n / secs:>10,.0f}{mib:>14,.0f}")


if __name__ == "__main__":
    main()
