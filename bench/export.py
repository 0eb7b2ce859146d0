"""Export's CPU steps against naive per-row Python, side by side in one run.

- PII redaction: `pipeline.pii.redact` (one polars regex pass per kind) vs `re.sub` per text.
- Near-duplicate prompts: MinHash + LSH (`pipeline.text`) vs exact pairwise Jaccard of shingle sets
  (quadratic: run on the first `--naive-rows` prompts only, and extrapolated).
- The whole stage (`build_release`) on `--rows` synthetic pairs.

    python bench/export.py --rows 100000
    python bench/export.py --smoke            # 2,000 rows: checks the bench runs
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
from pathlib import Path

import polars as pl

from pipeline.pii import KINDS, PATTERNS, luhn_valid, redact
from pipeline.text import minhash, near_duplicate_groups, ngram_hashes, normalise

sys.path.insert(0, str(Path(__file__).resolve().parent))
from executor import timed  # noqa: E402  (the sibling bench script's timer)

ROOT = Path(__file__).resolve().parents[1]

WORDS = ("alpha beta gamma delta model data train test prompt answer pair level method judge score "
         "python river mountain recipe travel history physics music garden code").split()


def synthetic_prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i and rng.random() < 0.1:  # 10% near-duplicates of an earlier prompt (one word changed)
            words = out[rng.randrange(len(out))].split()
            words[rng.randrange(len(words))] = rng.choice(WORDS)
            out.append(" ".join(words))
            continue
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))
        if rng.random() < 0.05:
            text += f" mail me at user{i}@example.com or call 555-{i % 1000:03d}-1234"
        out.append(text)
    return out


def naive_redact(texts: list[str]) -> list[str]:
    out = []
    for t in texts:
        for kind in KINDS:
            pattern, repl = PATTERNS[kind]
            py = pattern.replace("(?i)", "")
            flags = re.I if "(?i)" in pattern else 0
            if kind == "credit_card":
                t = re.sub(py, lambda m, r=repl: r if luhn_valid(m.group()) else m.group(), t, flags=flags)
            else:
                t = re.sub(py, repl.replace("${1}", r"\1"), t, flags=flags)
        out.append(t)
    return out


def naive_near_dups(texts: list[str], shingle: int, threshold: float) -> int:
    sets = []
    for t in texts:
        w = re.sub(r"[^\w]+", " ", t.lower()).split()
        sets.append({" ".join(w[i:i + shingle]) for i in range(max(1, len(w) - shingle + 1))})
    found = 0
    for i in range(len(sets)):
        for j in range(i):
            if len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= threshold:
                found += 1
                break
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--naive-rows", type=int, default=2_000)
    ap.add_argument("--smoke", action="store_true", help="2,000 rows (checks the bench runs; figures mean nothing)")
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.naive_rows = 2_000, 200
    texts = synthetic_prompts(args.rows)
    series = pl.Series(texts)

    (_, counts), t_vec = timed(redact, series, KINDS)
    _, t_naive = timed(naive_redact, texts[: args.naive_rows])
    print(f"PII redaction  vectorised: {args.rows / t_vec:,.0f} texts/s   naive re.sub: "
          f"{args.naive_rows / t_naive:,.0f} texts/s   ({sum(counts.values())} replacements)")

    def lsh(s: pl.Series):
        norm = normalise(s)
        sig = minhash(ngram_hashes(norm, 5), len(s), 128)
        return near_duplicate_groups(sig, 32, 0.8)

    labels, t_lsh = timed(lsh, series)
    n = args.naive_rows
    found_naive, t_pair = timed(naive_near_dups, texts[:n], 5, 0.8)
    found_lsh = int((lsh(series[:n]) != range(n)).sum())
    print(f"near-dups      MinHash+LSH: {args.rows:,} prompts in {t_lsh:.1f} s ({args.rows / t_lsh:,.0f}/s)   "
          f"pairwise Jaccard: {n:,} prompts in {t_pair:.1f} s (~{t_pair * (args.rows / n) ** 2 / 3600:.1f} h "
          f"for {args.rows:,})   agreement on the first {n:,}: LSH {found_lsh} vs exact {found_naive}")

    from stages.export import build_release
    sys.path.insert(0, str(ROOT))  # tests/ is not an installed package
    from tests.export_fixtures import export_cfg, pair, write_method

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        methods = ["pugc", "selfie"]
        for k, m in enumerate(methods):
            rows = [pair(f"{m}{i}", t, m, confidence=random.random()) for i, t in enumerate(texts[k::2])]
            write_method(root, m, rows)
        stats, t_stage = timed(build_release, export_cfg(methods=methods), root, root / "data" / "release", "bench")
        print(f"export stage   {args.rows:,} pairs in {t_stage:.1f} s ({args.rows / t_stage:,.0f} pairs/s); "
              f"drops {json.dumps(stats['drops'])}")


if __name__ == "__main__":
    main()
