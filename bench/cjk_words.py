"""Cost of counting each CJK character as a word (``pipeline.text.cjk_words``) in export's decontamination
(``contamination`` against params.yaml's eval sets) and test-turn keys (``turn_keys``: ``word_counts``), on the WildChat sample's
prompts (one per user turn, as WildFeedback makes them; ~19% hold CJK text). Baseline: the same calls, same
process, alternating, with ``cjk_words`` replaced by the identity and ``word_counts`` by a count of space-separated
words (main before this change). Least CPU of rounds.

    python bench/cjk_words.py            # 7 rounds
    python bench/cjk_words.py --smoke    # 1 round, 200 prompts
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import decontam, dedup  # noqa: E402
from pipeline.config import resolve_params  # noqa: E402
from pipeline.text import cjk_words, word_counts  # noqa: E402

SAMPLE = ROOT / "../shared/data/real/wildchat_sample/conversations.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    rounds, limit = (1, 200) if args.smoke else (args.rounds, None)
    params = resolve_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    cfg, dc = params.export, params.export.decontamination
    evals, _ = decontam.release_eval_prompts(dc.sets, cfg.pii_kinds, tuple(cfg.pii_phone_regions), ROOT)
    prompts = []
    for line in SAMPLE.open(encoding="utf-8"):
        msgs = [{"role": m["role"], "content": m["content"]} for m in json.loads(line)["messages"]]
        prompts += [msgs[:i + 1] for i, m in enumerate(msgs) if m["role"] == "user"]
    df = pl.DataFrame({"prompt": prompts[:limit]})
    pk = dedup.prompt_keys(df, "prompt").unique("_key").sort("_key")
    best: dict[tuple[str, str], float] = {}
    out: dict[tuple[str, str], int] = {}
    variants = {"cjk_words": cjk_words, "baseline (identity)": lambda s: s}
    counts = {"cjk_words": word_counts, "baseline (identity)": lambda s: s.str.count_matches(r"[^ ]+")}
    for r in range(rounds):
        for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
            decontam.cjk_words = variants[name]
            dedup.word_counts = counts[name]
            for step, f in (("eval_index + contamination", lambda: decontam.contamination(
                    pk, evals, dc.ngram, dc.threshold, decontam.eval_index(evals, dc.ngram, dc.min_words), dc.min_words).height),
                            ("turn_keys", lambda: int(dedup.turn_keys(df, "prompt", dc.min_words).list.len().sum()))):
                c = time.process_time()
                out[name, step] = f()
                best[name, step] = min(best.get((name, step), 1e9), time.process_time() - c)
    decontam.cjk_words, dedup.word_counts = cjk_words, word_counts
    print(f"{df.height} prompts, {evals.height} eval prompts, least CPU of {rounds} round(s)")
    print("| step | cjk_words | baseline | ratio |")
    for step in ("eval_index + contamination", "turn_keys"):
        a, b = best["cjk_words", step], best["baseline (identity)", step]
        print(f"| {step} | {a * 1e3:.0f} ms ({out['cjk_words', step]}) | {b * 1e3:.0f} ms "
              f"({out['baseline (identity)', step]}) | {a / b:.2f}x |")


if __name__ == "__main__":
    main()
