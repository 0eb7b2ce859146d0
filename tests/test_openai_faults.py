"""The openai backend against answers real servers, routers and proxies give that the happy path never sees:
a 200 without choices; refusals that concern every request (a parameter the model does not take, no credit
left, a base_url without /v1); a server that ignores the token budget; a model that declines; a first answer
token that is none of the options; an answer from another model; error messages that repeat the API key;
and the usage the server reports. The loopback server injects them (tests/openai_server.py: ``faults``,
``unsupported``, ``ignored``, ``refuse``, ``answer_model``)."""

from __future__ import annotations

import logging

import pytest

from pipeline.llm.openai_client import ServerError
from pipeline.llm.openai_engine import OpenAIEngine, RequestsFailed
from tests import test_openai as base
from tests.test_openai import KEY, KEY_ENV, PROMPTS, SAMPLING, config

pytestmark = pytest.mark.openai
server, env = base.server, base.env  # the loopback server and a clean cache/key per test


def test_an_answer_without_choices_is_retried_on_every_endpoint(server):
    """A 200 whose ``choices`` is empty is an unreadable answer: retried, never an IndexError traceback."""
    first = OpenAIEngine(config(server, option_scoring="first_token", max_retries=1))
    ids = server._next_token_logprobs(server.engine.codec.prompt_ids(PROMPTS[0]))[-1].topk(2).indices.tolist()
    options = [server.engine.tokenizer.decode([i]) for i in ids]
    want = OpenAIEngine(config(server, option_scoring="first_token")).choose(PROMPTS[:1], options)
    first.transport.cache.root = first.transport.cache.root.with_name("empty")
    server.faults.append("empty")
    start = len(server.log)
    assert first.choose(PROMPTS[:1], options) == want
    assert len(server.log) - start == 2
    server.faults.extend(["empty", "empty"])
    with pytest.raises(RequestsFailed, match=r"choose: 1 of 1 requests failed \(first: prompt 0: .*expected 1 choice, got 0"):
        first.choose(PROMPTS[1:2], options)
    server.faults.extend(["empty", "empty"])
    with pytest.raises(RequestsFailed, match=r"generate: 1 of 1 requests failed .*expected 1 choice, got 0"):
        OpenAIEngine(config(server, max_retries=1)).generate(PROMPTS[2:], n=1, sampling=SAMPLING)


def test_a_parameter_the_server_does_not_take_fails_the_call_at_once_naming_it(server):
    """A 400 naming a parameter we set (OpenAI: ``param``, ``code: unsupported_parameter``; e.g. a reasoning
    model and ``temperature``, ``logprobs``) concerns every request: one error before the rows all fail alike."""
    server.unsupported["top_logprobs"] = "Unsupported parameter: 'top_logprobs' is not supported with this model."
    engine = OpenAIEngine(config(server, option_scoring="first_token", max_retries=3))
    start = len(server.log)
    with pytest.raises(ServerError, match=r"model 'tiny' at .*: the server does not accept the request parameter "
                                          r"'top_logprobs' \(HTTP 400: Unsupported parameter: 'top_logprobs'") as e:
        engine.choose(PROMPTS, ["a", "b"])
    assert "\n" not in str(e.value) and "option_scoring" in str(e.value)
    assert len(server.log) - start <= len(PROMPTS)  # never retried
    server.unsupported.clear()
    server.unsupported["temperature"] = "Unsupported value: 'temperature' does not support 0.8 with this model."
    with pytest.raises(ServerError, match=r"does not accept the request parameter 'temperature'.*llm.sampling"):
        OpenAIEngine(config(server)).generate(PROMPTS, n=2, sampling=SAMPLING)


def test_a_context_length_refusal_naming_max_tokens_stays_the_rows(server):
    """vLLM names ``max_tokens`` when prompt + max_tokens exceed the context: that is the prompt's length, one row's
    problem (InputTooLong, so the stages' per-prompt paths apply), not a parameter every request would be refused."""
    from pipeline.llm.chat import InputTooLong

    server.unsupported["max_completion_tokens"] = ("'max_tokens' or 'max_completion_tokens' is too large: 24. This "
                                                   "model's maximum context length is 2048 tokens")
    with pytest.raises(InputTooLong, match="generate: prompt 0 does not fit"):
        OpenAIEngine(config(server, max_retries=0)).generate(PROMPTS[:1], n=1, sampling=SAMPLING)


def test_an_account_without_quota_fails_at_once_without_retrying(server):
    """OpenAI's 429 ``insufficient_quota`` is billing, not a rate limit: waiting does not help."""
    engine = OpenAIEngine(config(server, max_retries=5))
    server.faults.extend(["quota"] * 6)
    start = len(server.log)
    with pytest.raises(ServerError, match=r"no quota left .*HTTP 429: You exceeded your current quota"):
        engine.generate(PROMPTS[:1], n=1, sampling=SAMPLING)
    assert len(server.log) - start == 1
    # OpenRouter: 402 Payment Required. Not one refused row per request: the call fails at once.
    server.faults.clear()
    server.faults.append("402")
    with pytest.raises(ServerError, match=r"no quota left \(HTTP 402: Insufficient credits"):
        engine.generate(PROMPTS[1:2], n=1, sampling=SAMPLING)


def test_the_key_a_server_echoes_is_in_no_log_line_or_error(server, caplog):
    engine = OpenAIEngine(config(server, max_retries=1))
    server.faults.append("echo")
    with caplog.at_level(logging.WARNING):
        out = engine.generate(PROMPTS[:1], n=1, sampling=SAMPLING)
    assert len(out[0]) == 1
    retried = [r.getMessage() for r in caplog.records if "retry 1 of 1" in r.getMessage()]
    assert retried and "HTTP 502" in retried[0]
    assert all(KEY not in r.getMessage() for r in caplog.records)
    server.faults.append("echo401")
    with pytest.raises(ServerError, match="rejected the API key") as e:
        engine.generate(PROMPTS[1:2], n=1, sampling=SAMPLING)
    assert KEY not in str(e.value) and "Bearer ***" in str(e.value)
    server.faults.extend(["echo", "echo"])
    with pytest.raises(RequestsFailed) as e:
        engine.generate(PROMPTS[2:], n=1, sampling=SAMPLING)
    assert KEY not in str(e.value) and KEY_ENV not in str(e.value)


def test_describe_replaces_the_key_before_cutting_the_line():
    """A key straddling the cut would otherwise leave its first characters in the message."""
    from pipeline.llm.openai_client import describe

    line = describe(ValueError("x" * 290 + f" Authorization: Bearer {KEY}"), 1.0, secret=KEY)
    assert KEY[:12] not in line and len(line) <= len("ValueError: ") + 300
    assert describe(ValueError(f"key {KEY}"), 1.0, secret=KEY) == "ValueError: key ***"


def test_a_server_that_ignores_the_token_budget_is_a_clear_error_not_longer_answers(server):
    """``max_completion_tokens`` is OpenAI's current name; a server that knows only ``max_tokens`` (vLLM before
    0.6.4, TGI, llama.cpp until 2026) drops it unread and answers past the budget: never "length" at
    ``max_new_tokens``, answers unlike in-process, a hosted bill unbounded. The answer's ``usage`` shows it."""
    short = SAMPLING.model_copy(update={"max_new_tokens": 2})
    honest = OpenAIEngine(config(server)).generate(PROMPTS[:1], n=1, sampling=short)
    assert honest[0][0].cut_off
    server.ignored.add("max_completion_tokens")
    engine = OpenAIEngine(config(server))
    engine.transport.cache.root = engine.transport.cache.root.with_name("ignored")
    with pytest.raises(ServerError, match=r"model 'tiny': the server answered with \d+ tokens, over "
                                          r"max_completion_tokens=2: it ignores that parameter") as e:
        engine.generate(PROMPTS[:1], n=1, sampling=short)
    assert "\n" not in str(e.value)
    assert not list(engine.transport.cache.root.rglob("*.json"))  # nothing cached


def test_only_stop_and_length_answers_are_kept_and_the_token_budget_is_inclusive():
    """An answer the server ended for another reason ("content_filter", "tool_calls") fails its row, never
    passing as a finished answer; ``usage`` at ``max_completion_tokens`` is a server that kept the budget, one
    token over it one that ignored it."""
    from pipeline.llm.openai_client import RowError
    from pipeline.llm.openai_requests import read_sample

    def answer(reason: str, used: int = 3) -> dict:
        return {"choices": [{"message": {"content": "Hi."}, "finish_reason": reason}],
                "usage": {"completion_tokens": used}}

    assert read_sample(answer("length", 4), "tiny", budget=4) == {"text": "Hi.", "finish_reason": "length"}
    assert read_sample(answer("stop"), "tiny", budget=4) == {"text": "Hi.", "finish_reason": "stop"}
    for reason in ("content_filter", "tool_calls"):
        with pytest.raises(RowError, match=f"the server ended the answer with finish_reason='{reason}'"):
            read_sample(answer(reason), "tiny", budget=4)
    with pytest.raises(ServerError, match=r"the server answered with 5 tokens, over max_completion_tokens=4"):
        read_sample(answer("length", 5), "tiny", budget=4)


def test_a_model_that_declines_is_that_rows_failure_saying_so_never_an_empty_answer(server):
    """With structured outputs OpenAI answers a declined request with ``content: null`` and the reason in
    ``refusal``: that sample fails with the model's reason, not as an empty answer or as "invalid JSON"."""
    from pipeline.llm import Completion, GenerationFailure
    from tests.test_openai import Query

    server.refuse["haiku"] = (200, "I'm sorry, I can't help with that.")  # PROMPTS[2] only
    engine = OpenAIEngine(config(server, structured_retries=1))
    plain = engine.generate(PROMPTS, n=1, sampling=SAMPLING)
    assert all(isinstance(c, Completion) for [c] in plain[:2])
    assert plain[2][0] == GenerationFailure(error="request refused: the model refused: I'm sorry, I can't help "
                                                  "with that.", raw="", attempts=1)
    structured = engine.generate(PROMPTS, n=1, sampling=SAMPLING, schema=Query)
    assert all(isinstance(q, Query) for [q] in structured[:2])
    [failed] = structured[2]
    assert isinstance(failed, GenerationFailure) and failed.attempts == 2
    assert failed.error == "request refused: the model refused: I'm sorry, I can't help with that."


def test_the_usage_the_server_reports_is_summed_and_logged_per_call(server, caplog):
    """What a hosted API bills: prompt and completion tokens from each answer's ``usage``; cached answers add none."""
    engine = OpenAIEngine(config(server))
    short = SAMPLING.model_copy(update={"max_new_tokens": 3})
    with caplog.at_level(logging.INFO):
        out = engine.generate(PROMPTS[:2], n=2, sampling=short)
    prompt = 2 * sum(len(server.engine.codec.prompt_ids(p)) for p in PROMPTS[:2])
    completion = sum(min(3, len(server.engine.tokenizer.encode(c.text, add_special_tokens=False)))
                     for row in out for c in row)
    assert engine.transport.tokens == {"prompt": prompt, "completion": completion} and completion > 0
    assert not [r for r in caplog.records if r.name.startswith("httpx")]  # not one line per HTTP request
    line = [r.getMessage() for r in caplog.records if "answered from the cache" in r.getMessage()][-1]
    assert (f"4 requests sent, 0 answered from the cache; this engine so far: 4 requests, {prompt} prompt + "
            f"{completion} completion tokens") in line
    engine.generate(PROMPTS[:2], n=2, sampling=short)
    assert engine.transport.tokens == {"prompt": prompt, "completion": completion}


def test_a_base_url_without_v1_says_what_the_api_root_is(server):
    """The commonest slip (``http://host:8000`` for ``http://host:8000/v1``) is a 404 for every request."""
    for url in (server.url.removesuffix("/v1"), server.url + "/chat/completions"):
        with pytest.raises(ServerError, match=r"does not serve this model or endpoint \(HTTP 404.*\); llm.base_url "
                                              r"is the API root, e.g. http://node1:8000/v1"):
            OpenAIEngine(config(server, base_url=url, max_retries=0)).generate(PROMPTS[:1], n=1, sampling=SAMPLING)
    with pytest.raises(ServerError, match=r"does not serve this model .*<base_url>/models lists them"):
        OpenAIEngine(config(server, model="tiny@7", max_retries=0)).generate(PROMPTS[:1], n=1, sampling=SAMPLING)


def test_first_token_choose_fails_only_the_rows_whose_answer_starts_otherwise(server, caplog):
    """A prompt whose first answer token is none of the options (the model opens with "Sure", "**") is that row's
    failure: its answer is cached, so raising for the call would fail every rerun of the stage. Only when no
    prompt of the call has an option among its top tokens (the options are not single tokens) is the call wrong."""
    import math

    from pipeline.llm.base import FailedValue

    def top20(prompt) -> list[str]:
        ids = server._next_token_logprobs(server.engine.codec.prompt_ids(prompt))[-1].topk(20).indices.tolist()
        return [server.engine.tokenizer.decode([i]) for i in ids]

    others = {t.strip() for t in top20(PROMPTS[1])}
    options = [t for t in top20(PROMPTS[2]) if t.strip() and t.strip() not in others][:2]
    assert len(options) == 2  # the tiny model is seeded: these are fixed
    engine = OpenAIEngine(config(server, option_scoring="first_token"))
    with caplog.at_level(logging.WARNING):
        scored, missing = engine.choose([PROMPTS[2], PROMPTS[1]], options)
    assert sum(scored) == pytest.approx(1.0)
    assert all(isinstance(p, FailedValue) and math.isnan(p) for p in missing)
    assert missing[0].error.startswith(f"none of the options is among the 20 most likely first answer tokens "
                                       f"(the answer starts with {top20(PROMPTS[1])[:5]}")
    assert any("choose: for 1 of 2 prompts none of the options" in r.getMessage() for r in caplog.records)
    with pytest.raises(RequestsFailed, match=r"for 1 of 1 prompts none of the options .* single-token options"):
        engine.choose(PROMPTS[1:2], options)


def test_answers_from_another_model_than_asked_are_warned_about_once(server, caplog):
    """A router's fallback (OpenRouter, LiteLLM) answers from another model: the answers are kept (a hosted API's
    dated snapshot, "gpt-4o-mini" -> "gpt-4o-mini-2024-07-18", is the same model) but cached under the name asked
    for, so the run says so once per engine."""
    engine = OpenAIEngine(config(server))
    server.answer_model = "tiny-2024-07-18"  # a dated snapshot of the model asked for: no warning
    with caplog.at_level(logging.WARNING):
        engine.generate(PROMPTS[:1], n=2, sampling=SAMPLING)
    assert not [r for r in caplog.records if "answered with model" in r.getMessage()]
    server.answer_model = "other/fallback-model"
    with caplog.at_level(logging.WARNING):
        engine.generate(PROMPTS[1:], n=2, sampling=SAMPLING)
    warned = [r.getMessage() for r in caplog.records if "answered with model" in r.getMessage()]
    assert len(warned) == 1 and "answered with model 'other/fallback-model' when asked for 'tiny'" in warned[0]
