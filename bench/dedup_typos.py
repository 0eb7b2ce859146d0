"""Recall of export's near-duplicate prompts on real multi-turn prompts with a one-character typo in the last
user turn: this checkout's ``pipeline/dedup.py`` (whole prompt AND last user turn) against ab3edb4's
(``bench/_dedup_baseline.py``: whole prompt only).

Every WildChat-sample conversation with 2+ user turns gives a prompt (up to its last user turn) and a copy with
one word of that turn given an extra "x"; a pair counts as found when ``_clusters`` (shipped params: 5-word
shingles, 128 permutations, 32 bands, 0.8) puts both in one cluster.

    python bench/dedup_typos.py
    python bench/dedup_typos.py --smoke   # the first 200 conversations
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT.parent / "shared/data/real/wildchat_sample/conversations.jsonl"


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pairs(limit: int | None = None, seed: int = 0) -> tuple[pl.DataFrame, list[int]]:
    rng, rows, words = random.Random(seed), [], []
    for line in SAMPLE.read_text().splitlines()[:limit]:
        msgs = [{"role": m["role"], "content": m["content"]} for m in json.loads(line)["messages"]]
        users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
        if len(users) < 2:
            continue
        p = msgs[: users[-1] + 1]
        w = p[-1]["content"].split()
        if len(w) < 2:
            continue
        q = [dict(m) for m in p]
        k = rng.randrange(len(w))
        w[k] += "x"
        q[-1]["content"] = " ".join(w)
        rows += [p, q]
        words.append(len(w))
    return pl.DataFrame({"prompt": rows}), words


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="the first 200 conversations only")
    args = ap.parse_args()
    if not SAMPLE.exists():
        print(f"{SAMPLE}: not there (the shared real data); nothing to measure")
        return
    df, words = pairs(200 if args.smoke else None)
    for name, path in (("ab3edb4", ROOT / "bench/_dedup_baseline.py"), ("this checkout", ROOT / "pipeline/dedup.py")):
        mod = load(name.replace(" ", "_"), path)
        pk = mod.prompt_keys(df, "prompt")
        sigs = mod.Signatures(5, 128)
        sigs.add(pk["_key"], pk["_text"], *([pk["_last"]] if "_last" in pk.columns else []))
        cl = mod._clusters(pk["_key"], sigs, 32, 0.8)
        cluster = dict(zip(cl["_key"].to_list(), cl["_cluster"].to_list(), strict=True))
        keys = pk["_key"].to_list()
        found = [cluster[keys[2 * i]] == cluster[keys[2 * i + 1]] for i in range(len(words))]
        short = [f for f, n in zip(found, words, strict=True) if n < 20]
        print(f"{name}: {sum(found)} of {len(found)} pairs found; last turn under 20 words: {sum(short)} of {len(short)}")


if __name__ == "__main__":
    main()
