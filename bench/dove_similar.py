"""DOVE `similar` pairing at scale: the HNSW search of stages/dove_similarity.py against the exact search.

Instructions: the real prompts in ../shared/data/real (about 4,700) and, past those, seeded variants of
them (a third of the words replaced, or the head of one spliced to the tail of another), so that the
corpus has clusters of near neighbours like a real instruction log. One partner per instruction
(`pairs_per_instruction: 1`), `max_partner_similarity: 0.95`, TF-IDF as shipped (char 3-5-grams, 2^18).

- HNSW: `nearest_partners` as the stage calls it, on all `--n` instructions, timed (TF-IDF apart).
- Recall: the exact first partner of `--sample` random instructions (each against all `--n`), and the
  share the HNSW search found; "similarity ratio" = summed cosine of the partners found / of the exact ones.
- Exact baseline: the exact search (O(n^2)) on the first `--exact-n` instructions, timed and
  extrapolated quadratically to `--n` (the script says so).

    python bench/dove_similar.py --n 1000000
    python bench/dove_similar.py --smoke      # 8,000 instructions: checks the bench runs
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's code, whatever is installed
from stages import dove_similarity as S  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
FILES = ["dove/data/anthropic_helpful/val_sft.jsonl", "dove/data/anthropic_helpful/test.jsonl",
         "wildchat_sample/conversations.jsonl", "self_instruct/human_eval/user_oriented_instructions.jsonl",
         "self_instruct/data/seed_tasks.jsonl", "arena_hard/data/arena-hard-v0.1/question.jsonl",
         "koala/koala_test_set.jsonl", "ultrafeedback_binarized/data/processed/eval_clean.jsonl"]
KEYS = {"instruction", "content", "prompt", "text", "question"}


def _strings(obj, key=None):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v, key)
    elif isinstance(obj, str) and key in KEYS and 15 <= len(obj) <= 600:
        yield obj


def instructions(n: int, seed: int = 0) -> list[str]:
    base = sorted({s for f in FILES for line in (REAL / f).read_text(encoding="utf-8").split("\n")
                   if line.strip() for s in _strings(json.loads(line))})
    rng = random.Random(seed)
    vocab = sorted({w for t in base for w in t.split()})
    out = []
    for i in range(n):
        words = base[i % len(base)].split() if i < len(base) else rng.choice(base).split()
        if i >= len(base) and rng.random() < 0.5:
            for _ in range(rng.randint(1, max(1, len(words) // 3))):
                words[rng.randrange(len(words))] = rng.choice(vocab)
        elif i >= len(base):
            other = rng.choice(base).split()
            words = words[: rng.randint(1, len(words))] + other[rng.randint(0, len(other) - 1):]
        out.append(" ".join(words))
    return out


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--sample", type=int, default=1_000, help="instructions whose exact partner is computed")
    ap.add_argument("--exact-n", type=int, default=20_000, help="size of the timed exact O(n^2) baseline")
    ap.add_argument("--smoke", action="store_true", help="8,000 instructions (checks the bench runs)")
    args = ap.parse_args()
    if args.smoke:
        args.n, args.sample, args.exact_n = 8_000, 200, 2_000
    k, max_sim = 1, 0.95
    load = os.getloadavg()[0]
    texts = instructions(args.n)
    x, t_tfidf = timed(S.tfidf_matrix, texts, 3, 5, 1 << 18)
    (partners, sims), t_ann = timed(S.nearest_partners, x, k, max_sim)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = (load, os.getloadavg()[0])

    rows = np.sort(np.random.default_rng(1).choice(args.n, min(args.sample, args.n), replace=False))
    exact = np.full((args.n, k), -1, np.int64)
    exact_s = np.full((args.n, k), np.nan, np.float32)
    S._exact(x, rows, k, max_sim, 1 << 24, exact, exact_s)
    found = (partners[rows, 0] == exact[rows, 0]) & (exact[rows, 0] >= 0)
    ok = exact[rows, 0] >= 0
    recall = float(found[ok].mean())
    ratio = float(np.nansum(sims[rows, 0][ok]) / np.nansum(exact_s[rows, 0][ok]))

    m = min(args.exact_n, args.n)
    _, t_exact = timed(S.nearest_partners, x[:m], k, max_sim, exact_max=m)
    t_exact_full = t_exact * (args.n / m) ** 2

    print(f"instructions: {args.n:,} (TF-IDF {x.nnz / args.n:.0f} nonzeros per row, built in {t_tfidf:.1f} s)")
    print(f"HNSW search (dim {S.ANN_DIM}, M {S.ANN_M}, efConstruction {S.ANN_EF_CONSTRUCTION}, efSearch "
          f"{S.ANN_EF_SEARCH}, {S.ANN_SHARDS} shards x {S.ANN_CANDIDATES} candidates, exact re-rank): {t_ann:.1f} s; "
          f"peak RSS {rss:,.0f} MiB; rows without a partner: {int((partners[:, 0] < 0).sum())}")
    print(f"recall of the exact first partner on {ok.sum():,} sampled instructions: {recall:.3f}; "
          f"similarity ratio {ratio:.4f}")
    extrapolated = "" if m == args.n else f", extrapolated x{(args.n / m) ** 2:,.0f} (quadratic) to {args.n:,}"
    print(f"exact search on {m:,}: {t_exact:.1f} s{extrapolated}: {t_exact_full:,.0f} s "
          f"({t_exact_full / 3600:.2f} h)")
    print(f"HNSW vs exact at {args.n:,}: {t_exact_full / t_ann:,.1f}x faster")
    print(f"load average (1 min) before / after the HNSW search: {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
