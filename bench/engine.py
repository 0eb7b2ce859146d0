"""Engine throughput on the tiny model: batched calls against one request per row, in one run.

    python bench/engine.py --rows 64 --batch-size 16 --max-new-tokens 32

Prompts and responses are real (DOVE's Anthropic-helpful ``val_sft.jsonl``: instruction, response,
read from ``../shared/data/real``), cut to ``--max-chars`` characters. ``generate`` draws ``--n``
samples per prompt: batched = one ``engine.generate`` call over all rows (the engine cuts it into
``--batch-size`` batches, n samples per request); per-row = one call per prompt. ``logprobs``
scores each (prompt, response) pair the same two ways, and ``choose`` picks among "1".."5".
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipeline.config import LLM, Sampling
from pipeline.llm import get_engine

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "dove" / "data" / "anthropic_helpful" / "val_sft.jsonl"


def load_rows(path: Path, rows: int, max_chars: int) -> tuple[list, list[str]]:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()][:rows]
    prompts = [[{"role": "user", "content": r["instruction"][:max_chars]}] for r in records]
    return prompts, [r["response"][:max_chars] for r in records]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--max-chars", type=int, default=400)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()

    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens, stop=[], seed=0)
    cfg = LLM(backend="transformers", model="tiny", dtype="auto", batch_size=args.batch_size, replicas=1,
              gpus_per_replica=0, tensor_parallel_size=1, max_model_len=2048, gpu_memory_utilization=0.9,
              enable_prefix_caching=True, structured_retries=2, sampling=sampling)
    engine = get_engine(cfg)
    prompts, responses = load_rows(args.data, args.rows, args.max_chars)
    rows = len(prompts)
    engine.generate(prompts[:2], n=1, sampling=sampling)  # warm-up
    engine.logprobs(prompts[:2], responses[:2])

    results = []
    _, t = timed(lambda: engine.generate(prompts, n=args.n, sampling=sampling))
    results.append(("generate", "batched", t))
    _, t = timed(lambda: [engine.generate([p], n=args.n, sampling=sampling) for p in prompts])
    results.append(("generate", "one request per row", t))
    batched, t = timed(lambda: engine.logprobs(prompts, responses))
    results.append(("logprobs", "batched", t))
    single, t = timed(lambda: [engine.logprobs([p], [r])[0] for p, r in zip(prompts, responses, strict=True)])
    results.append(("logprobs", "one request per row", t))
    worst = max(abs(a.logprob - b.logprob) for a, b in zip(batched, single, strict=True))
    options = ["1", "2", "3", "4", "5"]
    _, t = timed(lambda: engine.choose(prompts, options))
    results.append(("choose", "batched", t))
    _, t = timed(lambda: [engine.choose([p], options) for p in prompts])
    results.append(("choose", "one request per row", t))

    tokens = sum(x.n_tokens for x in batched)
    print(f"tiny model, {rows} rows, batch_size {args.batch_size}, generate n={args.n} x "
          f"{args.max_new_tokens} new tokens, logprobs over {tokens} response tokens "
          f"(batched vs per-row max |diff| {worst:.1e})")
    print(f"{'operation':<10}{'mode':<22}{'seconds':>9}{'rows/s':>10}{'speed-up':>10}")
    base = {op: t for op, mode, t in results if mode != "batched"}
    for op, mode, t in results:
        print(f"{op:<10}{mode:<22}{t:>9.2f}{rows / t:>10.1f}{base[op] / t:>9.1f}x")


if __name__ == "__main__":
    main()
