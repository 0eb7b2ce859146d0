"""The openai backend's transport: requests in flight against one at a time, and a rerun from the cache.

    python bench/openai_transport.py --rows 32 --delay 0.25 --concurrency 16

A loopback OpenAI-compatible server (tests/openai_server.py, the tiny model) answers every request
after ``--delay`` extra seconds, standing in for a remote server's latency (a real server batches what
is in flight; this one answers one at a time after the delay). Prompts are real (DOVE's
Anthropic-helpful ``val_sft.jsonl``). The same ``choose`` call (``option_scoring: sequence``, one
request per prompt) runs with ``concurrency: 1`` (the baseline), with ``--concurrency``, and once more
from the request cache, each with a fresh cache except the last; all in this process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.openai_server

from bench.engine import DATA, load_rows, timed  # noqa: E402
from pipeline.config import LLM  # noqa: E402
from pipeline.llm.openai_engine import OpenAIEngine  # noqa: E402
from tests.openai_server import LoopbackServer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--delay", type=float, default=0.25)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-chars", type=int, default=400)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    prompts, _ = load_rows(DATA, args.rows, args.max_chars)
    server = LoopbackServer().start()
    server.delay_s = args.delay
    options = ["1", "2", "3", "4", "5"]
    try:
        base = {**server.engine.cfg.model_dump(), "backend": "openai", "base_url": server.url}
        results = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name, concurrency, cache in [("concurrency 1 (baseline)", 1, "a"),
                                             (f"concurrency {args.concurrency}", args.concurrency, "b"),
                                             ("rerun from the cache", args.concurrency, "b")]:
                os.environ["PREFPIPE_REQUEST_CACHE"] = str(Path(tmp) / cache)
                engine = OpenAIEngine(LLM.model_validate({**base, "concurrency": concurrency}))
                sent = server.requests()
                results[name], seconds = timed(lambda e=engine: e.choose(prompts, options))
                print(f"{name:28s} {seconds:7.2f} s  {server.requests() - sent:4d} requests  "
                      f"max in flight {server.max_inflight}")
                server.max_inflight = 0
        assert len({str(r) for r in results.values()}) == 1, "the three runs disagree"
    finally:
        server.stop()


if __name__ == "__main__":
    main()
