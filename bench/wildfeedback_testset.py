"""Time and peak RSS of WildFeedback's held-out test set (``stages/wildfeedback_testset.py``) on synthetic pairs.

Each run is its own process (peak RSS is per process). ``new``: the module as it is, fed batch by batch from a
generator (the stage reads its stream the same way, so no list of all texts exists). ``old``: the module at
8e7f5b2, kept in ``bench/_wildfeedback_testset_baseline.py`` (every text, the sparse TF-IDF of all pairs and
their dense vectors in memory, Lloyd over all rows), given the whole list as it was. The texts are the integrator's: 30 words of 17 plus one of 997 tails.
Up to ``fit_rows`` pairs both must hold out the same rows; beyond, the overlap of the two test sets is printed.

    python bench/wildfeedback_testset.py --sizes 100000 222000 --baseline-max 100000
    python bench/wildfeedback_testset.py --smoke      # 3,000 pairs, both, same rows asserted
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "bench" / "_wildfeedback_testset_baseline.py"  # main at 8e7f5b2, before the bounded test set
WORDS = "code python error table answer rewrite shorter explain poem story list data file function class metric units"
CHILD = """
import json, resource, sys, time
import numpy as np
mode, n, fit_rows, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
words = {words!r}.split()

def texts(lo, hi):
    pick = np.array(words)[np.random.default_rng(lo).integers(0, len(words), (hi - lo, 30))]  # by offset only
    return [" ".join(w) + "\\nbe concise " + str(i % 997) for i, w in zip(range(lo, hi), pick.tolist())]

t = time.perf_counter()
for lo in range(0, n, 8192):
    texts(lo, min(n, lo + 8192))
gen = time.perf_counter() - t

t = time.perf_counter()
if mode == "old":
    import importlib.util
    spec = importlib.util.spec_from_file_location("old_testset", sys.argv[5])
    old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
    allt = [x for lo in range(0, n, 8192) for x in texts(lo, min(n, lo + 8192))]
    t = time.perf_counter()  # the old code was given the whole list
    rows = np.flatnonzero(old.held_out(allt, clusters=70, per_cluster=10, max_fraction=0.05, seed=0))
else:
    import polars as pl
    from stages.wildfeedback_testset import held_out_rows, sample_keys
    t = time.perf_counter()  # text generation is timed: the stage reads its texts batch by batch too
    def batches():
        for lo in range(0, n, 8192):
            ids = pl.Series([str(i) for i in range(lo, min(n, lo + 8192))], dtype=pl.String)
            yield sample_keys(ids, 0), texts(lo, min(n, lo + 8192))
    _, _, rows = held_out_rows(batches, clusters=70, per_cluster=10, max_fraction=0.05, seed=0, fit_rows=fit_rows)
secs = time.perf_counter() - t
json.dump({{"secs": secs, "gen": gen, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "rows": rows.tolist()}}, open(out, "w"))
"""


def run(mode: str, n: int, fit_rows: int, tmp: Path) -> dict:
    out = tmp / f"{mode}{n}.json"
    code = CHILD.format(words=WORDS)
    subprocess.run([sys.executable, "-c", code, mode, str(n), str(fit_rows), str(out), str(BASELINE)], cwd=ROOT,
                   check=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 222_000])
    ap.add_argument("--baseline-max", type=int, default=100_000, help="run the old code up to this many pairs")
    ap.add_argument("--fit-rows", type=int, default=20_000)
    ap.add_argument("--smoke", action="store_true", help="3,000 pairs, old and new, the same rows asserted")
    args = ap.parse_args()
    sizes = [3_000] if args.smoke else args.sizes
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("| pairs | new: s, peak RSS MiB, held out | old: s, peak RSS MiB, held out | same rows |")
        print("|---|---|---|---|")
        for n in sizes:
            new = run("new", n, args.fit_rows, tmp)
            line = (f"| {n:,} | {new['secs']:.1f} s (of which making the texts, twice: {2 * new['gen']:.1f} s), "
                    f"{new['rss']:,.0f} MiB, {len(new['rows'])} | ")
            if n <= args.baseline_max:
                old = run("old", n, args.fit_rows, tmp)
                same = len(set(new["rows"]) & set(old["rows"]))
                line += f"{old['secs']:.1f} s, {old['rss']:,.0f} MiB, {len(old['rows'])} | {same} of {len(old['rows'])} |"
                if n <= args.fit_rows and new["rows"] != old["rows"]:
                    raise SystemExit(f"{n} pairs (<= fit_rows): the new code holds out other rows than the old")
            else:
                line += "not run | - |"
            print(line, flush=True)


if __name__ == "__main__":
    main()
