"""The openai backend against a real OpenAI-compatible HTTP server on loopback (tests/openai_server.py: the
transformers engine with the tiny model behind /v1/chat/completions and /v1/completions).

Engine contract (seeds, order, finish reasons, structured output, scoring equal to in-process), the
transport (retries on injected faults honouring Retry-After, concurrency, a server pool, the disk cache,
the cost guard, per-row failures, one-line errors) and params validation. Requests and answers read without a
server (cache keys, Retry-After, which errors are retried) are in tests/test_openai_requests.py; the end-to-end
runs of PUGC and DOVE through the server in tests/test_openai_e2e.py.
"""

from __future__ import annotations

import json
import math
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, field_validator

from pipeline.config import LLM, ParamsError, load_params
from pipeline.llm import Completion, GenerationFailure, openai_client, sample_seed
from pipeline.llm.openai_client import CostGuardError, ServerError
from pipeline.llm.openai_engine import OpenAIEngine, RequestsFailed, option_probabilities
from tests.conftest import popen_tree
from tests.openai_cases import GREEDY, PROMPTS, SAMPLING, Query
from tests.openai_server import LoopbackServer

pytestmark = pytest.mark.openai

ROOT = Path(__file__).resolve().parents[1]
KEY_ENV, KEY = "PREFPIPE_TEST_OPENAI_KEY", "sk-test-4f9c2e71d0b8a6"


@pytest.fixture(scope="module")
def server():
    srv = LoopbackServer(api_key=KEY, retry_after=2.0, hang_s=4.0).start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def env(server, tmp_path, monkeypatch):
    """A fresh request cache per test, the key in the environment, fast backoff, a clean server."""
    monkeypatch.setenv("PREFPIPE_REQUEST_CACHE", str(tmp_path / "requests"))
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setattr(openai_client, "BACKOFF_INITIAL", 0.05)
    monkeypatch.setattr(openai_client, "BACKOFF_JITTER", 0.05)
    server.faults.clear()
    server.refuse.clear()
    server.unsupported.clear()
    server.ignored.clear()
    server.answer_model = None
    server.supports_logprobs, server.delay_s = True, 0.0
    yield


def config(server, **kw) -> LLM:
    base = server.engine.cfg.model_dump()
    base.update(backend="openai", base_url=server.url, api_key_env=KEY_ENV, structured_retries=2, max_retries=3,
                timeout_s=30, concurrency=8)
    base.update(kw)
    return LLM.model_validate(base)


def sent(server, since: int) -> list[dict]:
    return [body for _, _, _, body in server.log[since:]]


def test_the_loopback_server_lists_its_model_as_vllm_serve_does(server):
    """docs/openai.md's local try serves the tiny model "as `vllm serve` would", but `GET /v1/models`, a user's
    first check of a server (and the official client's `models.list()`), answered 404."""
    import openai

    since = len(server.log)
    assert [m.id for m in openai.OpenAI(base_url=server.url, api_key=KEY).models.list()] == ["tiny"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url, api_key="sk-wrong", max_retries=0).models.list()
    assert len(server.log) == since  # not an engine request: server.requests() counts those only


# --- generate ------------------------------------------------------------------------------------


def test_generate_one_request_per_sample_with_its_contract_seed_in_input_order_and_cached(server):
    engine = OpenAIEngine(config(server))
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0]]  # a repeated prompt gets the same samples
    start = len(server.log)
    out = engine.generate(prompts, n=3, sampling=SAMPLING)
    bodies = sent(server, start)
    # 2 distinct prompts x 3 samples; the repeat asks nothing new.
    assert len(bodies) == 6
    assert all(b["n"] == 1 and b["temperature"] == 0.8 and b["top_p"] == 0.95 and b["max_completion_tokens"] == 24
               for b in bodies)
    assert sorted(b["seed"] for b in bodies) == sorted(sample_seed(3, p, j) for p in PROMPTS[:2] for j in range(3))
    assert all(isinstance(c, Completion) for row in out for c in row) and [len(r) for r in out] == [3, 3, 3]
    assert out[0] == out[2] and out[0] != out[1]
    assert len({c.text for c in out[0]}) > 1  # three seeds, three samples
    # Batch-independent: prompt 1 alone, through another engine and cache, gets the same samples.
    assert OpenAIEngine(config(server)).generate([PROMPTS[1]], n=3, sampling=SAMPLING) == [out[1]]
    # A rerun is served from the disk cache: nothing is sent.
    before = len(server.log)
    assert engine.generate(prompts, n=3, sampling=SAMPLING) == out
    assert len(server.log) == before


def test_greedy_generation_equals_the_in_process_engine_and_keeps_finish_reasons(server):
    engine = OpenAIEngine(config(server))
    start = len(server.log)
    out = engine.generate(PROMPTS, n=2, sampling=GREEDY)
    assert len(server.log) - start == len(PROMPTS)  # greedy: one request per prompt, copied n times
    assert out == server.engine.generate(PROMPTS, n=2, sampling=GREEDY)
    # Cut at max_new_tokens -> finish_reason "length" (the tiny model needs ~25 tokens to end an answer).
    short = SAMPLING.model_copy(update={"max_new_tokens": 2})
    cut = engine.generate(PROMPTS, n=4, sampling=short)
    assert {c.finish_reason for row in cut for c in row} <= {"stop", "length"}
    assert any(c.cut_off for row in cut for c in row)


def test_structured_output_is_json_schema_validated_and_a_refused_request_is_a_failure_row(server):
    engine = OpenAIEngine(config(server, structured_retries=0, max_retries=0))
    start = len(server.log)
    out = engine.generate(PROMPTS[:2], n=2, sampling=SAMPLING, schema=Query)
    bodies = sent(server, start)
    fmt = bodies[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["required"] == ["query"]
    assert fmt["json_schema"]["schema"]["additionalProperties"] is False
    assert all(isinstance(q, Query) for row in out for q in row)
    # One request of the next call is refused (400): that sample is a failure row, its neighbours are fine.
    server.faults.append("400")
    again = engine.generate(PROMPTS[:2], n=2, sampling=SAMPLING.model_copy(update={"seed": 4}), schema=Query)
    flat = [x for row in again for x in row]
    failures = [x for x in flat if isinstance(x, GenerationFailure)]
    assert len(failures) == 1 and failures[0].error.startswith("request refused: HTTP 400: This model's maximum")
    assert sum(isinstance(x, Query) for x in flat) == 3


def test_invalid_structured_output_is_retried_with_the_next_attempts_seed(server):
    """A sample the schema rejects is re-asked with sample_seed(..., attempt=1), like the other engines."""

    class Never(BaseModel):
        query: str

        @field_validator("query")
        @classmethod
        def _never(cls, v: str) -> str:
            raise ValueError("rejected by the test")

    engine = OpenAIEngine(config(server, structured_retries=1))
    start = len(server.log)
    [[res]] = engine.generate([PROMPTS[0]], n=1, sampling=SAMPLING, schema=Never)
    assert [b["seed"] for b in sent(server, start)] == [sample_seed(3, PROMPTS[0], 0, a) for a in (0, 1)]
    assert isinstance(res, GenerationFailure) and res.attempts == 2
    assert "schema validation failed" in res.error and "rejected by the test" in res.error


# --- scoring -------------------------------------------------------------------------------------


def test_choose_and_logprobs_equal_the_in_process_engine(server):
    engine = OpenAIEngine(config(server))
    local = server.engine
    start = len(server.log)
    got = engine.choose(PROMPTS, ["1", "2", "3", "4", "5"])
    assert len(server.log) - start == len(PROMPTS)  # one /completions request per prompt, its 5 options batched
    assert all(b["prompt_logprobs"] == 0 and len(b["prompt"]) == 5 for b in sent(server, start))
    want = local.choose(PROMPTS, ["1", "2", "3", "4", "5"])
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, abs=1e-6) and sum(g) == pytest.approx(1.0)
    responses = ["Of course, what do you need?", "144.", "Leaves fall slowly."]
    for g, w in zip(engine.logprobs(PROMPTS, responses), local.logprobs(PROMPTS, responses), strict=True):
        assert g.n_tokens == w.n_tokens and g.logprob == pytest.approx(w.logprob, rel=1e-5)
    # Multi-token options are scored as whole sequences (+ end of turn), like in-process.
    long = ["the first answer", "the second one"]
    for g, w in zip(engine.choose(PROMPTS, long), local.choose(PROMPTS, long), strict=True):
        assert g == pytest.approx(w, abs=1e-6)


def test_a_server_without_prompt_logprobs_is_a_clear_error(server):
    engine = OpenAIEngine(config(server))
    server.supports_logprobs = False
    with pytest.raises(ServerError, match=r"model 'tiny': the server returned no prompt_logprobs.*Selfie") as e:
        engine.logprobs(PROMPTS[:1], ["hi"])
    assert "\n" not in str(e.value)
    with pytest.raises(ServerError, match="option_scoring: sequence"):
        engine.choose(PROMPTS[:1], ["a", "b"])
    first = OpenAIEngine(config(server, option_scoring="first_token"))
    with pytest.raises(ServerError, match="no logprobs/top_logprobs for the first answer token"):
        first.choose(PROMPTS[:1], ["a", "b"])


def test_a_call_that_fails_whole_stops_its_other_requests_without_retrying_them(server, caplog):
    """One answer that fails the whole call (here: no log-probabilities) cancels the requests still in flight:
    no "connection failed ...; retry" warnings about them (the clients closed under them) before the error."""
    server.supports_logprobs, server.delay_s = False, 0.3  # every request in flight when the first answer comes
    engine = OpenAIEngine(config(server, option_scoring="first_token", concurrency=8))
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(8)]
    with pytest.raises(ServerError, match="no logprobs/top_logprobs"):
        engine.choose(prompts, ["a", "b"])
    assert not [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]


def test_choose_first_token_uses_top_logprobs_of_the_first_answer_token(server):
    engine = OpenAIEngine(config(server, option_scoring="first_token"))
    assert engine.codec is None  # no tokenizer needed
    local = server.engine
    lp = server._next_token_logprobs(local.codec.prompt_ids(PROMPTS[0]))[-1]
    values, ids = lp.topk(3)
    options = [local.tokenizer.decode([i]) for i in ids.tolist()[1:3]]  # the 2nd and 3rd most likely tokens
    start = len(server.log)
    [probs] = engine.choose(PROMPTS[:1], options)
    body = sent(server, start)[0]
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["max_completion_tokens"] == 1
    a, b = (math.exp(v) for v in values.tolist()[1:3])
    assert probs == pytest.approx([a / (a + b), b / (a + b)], rel=1e-6)
    # Options the model never starts its answer with (or longer than one token) cannot be scored this way.
    with pytest.raises(RequestsFailed, match=r"none of the options \['zebra crossing', 'Q'\] is among the 20"):
        engine.choose(PROMPTS[:1], ["zebra crossing", "Q"])


def test_option_probabilities_sum_tokens_equal_to_an_option_and_renormalise():
    top = [["A", math.log(0.5)], [" A", math.log(0.1)], ["B", math.log(0.2)], ["C", math.log(0.2)]]
    assert option_probabilities(top, ["A", "B"]) == pytest.approx([0.75, 0.25])
    assert option_probabilities(top, ["A", "D"]) == pytest.approx([1.0, 0.0])
    assert option_probabilities(top, ["D", "E"]) is None


# --- transport -----------------------------------------------------------------------------------


def test_injected_faults_are_retried_honouring_retry_after_and_the_answer_is_unchanged(server):
    clean = OpenAIEngine(config(server)).generate([PROMPTS[1]], n=1, sampling=SAMPLING)
    engine = OpenAIEngine(config(server, max_retries=5, timeout_s=1.0))
    engine.transport.cache.root = engine.transport.cache.root.with_name("faulty")
    server.faults.extend(["429", "500", "hang", "malformed", "drop"])
    start = len(server.log)
    assert engine.generate([PROMPTS[1]], n=1, sampling=SAMPLING) == clean
    log = server.log[start:]
    assert [fault for _, _, fault, _ in log] == ["429", "500", "hang", "malformed", "drop", None]
    assert log[1][0] - log[0][0] >= 2.0  # Retry-After: 2 was honoured
    assert log[3][0] - log[2][0] >= 1.0  # the hung request was given up after timeout_s


def test_exhausted_retries_fail_the_call_in_one_line_and_a_rerun_resends_only_the_failed(server):
    engine = OpenAIEngine(config(server, max_retries=0))
    server.faults.append("500")
    start = len(server.log)
    with pytest.raises(RequestsFailed) as e:
        engine.generate(PROMPTS[:2], n=1, sampling=SAMPLING)
    msg = str(e.value)
    assert "\n" not in msg and "1 of 2 requests failed" in msg and "HTTP 500" in msg and server.url in msg
    assert "none was answered" not in msg  # one of two came back: the server is up
    assert len(server.log) - start == 2
    out = engine.generate(PROMPTS[:2], n=1, sampling=SAMPLING)
    assert len(server.log) - start == 3 and len(out) == 2


def test_settings_errors_fail_at_once_and_never_show_the_key(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key-123456")
    with pytest.raises(ServerError, match=r"rejected the API key.*HTTP 401") as e:
        OpenAIEngine(config(server)).generate(PROMPTS[:1], n=1, sampling=SAMPLING)
    assert "sk-wrong" not in str(e.value)
    assert str(e.value).endswith("check llm.model, llm.base_url and llm.api_key_env")  # a role's: its own keys
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ServerError, match=fr"^llm.api_key_env names {KEY_ENV}, which is not set"):
        OpenAIEngine(config(server))
    monkeypatch.setenv(KEY_ENV, KEY)
    with pytest.raises(ServerError, match="does not serve this model"):
        OpenAIEngine(config(server, model="tiny@7", option_scoring="first_token")).choose(PROMPTS[:1], ["a"])
    # A hosted model name has no local tokenizer: generation-only roles work, scoring says what to do.
    hosted = OpenAIEngine(config(server, model="hosted-judge-1"))
    assert hosted.codec is None
    start = len(server.log)
    with pytest.raises(ServerError, match=r"'hosted-judge-1': choose with option_scoring: sequence .* needs the "
                                          r"served model's tokenizer.*option_scoring: first_token") as e:
        hosted.choose(PROMPTS[:1], ["a", "b"])
    # The loader's reason, not its remedy for the in-process backends (cut mid-word, it read "... to tiny, smo)").
    assert re.search(r"could not be loaded \(model 'hosted-judge-1': [^;]*\); set llm.model to the Hub id", str(e.value))
    assert len(server.log) == start


def test_requests_in_flight_are_bounded_by_concurrency_and_answers_keep_input_order(server):
    server.delay_s = 0.3
    engine = OpenAIEngine(config(server, concurrency=3))
    server.max_inflight = 0
    short = SAMPLING.model_copy(update={"max_new_tokens": 4})
    start = len(server.log)
    out = engine.generate(PROMPTS, n=3, sampling=short)
    assert len(server.log) - start == 9 and 2 <= server.max_inflight <= 3
    server.delay_s = 0.0
    engine.transport.cache.root = engine.transport.cache.root.with_name("one-by-one")
    assert out == [engine.generate([p], n=3, sampling=short)[0] for p in PROMPTS]


def test_a_pool_with_a_dead_server_moves_retries_to_the_next_one(server):
    with socket.socket() as s:  # bound, never listening: connection refused, and no other server can take the port
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        engine = OpenAIEngine(config(server, base_url=[dead, server.url], max_retries=1))
        start = len(server.log)
        out = engine.generate(PROMPTS, n=2, sampling=SAMPLING)
    assert len(server.log) - start == 6 and all(len(r) == 2 for r in out)
    assert out == OpenAIEngine(config(server)).generate(PROMPTS, n=2, sampling=SAMPLING)


def test_cost_guard_stops_before_sending_and_cached_answers_are_free(server):
    engine = OpenAIEngine(config(server, max_requests=3))
    start = len(server.log)
    with pytest.raises(CostGuardError, match=r"needs 4 uncached requests .* llm.max_requests=3; nothing was sent"):
        engine.generate(PROMPTS[:2], n=2, sampling=SAMPLING)
    assert len(server.log) == start
    engine = OpenAIEngine(config(server, max_requests=4))
    first = engine.generate(PROMPTS[:2], n=2, sampling=SAMPLING)
    assert engine.generate(PROMPTS[:2], n=2, sampling=SAMPLING) == first  # cached: free
    with pytest.raises(CostGuardError):
        engine.generate(PROMPTS[2:], n=1, sampling=SAMPLING)
    assert len(server.log) - start == 4


def test_the_cache_holds_answers_keyed_by_model_and_request_never_the_key(server, tmp_path):
    engine = OpenAIEngine(config(server))
    engine.generate(PROMPTS, n=2, sampling=SAMPLING)
    engine.choose(PROMPTS, ["a", "b"])
    files = list((tmp_path / "requests").rglob("*.json"))
    assert len(files) == 3 * 2 + 3
    assert all(KEY not in f.read_text() for f in files)
    # A torn file reads as a miss and is rewritten.
    files[0].write_text('{"key": "')
    before = len(server.log)
    engine.generate(PROMPTS, n=2, sampling=SAMPLING)
    engine.choose(PROMPTS, ["a", "b"])
    assert len(server.log) - before == 1
    assert json.loads(files[0].read_text())["key"] == files[0].stem


# --- params --------------------------------------------------------------------------------------


def _params_with(tmp_path: Path, role: dict) -> Path:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["pugc"]["roles"]["judge"] = role
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_params_an_openai_role_is_validated_at_load(tmp_path):
    ok = load_params(_params_with(tmp_path, {"backend": "openai", "base_url": ["http://a:8000/v1", "http://b:8000/v1"],
                                             "api_key_env": "OPENAI_API_KEY", "option_scoring": "first_token",
                                             "max_requests": 1000}))
    from pipeline.config import resolve_role

    judge = resolve_role(ok.llm, ok.pugc.roles.judge)
    assert judge.backend == "openai" and judge.base_url == ["http://a:8000/v1", "http://b:8000/v1"]
    assert judge.model == ok.llm.model and judge.concurrency == ok.llm.concurrency
    with pytest.raises(ParamsError, match=r"pugc.roles.judge: backend openai needs base_url"):
        load_params(_params_with(tmp_path, {"backend": "openai"}))
    with pytest.raises(ParamsError, match=r"pugc.roles.judge.base_url"):
        load_params(_params_with(tmp_path, {"backend": "openai", "base_url": "localhost:8000"}))
    # Credentials in the URL would be committed with params.yaml and echoed in logs and errors.
    # So would a key in the query (main let these through; ?api-version= stays allowed).
    for url in ("http://user:abc123secret@a:8000/v1", ["http://a/v1", "https://abc123secret@b/v1"],
                "https://a/v1?api-key=abc123secret", "https://a/v1?api-version=1&access_token=abc123secret",
                "https://a/v1?key=abc123secret", "https://a/v1?sig=abc123secret"):
        with pytest.raises(ParamsError, match=r"base_url.*holds credentials") as e:
            load_params(_params_with(tmp_path, {"backend": "openai", "base_url": url}))
        assert "abc123secret" not in str(e.value)
    # Keys of providers whose format is also a valid (lower/mixed-case) variable name: Groq, Together, Fireworks,
    # Mistral (32 letters and digits).
    for pasted in ("sk-proj-abc123secret", "sk_live_abc123secret", "gsk_8fJ2kL0pQ9zabc123secret",
                   "tgp_v1_aB3dE5abc123secret", "fw_3Zabc123secret", "Xk9aB2cD4eF6gH8iJabc123secretmN4"):
        with pytest.raises(ParamsError, match="api_key_env: .*NAME of the environment variable") as e:
            load_params(_params_with(tmp_path, {"backend": "openai", "base_url": "http://a/v1", "api_key_env": pasted}))
        assert "abc123secret" not in str(e.value)
    assert load_params(_params_with(tmp_path, {"backend": "openai", "base_url": "https://a/openai?api-version=2024-10-21"}))
    # One line for a bad pool member, naming it by position (not also "base_url: should be a valid string").
    with pytest.raises(ParamsError) as e:
        load_params(_params_with(tmp_path, {"backend": "openai", "base_url": ["http://a/v1", "ftp://b"]}))
    assert str(e.value).splitlines()[1:] == [
        f"  {tmp_path / 'params.yaml'}: pugc.roles.judge.base_url[1]: expected an http(s) URL up to the API root, "
        "e.g. http://localhost:8000/v1"]
    with pytest.raises(ParamsError, match=r"pugc.roles.judge.concurrency"):
        load_params(_params_with(tmp_path, {"backend": "openai", "base_url": "http://a/v1", "concurrency": 0}))


def test_get_engine_builds_an_openai_engine_per_config(server):
    from pipeline.llm import get_engine

    a, b = get_engine(config(server)), get_engine(config(server, max_requests=10))
    assert isinstance(a, OpenAIEngine) and a is not b and a is get_engine(config(server))
    assert a.name == "tiny" and a.transport.urls == [server.url]


def test_a_served_model_named_as_a_missing_local_path_has_no_tokenizer_and_scoring_says_so(server):
    """``resolve_model`` refuses a local path that does not exist (ModelLoadError); for a served model that means
    only that no tokenizer is at hand: the engine is built, and sequence scoring says what to do."""
    engine = OpenAIEngine(config(server, model="./no-such-checkpoint/judge"))
    assert engine.codec is None
    with pytest.raises(ServerError, match=r"needs the served model's tokenizer .*no such file or folder"):
        engine.choose(PROMPTS[:1], ["a", "b"])


def test_sequence_choose_renders_the_judge_call_as_the_in_process_engines_do(server):
    """A judge call drops the template's default system prompt (an explicit empty one) on every backend: the
    ids the openai engine scores are the in-process engines' ``response_spans(..., judge=True)``, which is
    also what DOVE's token budget (``token_fit(judge=True)``) counts; with the default system prompt kept,
    a prompt the budget accepted could exceed max_model_len on this backend alone."""
    import copy

    from pipeline.llm.chat import ChatCodec

    engine = OpenAIEngine(config(server))
    tok = copy.deepcopy(engine.codec.tok)
    tok.chat_template = (  # a template with a default system prompt, as SmolLM2's and Qwen's have
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    engine.codec = ChatCodec(tok, name="tiny")
    assert engine.codec.default_system == "You are a helpful assistant."
    start = len(server.log)
    engine.choose(PROMPTS[:1], ["a", "b"])
    want = [list(ids[:end]) for ids, _, end in engine.codec.response_spans(PROMPTS[0], ["a", "b"], judge=True)]
    assert sent(server, start)[0]["prompt"] == want


def test_the_server_runs_on_its_own_for_a_local_try(server):
    """`python -m tests.openai_server` (docs/openai.md, "A local try") serves the tiny model until interrupted."""
    cmd = [sys.executable, "-m", "tests.openai_server", "--port", "0", "--api-key", KEY]
    with popen_tree(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        url = re.search(r"serving model 'tiny' at (http://127\.0\.0\.1:\d+/v1)", proc.stdout.readline())
        assert url, "the server printed no URL"
        alone = OpenAIEngine(config(server, base_url=url[1])).generate(PROMPTS[:1], n=1, sampling=GREEDY)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert alone == server.engine.generate(PROMPTS[:1], n=1, sampling=GREEDY)  # the tiny model's greedy answer
