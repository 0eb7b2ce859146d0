"""End-to-end: every stage of the DAG on the samples, timed per stage, in fresh copies of the project:
batched engine calls (the params as shipped) against a naive baseline (one prompt per engine call,
`llm.batch_size: 1`), and optionally the same DAG on the Ray backend, side by side in one run.

    python bench/repro.py            # local batched vs local naive
    python bench/repro.py --ray      # + execution.backend: ray (a local Ray instance, or RAY_ADDRESS)
    python bench/repro.py --smoke    # ingest only, both runs: checks the bench runs (figures mean nothing)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def copy_project(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    for rel in filter(None, files.split("\0")):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    return dest


def stage_order() -> list[str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return list(stages)  # dvc.yaml lists stages in dependency order


def run_dag(repo: Path, edit, stages: list[str] | None = None) -> dict[str, float]:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    edit(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(repo), "PREFPIPE_PROGRESS": "0"}
    times = {}
    for stage in stages or stage_order():
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", stage], cwd=repo, env=env,
                              capture_output=True, text=True)
        times[stage] = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"{stage} failed:\n{proc.stdout}\n{proc.stderr}")
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ray", action="store_true", help="also run the DAG with execution.backend: ray")
    ap.add_argument("--smoke", action="store_true", help="the ingest stage only (checks the bench runs)")
    args = ap.parse_args()
    stages = ["ingest"] if args.smoke else stage_order()

    def batched(p):
        pass

    def naive(p):
        p["llm"]["batch_size"] = 1

    def ray(p):
        p["execution"]["backend"] = "ray"

    runs = [("batched (as shipped)", batched), ("naive: 1 prompt/call", naive)] + ([("ray backend", ray)] if args.ray else [])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, edit in runs:
            repo = copy_project(Path(tmp) / name.split()[0])
            results[name] = run_dag(repo, edit, stages)
    print(f"{'stage':<14}" + "".join(f"{name:>24}" for name in results))
    for stage in stages + ["TOTAL"]:
        row = [sum(r.values()) if stage == "TOTAL" else r[stage] for r in results.values()]
        print(f"{stage:<14}" + "".join(f"{v:>23.1f}s" for v in row))
    base, slow = results["batched (as shipped)"], results["naive: 1 prompt/call"]
    print(f"naive / batched, whole DAG: {sum(slow.values()) / sum(base.values()):.1f}x "
          "(each stage run as `python -m pipeline.cli run STAGE`, the command dvc.yaml calls; "
          "includes process start and model load per stage)")


if __name__ == "__main__":
    main()
