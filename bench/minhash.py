"""Near-duplicate prompts: prefpipe's vectorised MinHash + LSH against `datasketch` and `rensa`, one run.

All three get the same normalised prompts and the same word 5-gram shingles, 128 permutations, 32 bands
and a 0.8 Jaccard threshold, and group prompts into near-duplicate clusters:

- prefpipe: `pipeline.text` (word n-gram hashes in numpy, MinHash signatures by rensa's
  `digest_matrix_from_flat_token_hashes` over that flat buffer, LSH band by band in numpy, candidate pairs
  verified on their signatures, connected components).
- former prefpipe: the same, with the hand-written numpy multiply-shift MinHash it used before (kept here
  as the baseline that lost).
- datasketch: `MinHash.update` per shingle and `MinHashLSH` insert/query per prompt (the usual recipe).
- rensa: `RMinHash` signatures in Rust from the same shingles, `RMinHashLSH` candidates (`query_all`),
  verified on their signatures like prefpipe's.

Quality is measured against exact Jaccard: every pair of prompts the generator made near-identical
(one word changed) is a true pair when its exact shingle Jaccard reaches the threshold; recall = true pairs
that end in one cluster; precision = clustered pairs (sampled) whose exact Jaccard reaches the threshold - 0.1.

    python bench/minhash.py --rows 100000
    python bench/minhash.py --smoke
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from executor import timed  # noqa: E402

from pipeline.text import (  # noqa: E402
    connected_components,
    minhash,
    mix64,
    near_duplicate_groups,
    ngram_hashes,
    normalise,
)

NUM_PERM, BANDS, SHINGLE, THRESHOLD = 128, 32, 5, 0.8
WORDS = ("alpha beta gamma delta model data train test prompt answer pair level method judge score python river "
         "mountain recipe travel history physics music garden code coffee grinder espresso bean roast").split()


def prompts_with_twins(n: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    """``n`` prompts; 10% are copies of an earlier one with one word changed: (copy, original) pairs."""
    rng = random.Random(seed)
    texts, twins = [], []
    for i in range(n):
        if i and rng.random() < 0.1:
            j = rng.randrange(i)
            words = texts[j].split()
            words[rng.randrange(len(words))] = rng.choice(WORDS)
            texts.append(" ".join(words))
            twins.append((i, j))
        else:
            texts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 80))))
    return texts, twins


def shingles(text: str) -> set[str]:
    w = text.split()
    return {" ".join(w[i:i + SHINGLE]) for i in range(max(1, len(w) - SHINGLE + 1))}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def prefpipe_groups(texts: pl.Series) -> np.ndarray:
    sig = minhash(ngram_hashes(texts, SHINGLE), len(texts), NUM_PERM)
    return near_duplicate_groups(sig, BANDS, THRESHOLD)


def numpy_minhash(grams: pl.DataFrame, n_rows: int, num_perm: int) -> np.ndarray:
    """prefpipe's former MinHash: multiply-shift hashing (a_j * h + b_j mod 2^64) >> 32 per permutation."""
    sig = np.full((n_rows, num_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
    g = grams.sort("row")
    row, h = g["row"].to_numpy(), g["h"].to_numpy()
    starts = np.r_[0, np.flatnonzero(np.diff(row)) + 1]
    a = mix64(np.arange(1, num_perm + 1, dtype=np.uint64)) | np.uint64(1)
    b = mix64(a)
    with np.errstate(over="ignore"):
        for j in range(num_perm):
            sig[row[starts], j] = np.minimum.reduceat((h * a[j] + b[j]) >> np.uint64(32), starts)
    return sig


def former_groups(texts: pl.Series) -> np.ndarray:
    sig = numpy_minhash(ngram_hashes(texts, SHINGLE), len(texts), NUM_PERM)
    return near_duplicate_groups(sig, BANDS, THRESHOLD)


def rensa_groups(texts: list[str]) -> np.ndarray:
    import rensa

    mhs = []
    for t in texts:
        m = rensa.RMinHash(NUM_PERM, 0)
        m.update(list(shingles(t)))
        mhs.append(m)
    lsh = rensa.RMinHashLSH(THRESHOLD, NUM_PERM, BANDS)
    lsh.insert_many(mhs)
    sig = np.asarray([m.digest() for m in mhs], dtype=np.uint32)
    a, b = [], []
    for i, cands in enumerate(lsh.query_all(mhs)):
        for j in cands:
            if j > i:
                a.append(i)
                b.append(j)
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    keep = (sig[a] == sig[b]).mean(axis=1) >= THRESHOLD if len(a) else np.zeros(0, bool)
    return connected_components(len(texts), a[keep], b[keep])


def datasketch_groups(texts: list[str]) -> np.ndarray:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, params=(BANDS, NUM_PERM // BANDS))
    sigs = []
    for i, t in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM, seed=1)
        m.update_batch([s.encode() for s in shingles(t)])
        lsh.insert(i, m)
        sigs.append(m)
    a, b = [], []
    for i, m in enumerate(sigs):
        for j in lsh.query(m):
            if j > i and m.jaccard(sigs[j]) >= THRESHOLD:
                a.append(i)
                b.append(j)
    return connected_components(len(texts), np.asarray(a, np.int64), np.asarray(b, np.int64))


def quality(labels: np.ndarray, texts: list[str], twins: list[tuple[int, int]], rng: random.Random) -> tuple[float, float]:
    true = [(i, j) for i, j in twins if jaccard(texts[i], texts[j]) >= THRESHOLD]
    recall = sum(labels[i] == labels[j] for i, j in true) / max(1, len(true))
    members = [np.flatnonzero(labels == g) for g in np.unique(labels[labels != np.arange(len(labels))])]
    pairs = [(m[0], k) for m in members for k in m[1:]]
    sample = rng.sample(pairs, min(2000, len(pairs)))
    precision = sum(jaccard(texts[i], texts[j]) >= THRESHOLD - 0.1 for i, j in sample) / max(1, len(sample))
    return recall, precision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--datasketch-rows", type=int, default=20_000, help="datasketch is per-row Python: run it on a prefix")
    ap.add_argument("--smoke", action="store_true", help="a tiny run that checks the script works")
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.datasketch_rows = 2_000, 1_000
    texts, twins = prompts_with_twins(args.rows)
    norm = normalise(pl.Series(texts))
    rng = random.Random(0)

    ours, t_ours = timed(prefpipe_groups, norm)
    print(f"prefpipe:   {args.rows:,} prompts in {t_ours:.2f} s; recall {{:.3f}}, precision {{:.3f}}".format(
        *quality(ours, texts, twins, rng)))
    former, t_former = timed(former_groups, norm)
    print(f"former:     {args.rows:,} prompts in {t_former:.2f} s ({t_former / t_ours:.1f}x prefpipe's time); "
          "recall {:.3f}, precision {:.3f}".format(*quality(former, texts, twins, rng)))
    try:
        theirs, t_rensa = timed(rensa_groups, norm.to_list())
        print(f"rensa:      {args.rows:,} prompts in {t_rensa:.2f} s; recall {{:.3f}}, precision {{:.3f}}".format(
            *quality(theirs, texts, twins, rng)))
    except ImportError:
        print("rensa: not installed (pip install rensa)")
    n = min(args.rows, args.datasketch_rows)
    sub = [(i, j) for i, j in twins if i < n]
    try:
        ds, t_ds = timed(datasketch_groups, norm[:n].to_list())
        _, t_ours_n = timed(prefpipe_groups, norm[:n])  # timed only: its quality is reported above
        print(f"datasketch: {n:,} prompts in {t_ds:.2f} s (prefpipe on the same {n:,}: {t_ours_n:.2f} s, "
              f"{t_ds / t_ours_n:.1f}x faster); recall {{:.3f}}, precision {{:.3f}}".format(*quality(ds, texts[:n], sub, rng)))
    except ImportError:
        print("datasketch: not installed (pip install datasketch)")


if __name__ == "__main__":
    main()
