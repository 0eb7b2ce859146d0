"""Export's near-duplicate prompts with a second MinHash signature per prompt (its last user turn), against the
code before (ab3edb4's ``pipeline/dedup.py``, kept in ``bench/_dedup_baseline.py``: the whole prompt only).

Synthetic prompts of a WildChat-like shape: 60% one user turn, 40% 2-4 user turns with assistant answers of
80-300 words between them; user turns of 5-60 words from a 5,000-word Zipf vocabulary. 10% are an earlier
prompt with one word changed, 5% an earlier multi-turn prompt with another last user turn (earlier: of the same block of 50,000). Export's path:
``prompt_keys`` + ``Signatures.add`` per 4,096-row batch, then ``_clusters`` over all distinct keys (as
``dedup_across`` runs it). Each (code, round) runs in its own process, alternating, so peak RSS is its own;
CPU time is that of the dedup path only (``time.process_time``; the prompts are made before the clock starts).

    python bench/dedup_turns.py --rows 100000 --rounds 2
    python bench/dedup_turns.py --smoke
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHINGLE, NUM_PERM, BANDS, THRESHOLD, BATCH, BLOCK = 5, 128, 32, 0.8, 4096, 50_000


def prompts(n: int, seed: int = 0) -> pl.DataFrame:
    """``n`` prompts (see the module's docstring); a copy is of an earlier prompt of the same call."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, 5001)
    words = iter(np.char.add("w", rng.choice(5000, 400 * n, p=p / p.sum()).astype(str)).tolist())

    def text(lo: int, hi: int) -> str:
        return " ".join(next(words) for _ in range(int(rng.integers(lo, hi))))

    rows: list[list[dict]] = []
    for i in range(n):
        r = rng.random()
        if i and r < 0.10:  # an earlier prompt, one word changed
            msgs = [dict(m) for m in rows[rng.integers(i)]]
            m = msgs[rng.integers(len(msgs))]
            w = m["content"].split()
            w[rng.integers(len(w))] = "changed"
            m["content"] = " ".join(w)
        elif i and r < 0.15 and len(rows[j := int(rng.integers(i))]) > 1:  # another last request
            msgs = rows[j][:-1] + [{"role": "user", "content": text(5, 60)}]
        else:
            turns = 1 if rng.random() < 0.6 else int(rng.integers(2, 5))
            msgs = []
            for t in range(turns):
                if t:
                    msgs.append({"role": "assistant", "content": text(80, 300)})
                msgs.append({"role": "user", "content": text(5, 60)})
        rows.append(msgs)
    return pl.DataFrame({"prompt": rows})


def load(code: str):
    path = ROOT / ("bench/_dedup_baseline.py" if code == "base" else "pipeline/dedup.py")
    spec = importlib.util.spec_from_file_location(f"dedup_{code}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(code: str, n: int) -> dict:
    """Prompts are made a block of ``BLOCK`` at a time (copies within a block), outside the clock, so peak RSS is
    that of the signatures and one block, not of all prompts as Python objects."""
    mod = load(code)
    sigs, keys, cpu = mod.Signatures(SHINGLE, NUM_PERM), [], 0.0
    for block in range(0, n, BLOCK):
        df = prompts(min(BLOCK, n - block), seed=block)
        t = time.process_time()
        for off in range(0, df.height, BATCH):
            pk = mod.prompt_keys(df.slice(off, BATCH), "prompt")
            keys.append(pk["_key"])
            sigs.add(pk["_key"], pk["_text"], *([pk["_last"]] if "_last" in pk.columns else []))
        cpu += time.process_time() - t
    t_sig, t = cpu, time.process_time()
    cl = mod._clusters(pl.concat(keys), sigs, BANDS, THRESHOLD)
    cpu += time.process_time() - t
    removed = int((cl["_key"] != cl["_cluster"]).sum())
    arrays = sum(a.nbytes for a in (sigs.sig, getattr(sigs, "last", sigs.sig[:0])))
    return {"code": code, "rows": n, "cpu_s": round(cpu, 2), "signatures_s": round(t_sig, 2),
            "clusters_s": round(cpu - t_sig, 2), "removed": removed, "distinct": cl.height,
            "signature_mib": round(arrays / 2**20), "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", choices=["base", "new"], help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true", help="a tiny run that checks the script works")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run(args.child, args.rows)))
        return
    if args.smoke:
        args.rows, args.rounds = 3_000, 1
    print(f"load average {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M')}")
    for _ in range(args.rounds):
        for code in ("base", "new"):
            out = subprocess.run([sys.executable, __file__, "--child", code, "--rows", str(args.rows)],
                                 capture_output=True, text=True, check=True).stdout
            print(out.strip(), f"load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
