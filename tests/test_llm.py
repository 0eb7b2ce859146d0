"""The engine layer on the built-in tiny model: templating boundary, scoring, choosing, sampling,
structured output, and an engine inside a Ray actor."""

from __future__ import annotations

import copy
import shutil
import sys
from typing import Literal

import pyarrow as pa
import pytest
import torch
from pydantic import BaseModel, field_validator

from pipeline.config import Sampling
from pipeline.llm import Completion, GenerationFailure, LogProb, get_engine
from pipeline.llm.chat import ChatCodec, InputTooLong, TemplateError
from pipeline.llm.hf import TransformersEngine
from pipeline.llm.tiny import build_tiny, resolve_model, tiny_path
from tests.conftest import ROOT
from tests.llm_configs import execution_config, llm_config

SAMPLING = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=24, stop=[], seed=7)
CFG = llm_config(batch_size=8, sampling=SAMPLING)

PROMPTS = [
    [{"role": "user", "content": "Hello there! Can you help me?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 12 times 12?"}],
    [
        {"role": "user", "content": "Write a haiku about autumn."},
        {"role": "assistant", "content": "Red leaves drift and fall."},
        {"role": "user", "content": "That is wrong, try again."},
    ],
]
RESPONSES = ["Of course, what do you need?", "144.", "  Quiet afternoon; the river carries them far.  "]

# A Llama-3-like layout: header, blank line, trimmed content, end-of-turn token, no trailing text.
LLAMA3_LIKE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '<|endoftext|>\n\n' + (m['content'] | trim) + eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant<|endoftext|>\n\n' }}{% endif %}"
)
# Plain text turns; the space between "Assistant:" and the answer belongs to the answer.
PLAIN = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ 'Assistant: ' + m['content'] + eos_token + '\n' }}"
    "{% else %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


@pytest.fixture(scope="module")
def engine() -> TransformersEngine:
    return TransformersEngine(CFG)


def with_template(engine: TransformersEngine, template: str | None) -> TransformersEngine:
    """A shallow copy of the engine whose tokenizer (a copy) uses another chat template."""
    if template is None:
        return engine
    other = copy.copy(engine)
    other.tokenizer = copy.deepcopy(engine.tokenizer)
    other.tokenizer.chat_template = template
    other.codec = ChatCodec(other.tokenizer)
    return other


def expected_response_ids(tok, template: str | None, response: str) -> list[int]:
    """What the engine must score, written out per template by hand."""
    text = {None: response, "llama3": response.strip(), "plain": " " + response}[template]
    return tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def direct_logprob(model, tok, messages, response_ids) -> float:
    """Teacher forcing on one unpadded sequence, straight from the model's logits."""
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + response_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    return sum(float(logp[len(p_ids) + k - 1, t]) for k, t in enumerate(response_ids))


# --- the tiny model ------------------------------------------------------------------------------


def test_tiny_builds_deterministically(tmp_path):
    a, b = build_tiny(tmp_path / "a"), build_tiny(tmp_path / "b")
    for name in ["tokenizer.json", "model.safetensors", "config.json", "chat_template.jinja"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert resolve_model("tiny") == str(tiny_path())
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct", hub=False) == "Qwen/Qwen2.5-0.5B-Instruct"


def test_a_model_that_cannot_be_loaded_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    """A wrong `llm.model` (a missing folder, a folder that holds no model, a Hub id not in the offline cache)
    is a ``ModelLoadError`` (a ``StageError``: `prefpipe run` prints it as one line), not a traceback ending
    in a Hub id validation error."""
    from pipeline import cli
    from pipeline.errors import ModelLoadError, StageError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = str(tmp_path / "checkpoints" / "sft")
    with pytest.raises(ModelLoadError, match=r"model '.*/checkpoints/sft': no such file or folder; set llm.model"):
        resolve_model(missing)
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelLoadError, match=r"the folder holds no config\.json, so it is not a Hugging Face model"):
        TransformersEngine(CFG.model_copy(update={"model": str(tmp_path)}))
    with pytest.raises(ModelLoadError, match=r"model 'prefpipe-tests/no-such-model': no folder of that name in .*; "
                                             r"HF_HUB_OFFLINE is set and it is not in the local cache; run once online "
                                             r"to cache it, or set llm.model"):
        TransformersEngine(CFG.model_copy(update={"model": "prefpipe-tests/no-such-model"}))
    assert issubclass(ModelLoadError, StageError)
    monkeypatch.setitem(sys.modules, "vllm", None)  # `backend: vllm` without the package (installed or not here)
    from pipeline.llm.vllm_engine import import_vllm

    with pytest.raises(ModelLoadError, match=r"the vllm backend needs the vllm package: pip install -e \"\.\[vllm\]\""):
        import_vllm()

    def main(params):  # what a stage does first with its model: load it
        get_engine(CFG.model_copy(update={"model": missing}))

    monkeypatch.setattr("stages.curry.main", main)
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    assert cli.main(["run", "curry"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"prefpipe: model '{missing}': no such file or folder")


def test_a_model_without_a_chat_template_stops_the_stage_in_one_line(tmp_path, monkeypatch, capsys):
    """Was a traceback ending in ``TemplateError`` (a ValueError `prefpipe run` did not report)."""
    from pipeline import cli

    shutil.copytree(resolve_model("tiny"), tmp_path / "base")
    (tmp_path / "base" / "chat_template.jinja").unlink()  # a base model: no chat template
    monkeypatch.setattr("stages.curry.main", lambda params: get_engine(CFG.model_copy(update={"model": "./base"})))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "curry", "--params", str(ROOT / "params.yaml")]) == 1
    err = capsys.readouterr().err  # after transformers' loading progress bar
    assert "Traceback" not in err and err.endswith(
        "\nprefpipe: model './base' has no chat template; set llm.model (or the role's model) to an instruct/chat "
        "model, or set tokenizer.chat_template in its folder\n")



def test_tiny_model_shape_and_special_tokens(engine):
    cfg, tok = engine.model.config, engine.tokenizer
    assert cfg.hidden_size // cfg.num_attention_heads == 64 and cfg.head_dim == 64
    assert cfg.vocab_size == len(tok) and 1000 < len(tok) <= 4096
    assert {tok.eos_token, tok.pad_token, tok.bos_token} == {"<|im_end|>", "<|pad|>", "<|bos|>"}
    text = tok.apply_chat_template(PROMPTS[0], tokenize=False, add_generation_prompt=True)
    assert text == "<|bos|><|im_start|>user\nHello there! Can you help me?<|im_end|>\n<|im_start|>assistant\n"


# --- logprobs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", [None, "llama3", "plain"])
def test_logprobs_match_direct_teacher_forcing(engine, template):
    eng = with_template(engine, {None: None, "llama3": LLAMA3_LIKE, "plain": PLAIN}[template])
    got = eng.logprobs(PROMPTS, RESPONSES)
    for messages, response, lp in zip(PROMPTS, RESPONSES, got, strict=True):
        want_ids = expected_response_ids(eng.tokenizer, template, response)
        ids, start, end = eng.codec.response_span(messages, response)
        assert ids[start:end] == want_ids  # the boundary is exact, end-of-turn token included
        assert isinstance(lp, LogProb) and lp.n_tokens == len(want_ids)
        assert lp.logprob == pytest.approx(direct_logprob(eng.model, eng.tokenizer, messages, want_ids), abs=1e-4)


def test_boundary_falls_back_when_tokens_merge_and_rejects_unstable_templates(engine):
    eng = with_template(engine, PLAIN)
    # "Assistant:" followed by ":)" is tokenised as one "::)" run: no token prefix, but a text prefix.
    ids, start, end = eng.codec.response_span(PROMPTS[0], ":)")
    p_ids = eng.codec.prompt_ids(PROMPTS[0])
    assert ids[:start] == p_ids and ids[start:end] == eng.codec.encode(" :)") + [eng.tokenizer.eos_token_id]
    unstable = with_template(engine, "{% if messages[-1]['role'] == 'assistant' %}DONE {% endif %}" + PLAIN)
    with pytest.raises(TemplateError, match="not a prefix"):
        unstable.logprobs(PROMPTS[:1], ["hi"])


@pytest.mark.parametrize(("template", "what"), [
    ("{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}",
     "the chat template drops the assistant message"),
    ("{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] }}{% endif %}{% endfor %}",
     "the templated prompt is empty; nothing to condition on"),
])
def test_a_chat_template_that_cannot_be_scored_through_says_what_to_set(engine, template, what):
    """Both said only what was wrong: nothing named the setting to change."""
    with pytest.raises(TemplateError) as err:
        with_template(engine, template).logprobs(PROMPTS[:1], ["hi"])
    assert str(err.value).startswith("model '") and str(err.value).endswith(
        f"': {what}; set llm.model (or the role's model) to an instruct/chat model whose template writes every turn, "
        "or fix tokenizer.chat_template in its folder")


def test_inputs_longer_than_max_model_len_are_refused_with_a_clear_error(engine):
    short = copy.copy(engine)
    short.codec = ChatCodec(engine.tokenizer, name="tiny", max_len=20)
    long_prompt = [{"role": "user", "content": "Write a haiku about autumn. " * 5}]
    with pytest.raises(InputTooLong, match=r"prompt of \d+ tokens does not fit llm.max_model_len=20"):
        short.generate([long_prompt])
    with pytest.raises(InputTooLong, match="prompt \\+ response"):
        short.logprobs([[{"role": "user", "content": "Hi"}]], ["Red leaves drift and fall. " * 4])


def test_logprobs_batched_equals_one_by_one(engine):
    batched = engine.logprobs(PROMPTS, RESPONSES)
    single = [engine.logprobs([p], [r])[0] for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    for a, b in zip(batched, single, strict=True):
        assert a.n_tokens == b.n_tokens and a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_a_model_whose_head_cannot_be_split_is_scored_by_its_full_forward(engine, monkeypatch):
    """pipeline/llm/hf.py takes the decoder and the output layer apart only where logits are exactly the output
    layer over the decoder's states; a model without them (``get_decoder`` not implemented) or with a logit
    transform (Gemma 2's soft-capping) is run whole: the same scores and the same greedy answers, from its logits."""
    assert engine._split
    monkeypatch.setattr(engine.model, "get_decoder", lambda: (_ for _ in ()).throw(NotImplementedError))
    assert not engine._head_is_linear()
    monkeypatch.undo()
    monkeypatch.setattr(engine.model.config, "final_logit_softcapping", 30.0, raising=False)
    assert not engine._head_is_linear()
    monkeypatch.undo()
    assert engine._head_is_linear()
    whole = copy.copy(engine)
    whole._split = False
    for a, b in zip(whole.logprobs(PROMPTS, RESPONSES), engine.logprobs(PROMPTS, RESPONSES), strict=True):
        assert a.n_tokens == b.n_tokens and a.logprob == pytest.approx(b.logprob, abs=1e-4)
    options = ["SAT", "DSAT", "Thank you very much"]
    for a, b in zip(whole.choose(PROMPTS, options), engine.choose(PROMPTS, options), strict=True):
        assert a == pytest.approx(b, abs=1e-5)
    greedy = SAMPLING.model_copy(update={"temperature": 0.0, "max_new_tokens": 12})
    assert [[c.text for c in r] for r in whole.generate(PROMPTS, sampling=greedy)] == \
        [[c.text for c in r] for r in engine.generate(PROMPTS, sampling=greedy)]


# --- choose --------------------------------------------------------------------------------------


def test_choose_is_a_distribution_matching_direct_scores(engine, monkeypatch):
    options = ["SAT", "DSAT", "Thank you very much"]
    tok = engine.tokenizer
    assert len(tok("Thank you very much", add_special_tokens=False)["input_ids"]) > 1  # multi-token option
    calls = []
    assert engine._split  # a Llama: vocabulary logits only where a scored token is predicted
    forward = engine._decoder.forward
    monkeypatch.setattr(engine._decoder, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    probs = engine.choose(PROMPTS, options)
    assert len(calls) == 2  # the prompts once (KV cache kept), then all prompts x options at once
    for messages, dist in zip(PROMPTS, probs, strict=True):
        assert sum(dist) == pytest.approx(1.0, abs=1e-9) and all(p > 0 for p in dist)
        direct = torch.tensor(
            [direct_logprob(engine.model, tok, messages, expected_response_ids(tok, None, o)) for o in options]
        )
        assert dist == pytest.approx(torch.softmax(direct, 0).tolist(), abs=1e-4)


def test_choose_separates_an_option_from_its_prefix(engine):
    # "1" vs "12": the end-of-turn token makes "1" a finished answer, not the start of "12".
    [[p1, p12]] = engine.choose(PROMPTS[:1], ["1", "12"])
    assert p1 != pytest.approx(p12) and p1 + p12 == pytest.approx(1.0)


# --- generate ------------------------------------------------------------------------------------


@pytest.fixture
def generate_calls(monkeypatch):
    """(prompts, samples per prompt) of every batch the engine decodes."""
    from pipeline.llm import hf

    calls = []
    decode = hf.decode
    monkeypatch.setattr(hf, "decode", lambda model, prompts, k, *a, **kw: calls.append((len(prompts), k))
                        or decode(model, prompts, k, *a, **kw))
    return calls


def test_generate_n_samples_in_one_request_and_reproducible(engine, generate_calls):
    out = engine.generate(PROMPTS, n=4, sampling=SAMPLING)
    assert generate_calls == [(3, 4)]  # one batch: 3 prompts prefilled once, 4 samples each
    assert [len(row) for row in out] == [4, 4, 4] and all(isinstance(c, Completion) for row in out for c in row)
    assert all(c.finish_reason in ("stop", "length") for row in out for c in row)
    assert len({c.text for row in out for c in row}) == 12  # sampled, not copies
    assert engine.generate(PROMPTS, n=4, sampling=SAMPLING) == out
    assert engine.generate(PROMPTS, n=4, sampling=SAMPLING.model_copy(update={"seed": 8})) != out
    rng = torch.get_rng_state()
    engine.generate(PROMPTS[:1], n=1, sampling=SAMPLING)
    assert torch.equal(rng, torch.get_rng_state())  # the caller's RNG is untouched


def test_generate_batches_by_batch_size(engine, generate_calls):
    small = copy.copy(engine)
    small.cfg = CFG.model_copy(update={"batch_size": 2})
    out = small.generate(PROMPTS, n=2, sampling=SAMPLING)
    assert generate_calls == [(2, 2), (1, 2)] and [len(r) for r in out] == [2, 2, 2]
    assert out == engine.generate(PROMPTS, n=2, sampling=SAMPLING)  # the batch size changes no sample


def test_generate_honours_stop_strings(engine):
    free = engine.generate(PROMPTS, n=1, sampling=SAMPLING)
    text = free[0][0].text
    stop = text[4:6]
    assert len(stop) == 2 and stop in text
    stopped = engine.generate(PROMPTS, n=1, sampling=SAMPLING.model_copy(update={"stop": [stop]}))
    assert stopped[0][0] == Completion(text[: text.find(stop)], "stop")  # a stop string ends the answer
    greedy = SAMPLING.model_copy(update={"temperature": 0.0})
    assert engine.generate(PROMPTS[:1], n=2, sampling=greedy)[0][0] == engine.generate(PROMPTS[:1], sampling=greedy)[0][0]


# --- structured output ---------------------------------------------------------------------------


class Verdict(BaseModel):
    label: Literal["SAT", "DSAT"]
    reason: str
    score: int
    tags: list[str]


class AlwaysInvalid(BaseModel):
    label: Literal["SAT", "DSAT"]

    @field_validator("label")
    @classmethod
    def _never(cls, v: str) -> str:
        raise ValueError("rejected on purpose")


def test_structured_output_is_always_schema_valid(engine):
    prompts = PROMPTS * 3
    out = engine.generate(prompts, n=2, sampling=SAMPLING, schema=Verdict)
    rows = [x for row in out for x in row]
    assert len(rows) == 18 and all(isinstance(x, Verdict) for x in rows), rows
    assert len({x.model_dump_json() for x in rows}) > 1


def test_structured_failure_is_retried_then_returned_as_a_failure_row(engine, generate_calls):
    out = engine.generate(PROMPTS[:2], n=2, sampling=SAMPLING, schema=AlwaysInvalid)
    assert generate_calls == [(2, 2), (4, 1), (4, 1)]  # then each failed slot alone, twice
    assert [len(r) for r in out] == [2, 2]
    for f in (x for row in out for x in row):
        assert isinstance(f, GenerationFailure) and f.attempts == 3 and "rejected on purpose" in f.error
        assert AlwaysInvalid.model_json_schema() and f.raw.startswith('{"label":')


# --- engines in processes ------------------------------------------------------------------------


def test_get_engine_is_cached_per_config_and_shares_loaded_models():
    a = get_engine(CFG)
    assert get_engine(CFG) is a
    b = get_engine(CFG.model_copy(update={"batch_size": 3, "structured_retries": 0}))
    assert b is not a and b.cfg.batch_size == 3 and a.cfg.batch_size == 8
    assert b.model is a.model  # another role on the same model does not load it again
    c = get_engine(CFG.model_copy(update={"dtype": "bfloat16"}))
    assert c.model is not a.model and c.model.dtype == torch.bfloat16


def test_vllm_backend_without_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if the extra were not installed
    with pytest.raises(ImportError, match=r'pip install -e "\.\[vllm\]"'):
        get_engine(CFG.model_copy(update={"backend": "vllm"}))


def score_batch(batch: pa.Table, engine) -> pa.Table:
    prompts = [[{"role": "user", "content": t}] for t in batch.column("text").to_pylist()]
    lps = engine.logprobs(prompts, ["Yes."] * len(prompts))
    probs = engine.choose(prompts, ["a", "b"])
    return batch.append_column("logprob", pa.array([x.logprob for x in lps])).append_column(
        "p_a", pa.array([p[0] for p in probs])
    )


@pytest.mark.ray
def test_engine_inside_ray_actors(ray_cluster):
    from ray import cloudpickle

    from pipeline.execute import map_batches

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests folder
    table = pa.table({"text": [f"question {i}" for i in range(10)]})
    execution = execution_config(backend="ray", batch_size=4, checkpoint_rows=100, max_reject_fraction=0.1,
                                 target_shard_bytes=1 << 20, row_group_bytes=1 << 20, spill_bytes=1 << 20, on_gate_failure="error")
    out = map_batches(table, score_batch, execution=execution, engine=CFG.model_copy(update={"batch_size": 4}))
    local = score_batch(table, get_engine(CFG))
    assert out.column("text").to_pylist() == table.column("text").to_pylist()
    assert out.column("logprob").to_pylist() == pytest.approx(local.column("logprob").to_pylist(), abs=1e-4)
    assert out.column("p_a").to_pylist() == pytest.approx(local.column("p_a").to_pylist(), abs=1e-6)


def test_the_projects_llm_section_builds_a_working_engine(params):
    engine = get_engine(params.llm)
    assert engine.name == params.llm.model
    [[a, b]] = engine.generate(PROMPTS[:1], n=2)
    assert isinstance(a.text, str) and isinstance(b.text, str)
    [[v]] = engine.generate(PROMPTS[:1], schema=Verdict)
    assert isinstance(v, Verdict)


def test_tiny_at_seed_is_a_different_model_with_the_same_tokenizer():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.llm.tiny import resolve_model, tiny_seed

    a, b = resolve_model("tiny"), resolve_model("tiny@1")
    assert a != b and resolve_model("tiny@0") == a
    assert AutoTokenizer.from_pretrained(a).get_vocab() == AutoTokenizer.from_pretrained(b).get_vocab()
    wa = AutoModelForCausalLM.from_pretrained(a).model.embed_tokens.weight
    wb = AutoModelForCausalLM.from_pretrained(b).model.embed_tokens.weight
    assert wa.shape == wb.shape and not torch.equal(wa, wb)
    assert tiny_seed("org/tiny-model") is None
    with pytest.raises(ValueError, match="tiny@<non-negative integer seed>"):
        tiny_seed("tiny@x")


@pytest.mark.parametrize("model", ["tiny", "tiny@1"])
def test_tiny_answers_hold_no_unprintable_character(model):
    """Like a real model's, tiny's answers hold no control character (its byte tokens of the C0 controls and DEL
    were ~1.7% of its vocabulary, sampled about uniformly, and export dropped such pairs as unprintable_text)."""
    import re

    import polars as pl

    from pipeline.checks import UNPRINTABLE, unprintable_text

    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=64, stop=[], seed=11)
    eng = TransformersEngine(llm_config(model=model, batch_size=8, sampling=sampling))
    texts = [c.text for row in eng.generate(PROMPTS, n=8, sampling=sampling) for c in row]
    assert sum(len(eng.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts) >= 400
    answers = pl.DataFrame({"chosen": [[{"role": "assistant", "content": "".join(texts)}]]})
    assert not answers.select(unprintable_text(["chosen"])).item(), [re.findall(UNPRINTABLE, t) for t in texts]


def test_templates_without_a_default_system_prompt_render_judge_calls_unchanged(engine):
    assert engine.codec.default_system is None
    assert engine.codec.messages(PROMPTS[0], judge=True) == PROMPTS[0]
    for template in (LLAMA3_LIKE, PLAIN):
        assert with_template(engine, template).codec.default_system is None


def test_a_model_path_under_home_is_checked_and_expanded(tmp_path, monkeypatch):
    from pipeline.errors import ModelLoadError

    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match=r"model '~/checkpoints/sft': no such file or folder"):
        resolve_model("~/checkpoints/sft")
    (tmp_path / "checkpoints" / "sft").mkdir(parents=True)
    assert resolve_model("~/checkpoints/sft") == str(tmp_path / "checkpoints" / "sft")
