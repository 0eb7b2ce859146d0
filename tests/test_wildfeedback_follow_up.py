"""WildFeedback natural revisions that answer an additive follow-up ("Can you give an example?", "More detail
please, especially on the alliance system") instead of the prompt: dropped as ``answers_follow_up``."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from stages.wildfeedback_fit import answers_follow_up, pair_drop_reason
from tests.wildfeedback_fakes import FakeEngine, conv, run_stage

LABELS = Path(__file__).parent / "fixtures" / "wildchat_follow_up_labels.jsonl"

# data/samples (wc-0027, wc-0006): the revision answers the feedback, not the prompt; the samples release shipped both.
RECURSION = ("Explain recursion.",
             "Recursion is when a function calls itself to solve a smaller instance of the same problem, until it "
             "reaches a base case that can be answered directly.",
             "Can you give an example? The explanation alone is too abstract.",
             "Sure, here's factorial in Python:\n\ndef factorial(n):\n    if n <= 1:   # base case\n        return 1\n"
             "    return n * factorial(n - 1)  # recursive case\n\nfactorial(4) = 4 * 3 * 2 * 1 = 24.")
WW1 = ("Summarize the causes of World War I.",
       "The main causes of World War I are often summarized as militarism, alliances, imperialism and nationalism. "
       "The immediate trigger was the assassination of Archduke Franz Ferdinand of Austria-Hungary in Sarajevo in June 1914.",
       "More detail please, especially on the alliance system.",
       "Sure. By 1914 Europe was split into two blocs. The Triple Alliance (Germany, Austria-Hungary, Italy) dated from "
       "1882, while the Triple Entente grew out of the Franco-Russian Alliance (1894). The alliances turned a regional "
       "conflict into a continental war within weeks.")
DELTAS = [
    RECURSION, WW1,
    # WildChat: "expand on 2 and 3" answered with points 2 and 3 only; "Go into detail on the last part"
    ("How can I supervise my employees when they work from home?",
     "1. Set clear goals. 2. Use communication tools. 3. Track progress with shared dashboards. 4. Hold weekly calls.",
     "expand on 2 and 3",
     "Sure, let me elaborate on points two and three. Use Slack or Teams for quick questions."),
    ("Write a short story about a lighthouse keeper.",
     "Every night Mara climbed the hundred steps of the lighthouse and lit the lamp for ships she never saw.",
     "Continue", "Years later, a letter arrived from a captain who had followed her light home."),
]
# Good pairs: a replacement request ("make it more fun", "a longer one", "another one", "in a table") gets a full
# answer; so does an additive request answered by a full rewrite; and a prompt that already asks for the addition
# ("more examples?" resent) fits an answer that gives it.
KEEPS = [
    ("Write a product description for a stainless steel water bottle.",
     "Stay hydrated in style with our stainless steel water bottle. Double-wall vacuum insulation keeps drinks cold "
     "for 24 hours and hot for 12.",
     "Can you make it more fun and playful? It's for a brand aimed at teenagers.",
     "Meet your new sidekick! This bottle keeps your iced tea frosty through a whole school day and your cocoa toasty."),
    ("Write me a bedtime story about a dragon who is afraid of the dark.",
     "Once upon a time there was a little dragon named Ember who could breathe fire but was scared of the dark.",
     "It's too short, my daughter wants a longer one with more adventure.",
     "Once upon a time, high in the Smoky Mountains, lived a little dragon named Ember who was scared of the dark "
     "and set out on a great adventure to find the moon."),
    ("Give me a motivational quote.", '"The only way to do great work is to love what you do." - Steve Jobs',
     "Another one, less cliché please.",
     '"You do not rise to the level of your goals. You fall to the level of your systems." - James Clear'),
    ("Can you give me a workout plan for a beginner, 3 days a week?",
     "Day 1: Squats 3x10, push-ups 3x8, plank. Day 2: Lunges 3x10, dumbbell rows 3x10. Day 3: Deadlifts, presses.",
     "Please put it in a table instead of a list.",
     "| Day | Exercise | Sets |\n|---|---|---|\n| 1 | Squats | 3x10 |\n| 1 | Push-ups | 3x8 |\n| 2 | Lunges | 3x10 |"),
    (RECURSION[0], RECURSION[1], RECURSION[2],
     "Recursion is when a function calls itself to solve a smaller instance of the same problem, until it reaches a "
     "base case that can be answered directly. For example, factorial(n) returns 1 for n <= 1, else n * factorial(n - 1)."),
    ("Chinese slogans for the Mid-autumn festival about home. Can you give me some examples?",
     "1. Home is where the moon is full. 2. Family gathers under the bright moon. 3. Mooncakes taste sweeter at home.",
     "Some examples that rhyme please?",
     "Here are some examples that rhyme: 1. Moon so bright, home tonight. 2. Lanterns glow, family aglow."),
]


def _frame(cases) -> pl.DataFrame:
    return pl.DataFrame({
        "prompt": [[{"role": "user", "content": p}] for p, *_ in cases], "rejected": [r for _, r, _, _ in cases],
        "preference": [f for *_, f, _ in cases], "chosen": [c for *_, c in cases],
        "_prompt_text": [p for p, *_ in cases], "feedback_sat": [False] * len(cases), "sat_categories": [None] * len(cases), "sat_text": [None] * len(cases),
        "chosen_finish_reason": [None] * len(cases), "rejected_finish_reason": [None] * len(cases),
    }, schema_overrides={"chosen_finish_reason": pl.String, "rejected_finish_reason": pl.String})


def test_a_revision_that_answers_an_additive_follow_up_is_dropped_and_full_rewrites_are_kept():
    df = _frame(DELTAS + KEEPS)
    assert df.select(pair_drop_reason("natural_revision")).to_series().to_list() == (
        ["answers_follow_up"] * len(DELTAS) + [None] * len(KEEPS))
    # an expert answer is written for the prompt (with the preference in its system message): no revision
    assert df.select(pair_drop_reason("generated")).to_series().to_list()[:2] == [None, None]


def test_coverage_is_measured_on_an_earlier_answer_of_coverage_min_words_content_words_or_more():
    """A revision's coverage of the earlier answer is read from COVERAGE_MIN_WORDS content words on; a shorter
    answer has none (null), so it never makes a revision partial."""
    from stages.wildfeedback_fit import COVERAGE_MIN_WORDS, coverage

    words = ["apples", "bananas", "cherries", "dates", "figs", "grapes", "kiwis", "lemons"]
    assert len(words) == COVERAGE_MIN_WORDS
    df = pl.DataFrame({"rejected": [" ".join(words), " ".join(words[:-1])], "chosen": ["apples and bananas"] * 2})
    assert df.select(coverage("chosen", "rejected")).to_series().to_list() == [0.25, None]


def test_the_sample_pairs_are_dropped_with_their_text_and_counted(tmp_path, monkeypatch):
    rows = [conv(f"s{i}", [*case, "ok makes sense now"]) for i, case in enumerate([RECURSION, WW1, KEEPS[2]])]
    _, pairs, rejects, m = run_stage(tmp_path, monkeypatch, FakeEngine(), rows, detector="rules", summarize=[])
    assert [r["chosen"][0]["content"] for r in pairs.to_pylist()] == [KEEPS[2][3]]
    assert m["details"]["dropped"] == {"natural_revision_answers_follow_up": 2}
    raws = sorted((json.loads(r["raw"]) for r in rejects.to_pylist()), key=lambda r: r["conversation_id"])
    assert [(r["preference"], r["chosen"]) for r in raws] == [(RECURSION[2], RECURSION[3]), (WW1[2], WW1[3])]


def _windows(real: Path) -> pl.DataFrame:
    """Every user turn of the WildChat sample between two assistant answers, after a user turn: the candidate
    revisions a DSAT signal on it would give (prompt's last user turn, rejected, feedback, chosen)."""
    rows = []
    for line in (real / "wildchat_sample/conversations.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        m = rec["messages"]
        for i in range(2, len(m) - 1):
            if [x["role"] for x in m[i - 2:i + 2]] == ["user", "assistant", "user", "assistant"]:
                rows.append((rec["id"], i, m[i - 2]["content"], m[i - 1]["content"], m[i]["content"], m[i + 1]["content"]))
    return pl.DataFrame(rows, schema=["conversation_id", "feedback_turn", "last_user", "rejected", "feedback", "chosen"],
                        orient="row")


def test_wildchat_follow_ups_read_by_hand(real):
    """tests/fixtures/wildchat_follow_up_labels.jsonl: 72 WildChat candidate revisions read by hand (ids and
    verdicts only; texts from ../shared): "delta" = the later answer does not stand alone as an answer to the
    earlier prompt, "full" = it does. 56 of them are every additive-feedback revision after a turn labelled or
    detected DSAT (22 delta, 34 full), the rest every other window the rule fires on. No full rewrite is dropped
    (precision first), at least 21 deltas are, and the rule fires on no window nobody has read."""
    labels = pl.read_ndjson(LABELS)
    w = _windows(real).with_columns(
        fires=answers_follow_up("chosen", "feedback", "rejected", pl.col("last_user")))
    got = labels.join(w, on=["conversation_id", "feedback_turn"], how="left")
    assert got["fires"].null_count() == 0 and w.height > 1700
    assert got.filter(pl.col("label") == "full")["fires"].sum() == 0
    assert got.filter(pl.col("label") == "delta")["fires"].sum() >= 21
    fired = w.filter(pl.col("fires")).join(labels, on=["conversation_id", "feedback_turn"], how="left")
    assert fired["label"].to_list() == ["delta"] * fired.height


@pytest.mark.parametrize("feedback", ["Make it shorter.", "Please put it in a table.", "Another one, less cliché.",
                                      "That's wrong, it was 1914.", "Too formal, make it friendlier."])
def test_a_replacement_request_never_reads_as_additive(feedback):
    df = pl.DataFrame({"chosen": ["Short."], "feedback": [feedback], "rejected": [WW1[1]], "last_user": [WW1[0]]})
    assert not df.select(answers_follow_up("chosen", "feedback", "rejected", pl.col("last_user"))).item()


# One case per _ADDITIVE request and per _FOLLOW_UP_OPENER, each caught by that alternative alone (mutation-tested):
# the openers' revisions restate the earlier answer (coverage above COVERAGE), so only the opener drops them.
_EARLIER = ("Explain recursion.", "Recursion is when a function calls itself to solve a smaller instance of the same "
            "problem until it reaches a base case.")
_RESTATED = "a function calls itself to solve a smaller instance of the same problem until it reaches a base case."
ALONE = [
    ("Examples please.", "For example, factorial(5) multiplies 5 by factorial(4)."),
    ("Especially on the base case.", "The base case stops it: factorial(1) returns 1."),
    ("Can you give an example?", "Here are more details: recursion is when " + _RESTATED),
    ("Can you give an example?", "Here is a simple factorial example. Recursion is when " + _RESTATED),
    ("Can you give an example?", "Going deeper: recursion is when " + _RESTATED),
    ("Can you give an example?", "More details about recursion: " + _RESTATED),
]


@pytest.mark.parametrize(("feedback", "chosen"), ALONE)
def test_each_additive_request_and_follow_up_opener_drops_a_revision_on_its_own(feedback, chosen):
    df = _frame([(*_EARLIER, feedback, chosen)])
    assert df.select(pair_drop_reason("natural_revision")).item() == "answers_follow_up"
