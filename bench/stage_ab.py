"""Stages of the DAG on a synthetic WildChat log, this checkout's code against another commit's, interleaved.

One copy of the project (``bench/memory.py``'s synthetic log as its conversation source, WildFeedback on its
rules path) is run stage by stage with either code tree on ``PYTHONPATH``, alternating which goes first in
each round, so both see the same load on a shared machine. Per run: wall seconds, CPU seconds (user + sys
of the child process), peak RSS, and the md5 of every file the stage wrote (the two codes must agree).

    python bench/stage_ab.py --base main --n 200000 --stages ingest wildfeedback --rounds 2
    python bench/stage_ab.py --smoke      # 2,000 conversations, ingest, HEAD against this checkout (checks the bench runs)
    python bench/stage_ab.py --base main --n 200000 --stages ingest --parquet   # the log as a Parquet source
    python bench/stage_ab.py --base 8a30086 --n 1000000 --stages ingest --hostile --skip details.json _manifest.json

``--hostile``: every conversation is rejected with a reason of its own (``toxic`` is a distinct string, half of
them an e-mail address), ``ingest.max_reject_fraction`` 1.0: the cost of a million distinct reject reasons
(their PII redaction in ``top_reasons``). ``--skip``: files left out of the outputs compared (a base before the
reasons were redacted writes another details.json; one before manifests recorded ``format``, other manifests).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import prepare  # noqa: E402  (the sibling bench script's synthetic project)

OUT = {"ingest": "data/ingest", "export": "data/release"}


def checkout(ref: str, dest: Path) -> Path:
    """The code of ``ref`` (pipeline/ and stages/) unpacked under ``dest``."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref, "pipeline", "stages"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def as_parquet(repo: Path) -> None:
    """The synthetic log rewritten as ``log.parquet`` (row groups of 10,000), the conversation source read from it.
    Converted in a child process: a child forked from a large parent reports that parent's peak RSS as its own."""
    import yaml

    subprocess.run([sys.executable, "-c", "import polars as pl; pl.read_ndjson('log.jsonl').write_parquet("
                    "'log.parquet', row_group_size=10_000)"], cwd=repo, check=True)
    (repo / "log.jsonl").unlink()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for src in params["ingest"]["sources"]:
        if src["path"] == "log.jsonl":
            src["path"] = "log.parquet"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def hostile(repo: Path) -> None:
    """Every record of the log rejected, each with a reason of its own: ``toxic`` holds a distinct string (letters
    only: ``reason_key`` turns digits into N), every other one an e-mail address."""
    import json

    import yaml

    def letters(i: int) -> str:
        return "".join(chr(97 + int(d)) for d in str(i))

    log = repo / "log.jsonl"
    with open(log) as f, open(repo / "hostile.jsonl", "w") as out:
        for i, line in enumerate(f):
            rec = json.loads(line)
            rec["toxic"] = f"{letters(i)}@example.org" if i % 2 else f"maybe {letters(i)} perhaps"
            out.write(json.dumps(rec) + "\n")
    (repo / "hostile.jsonl").replace(log)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ingest"]["max_reject_fraction"] = 1.0
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


SKIP: set[str] = set()  # file names left out of the digest (--skip)


def digest(folder: Path) -> str:
    """One md5 over every file under ``folder`` (names and bytes, in name order), less ``SKIP``."""
    h = hashlib.md5()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in SKIP):
        h.update(str(f.relative_to(folder)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def run(repo: Path, code: Path, stage: str) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MiB, md5 of the outputs) of one stage run with ``code`` on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(code), "PREFPIPE_PROGRESS": "0"}
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", stage], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if status:
        raise SystemExit(f"{stage} with {code} failed:\n{out.decode()[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, digest(repo / OUT.get(stage, f"data/{stage}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="main", help="the commit to compare with (default: main)")
    ap.add_argument("--n", type=int, default=200_000, help="conversations in the synthetic log")
    ap.add_argument("--stages", nargs="+", default=["ingest", "wildfeedback"],
                    help="stages to time, in DAG order (export needs every method stage run first)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="2,000 conversations, ingest, one round against HEAD")
    ap.add_argument("--parquet", action="store_true", help="the log as a Parquet file (ingest's Parquet reader)")
    ap.add_argument("--hostile", action="store_true", help="every conversation rejected with a reason of its own")
    ap.add_argument("--skip", nargs="+", default=[], help="file names left out of the outputs compared")
    args = ap.parse_args()
    if args.smoke:
        args.base, args.n, args.stages, args.rounds = "HEAD", 2000, ["ingest"], 1
    with tempfile.TemporaryDirectory() as tmp:
        codes = {"base": checkout(args.base, Path(tmp) / "base"), "this": ROOT}
        repo = prepare(args.n, Path(tmp))
        if args.hostile:
            hostile(repo)
        SKIP.update(args.skip)
        if args.parquet:
            as_parquet(repo)
        for sub in ("pipeline", "stages"):  # the copy's own code must not shadow PYTHONPATH (cwd comes first)
            shutil.rmtree(repo / sub, ignore_errors=True)
        print(f"{args.n:,} conversations; base = {args.base}; load average {os.getloadavg()[0]:.1f}", flush=True)
        for stage in args.stages:
            for i in range(args.rounds):
                order = ["base", "this"] if i % 2 == 0 else ["this", "base"]
                md5s = {}
                for name in order:
                    wall, cpu, rss, md5 = run(repo, codes[name], stage)
                    md5s[name] = md5
                    print(f"{stage:<13} round {i + 1} {name:<5} {wall:7.1f} s wall {cpu:7.1f} s CPU {rss:7,.0f} MiB"
                          f"  outputs md5 {md5[:12]}  load {os.getloadavg()[0]:.1f}  {time.strftime('%H:%M:%S')}",
                          flush=True)
                if md5s["base"] != md5s["this"]:  # a speed-up that changes the outputs is no speed-up
                    raise SystemExit(f"{stage}: the outputs differ (base {md5s['base'][:12]}, this "
                                     f"{md5s['this'][:12]}): compare data/{stage} of the two codes")


if __name__ == "__main__":
    main()
