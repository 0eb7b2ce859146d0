"""Kill fuzzing: each stage run as `dvc repro` runs it, stopped by SIGKILL, SIGTERM or Ctrl-C (SIGINT) at many moments.

    python bench/killfuzz.py --from .            # a project on which `dvc repro` has run (its data/ is version A)
    python bench/killfuzz.py --smoke             # ingest only, built here, 3 kills

In a scratch copy of the project, version A of a stage's outputs is what the built project holds; version B is
what the stage writes under params that change its output files (`execution.target_shard_bytes` 300 and
`row_group_bytes` 60: one shard per few rows, so many spills and renames; export: another `split_salt`), with
`checkpoint_rows` 4. Each kill starts from A and runs the stage under B's params, stopped either at a random time
over its runtime or just before its Nth file operation (rename, unlink, fsync, open for writing, Parquet write;
counted by bench/_killhook/sitecustomize.py), half of those drawn from the last fifth: the swap. Then it checks
  (a) what is on disk right after the kill: each declared output (dvc.yaml outs and metrics) is A, B or neither,
      a visible Parquet file that does not read, and, after the next start's recovery (`pipeline.outputs.recover`),
      every output A or every output B and nothing left beside them;
  (b) the rerun: exit 0, every output B byte for byte, no staging, journal, temporary or checkpoint left;
  (c) what the user saw: SIGINT / SIGTERM exit 130 / 143 with one `prefpipe:` line and no traceback, and the
      signal-to-exit time; the rerun's warnings.
Prints one line per kill and a table per stage; a line starting with FAIL is a broken promise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "bench" / "_killhook"
STAGES = ["ingest", "wildfeedback", "pugc", "selfie", "dove", "curry", "export"]
SIGS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}
EXIT = {"TERM": 143, "INT": 130}


def copy_tree(dst: Path, built: Path | None) -> Path:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst / rel)
    (dst.parent / "shared").exists() or (dst.parent / "shared").symlink_to(ROOT.parent / "shared")
    if built is not None:
        for d in sorted((built / "data").iterdir()):
            if d.name != "samples" and d.is_dir() and not d.name.startswith("."):
                shutil.copytree(d, dst / "data" / d.name, symlinks=True)
    return dst


def b_params(proj: Path, sets: list[str]) -> None:
    p = yaml.safe_load((proj / "params.yaml").read_text())
    p["execution"].update(target_shard_bytes=300, row_group_bytes=60, checkpoint_rows=4)
    p["export"]["split_salt"] = "killfuzz"
    for item in sets:  # KEY.PATH=VALUE (YAML): a change that moves more of a stage's outputs (dove.seed=1)
        key, value = item.split("=", 1)
        *parents, last = key.split(".")
        node = p
        for k in parents:
            node = node[k]
        node[last] = yaml.safe_load(value)
    (proj / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def outs(proj: Path, stage: str) -> list[str]:
    spec = yaml.safe_load((proj / "dvc.yaml").read_text())["stages"][stage]
    return [next(iter(o)) if isinstance(o, dict) else o for o in spec.get("outs", []) + spec.get("metrics", [])]


def out_dir(stage: str) -> str:
    return "data/release" if stage == "export" else f"data/{stage}"


def digest(path: Path) -> str | None:
    """md5 of a file, or of a folder's visible files (name and bytes), as DVC hashes them; None if absent."""
    if not path.exists():
        return None
    if path.is_file():
        return hashlib.md5(path.read_bytes()).hexdigest()
    h = hashlib.md5()
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            h.update(str(rel).encode() + b"\0" + hashlib.md5(p.read_bytes()).digest())
    return h.hexdigest()


def state(proj: Path, names: list[str]) -> dict[str, str | None]:
    return {n: digest(proj / n) for n in names}


def leftovers(proj: Path, stage: str) -> list[str]:
    """Hidden files and folders in or beside the stage's folder, and the stage's checkpoints."""
    folder = proj / out_dir(stage)
    left = [str(p.relative_to(proj)) for p in folder.rglob(".*")] if folder.exists() else []
    left += [str(p.relative_to(proj)) for p in folder.parent.glob(f".{folder.name}.*")]
    ck = proj / ".prefpipe" / "checkpoints" / stage
    left += [str(p.relative_to(proj)) for p in ck.rglob("*") if p.is_file()] if ck.exists() else []
    return sorted(left)


def bad_parquet(proj: Path, names: list[str]) -> list[str]:
    import pyarrow.parquet as pq

    bad = []
    for n in names:
        for p in (proj / n).rglob("*.parquet") if (proj / n).is_dir() else []:
            if any(part.startswith(".") for part in p.relative_to(proj / n).parts):
                continue
            try:
                pq.read_table(p)
            except Exception as e:  # noqa: BLE001 - any failure to read is the finding
                bad.append(f"{p.relative_to(proj)}: {type(e).__name__}")
    return bad


def env(proj: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{proj}{os.pathsep}{HOOK}", "PREFPIPE_PROGRESS": "0", **extra}


def cmd(stage: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "run", stage]


def _default_signals() -> None:
    """A job started with `&` from a script inherits SIGINT ignored, as a terminal's foreground job does not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def reset(proj: Path, a_copy: Path, stage: str) -> None:
    folder = proj / out_dir(stage)
    shutil.rmtree(folder, ignore_errors=True)
    for p in folder.parent.glob(f".{folder.name}.*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    shutil.copytree(a_copy, folder, symlinks=True)
    shutil.rmtree(proj / ".prefpipe" / "checkpoints" / stage, ignore_errors=True)


def run(proj: Path, stage: str, log: Path, **extra: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd(stage), cwd=proj, env=env(proj, **extra), stdout=f, stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - t0


def verdict(names, a, b, now) -> str:
    kinds = set()
    for n in names:
        k = {x for x, ref in (("A", a), ("B", b)) if now[n] == ref[n]}
        kinds.add(frozenset(k) if k else frozenset({"?"}))
    if any("?" in k for k in kinds):
        return "other:" + ",".join(n for n in names if now[n] not in (a[n], b[n]))
    common = frozenset.intersection(*kinds) if kinds else frozenset()
    return "".join(sorted(common)) if common else "MIX"


def one_kill(proj, stage, a_copy, names, a, b, how, sig, point, tmp) -> dict:
    reset(proj, a_copy, stage)
    log = tmp / "killed.log"
    extra = {"KILLFUZZ_AT": str(point), "KILLFUZZ_SIG": str(int(SIGS[sig]))} if how == "op" else {}
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd(stage), cwd=proj, env=env(proj, **extra), stdout=f, stderr=subprocess.STDOUT,
                                preexec_fn=_default_signals)
        sent = None
        if how == "time":
            try:
                proc.wait(timeout=point)
            except subprocess.TimeoutExpired:
                sent = time.perf_counter()
                proc.send_signal(SIGS[sig])
        try:
            rc = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
            return {"fail": [f"{sig} did not end the run within 120 s"]}
    latency = time.perf_counter() - sent if sent is not None else None
    text = log.read_text(errors="replace")
    r = {"rc": rc, "latency": latency, "fail": []}
    if rc == 0:
        r["fail"] += [] if verdict(names, a, b, state(proj, names)) == "B" else ["exit 0 but outputs are not B"]
        r["raw"] = r["after"] = "done"
    else:
        raw = state(proj, names)
        journal = (proj / out_dir(stage) / ".commit.json").exists()
        r["raw"] = verdict(names, a, b, raw) + ("+journal" if journal else "")
        if r["raw"].startswith(("MIX", "other")) and not journal:
            r["fail"].append(f"outputs right after the kill are {r['raw']} with no journal")
        r["fail"] += [f"unreadable visible Parquet {x}" for x in bad_parquet(proj, names)]
        if sig != "KILL":
            lines = [ln for ln in text.splitlines() if ln.strip()]
            tail = lines[-1] if lines else ""
            if rc != EXIT[sig] or "Traceback" in text or not tail.startswith("prefpipe"):
                r["fail"].append(f"{sig}: exit {rc}, last line {tail[:120]!r}" + (" after a traceback" if "Traceback" in text else ""))
        rec = subprocess.run([sys.executable, "-c", f"from pipeline.outputs import recover; recover({out_dir(stage)!r})"],
                             cwd=proj, env=env(proj), capture_output=True, text=True)
        r["after"] = verdict(names, a, b, state(proj, names))
        if rec.returncode or r["after"] not in ("A", "B", "AB"):
            r["fail"].append(f"after the next start's recovery: {r['after']} {rec.stderr.strip()[-200:]}")
        r["recover_said"] = rec.stderr.strip().splitlines()
    rc2, _ = run(proj, stage, tmp / "rerun.log")
    rerun = (tmp / "rerun.log").read_text(errors="replace")
    r["rerun_warnings"] = [ln for ln in rerun.splitlines() if ln.startswith(("WARNING", "prefpipe")) or "Traceback" in ln]
    if rc2 != 0:
        r["fail"].append(f"rerun exit {rc2}: {rerun.strip().splitlines()[-1][:200] if rerun.strip() else ''}")
    elif state(proj, names) != b:
        r["fail"].append("rerun bytes differ from an uninterrupted run: " +
                         ",".join(n for n in names if state(proj, names)[n] != b[n]))
    left = leftovers(proj, stage)
    if left:
        r["fail"].append(f"left after the rerun: {left[:4]}")
    r["killed_tail"] = text.strip().splitlines()[-2:] if text.strip() else []
    return r


def fuzz_stage(proj: Path, stage: str, points: int, rng: random.Random, tmp: Path) -> list[dict]:
    names = outs(proj, stage)
    a_copy = tmp / f"A-{stage}"
    shutil.rmtree(a_copy, ignore_errors=True)
    shutil.copytree(proj / out_dir(stage), a_copy, symlinks=True)
    a = state(proj, names)
    rc, wall = run(proj, stage, tmp / "b.log", KILLFUZZ_COUNT=str(tmp / "ops.txt"))
    if rc:
        raise SystemExit(f"{stage}: the uninterrupted run under B's params failed:\n{(tmp / 'b.log').read_text()}")
    b = state(proj, names)
    ops = (tmp / "ops.txt").read_text().splitlines()
    differ = sum(a[n] != b[n] for n in names)
    print(f"{stage}: {len(names)} outputs, {differ} differ between A and B; uninterrupted {wall:.1f} s, "
          f"{len(ops)} file operations", flush=True)
    n_kill = max(1, points * 3 // 5)
    plan = [("KILL", "time" if i % 2 else "op") for i in range(n_kill)]
    plan += [(s, "time" if i % 2 == 0 else "op") for i in range(points - n_kill) for s in ("TERM", "INT")][:points - n_kill]
    results = []
    for sig, how in plan:
        if how == "time":
            point = round(rng.uniform(0.05, 1.0) * wall, 2)
        else:
            tail = len(ops) - len(ops) // 5
            point = rng.randint(tail, len(ops)) if rng.random() < 0.5 else rng.randint(1, len(ops))
        r = one_kill(proj, stage, a_copy, names, a, b, how, sig, point, tmp)
        where = f"{point:.2f}s" if how == "time" else f"op {point}/{len(ops)} ({ops[point - 1][:70]})"
        lat = f" exit in {r['latency']:.2f}s" if r.get("latency") is not None else ""
        print(f"  {'FAIL' if r['fail'] else 'ok  '} {stage} {sig:4} at {where}: rc {r.get('rc')}{lat}, "
              f"right after {r.get('raw')}, after recovery {r.get('after')}" + "".join(f"\n      {x}" for x in r["fail"]),
              flush=True)
        r.update(stage=stage, sig=sig, how=how, point=point)
        results.append(r)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="built", type=Path, help="a project whose data/ holds a whole DAG's outputs")
    ap.add_argument("--work", type=Path, default=Path("/tmp/killfuzz"))
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--points", type=int, default=20, help="kills per stage (3/5 SIGKILL, the rest SIGTERM/SIGINT)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write every kill's record here")
    ap.add_argument("--set", action="append", default=[], help="another params change for version B: KEY.PATH=VALUE")
    ap.add_argument("--smoke", action="store_true", help="ingest only, built in the scratch copy, 3 kills")
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    proj = copy_tree(args.work / "proj", None if args.smoke else args.built.resolve())
    tmp = args.work / "tmp"
    tmp.mkdir(parents=True)
    stages = ["ingest"] if args.smoke else args.stages.split(",")
    if args.smoke:
        args.points = 3
        if run(proj, "ingest", tmp / "a.log")[0]:
            raise SystemExit((tmp / "a.log").read_text())
    b_params(proj, args.set)
    rng = random.Random(args.seed)
    results = []
    for stage in stages:
        results += fuzz_stage(proj, stage, args.points, rng, tmp)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    print(f"{'stage':13} {'kills':>5} {'KILL':>4} {'TERM':>4} {'INT':>4} {'mixed+journal':>13} {'max exit s':>10} {'fail':>4}")
    for stage in stages:
        rs = [r for r in results if r["stage"] == stage]
        lat = [r["latency"] for r in rs if r.get("latency") is not None and r["sig"] != "KILL"]
        print(f"{stage:13} {len(rs):5} " + " ".join(f"{sum(r['sig'] == s for r in rs):4}" for s in SIGS) +
              f" {sum('journal' in str(r.get('raw')) for r in rs):13} {max(lat, default=0):10.2f} "
              f"{sum(bool(r['fail']) for r in rs):4}")
    print(f"killfuzz: {len(results)} kills, {sum(bool(r['fail']) for r in results)} failed")


if __name__ == "__main__":
    main()
