"""Issue #19: with the openai backend, a row the server refuses fails that row, never the stage.

A refusal (a 4xx other than 408/409/429) is deterministic, so raising for the call would fail every
rerun: it becomes that row's failure (NaN ``choose`` / ``logprobs`` values, a ``GenerationFailure``
sample), a context-length refusal raises ``InputTooLong`` like the in-process engines, and failures a
rerun can fix (5xx after retries) still fail the call. The loopback server refuses every request that
contains a marker (``server.refuse``).
"""

from __future__ import annotations

import logging
import math

import polars as pl
import pytest

from pipeline.llm import Completion, GenerationFailure
from pipeline.llm.chat import InputTooLong, per_prompt
from pipeline.llm.openai_engine import OpenAIEngine, RequestsFailed
from pipeline.records import MESSAGES_TYPE
from stages import pugc, pugc_judge, selfie, wildfeedback_models, wildfeedback_pairs
from tests import test_openai as base
from tests.dove_fakes import comparisons, run_judge
from tests.test_openai import KEY, PROMPTS, SAMPLING, config

pytestmark = pytest.mark.openai
server, env = base.server, base.env  # the loopback server and a clean cache/key per test

FILTERED = (400, "The response was filtered due to the prompt triggering content management policy")
TOO_LONG = (400, "This model's maximum context length is 2048 tokens. However, you requested 9000 tokens")
MARK = "haiku"  # in PROMPTS[2] only
OPTIONS = ["1", "2", "3", "4", "5"]


def test_a_refused_choose_row_is_nan_and_the_other_rows_keep_their_answers(server, caplog):
    want = server.engine.choose(PROMPTS, OPTIONS)
    server.refuse[MARK] = FILTERED
    engine = OpenAIEngine(config(server, max_retries=0))
    with caplog.at_level(logging.WARNING):
        got = engine.choose(PROMPTS, OPTIONS)
    assert all(math.isnan(p) for p in got[2])
    assert got[2][0].error.startswith("request refused: HTTP 400: The response was filtered")  # FailedValue
    for g, w in zip(got[:2], want[:2], strict=True):
        assert g == pytest.approx(w, abs=1e-6)
    # option_scoring: first_token too (options: the first prompt's two likeliest first tokens).
    ids = server._next_token_logprobs(server.engine.codec.prompt_ids(PROMPTS[0]))[-1].topk(2).indices.tolist()
    options = [server.engine.tokenizer.decode([i]) for i in ids]
    first = OpenAIEngine(config(server, option_scoring="first_token", max_retries=0))
    top, refused = first.choose([PROMPTS[0], PROMPTS[2]], options)
    assert sum(top) == pytest.approx(1.0) and all(math.isnan(p) for p in refused)
    warned = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert warned and "choose: prompt 2 refused by the server (HTTP 400: The response was filtered" in warned[0]
    assert all("\n" not in m and KEY not in m for m in warned)


def test_a_refused_logprobs_row_is_nan_with_its_token_count(server):
    responses = ["Of course, what do you need?", "144.", "Leaves fall slowly."]
    want = server.engine.logprobs(PROMPTS, responses)
    server.refuse[MARK] = (422, "Unprocessable entity: invalid token ids")
    got = OpenAIEngine(config(server, max_retries=0)).logprobs(PROMPTS, responses)
    assert math.isnan(got[2].logprob) and got[2].n_tokens == want[2].n_tokens
    assert got[2].logprob.error == "request refused: HTTP 422: Unprocessable entity: invalid token ids"
    for g, w in zip(got[:2], want[:2], strict=True):
        assert g.n_tokens == w.n_tokens and g.logprob == pytest.approx(w.logprob, rel=1e-5)


def test_a_refused_plain_sample_is_a_generation_failure_and_a_rerun_sends_only_it(server):
    engine = OpenAIEngine(config(server, max_retries=0))
    server.refuse[MARK] = (413, "Request entity too large")
    start = len(server.log)
    out = engine.generate(PROMPTS, n=2, sampling=SAMPLING)
    assert all(isinstance(c, Completion) for row in out[:2] for c in row)
    assert [type(x) for x in out[2]] == [GenerationFailure, GenerationFailure]
    assert out[2][0].error == "request refused: HTTP 413: Request entity too large"
    assert len(server.log) - start == 6
    server.refuse.clear()
    again = engine.generate(PROMPTS, n=2, sampling=SAMPLING)
    assert again[:2] == out[:2] and all(isinstance(c, Completion) for c in again[2])
    assert len(server.log) - start == 8  # the two refused samples only: the others were cached


def test_a_context_length_refusal_is_input_too_long_and_per_prompt_keeps_the_others(server):
    engine = OpenAIEngine(config(server, max_retries=0))
    want = server.engine.choose(PROMPTS, ["A", "B"])
    server.refuse[MARK] = TOO_LONG
    with pytest.raises(InputTooLong, match=r"choose: prompt 2 does not fit the served model's context length "
                                           r"\(HTTP 400: This model's maximum context length is 2048") as e:
        engine.choose(PROMPTS, ["A", "B"])
    assert "\n" not in str(e.value)
    with pytest.raises(InputTooLong, match="generate: prompt 2 does not fit"):
        engine.generate(PROMPTS, n=2, sampling=SAMPLING)
    # The WildFeedback judge's per-prompt path: the row that does not fit is NaN, the others are kept.
    got = per_prompt(lambda ps: engine.choose(ps, ["A", "B"]), PROMPTS, lambda e: [math.nan, math.nan])
    assert all(math.isnan(p) for p in got[2])
    for g, w in zip(got[:2], want[:2], strict=True):
        assert g == pytest.approx(w, abs=1e-6)


def test_a_persistent_server_error_still_fails_the_call_naming_the_prompt(server):
    engine = OpenAIEngine(config(server, max_retries=1))
    server.refuse[MARK] = (500, "Internal server error")
    with pytest.raises(RequestsFailed, match=r"choose: 1 of 3 requests failed \(first: prompt 2: HTTP 500: "
                                             r"Internal server error; llm.max_retries=1\)") as e:
        engine.choose(PROMPTS, OPTIONS)
    assert "\n" not in str(e.value)
    with pytest.raises(RequestsFailed, match="prompt 2: HTTP 500"):
        engine.logprobs(PROMPTS, ["a", "b", "c"])
    with pytest.raises(RequestsFailed, match="prompt 2: HTTP 500"):
        engine.generate(PROMPTS, n=1, sampling=SAMPLING)


def test_dove_judge_through_the_server_fails_only_the_refused_comparison(server):
    comps = comparisons([("Name a fruit.", "An apple.", "Name a colour.", "Blue."),
                         ("Write a haiku.", "Leaves fall.", "Say hi.", "Hi!"),
                         ("What is 2+2?", "4.", "What is 3+3?", "6.")])
    engine = OpenAIEngine(config(server, max_retries=0))
    server.refuse[MARK] = FILTERED
    out = run_judge(comps, engine)
    failure = dict(zip(out["comparison_id"], out["failure"], strict=True))
    assert failure["c0"] is None and failure["c2"] is None
    assert failure["c1"] == ("engine error: request refused: HTTP 400: The response was filtered due to the prompt "
                             "triggering content management policy")
    assert out.filter(pl.col("comparison_id") == "c1")["p_first_ab"][0] is None


def test_pugc_judge_through_the_server_drops_the_refused_row_never_labels_it(server):
    import pyarrow as pa

    batch = pa.table({"query": ["Name a fruit.", "Write a haiku.", "What is 2+2?"],
                      "reference": ["Apples are fruit.", "Autumn leaves.", "Two and two make four."]})
    engine = OpenAIEngine(config(server, max_retries=0))
    server.refuse[MARK] = FILTERED
    judged = pl.from_arrow(pugc_judge.judge_answerable(batch, engine))
    kept = pugc_judge.query_filter(judged, threshold=0.0)
    assert kept["drop"].to_list()[1] == "judge_failed" and kept["drop"].to_list()[0] is None


def test_plain_sampling_steps_drop_and_count_a_refused_sample_as_generation_failed(server):
    import pyarrow as pa

    engine = OpenAIEngine(config(server, max_retries=0))
    server.refuse[MARK] = FILTERED
    short = SAMPLING.model_copy(update={"max_new_tokens": 4})
    queries = pa.table({"prompt_id": ["p0", "p1"], "query": ["Name a fruit.", "Write a haiku."]})
    responses = pugc.response_filter(pl.from_arrow(pugc.sample_responses(queries, engine, k=2, sampling=short)))
    assert responses.filter(pl.col("prompt_id") == "p1")["drop"].to_list() == ["generation_failed"] * 2
    assert "generation_failed" not in responses.filter(pl.col("prompt_id") == "p0")["drop"].to_list()
    messages = pa.array([PROMPTS[0], PROMPTS[2]], MESSAGES_TYPE)
    sampled = selfie.sample(pa.table({"prompt_id": ["p0", "p2"], "messages": messages}), engine, k=2, sampling=short)
    assert sampled["finish_reason"].to_pylist()[2:] == ["failed", "failed"]
    assert sampled["text"].to_pylist()[2:] == ["", ""] and "failed" not in sampled["finish_reason"].to_pylist()[:2]
    answered = wildfeedback_models.respond(pa.table({"prompt": messages, "preference": ["brief", "brief"]}), engine,
                                          sampling=short, system=None)
    assert answered["finish_reason"].to_pylist()[1] == "failed" and answered["generated"].to_pylist()[1] is None


def test_wildfeedback_checklist_judge_marks_a_refused_pair_null_and_drops_it_as_judge_failed(server):
    import pyarrow as pa

    engine = OpenAIEngine(config(server, max_retries=0))
    server.refuse[MARK] = FILTERED
    batch = pa.table({"prompt": pa.array([PROMPTS[0], PROMPTS[2]], MESSAGES_TYPE), "chosen": ["Sure.", "Leaves."],
                      "rejected": ["No.", "Snow."], "preference": ["be kind", "be brief"]})
    out = wildfeedback_models.judge(batch, engine, template_text="{dialogue}\n{checklist}\nA: {answer_a}\nB: "
                                   "{answer_b}\nWhich is better?", context_messages=None, max_chars=2000)
    assert out["p_chosen_first"].to_pylist()[1] is None and out["p_chosen_second"].to_pylist()[1] is None
    assert not math.isnan(out["p_chosen_first"].to_pylist()[0])
    judged = pl.from_arrow(out)
    assert judged.select(wildfeedback_models.judge_drop_reason()).to_series()[1] == "judge_failed"
    reasons = pl.DataFrame({"chosen_finish_reason": ["stop", "failed"], "rejected_finish_reason": ["stop", "stop"],
                            "chosen": ["a", ""], "rejected": ["b", "b"], "feedback_sat": [False, False]})
    assert reasons.select(wildfeedback_pairs.pair_drop_reason("sat")).to_series().to_list()[1] == "generation_failed"
