"""Contract tests for the vLLM engine's request builders, against the real ``vllm`` package.

``vllm`` imports on a CPU machine (only ``vllm.LLM(...)`` needs a GPU), so these check that the
builders construct real vLLM objects with the fields the engine relies on, and that the engine's
wiring (requests out, ``prompt_logprobs`` in) gives the transformers engine's numbers when a
stand-in ``vllm.LLM`` answers from the tiny model.
"""

from __future__ import annotations

import dataclasses
import inspect
from types import SimpleNamespace
from typing import Literal

import pytest

vllm = pytest.importorskip(
    "vllm", reason="the vllm extra is not installed (pip install -e '.[vllm]'); .ci/run runs these in a separate venv"
)

import torch  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from pipeline.config import Sampling  # noqa: E402
from pipeline.llm import GenerationFailure, sample_seed  # noqa: E402
from pipeline.llm import vllm_engine as ve  # noqa: E402
from tests.llm_configs import llm_config  # noqa: E402

pytestmark = pytest.mark.vllm

S = Sampling(temperature=0.7, top_p=0.9, max_new_tokens=32, stop=["\n\n"], seed=3)
CFG = llm_config(backend="vllm", batch_size=8, gpus_per_replica=1, gpu_memory_utilization=0.5, structured_retries=1,
                 sampling=S)
PROMPTS = [
    [{"role": "user", "content": "Hello there! Can you help me?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 12 times 12?"}],
]


class Verdict(BaseModel):
    label: Literal["SAT", "DSAT"]
    reason: str


def test_llm_kwargs_are_accepted_by_vllm_llm():
    kwargs = ve.llm_kwargs(CFG, "/models/tiny")
    known = set(inspect.signature(vllm.LLM.__init__).parameters)
    known |= {f.name for f in dataclasses.fields(vllm.EngineArgs)}
    assert set(kwargs) <= known, set(kwargs) - known
    assert kwargs["model"] == "/models/tiny" and kwargs["enable_prefix_caching"] is True
    assert kwargs["tensor_parallel_size"] == 1 and kwargs["max_model_len"] == 2048 and kwargs["seed"] == 3


def test_llm_kwargs_carry_the_revision_to_the_weights_and_the_tokenizer():
    fields = {f.name for f in dataclasses.fields(vllm.EngineArgs)}
    assert {"revision", "tokenizer_revision"} <= fields  # vLLM's names for a Hub branch, tag or commit
    kwargs = ve.llm_kwargs(CFG, "org/m", "c" * 40)
    assert kwargs["model"] == kwargs["tokenizer"] == "org/m"
    assert kwargs["revision"] == kwargs["tokenizer_revision"] == "c" * 40
    assert ve.llm_kwargs(CFG, "/models/tiny")["revision"] is None  # the default branch (or a local folder)


def test_the_vllm_engine_loads_the_commit_its_identity_names(monkeypatch):
    from transformers import AutoConfig, AutoTokenizer

    seen = []

    def recording(what, original):
        def load(path, **kw):  # the tiny model's folder, with the revision it was asked for noted
            seen.append((what, kw.get("revision")))
            return original(path, **kw)
        return load

    monkeypatch.setattr(vllm, "LLM", FakeLLM)
    monkeypatch.setattr(ve, "load_revision", lambda cfg: "c" * 40)  # pipeline.llm.identity's commit for a Hub id
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", recording("tokenizer", AutoTokenizer.from_pretrained))
    monkeypatch.setattr(AutoConfig, "from_pretrained", recording("config", AutoConfig.from_pretrained))
    engine = ve.VLLMEngine(CFG)
    engine._shortest_completion(Verdict)  # reads the model's config
    assert engine.llm.kwargs["revision"] == engine.llm.kwargs["tokenizer_revision"] == "c" * 40
    # The tokenizer and the config at that commit (the stand-in LLM's own model load asks for the config too).
    assert ("tokenizer", "c" * 40) in seen and ("config", "c" * 40) in seen and ("tokenizer", None) not in seen


def test_sampling_params_fields():
    p = ve.build_sampling_params(S, n=1, seed=11)
    assert isinstance(p, vllm.SamplingParams)
    assert (p.n, p.seed, p.temperature, p.top_p, p.max_tokens) == (1, 11, 0.7, 0.9, 32)
    assert p.stop == ["\n\n"] and p.include_stop_str_in_output is False
    assert p.structured_outputs is None


def test_one_request_per_sample_seeded_by_prompt_and_index():
    ids = [[1, 5, 6], [1, 7]]
    prompts, params = ve.build_sample_requests(PROMPTS, ids, [[0, 1, 2], [0, 1, 2]], S)
    assert [p["prompt_token_ids"] for p in prompts] == [[1, 5, 6]] * 3 + [[1, 7]] * 3
    assert all(isinstance(p, vllm.SamplingParams) and p.n == 1 for p in params)
    want = [sample_seed(S.seed, m, j) for m in PROMPTS for j in range(3)]
    assert [p.seed for p in params] == want and len(set(want)) == 6
    # The same prompt, alone, reversed or later in another call: the same seeds (batch-independent).
    _, alone = ve.build_sample_requests(PROMPTS[1:], ids[1:], [[0, 1, 2]], S)
    _, rev = ve.build_sample_requests(PROMPTS[::-1], ids[::-1], [[0, 1, 2], [0, 1, 2]], S)
    assert [p.seed for p in alone] == want[3:] and [p.seed for p in rev] == want[3:] + want[:3]
    # A retry attempt gets other seeds; greedy sends one request per prompt.
    _, retry = ve.build_sample_requests(PROMPTS, ids, [[1], [2]], S, attempt=1)
    assert [p.seed for p in retry] == [sample_seed(S.seed, PROMPTS[0], 1, 1), sample_seed(S.seed, PROMPTS[1], 2, 1)]
    greedy = S.model_copy(update={"temperature": 0.0})
    prompts, params = ve.build_sample_requests(PROMPTS, ids, [[0, 1, 2], [0, 1, 2]], greedy)
    assert len(prompts) == 2 and all(p.temperature == 0.0 and p.n == 1 for p in params)


def test_sampling_params_structured_outputs_current_api():
    from vllm.sampling_params import StructuredOutputsParams

    field, so = ve.structured_outputs_params(Verdict)
    assert field == "structured_outputs" and isinstance(so, StructuredOutputsParams)
    p = ve.build_sampling_params(S, n=2, seed=0, schema=Verdict, max_tokens=200)
    assert isinstance(p.structured_outputs, StructuredOutputsParams)
    assert p.structured_outputs.json == Verdict.model_json_schema()
    assert p.structured_outputs.disable_any_whitespace is True
    assert not p.stop and p.max_tokens == 200  # stop strings would cut the JSON


def test_logprob_requests_are_prompt_logprob_only():
    spans = [([1, 5, 6, 7, 8, 9], 3, 5), ([1, 2, 3], 2, 3)]
    prompts, params = ve.build_logprob_requests(spans)
    assert [p["prompt_token_ids"] for p in prompts] == [[1, 5, 6, 7, 8], [1, 2, 3]]
    assert isinstance(params, vllm.SamplingParams)
    assert params.prompt_logprobs == 0 and params.max_tokens == 1


class FakeLLM:
    """Stands in for ``vllm.LLM`` on CPU: answers like vLLM, computed with the tiny model."""

    bad_ids: list[int] = []  # structured requests with this prompt are always cut at max_tokens

    def __init__(self, **kwargs):
        from transformers import AutoModelForCausalLM

        self.kwargs, self.calls = kwargs, []
        self.model = AutoModelForCausalLM.from_pretrained(kwargs["model"]).eval()

    def generate(self, prompts, params, use_tqdm=True):
        from vllm.logprobs import Logprob

        self.calls.append((prompts, params))
        outs = []
        for p, sp in zip(prompts, params if isinstance(params, list) else [params] * len(prompts), strict=True):
            ids = p["prompt_token_ids"]
            entries = None
            if sp.prompt_logprobs is not None:
                with torch.no_grad():
                    logp = torch.log_softmax(self.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
                entries = [None] + [{ids[t]: Logprob(logprob=float(logp[t - 1, ids[t]]))} for t in range(1, len(ids))]
            ok = ids != self.bad_ids
            text, reason = ('{"label": "SAT", "reason": ""}', "stop") if ok else ('{"label": "S', "length")
            outputs = [SimpleNamespace(text=text, finish_reason=reason) for _ in range(sp.n)]
            outs.append(SimpleNamespace(prompt_logprobs=entries, outputs=outputs))
        return outs


@pytest.fixture
def engine(monkeypatch):
    monkeypatch.setattr(vllm, "LLM", FakeLLM)
    return ve.VLLMEngine(CFG)


def test_vllm_engine_scores_like_the_transformers_engine(engine):
    from pipeline.llm.hf import TransformersEngine

    hf = TransformersEngine(CFG.model_copy(update={"backend": "transformers"}))
    responses = ["Of course!", "144."]
    for a, b in zip(engine.logprobs(PROMPTS, responses), hf.logprobs(PROMPTS, responses), strict=True):
        assert a.n_tokens == b.n_tokens and a.logprob == pytest.approx(b.logprob, abs=1e-4)
    options = ["SAT", "DSAT", "Thank you very much"]
    for a, b in zip(engine.choose(PROMPTS, options), hf.choose(PROMPTS, options), strict=True):
        assert sum(a) == pytest.approx(1.0) and a == pytest.approx(b, abs=1e-4)
    assert len(engine.llm.calls) == 2  # one batched request list per call


def test_vllm_engine_structured_retries_and_failure_rows(engine, monkeypatch):
    monkeypatch.setattr(FakeLLM, "bad_ids", engine.codec.prompt_ids(PROMPTS[1]))
    out = engine.generate(PROMPTS, n=2, sampling=S, schema=Verdict)
    assert out[0] == [Verdict(label="SAT", reason="")] * 2
    assert all(isinstance(f, GenerationFailure) and f.attempts == 2 and "max_new_tokens" in f.error for f in out[1])
    first, retry = engine.llm.calls
    assert [p.n for p in first[1]] == [1, 1, 1, 1] and len({p.seed for p in first[1]}) == 4
    assert [p.n for p in retry[1]] == [1, 1] and len({p.seed for p in retry[1]}) == 2  # two slots, two retries
    assert {p.seed for p in retry[1]}.isdisjoint({p.seed for p in first[1]})
    assert all(p.structured_outputs is not None and p.max_tokens >= S.max_new_tokens for p in first[1])


def test_vllm_engine_marks_a_sample_cut_at_max_tokens_as_length(engine, monkeypatch):
    """A sample vLLM ended at ``max_tokens`` is ``length`` (stages drop or flag it as cut off), the others ``stop``."""
    monkeypatch.setattr(FakeLLM, "bad_ids", engine.codec.prompt_ids(PROMPTS[1]))
    out = engine.generate(PROMPTS, n=2, sampling=S)
    assert [[c.finish_reason for c in row] for row in out] == [["stop", "stop"], ["length", "length"]]


def test_vllm_engine_groups_per_sample_requests_back_per_prompt(engine):
    out = engine.generate(PROMPTS, n=3, sampling=S)
    assert [len(row) for row in out] == [3, 3] and all(c.finish_reason == "stop" for row in out for c in row)
    [(_, params)] = engine.llm.calls
    assert len(params) == 6 and {p.n for p in params} == {1}
