"""Sampling that does not depend on batching (per-sample seeds), the decoding loop against
``model.generate``, the top-p sampler's distribution, and CPU threads; on the tiny model and real
Koala prompts."""

from __future__ import annotations

import copy
import json

import pyarrow as pa
import pytest
import torch
from pydantic import ValidationError

from pipeline.config import Execution, Sampling
from pipeline.execute import Checkpoint, map_batches
from pipeline.llm import Completion, get_engine
from pipeline.llm.cpu import candidates, measure
from pipeline.llm.decode import RowSampler
from pipeline.llm.hf import TransformersEngine, budget_batches
from tests.llm_configs import execution_config, llm_config

SAMPLING = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=24, stop=[], seed=7)
CFG = llm_config(batch_size=16, sampling=SAMPLING)


@pytest.fixture(scope="module")
def engine() -> TransformersEngine:
    return TransformersEngine(CFG)


@pytest.fixture(scope="module")
def prompts(real) -> list[list[dict[str, str]]]:
    lines = (real / "koala" / "koala_test_set.jsonl").read_text(encoding="utf-8").splitlines()[:16]
    return [[{"role": "user", "content": json.loads(x)["prompt"][:300]}] for x in lines]


def with_cfg(engine: TransformersEngine, **update) -> TransformersEngine:
    other = copy.copy(engine)
    other.cfg = engine.cfg.model_copy(update=update)
    return other


# --- the same samples whatever the batching --------------------------------------------------------


def test_samples_do_not_depend_on_batch_size_order_or_neighbours(engine, prompts):
    want = engine.generate(prompts, n=2, sampling=SAMPLING)  # one batch of 16
    assert len({c.text for row in want for c in row}) > 24  # real samples, not copies
    for batch_size in (1, 2, 7):
        assert with_cfg(engine, batch_size=batch_size).generate(prompts, n=2, sampling=SAMPLING) == want, batch_size
    assert with_cfg(engine, batch_tokens=120).generate(prompts, n=2, sampling=SAMPLING) == want  # token budget
    assert engine.generate(prompts[::-1], n=2, sampling=SAMPLING) == want[::-1]
    others = [[{"role": "user", "content": f"Say something about the number {i}."}] for i in range(5)]
    mixed = engine.generate(others[:3] + prompts[:4] + others[3:], n=2, sampling=SAMPLING)
    assert mixed[3:7] == want[:4]
    assert engine.generate(prompts[5:6], n=2, sampling=SAMPLING) == want[5:6]
    assert engine.generate(prompts, n=2, sampling=SAMPLING.model_copy(update={"seed": 8})) != want


def test_sample_j_is_the_same_alone_or_among_n(engine, prompts):
    p = prompts[0]
    [both] = engine.generate([p], n=3, sampling=SAMPLING)
    alone = engine._sample([p, p], [[1], [2]], SAMPLING)
    assert [text for [(text, _)] in alone] == [c.text for c in both[1:]] and both[1] != both[2]
    [[retry]] = engine._sample([p], [[1]], SAMPLING, attempt=1)  # a structured retry: another sample
    assert retry[0] != both[1].text


def test_greedy_equals_model_generate_and_cut_samples_say_length(engine, prompts):
    greedy = SAMPLING.model_copy(update={"temperature": 0.0})
    out = engine.generate(prompts[:6], n=2, sampling=greedy)
    tok = engine.tokenizer
    for messages, (a, b) in zip(prompts[:6], out, strict=True):
        ids = torch.tensor([engine.codec.prompt_ids(messages)])
        with torch.inference_mode():
            seq = engine.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                        max_new_tokens=greedy.max_new_tokens, eos_token_id=engine.eos_ids,
                                        pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        ended = any(t in engine.eos_ids for t in seq)
        seq = seq[: min([seq.index(t) for t in engine.eos_ids if t in seq], default=len(seq))]
        assert a == b == Completion(tok.decode(seq, skip_special_tokens=True), "stop" if ended else "length")
    short = engine.generate(prompts[:8], n=2, sampling=SAMPLING.model_copy(update={"max_new_tokens": 2}))
    reasons = [c.finish_reason for row in short for c in row]
    assert "length" in reasons and all(c.text or c.finish_reason == "stop" for row in short for c in row)


def test_row_sampler_draws_the_top_p_nucleus_exactly():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    p = torch.softmax(logits[0].double() / 0.7, -1)
    n = 20000
    for top_p, tries in ((0.8, 8), (0.8, 1), (0.3, 1), (1.0, 8)):  # tries=1: most rows take the sorting path
        picks = RowSampler(list(range(n)), 1, 0.7, top_p, tries=tries)(logits.repeat(n, 1), torch.arange(n), 0)
        ranked, order = p.sort(descending=True)
        keep = (ranked.cumsum(0) - ranked) < top_p
        want = torch.zeros(6, dtype=torch.double)
        want[order[keep]] = ranked[keep] / ranked[keep].sum()
        freq = torch.bincount(picks, minlength=6).double() / n
        assert torch.allclose(freq, want, atol=0.012), (top_p, tries, freq, want)


def test_budget_batches_sort_by_length_and_bound_padded_tokens():
    lengths = [50, 10, 30, 10, 200, 30]
    batches = budget_batches(lengths, tokens=100, rows=3)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert [[lengths[i] for i in b] for b in batches] == [[10, 10, 30], [30, 50], [200]]


# --- a stage step through map_batches: local and Ray ----------------------------------------------


def sample_step(batch: pa.Table, engine) -> pa.Table:
    from stages.pugc import sample_responses

    return sample_responses(batch, engine, k=2, sampling=SAMPLING)


def execution(backend: str, checkpoint_rows: int) -> Execution:
    return execution_config(backend=backend, batch_size=64, checkpoint_rows=checkpoint_rows, max_reject_fraction=0.1,
                            target_shard_bytes=1 << 20, row_group_bytes=1 << 20, spill_bytes=1 << 20, on_gate_failure="error")


def run_step(table, tmp_path, backend: str, batch_size: int, checkpoint_rows: int, replicas: int = 1):
    ck = Checkpoint(tmp_path / f"{backend}-{batch_size}-{checkpoint_rows}-{replicas}", fingerprint="test")
    cfg = CFG.model_copy(update={"batch_size": batch_size, "replicas": replicas})
    return map_batches(table, sample_step, execution=execution(backend, checkpoint_rows), engine=cfg, checkpoint=ck)


@pytest.fixture(scope="module")
def queries(prompts) -> pa.Table:
    return pa.table({"prompt_id": [f"q{i}" for i in range(12)], "query": [p[0]["content"] for p in prompts[:12]]})


def test_stage_samples_do_not_depend_on_batch_size_or_checkpoint_rows(queries, tmp_path):
    want = run_step(queries, tmp_path, "local", 12, 100)
    assert want.num_rows == 24
    for batch_size, checkpoint_rows in ((1, 100), (5, 100), (3, 7)):
        assert run_step(queries, tmp_path, "local", batch_size, checkpoint_rows).equals(want), (batch_size, checkpoint_rows)


@pytest.mark.ray
def test_stage_samples_are_the_same_on_ray_replicas(queries, tmp_path, ray_cluster):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(__import__(__name__))  # workers cannot import the tests folder
    want = run_step(queries, tmp_path, "local", 12, 100)
    assert run_step(queries, tmp_path, "ray", 5, 7, replicas=2).equals(want)


# --- CPU threads ---------------------------------------------------------------------------------


def test_cpu_threads_setting_is_validated_and_honoured(engine, prompts, monkeypatch):
    from pipeline.llm import hf

    with pytest.raises(ValidationError, match="cpu_threads"):
        CFG.model_validate({**CFG.model_dump(), "cpu_threads": 0})
    assert CFG.model_validate({**CFG.model_dump(), "cpu_threads": "auto"}).cpu_threads == "auto"
    one = with_cfg(engine, cpu_threads=1)
    assert one.cpu_threads == {"decode": 1, "prefill": 1}
    seen = []
    decode = hf.decode
    monkeypatch.setattr(hf, "decode", lambda *a, **kw: seen.append(torch.get_num_threads()) or decode(*a, **kw))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one.generate(prompts[:2], n=1, sampling=SAMPLING)
        assert seen == [1] and torch.get_num_threads() == 2  # set for the call, restored after it
    finally:
        torch.set_num_threads(before)


def test_auto_threads_are_measured_among_the_allowed_counts(engine):
    assert candidates(1) == [1] and candidates(2) == [1, 2] and candidates(6) == [1, 2, 4, 6]
    auto = engine.cpu_threads
    assert set(auto) == {"decode", "prefill"} and all(v in candidates(torch.get_num_threads()) for v in auto.values())
    result = measure(engine.model, engine._cache_arg, limit=2, rounds=2)
    assert set(result["seconds"]["decode"]) == {1, 2} and result["decode"] in (1, 2)
    assert all(t > 0 for kind in result["seconds"].values() for t in kind.values())


def test_the_projects_llm_section_sets_threads_and_token_budget(params):
    assert params.llm.cpu_threads == "auto" and params.llm.batch_tokens > 0
    assert get_engine(params.llm).cpu_threads  # measured on this CPU


def test_an_answer_that_reaches_a_stop_string_on_its_last_token_is_finished_not_cut_off():
    """``finish_reason`` is "length" only when the budget ran out before an end: an answer that hits a stop
    string with its last allowed token ended, and one that ends early is no cut either."""
    from types import SimpleNamespace

    engine = SimpleNamespace(tokenizer=SimpleNamespace(decode=lambda ids, skip_special_tokens: "".join(map(chr, ids))))
    s = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=4, stop=["\n\n"], seed=7)

    def finish(text: str, ended: bool = False) -> tuple[str, bool]:
        return TransformersEngine._finish(engine, [ord(c) for c in text], ended, s)

    assert finish("ab\n\n") == ("ab", False)
    assert finish("abcd") == ("abcd", True)
    assert finish("abc", ended=True) == ("abc", False) and finish("abc") == ("abc", False)
