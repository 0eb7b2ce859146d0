"""WildFeedback's model detector fits the dialogue to the model: the oldest messages are left out (said in
the prompt, counted) until the prompt fits ``max_model_len``, instead of the turn failing as too long."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from pipeline.config import Sampling
from pipeline.llm.chat import InputTooLong
from stages import wildfeedback_detect as det
from stages.wildfeedback_common import prompt
from tests.llm_configs import llm_config

TEMPLATE = prompt("detect")
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "wildchat_sample" / "conversations.jsonl"
SAMPLING = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=64, stop=[], seed=0)


def _row(n_context: int, words: int = 100) -> dict:
    context = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i} " + "word " * words}
               for i in range(n_context)]
    return {"conversation_id": "c", "user_turn": n_context + 1, "context": context, "prev": "The answer.",
            "text": "That is wrong, try again."}


def _words_fit(limit: int):
    return lambda messages: len(messages[0]["content"].split()) <= limit


def _dialogue(p: list[dict]) -> str:
    text = p[0]["content"]
    return text[text.index("<<<DIALOGUE"): text.index("DIALOGUE>>>")]


def test_the_most_recent_messages_that_fit_are_kept_and_the_rest_said_left_out():
    row = _row(6)
    whole = len(det.detect_prompt(row, TEMPLATE, 1500, row["context"])[0]["content"].split())
    # Room for three of the six 101-word messages (and the note line).
    p, left_out, cut = det.fitted_prompt(row, TEMPLATE, 1500, None, _words_fit(whole - 3 * 101 + 5))
    shown = _dialogue(p)
    assert left_out == 3 and not cut and "[3 earlier messages not shown]" in shown
    assert [f"m{i} " in shown for i in range(6)] == [False] * 3 + [True] * 3


def test_a_prompt_that_fits_is_unchanged_and_no_count_means_the_whole_window():
    row = _row(6)
    whole = det.detect_prompt(row, TEMPLATE, 1500, row["context"])
    assert det.fitted_prompt(row, TEMPLATE, 1500, None, _words_fit(10**6)) == (whole, 0, False)
    assert det.fitted_prompt(row, TEMPLATE, 1500, None, None) == (whole, 0, False)  # the engine decides (InputTooLong)
    assert det.fitted_prompt(row, TEMPLATE, 1500, 2, None)[0] == det.detect_prompt(row, TEMPLATE, 1500, row["context"][-2:])


def test_when_no_dialogue_fits_the_judged_turn_and_reply_are_shortened_too():
    row = {**_row(4), "prev": "answer " * 400, "text": "That is wrong, try again."}
    bare = len(det.detect_prompt({**row, "prev": ""}, TEMPLATE, 1500, [], 4)[0]["content"].split())
    p, left_out, cut = det.fitted_prompt(row, TEMPLATE, 1500, None, _words_fit(bare + 50))
    assert left_out == 4 and cut and "[4 earlier messages not shown]" in _dialogue(p)
    assert len(p[0]["content"].split()) <= bare + 50
    assert "That is wrong, try again." in p[0]["content"] and "answer answer" in p[0]["content"]  # the long one is cut


class _Counting:
    """An engine with a word-count codec (max_len words) that refuses longer prompts, as the real ones do."""

    name = "counting"

    class codec:  # noqa: N801 - the engines' attribute name
        max_len = 1400

        @staticmethod
        def messages(messages, judge=False):
            return messages

        @staticmethod
        def prompt_text(messages):
            return messages[0]["content"]

        @staticmethod
        def encode(text):
            return text.split()

        @staticmethod
        def encode_chat(messages, text, generation):
            return text.split()

    def generate(self, prompts, n=1, sampling=None, schema=None):
        for p in prompts:
            if len(p[0]["content"].split()) + 1 > self.codec.max_len:
                raise InputTooLong(f"{len(p[0]['content'].split())} words")
        return [[schema(rationale="r", sat=False, sat_categories=[], dsat=True, dsat_categories=["Revision"],
                        refers_to_preceding=True)] for _ in prompts]


def test_llm_detect_shortens_long_dialogues_instead_of_failing_them():
    batch = pa.Table.from_pylist([_row(2), _row(12)])
    out = pl.from_arrow(det.llm_detect(batch, _Counting(), sampling=SAMPLING, template_text=TEMPLATE, max_chars=1500))
    assert out["ok"].to_list() == [True, True] and out["error"].to_list() == [None, None]
    assert out["context_left_out"][0] == 0 and 0 < out["context_left_out"][1] < 12
    assert out["turn_shortened"].to_list() == [False, False]
    # Before: the whole window went out, and the long turn came back as a failure.
    engine = _Counting()
    unfitted = [det.detect_prompt(r, TEMPLATE, 1500, r["context"]) for r in batch.to_pylist()]
    with pytest.raises(InputTooLong):
        engine.generate(unfitted[1:], schema=det.FeedbackJudgment)
    stats = det.detector_stats(
        pl.DataFrame({"conversation_id": ["c", "c"], "user_turn": [3, 13], "to_model": [True, True],
                      "sat": [False, False], "dsat": [False, False]}), out,
        out.select("conversation_id", "user_turn", "sat", "dsat"))
    assert stats["context_shortened"] == 1 and stats["model_ok"] == 2


def _last_turn(conv: dict) -> dict:
    msgs = [{"role": m["role"], "content": m["content"]} for m in conv["messages"]]
    last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    return {"conversation_id": conv["id"], "user_turn": last_user, "context": msgs[: last_user - 1],
            "prev": msgs[last_user - 1]["content"], "text": msgs[last_user]["content"]}


@pytest.mark.skipif(not REAL.exists(), reason="needs ../shared/data/real/wildchat_sample")
def test_real_long_conversations_through_the_tiny_engine_fit_its_context():
    """Real WildChat dialogues whose whole window does not fit the tiny model's 4,096 tokens (its detect
    template alone is ~1,900 of them) are judged all the same through the real engine path: one keeps its
    most recent messages; another (its judged turn and reply at 1,500 characters each do not fit
    either) is judged on the shortened turn."""
    from pipeline.llm import get_engine
    from pipeline.llm.chat import token_fit

    convs = sorted((json.loads(line) for line in REAL.read_text(encoding="utf-8").splitlines()),
                   key=lambda c: c["id"])
    cfg = llm_config(batch_size=4, max_model_len=4096, enable_prefix_caching=False, structured_retries=0,
                     sampling=SAMPLING)
    engine = get_engine(cfg)
    fits = token_fit(engine, det.ANSWER_TOKENS, judge=True)
    rows = [_last_turn(c) for c in convs if len(c["messages"]) >= 8]
    trimmed = next(r for r in rows if not fits(det.detect_prompt(r, TEMPLATE, 1500, r["context"]))
                   and fits(det.detect_prompt(r, TEMPLATE, 1500, [], len(r["context"]))))
    longest = next(r for r in rows if not fits(det.detect_prompt(r, TEMPLATE, 1500, [], len(r["context"]))))
    out = det.llm_detect(pa.Table.from_pylist([trimmed, longest]), engine, sampling=SAMPLING, template_text=TEMPLATE,
                         max_chars=1500).to_pylist()
    assert [o["error"] is None or "too long" not in o["error"] for o in out] == [True, True], out
    assert 0 < out[0]["context_left_out"] < len(trimmed["context"]) and not out[0]["turn_shortened"]
    assert out[1]["context_left_out"] == len(longest["context"]) and out[1]["turn_shortened"]
