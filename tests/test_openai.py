"""The openai backend against a real OpenAI-compatible HTTP server on loopback (tests/openai_server.py: the
transformers engine with the tiny model behind /v1/chat/completions and /v1/completions).

Engine contract (seeds, order, finish reasons, structured output, scoring equal to in-process), the
transport (retries on injected faults honouring Retry-After, concurrency, a server pool, the disk cache,
the cost guard, per-row failures, one-line errors) and params validation. The end-to-end runs of PUGC and
DOVE through the server are in tests/test_openai_e2e.py.
"""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, field_validator

from pipeline.config import LLM, ParamsError, Sampling, load_params
from pipeline.llm import Completion, GenerationFailure, openai_client, openai_requests, sample_seed
from pipeline.llm.openai_client import CostGuardError, ServerError
from pipeline.llm.openai_engine import OpenAIEngine, RequestsFailed, option_probabilities
from tests.openai_server import LoopbackServer

pytestmark = pytest.mark.openai

ROOT = Path(__file__).resolve().parents[1]
KEY_ENV, KEY = "PREFPIPE_TEST_OPENAI_KEY", "sk-test-4f9c2e71d0b8a6"
SAMPLING = Sampling(temperature=0.8, top_p=0.95, max_new_tokens=24, stop=[], seed=3)
GREEDY = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=12, stop=[], seed=0)
PROMPTS = [
    [{"role": "user", "content": "Hello there! Can you help me?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 12 times 12?"}],
    [{"role": "user", "content": "Write a haiku about autumn."}],
]


class Query(BaseModel):
    query: str


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
    assert len(server.log) - start == 2
    out = engine.generate(PROMPTS[:2], n=1, sampling=SAMPLING)
    assert len(server.log) - start == 3 and len(out) == 2


def test_settings_errors_fail_at_once_and_never_show_the_key(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key-123456")
    with pytest.raises(ServerError, match=r"rejected the API key.*HTTP 401") as e:
        OpenAIEngine(config(server)).generate(PROMPTS[:1], n=1, sampling=SAMPLING)
    assert "sk-wrong" not in str(e.value)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ServerError, match=f"llm.api_key_env names {KEY_ENV}, which is not set"):
        OpenAIEngine(config(server))
    monkeypatch.setenv(KEY_ENV, KEY)
    with pytest.raises(ServerError, match="does not serve this model"):
        OpenAIEngine(config(server, model="tiny@7", option_scoring="first_token")).choose(PROMPTS[:1], ["a"])
    # A hosted model name has no local tokenizer: generation-only roles work, scoring says what to do.
    hosted = OpenAIEngine(config(server, model="hosted-judge-1"))
    assert hosted.codec is None
    start = len(server.log)
    with pytest.raises(ServerError, match=r"'hosted-judge-1': choose with option_scoring: sequence .* needs the "
                                          r"served model's tokenizer.*option_scoring: first_token"):
        hosted.choose(PROMPTS[:1], ["a", "b"])
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


def test_the_cache_key_tells_apart_scored_spans_that_share_a_prompt():
    # Same token ids up to `end`, so the same request body: only which tokens are scored differs.
    ids = [5, 6, 7, 8]
    whole = openai_requests.score_request("m", PROMPTS[0], [(ids, 1, 4)], "policy")
    tail = openai_requests.score_request("m", PROMPTS[0], [(ids, 3, 4)], "policy")
    assert whole.body == tail.body
    assert whole.key() != tail.key()


def test_greedy_requests_send_top_p_1_so_top_p_does_not_split_the_cache():
    a = openai_requests.sample_request("m", PROMPTS[0], GREEDY, 0, 0)
    b = openai_requests.sample_request("m", PROMPTS[0], GREEDY.model_copy(update={"top_p": 0.5}), 0, 0)
    assert a.body["top_p"] == 1.0 and a.key() == b.key()


def test_structured_requests_send_no_stop_strings():
    s = SAMPLING.model_copy(update={"stop": ["}"]})
    assert "stop" not in openai_requests.sample_request("m", PROMPTS[0], s, 0, 0, schema=Query).body
    assert openai_requests.sample_request("m", PROMPTS[0], s, 0, 0).body["stop"] == ["}"]


def test_retry_after_ms_is_read_in_milliseconds():
    from types import SimpleNamespace

    import openai

    err = openai.RateLimitError.__new__(openai.RateLimitError)  # only its response's headers are read
    err.response = SimpleNamespace(headers={"retry-after-ms": "1500", "retry-after": "9"})
    assert openai_client.retry_after(err) == 1.5


def test_retry_after_in_seconds_or_as_an_http_date_is_waited_up_to_its_cap():
    """Retry-After is seconds or an HTTP date (RFC 9110); one in the past, or negative, is no wait; a daily quota's
    hours are waited ``MAX_RETRY_AFTER`` at most per attempt."""
    import datetime
    from email.utils import format_datetime
    from types import SimpleNamespace

    import openai

    def err(value: str):
        e = openai.RateLimitError.__new__(openai.RateLimitError)  # only its response's headers are read
        e.response = SimpleNamespace(headers={"retry-after": value})
        return e

    now = datetime.datetime.now(datetime.UTC)
    assert openai_client.retry_after(err("7")) == 7.0 and openai_client.retry_after(err("-5")) == 0.0
    assert 20 < openai_client.retry_after(err(format_datetime(now + datetime.timedelta(seconds=30), usegmt=True))) <= 30
    assert openai_client.retry_after(err(format_datetime(now - datetime.timedelta(hours=1), usegmt=True))) == 0.0
    assert openai_client.retry_after(err("soon")) is None
    wait = openai_client._wait(SimpleNamespace(outcome=SimpleNamespace(exception=lambda: err("86400"))))
    assert openai_client.MAX_RETRY_AFTER <= wait <= openai_client.MAX_RETRY_AFTER + openai_client.BACKOFF_JITTER


def _status_error(status: int, message: str, type_: str | None = None, code: str | None = None,
                  param: str | None = None):
    import openai

    e = openai.APIStatusError.__new__(openai.APIStatusError)  # only these fields are read
    e.status_code, e.message, e.type, e.code, e.param = status, message, type_, code, param
    e.body = {"message": message, "type": type_, "code": code}
    return e


def test_a_timeout_a_conflict_or_a_rate_limit_is_retried_another_refusal_is_not():
    assert [openai_client.retryable(_status_error(s, "x")) for s in (408, 409, 429, 500, 400, 404, 413, 422)] == [
        True, True, True, True, False, False, False, False]


def test_a_refused_parameter_named_as_a_json_path_fails_the_call():
    """Servers name the parameter ``logprobs``, ``$.logprobs`` or ``body.logprobs``: each concerns every request."""
    req = openai_requests.first_token_request("m", PROMPTS[0])
    for param in ("logprobs", "$.logprobs", "body.logprobs"):
        wide = openai_client.request_wide(_status_error(400, "logprobs is not supported", param=param), req)
        assert wide is not None and wide[0] == "the server does not accept the request parameter 'logprobs'", param
    assert openai_client.request_wide(_status_error(400, "bad message", param="messages"), req) is None


def test_an_answer_from_a_dated_snapshot_is_the_model_asked_for_another_model_is_not():
    assert openai_client.same_model("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert not openai_client.same_model("gpt-4", "gpt-4o") and not openai_client.same_model("gpt-4o", "gpt-4")
    assert openai_client.same_model("gpt-4", "gpt-4-0613")
    assert openai_client.same_model("claude-3-5-sonnet", "claude-3-5-sonnet-20241022")
    # a router falling back to a smaller model of the same family is another model, warned about
    assert not openai_client.same_model("gpt-4o", "gpt-4o-mini")
    assert not openai_client.same_model("llama-3", "llama-3-70b") and not openai_client.same_model("gpt-4", "gpt-4-1106-preview")


def test_usage_counts_integer_token_counts_only_and_too_long_is_a_refusal_only():
    """A server reporting a count as text or a float is not billed by it (nor does it break the sum); a failure that
    was not refused (retried in vain) is never the row's prompt being too long, whatever its text says."""
    from types import SimpleNamespace

    counter = SimpleNamespace(tokens={"prompt": 0, "completion": 0})
    openai_client.Transport._count(counter, {"usage": {"prompt_tokens": "12", "completion_tokens": 5}})
    openai_client.Transport._count(counter, {"usage": {"prompt_tokens": 2.0, "completion_tokens": True}})
    assert counter.tokens == {"prompt": 0, "completion": 5}
    line = SimpleNamespace(_describe=lambda e: "HTTP 503: upstream context length exceeded")
    assert not openai_client.Transport._failed(line, ValueError(), refused=False).too_long
    assert openai_client.Transport._failed(line, ValueError(), refused=True).too_long


def test_a_failed_connection_is_described_by_its_cause():
    """The client's own message is only "Connection error."; the cause says what failed (refused, DNS, TLS)."""
    import openai

    e = openai.APIConnectionError.__new__(openai.APIConnectionError)
    e.__cause__ = ConnectionRefusedError("[Errno 111] Connection refused")
    assert openai_client.describe(e, 30) == "connection failed (ConnectionRefusedError: [Errno 111] Connection refused)"


def test_an_answer_vllm_aborted_is_retried_not_the_rows_failure():
    """vLLM ends a request it aborted (preempted, server shutting down) with finish_reason "abort": the server's
    trouble, retried like an unreadable answer; a content filter's end is the row's."""
    from pipeline.llm.openai_client import BadResponse, RowError

    def answer(reason):
        return {"choices": [{"message": {"content": "partial"}, "finish_reason": reason}]}

    with pytest.raises(BadResponse, match="did not finish"):
        openai_requests.read_sample(answer("abort"))
    with pytest.raises(RowError, match="content_filter"):
        openai_requests.read_sample(answer("content_filter"))
    two = {"choices": [answer("stop")["choices"][0], {**answer("stop")["choices"][0], "index": 1}]}
    with pytest.raises(BadResponse, match="expected 1 choice, got 2"):  # n=1 was asked for
        openai_requests.read_sample(two)


def test_prompt_logprobs_for_another_number_of_tokens_are_an_unreadable_answer():
    """A server that tokenized the prompt otherwise would score other tokens: not summed, retried as unreadable."""
    from pipeline.llm.openai_client import BadResponse

    data = {"choices": [{"index": 0, "prompt_logprobs": [None, {"7": -0.5}]}]}
    with pytest.raises(BadResponse, match="prompt_logprobs has 2 positions for a prompt of 3 tokens"):
        openai_requests.read_prompt_logprobs(data, [[1, 3]], [[5, 7, 9]], "m", "scoring")
    # an entry is {"logprob": x} or, from some servers, x itself
    data = {"choices": [{"index": 0, "prompt_logprobs": [None, {"7": -0.5}, {"9": {"logprob": -1.0}}]}]}
    assert openai_requests.read_prompt_logprobs(data, [[1, 3]], [[5, 7, 9]], "m", "scoring") == [-1.5]
    # choices come back in any order: each is its prompt's by its index
    data = {"choices": [{"index": 1, "prompt_logprobs": [None, {"8": -2.0}]},
                        {"index": 0, "prompt_logprobs": [None, {"7": -0.5}]}]}
    assert openai_requests.read_prompt_logprobs(data, [[1, 2], [1, 2]], [[5, 7], [5, 8]], "m", "scoring") == [-0.5, -2.0]


def test_echoed_logprobs_that_do_not_line_up_with_the_prompt_fail_the_call():
    from pipeline.llm.openai_client import ServerError

    def echo(tokens, lps):
        return {"choices": [{"index": 0, "logprobs": {"tokens": tokens, "token_logprobs": lps}}]}

    def read(data):
        return openai_requests.read_echo_logprobs(data, [[1, 3]], [[5, 7, 9]], "m", "scoring", lambda i: None)

    assert read(echo(["a", "b", "c"], [None, -1.0, -2.0])) == [-3.0]
    with pytest.raises(ServerError, match="echoed 3 log-probabilities for a prompt of 3 tokens"):
        read(echo(["a", "b"], [None, -1.0, -2.0]))  # two tokens named for three values
    with pytest.raises(ServerError, match=r"a null log-probability in positions 1\.\.2"):
        read(echo(None, [None, None, -2.0]))


def test_no_credit_is_a_4xx_naming_it_in_its_type_code_or_message_not_a_5xx():
    """OpenAI's 429 says ``insufficient_quota`` in its type (some servers leave the code null): not retried. A 5xx
    is the server's trouble, whatever its text says (a proxy's pool of keys): retried."""
    err = _status_error
    quota = err(429, "You exceeded your current quota", type_="insufficient_quota")
    assert openai_client.quota_exhausted(quota) and not openai_client.retryable(quota)
    upstream = err(503, "upstream key pool: insufficient_quota, retrying another key", type_="server_error")
    assert not openai_client.quota_exhausted(upstream) and openai_client.retryable(upstream)


def test_a_cache_file_stored_under_another_key_reads_as_a_miss(tmp_path):
    from pipeline.llm.request_cache import MISS, RequestCache

    cache = RequestCache(tmp_path)
    cache.put("a" * 64, "answer a")
    cache.path("b" * 64).parent.mkdir(parents=True)
    cache.path("b" * 64).write_text(cache.path("a" * 64).read_text())  # a file copied to the wrong name
    assert cache.get("a" * 64) == "answer a" and cache.get("b" * 64) is MISS


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
