"""``llm.prompt_logprobs_via: echo``: teacher-forced scores from the legacy completions API's ``echo`` +
``logprobs`` (OpenAI's legacy models, vLLM, SGLang) instead of vLLM's ``prompt_logprobs``, against the
loopback server (tests/openai_server.py), with its guards against silently wrong numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import LLM, ParamsError, fingerprint, load_params, resolve_role
from pipeline.llm import openai_client
from pipeline.llm.openai_client import ServerError
from pipeline.llm.openai_engine import OpenAIEngine
from tests.openai_server import LoopbackServer

pytestmark = pytest.mark.openai

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    [{"role": "user", "content": "Hello there! Can you help me?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 12 times 12?"}],
]
RESPONSES = ["Of course, what do you need?", "144."]
OPTIONS = ["1", "2", "3", "the first answer"]


@pytest.fixture(scope="module")
def server():
    srv = LoopbackServer().start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def env(server, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFPIPE_REQUEST_CACHE", str(tmp_path / "requests"))
    monkeypatch.setattr(openai_client, "BACKOFF_INITIAL", 0.05)
    server.supports_logprobs, server.echo_fault = True, None
    yield


def config(server, **kw) -> LLM:
    base = server.engine.cfg.model_dump()
    base.update(backend="openai", base_url=server.url, max_retries=1, timeout_s=30, concurrency=4, **kw)
    return LLM.model_validate(base)


def test_echo_scores_equal_prompt_logprobs_and_the_in_process_engine(server):
    echo = OpenAIEngine(config(server, prompt_logprobs_via="echo"))
    start = len(server.log)
    got = echo.logprobs(PROMPTS, RESPONSES)
    bodies = [b for _, _, _, b in server.log[start:]]
    assert all(b["echo"] is True and b["logprobs"] == 1 and "prompt_logprobs" not in b for b in bodies)
    vllm = OpenAIEngine(config(server)).logprobs(PROMPTS, RESPONSES)
    local = server.engine.logprobs(PROMPTS, RESPONSES)
    for g, v, w in zip(got, vllm, local, strict=True):
        assert g.n_tokens == v.n_tokens == w.n_tokens
        assert g.logprob == pytest.approx(v.logprob, rel=1e-9) and g.logprob == pytest.approx(w.logprob, rel=1e-5)
    # choose with option_scoring: sequence (options of one and several tokens) too.
    for g, w in zip(echo.choose(PROMPTS, OPTIONS), server.engine.choose(PROMPTS, OPTIONS), strict=True):
        assert g == pytest.approx(w, abs=1e-6)


def test_the_two_modes_have_their_own_cache_entries(server, tmp_path):
    OpenAIEngine(config(server)).logprobs(PROMPTS, RESPONSES)
    files = set((tmp_path / "requests").rglob("*.json"))
    start = len(server.log)
    OpenAIEngine(config(server, prompt_logprobs_via="echo")).logprobs(PROMPTS, RESPONSES)
    assert len(server.log) - start == len(PROMPTS)  # not served from prompt_logprobs' answers
    assert len(set((tmp_path / "requests").rglob("*.json")) - files) == len(PROMPTS)
    start = len(server.log)
    OpenAIEngine(config(server, prompt_logprobs_via="echo")).logprobs(PROMPTS, RESPONSES)
    assert len(server.log) == start  # a rerun is served from the cache


@pytest.mark.parametrize("fault, message", [
    (None, r"model 'tiny': the server echoed no log-probabilities .*Selfie.*prompt_logprobs_via: prompt_logprobs"),
    ("generated_only", r"model 'tiny': the server echoed 1 log-probabilities for a prompt of \d+ tokens"),
    ("other_tokens", r"model 'tiny': the server's tokenizer differs from the local one \(position \d+: the server echoed .*, token \d+ is "),
])
def test_a_server_that_does_not_echo_the_prompts_scores_is_a_one_line_error(server, fault, message):
    server.supports_logprobs, server.echo_fault = fault is not None, fault
    engine = OpenAIEngine(config(server, prompt_logprobs_via="echo"))
    with pytest.raises(ServerError, match=message) as e:
        engine.logprobs(PROMPTS[:1], RESPONSES[:1])
    assert "\n" not in str(e.value)
    with pytest.raises(ServerError, match="choose with option_scoring: sequence"):
        engine.choose(PROMPTS[:1], OPTIONS)



@pytest.mark.parametrize(("param", "via", "advice"), [
    ("echo", "echo", r"set it to prompt_logprobs for a vLLM server"),
    ("prompt_logprobs", "prompt_logprobs", r"serve the model with vLLM, or set llm.prompt_logprobs_via: echo"),
])
def test_a_server_refusing_the_scoring_parameter_names_the_setting_that_changes_it(server, param, via, advice):
    """A 400 naming ``echo`` (or vLLM's ``prompt_logprobs``) is fixed by ``llm.prompt_logprobs_via``, not by the
    sampling or option_scoring keys the generic refused-parameter advice names."""
    server.unsupported[param] = f"Unsupported parameter: '{param}' is not supported with this model."
    try:
        with pytest.raises(ServerError, match=rf"does not accept the request parameter '{param}'.*{advice}") as e:
            OpenAIEngine(config(server, prompt_logprobs_via=via)).logprobs(PROMPTS[:1], RESPONSES[:1])
    finally:
        server.unsupported.clear()
    assert "\n" not in str(e.value) and "llm.sampling" not in str(e.value)


def _params_with(tmp_path: Path, llm: dict, role: dict) -> Path:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["llm"].update(llm)
    data["pugc"]["roles"]["judge"] = role
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_params_prompt_logprobs_via_is_validated_per_role_and_fingerprinted_only_when_set(tmp_path):
    default = load_params(ROOT / "params.yaml")
    assert default.llm.prompt_logprobs_via == "prompt_logprobs"
    p = load_params(_params_with(tmp_path, {}, {"backend": "openai", "base_url": "http://a/v1",
                                                "prompt_logprobs_via": "echo"}))
    assert resolve_role(p.llm, p.pugc.roles.judge).prompt_logprobs_via == "echo"
    assert resolve_role(p.llm, p.pugc.roles.policy).prompt_logprobs_via == "prompt_logprobs"
    for where in ({"prompt_logprobs_via": "echo_logprobs"}, {}):
        role = {} if where else {"prompt_logprobs_via": "top_logprobs"}
        with pytest.raises(ParamsError, match=r"(llm|pugc\.roles\.judge)\.prompt_logprobs_via") as e:
            load_params(_params_with(tmp_path, where, role))
        assert "'prompt_logprobs'" in str(e.value) and "'echo'" in str(e.value)
    # Outputs made with the default keep the fingerprints they had before the key existed; echo is recorded.
    before = default.llm.model_dump(mode="json")
    del before["prompt_logprobs_via"]
    assert fingerprint(default.llm) == fingerprint(before)
    assert fingerprint(default.llm.model_copy(update={"prompt_logprobs_via": "echo"})) != fingerprint(before)
    dumped = default.pugc.model_dump(mode="json")  # roles: overrides, every key None unless set
    for role in dumped["roles"].values():
        if role:
            del role["prompt_logprobs_via"]
    assert fingerprint(default.pugc) == fingerprint(dumped)
