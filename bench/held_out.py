"""Export's held-out overlap check (``pipeline.decontam.near_held_out``), batch by batch as ``stages/export.py``
runs it: the held-out prompts indexed once per release (``held_index``, now) against indexed again for every
batch (the baseline, as before 2026-12-01). Synthetic prompts of 5-40 words from a 3,000-word vocabulary; one
batch in 20 holds "quick question " + a held-out prompt, so both versions must find the same hits.

    python bench/held_out.py --held 20000 --batches 20 --batch-rows 2000
    python bench/held_out.py --smoke    # a tiny run that checks the script works
"""

from __future__ import annotations

import argparse
import random
import time

import polars as pl

from pipeline.decontam import held_index, near_held_out


def texts(rng: random.Random, k: int) -> list[str]:
    words = [f"w{i}" for i in range(3000)]
    return [" ".join(rng.choices(words, k=rng.randint(5, 40))) for _ in range(k)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--held", type=int, default=20_000, help="held-out prompts")
    ap.add_argument("--batches", type=int, default=20, help="release batches checked")
    ap.add_argument("--batch-rows", type=int, default=2_000, help="prompts per batch")
    ap.add_argument("--ngram", type=int, default=13)
    ap.add_argument("--smoke", action="store_true", help="a tiny run (500 held out, 3 batches of 200)")
    args = ap.parse_args()
    if args.smoke:
        args.held, args.batches, args.batch_rows = 500, 3, 200
    rng = random.Random(0)
    held = pl.DataFrame({"_key": pl.Series(range(args.held), dtype=pl.UInt64), "held_out": ["held"] * args.held,
                         "_text": texts(rng, args.held)})
    copies = args.batch_rows // 20
    batches = [pl.DataFrame({"_key": pl.Series(range(i * args.batch_rows, (i + 1) * args.batch_rows), dtype=pl.UInt64),
                             "_text": texts(rng, args.batch_rows - copies) + [
                                 "quick question " + t for t in held["_text"][i * copies:(i + 1) * copies]]})
               for i in range(args.batches)]
    found = {}
    for name in ("baseline", "now"):
        t = time.perf_counter()
        hg = held_index(held, args.ngram) if name == "now" else None  # baseline: indexed inside every call
        hits = pl.concat([near_held_out(b, held, args.ngram, 0.5, 4, hg) for b in batches])
        found[name] = hits.sort("_key")
        print(f"{name:<8} {time.perf_counter() - t:6.2f} s  {hits.height:,} prompts near a held-out one "
              f"({args.batches} batches x {args.batch_rows:,} prompts, {args.held:,} held out)", flush=True)
    if not found["baseline"].equals(found["now"]):
        raise SystemExit("the two versions found different prompts")


if __name__ == "__main__":
    main()
