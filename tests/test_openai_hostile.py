"""Hostile answers from an OpenAI-compatible server, through the stage steps that consume them: a lone UTF-16
surrogate escape in the text, finish reasons other than stop/length, NaN / Infinity / 1e400 / impossible numbers as
log-probabilities, every option at -Infinity. Each is that row's failure with a one-line reason (or, where a rerun
may get an answer, the call's), never a traceback, a Parquet write failure or a NaN turned into a verdict. The
loopback server sends the answers as written (``server.raw``); export's side is tests/test_hostile_outputs.py."""

from __future__ import annotations

import json
import math

import polars as pl
import pyarrow as pa
import pytest

from pipeline.llm.openai_client import RowError
from pipeline.llm.openai_engine import OpenAIEngine, RequestsFailed, softmax
from pipeline.llm.openai_requests import (
    read_echo_logprobs,
    read_prompt_logprobs,
    read_sample,
    read_top_logprobs,
)
from pipeline.records import MESSAGES_TYPE
from stages import pugc, wildfeedback_models
from tests import test_openai as base
from tests.test_openai import PROMPTS, SAMPLING, config

pytestmark = pytest.mark.openai
server, env = base.server, base.env  # the loopback server and a clean cache/key per test

MARK = "haiku"  # in PROMPTS[2] only


def chat(content: str | None, finish_reason: str | None = "stop") -> str:
    """A one-choice chat answer as JSON text (``json.dumps`` writes a lone surrogate as its ``\\ud800`` escape)."""
    return json.dumps({"id": "x", "model": "tiny", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}]})


# (case, the server's answer, the PUGC response filter's reason for the row; None: kept)
SAMPLES = [
    ("lone surrogate", chat("Leaves fall \ud800 softly."), "generation_failed"),
    ("content filter", chat("Leaves", "content_filter"), "generation_failed"),
    ("tool calls", chat(None, "tool_calls"), "generation_failed"),
    ("white space", chat(" \n "), "empty_response"),
    ("line separator", chat("Leaves fall.\u2028Snow comes."), None),
    ("invalid utf-8", chat("Leaves fall. Snow comes.").encode().replace(b"Snow", b"Sn\xffw"), None),  # U+FFFD
]


@pytest.mark.parametrize(("case", "answer", "reason"), SAMPLES, ids=[c for c, _, _ in SAMPLES])
def test_a_hostile_sample_is_that_rows_failure_and_the_others_stand(server, case, answer, reason):
    """A lone surrogate was a UnicodeEncodeError traceback when the step built its Arrow column (no Parquet
    column can hold one); now the row fails saying so."""
    server.raw[MARK] = answer
    try:
        engine = OpenAIEngine(config(server, max_retries=0))
        queries = pa.table({"prompt_id": ["p0", "p1"], "query": ["Name a fruit.", "Write a haiku."]})
        short = SAMPLING.model_copy(update={"max_new_tokens": 4})
        responses = pugc.response_filter(pl.from_arrow(pugc.sample_responses(queries, engine, k=1, sampling=short)))
    finally:
        server.raw.clear()
    assert responses.filter(pl.col("prompt_id") == "p1")["drop"].to_list() == [reason]
    assert responses.filter(pl.col("prompt_id") == "p0")["drop"].to_list() != ["generation_failed"]


def test_an_unfinished_answer_is_retried_then_fails_the_call_not_the_row(server):
    server.raw[MARK] = chat("Leaves", None)
    try:
        with pytest.raises(RequestsFailed, match=r"generate: 1 of 1 requests failed .*did not finish"):
            OpenAIEngine(config(server, max_retries=0)).generate([PROMPTS[2]], n=1, sampling=SAMPLING)
    finally:
        server.raw.clear()


def top(first: str, second: str = "-1.0") -> str:
    """A first_token answer whose top log-probabilities are "A": ``first`` and "B": ``second``, as JSON literals."""
    alts = f'[{{"token": "A", "logprob": {first}}}, {{"token": "B", "logprob": {second}}}]'
    return ('{"id": "x", "model": "tiny", "choices": [{"index": 0, "message": {"role": "assistant", "content": "A"}, '
            f'"finish_reason": "length", "logprobs": {{"content": [{{"token": "A", "logprob": -1.0, "top_logprobs": '
            f'{alts}}}]}}}}]}}')


# (case, "A"'s and "B"'s log-probabilities as the server writes them, the checklist judge's reason; None: kept)
TOPS = [
    ("nan", ("NaN", "-1.0"), "judge_failed"),
    ("infinity", ("Infinity", "-1.0"), "judge_failed"),
    ("1e400", ("1e400", "-1.0"), "judge_failed"),
    ("positive", ("800", "-1.0"), "judge_failed"),
    ("minus infinity", ("-Infinity", "-1.0"), "lost_in_judge"),
]


@pytest.mark.parametrize(("case", "values", "reason"), TOPS, ids=[c for c, _, _ in TOPS])
def test_a_hostile_log_probability_fails_the_judges_row_never_becomes_a_verdict(server, case, values, reason):
    """Infinity (1e400 reads so) made P(A) = inf / inf = NaN: a NaN the judge took for a prompt too long for it, or,
    in the second order, let the pair win; 800 was an OverflowError traceback from exp."""
    server.raw.update({MARK: top(*values), "Hello": top("-0.1", "-2.5")})  # the other row: a judge that answers
    try:
        engine = OpenAIEngine(config(server, option_scoring="first_token", max_retries=0))
        batch = pa.table({"prompt": pa.array([PROMPTS[0], PROMPTS[2]], MESSAGES_TYPE), "chosen": ["Sure.", "Leaves."],
                          "rejected": ["No.", "Snow."], "preference": ["be kind", "be brief"]})
        out = wildfeedback_models.judge(batch, engine, template_text="{dialogue}\n{checklist}\nA: {answer_a}\nB: "
                                        "{answer_b}\nWhich is better?", context_messages=None, max_chars=2000)
    finally:
        server.raw.clear()
    reasons = pl.from_arrow(out).select(wildfeedback_models.judge_drop_reason()).to_series().to_list()
    assert reasons[1] == reason and reasons[0] != "judge_failed"


def test_the_readers_refuse_impossible_log_probabilities_and_a_lone_surrogate_as_the_rows():
    """Each reader, one hostile value: a ``RowError`` naming it (the row fails), never a NaN sum."""
    prompt = {"choices": [{"index": 0, "prompt_logprobs": [None, {"7": -0.5}, {"9": {"logprob": math.nan}}]}]}
    echo = {"choices": [{"index": 0, "logprobs": {"tokens": None, "token_logprobs": [None, -1.0, math.inf]}}]}
    first = {"choices": [{"index": 0, "message": {"content": "A"}, "finish_reason": "length", "logprobs": {
        "content": [{"top_logprobs": [{"token": "A", "logprob": 3.5}]}]}}]}
    cases = [
        (lambda: read_prompt_logprobs(prompt, [[1, 3]], [[5, 7, 9]], "m", "scoring"),
         r"log-probability of nan for token 9 at position 2"),
        (lambda: read_echo_logprobs(echo, [[1, 3]], [[5, 7, 9]], "m", "scoring", lambda i: None),
         r"log-probability of inf at position 2"),
        (lambda: read_top_logprobs(first, "m"), r"log-probability of 3\.5 for the first answer token 'A'"),
        (lambda: read_sample(json.loads(chat("a\udfffb"))), r"lone surrogate \\udfff"),
    ]
    for read, message in cases:
        with pytest.raises(RowError, match=message):
            read()
    probs = softmax([-math.inf, -math.inf])
    assert all(math.isnan(p) for p in probs) and "every option" in probs[0].error
    assert softmax([-math.inf, 0.0]) == [0.0, 1.0]
