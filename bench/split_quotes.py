"""False positives of export's quote check (``pipeline.split_leaks``: a train user turn holding a test prompt's
user turn, compared as ``contamination`` compares eval prompts) on real conversations: the WildChat sample's prompts
(one per user turn, as WildFeedback makes them), split by conversation as export splits (a salted hash of the
opening turn, params.yaml's ``test_fraction`` and ``split_salt``). Prints the train prompts each rule removes, with
the texts, and the CPU time of the check (least of rounds).

    python bench/split_quotes.py            # 5 rounds
    python bench/split_quotes.py --smoke    # 1 round
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

from pipeline.config import resolve_params  # noqa: E402
from pipeline.decontam import contamination  # noqa: E402
from pipeline.dedup import opening_key, prompt_keys, turn_keys, turn_texts  # noqa: E402
from pipeline.split_leaks import quoted_test_turns, test_turns  # noqa: E402
from stages.export_split import in_test_split  # noqa: E402

SAMPLE = ROOT / "../shared/data/real/wildchat_sample/conversations.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    cfg = resolve_params(yaml.safe_load((ROOT / "params.yaml").read_text())).export
    dc = cfg.decontamination
    prompts = []
    for line in SAMPLE.open(encoding="utf-8"):
        msgs = [{"role": m["role"], "content": m["content"]} for m in json.loads(line)["messages"]]
        prompts += [msgs[:i + 1] for i, m in enumerate(msgs) if m["role"] == "user"]
    df = pl.DataFrame({"prompt": prompts})
    test = in_test_split(df.select(opening_key("prompt"))[:, 0], cfg.test_fraction, cfg.split_salt)
    df = df.with_columns(pl.Series("_split", ["test" if t else "train" for t in test]), pl.lit("wf").alias("_config"),
                         pl.format("p{}", pl.int_range(pl.len())).alias("pair_id"),
                         turn_keys(df, "prompt", dc.min_words), prompt_keys(df, "prompt")["_key"])
    tests = test_turns([(df, ["_turns"])])
    texts = turn_texts(df.filter(pl.col("_split") == "test"), "prompt", dc.min_words)
    train = df.filter(pl.col("_split") == "train")
    exact = train.explode("_turns").join(tests, left_on="_turns", right_on="_turn", how="semi")["pair_id"].unique()
    best = 1e9
    for _ in range(1 if args.smoke else args.rounds):
        c = time.process_time()
        quoted = quoted_test_turns([turn_texts(train, "prompt", dc.min_words)], tests, texts, dc.ngram, dc.threshold,
                                   dc.min_words)
        best = min(best, time.process_time() - c)
    gone = train.explode("_turns").join(quoted, left_on="_turns", right_on="_turn", how="inner")
    # the rule not taken: the whole prompt text (assistant turns too) against the test turns
    whole = contamination(prompt_keys(train, "prompt").unique("_key").sort("_key"), texts.select(
        pl.lit("test").alias("eval_set"), pl.col("_turn").cast(pl.String).alias("eval_id"),
        pl.col("_text").alias("text")).unique("text").sort("text"), dc.ngram, dc.threshold, None, dc.min_words)
    print(f"{df.height} prompts ({train.height} train, {df.height - train.height} test), {tests.height} test turns of "
          f"{dc.min_words}+ words; ngram {dc.ngram}, threshold {dc.threshold}")
    print(f"equal turns (key match): {exact.len()} train prompts removed")
    print(f"user turns holding a test turn (quoted_test_turns): {gone['pair_id'].n_unique()} train prompts removed, "
          f"{best * 1e3:.0f} ms CPU (least of rounds)")
    for r in gone.unique("pair_id").iter_rows(named=True):
        print(f"  {r['pair_id']}: {r['test']}")
    print(f"whole prompt texts (assistant turns too) against the test turns: "
          f"{train.join(whole, on='_key', how='semi').height} train prompts")


if __name__ == "__main__":
    main()
