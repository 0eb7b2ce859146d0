"""bench/engine.py measures the engine the way the stages call it, not only with every row in one call.

A stage's engine step runs through ``pipeline.execute.map_batches``, which hands it ``llm.batch_size`` rows per
call; the engine sorts and batches only within those rows. ``--compare`` once timed the engine with all rows in
one call alone and bench/README.md reported that as the engine's speed; ``as_stages_call`` is the stages' path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pipeline.config import Sampling
from pipeline.llm import get_engine

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_engine", ROOT / "bench" / "engine.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_as_stages_call_gives_the_engine_batch_size_rows_per_call():
    bench = _bench()
    sampling = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=4, stop=[], seed=0)
    cfg = bench.cfg_for("tiny", 4, "float32", sampling, max_len=512)
    engine = get_engine(cfg)  # map_batches' step gets this same cached engine
    prompts = [[{"role": "user", "content": f"question {i}: {'why ' * i}?"}] for i in range(10)]
    answers = [f"answer {i}" for i in range(10)]
    whole = [x.logprob for x in engine.logprobs(prompts, answers)]
    calls, original = [], engine.logprobs

    def recording(ps, rs):
        calls.append(len(ps))
        return original(ps, rs)

    engine.logprobs = recording
    try:
        out = bench.as_stages_call(cfg, bench._logprobs_step, {"prompt": prompts, "answer": answers})
    finally:
        del engine.logprobs
    assert calls == [4, 4, 2]  # llm.batch_size rows a call, cut from row 0 as map_batches cuts them
    assert max(abs(a - b) for a, b in zip(out["logprob"].to_pylist(), whole, strict=True)) < 1e-4
