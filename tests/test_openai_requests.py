"""The openai backend's requests and answers read without a server: cache keys, sampling fields, Retry-After,
which errors are retried or fail the call, usage counts, unreadable log-probabilities, the disk cache's files."""

from __future__ import annotations

import pytest

from pipeline.llm import openai_client, openai_requests
from tests.openai_cases import GREEDY, PROMPTS, SAMPLING, Query

pytestmark = pytest.mark.openai


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
