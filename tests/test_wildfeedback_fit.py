"""WildFeedback's chosen answers that fit their prompt (stages/wildfeedback_fit.py): off-context reasons, natural
revisions on hand-written turns and on real data. The stage's pairs, rejects and templates:
test_wildfeedback_pairs.py."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from stages.wildfeedback_fit import off_context, prompt_text
from stages.wildfeedback_pairs import natural_revisions, pair_drop_reason
from tests.wildfeedback_fakes import conv

OFF_CONTEXT = [
    ("You're right, I apologize for the error. Canberra is the capital.", "acknowledges_feedback"),
    ("Sorry. Piece by piece: ^ anchors the start.", "acknowledges_feedback"),
    ("Sorry about that. A hash table maps keys to slots.", "acknowledges_feedback"),
    ("I'm sorry, I missed that. A more accessible plan: Day 1, Baixa.", "acknowledges_feedback"),
    ("Good point, thanks for the correction. DNS also uses TCP.", "acknowledges_feedback"),
    ("Oops, my bad: the loop should start at 1.", "acknowledges_feedback"),
    ("Ah, I overlooked that detail. The parent needs a height.", "acknowledges_feedback"),
    ("Here's a shorter version: DNS maps names to addresses.", "acknowledges_feedback"),
    # a second try: the shared pipeline.checks.acknowledges_feedback (export and the audit apply it too) reads it first
    ("Let me try that again. Plants make food from light.", "acknowledges_feedback"),
    # a revision opener (pipeline.checks.presumes_earlier_version): the prompt holds no earlier answer, asks no rewrite
    ("Of course, I've made it more formal: Dear Ms Lee,", "acknowledges_feedback"),
    ("Here's a version that ignores case, spaces and punctuation: def is_pal(s): ...", "acknowledges_feedback"),
    ("As requested, no emojis: Dark mode is here.", "refers_to_feedback"),
    ("Per your preference, here is one sentence: DNS maps names.", "refers_to_feedback"),
    ("Unlike my previous answer, this one uses Python.", "refers_to_feedback"),
    # HH-RLHF: the revision after "That's not what I asked" reacts to the complaint
    ("Oh, okay. I see. Well, that changes the question, because then we're talking about intent.", "refers_to_feedback"),
    # one per remaining alternative of ``_REFERS``, each caught by that alternative alone (mutation-tested)
    ("Unlike my previous code, this one uses a set.", "refers_to_feedback"),
    ("Here's one more attempt: plants make food from light.", "refers_to_feedback"),
    ("Keeping to your preference, one sentence: DNS maps names.", "refers_to_feedback"),
    ("Instead, use a list comprehension: [x for x in xs].", "refers_to_feedback"),
    ("Well, that changes things: then it is a civil matter.", "refers_to_feedback"),
    ("Okay, I see. Then you need a lawyer.", "refers_to_feedback"),
    ('Here is the tweet "without the hashtag": Dark mode is here.', "quotes_feedback"),
    # an addition to the earlier answer, not an answer of its own (data/samples: "How do I center a div")
    ("The parent also needs a height, otherwise there's nothing to center vertically.", "continues_answer"),
    ("Also, add `height: 100vh;` to the parent.", "continues_answer"),
    ("Of course: 350 g bananas, 75 g butter, 190 g flour. The method stays the same.", "continues_answer"),
    ("Sure, here are a few more creative options: CASHFUL, ALLPAID.", "continues_answer"),
    ("Another idea: leave a cheeky note on the fridge.", "continues_answer"),
    # where to put an addition into the earlier answer (WildChat: "Add notary signature to the above agreement")
    ("If you want a notary block, you can add the following after the signature lines: STATE OF [State]",
     "continues_answer"),
    ("Insert this paragraph below the second heading: Our team ships weekly.", "continues_answer"),
]
FITS = [
    "Canberra is the capital of Australia.",
    "I'm sorry you're feeling this way; exam season is genuinely hard.",
    "Sorry to hear your grinder broke! Burr grinders last longer.",
    "Sure. By 1914 Europe was split into two blocs.",
    "The first example below uses a loop; the second uses recursion.",
    'The quote "the only way to do great work" is by Steve Jobs.',  # quoted, but already in the prompt
    "Here's a version of the classic pancake recipe: flour, milk, eggs.",
    "Paris is also known as the City of Light.",
    "Python also has tuples, which cannot be changed.",
    "Okay, here is a plan: that changes nothing about the budget.",  # no reaction to a complaint
    # an addition to the user's own file or to the recipe, not to an earlier answer
    "To keep it, add the following line to the end of your ~/.bashrc: export PATH=$PATH:~/bin",
    "Melt the butter, then add it after the eggs and stir.",
]


@pytest.mark.parametrize(("text", "reason"), OFF_CONTEXT + [(t, None) for t in FITS])
def test_off_context_reasons(text, reason):
    df = pl.DataFrame({"chosen": [text], "feedback": ['Too long. Post it "without the hashtag" please.'],
                       "prompt_text": ['Who said "the only way to do great work"? Also a tweet about dark mode.']})
    assert df.select(off_context("chosen", "feedback", "prompt_text")).item() == reason


def first_answers(real) -> pl.DataFrame:
    """Assistant answers to a first user message in real data: none of them continues an earlier answer."""
    rows = []
    for line in (real / "wildchat_sample/conversations.jsonl").read_text().splitlines():
        m = json.loads(line)["messages"]
        if len(m) > 1 and m[1]["role"] == "assistant":
            rows.append((m[0]["content"], m[1]["content"]))
    for line in (real / "ultrafeedback_binarized/data/processed/eval_clean.jsonl").read_text().splitlines():
        d = json.loads(line)
        rows += [(d["prompt"], d[side] if isinstance(d[side], str) else d[side][-1]["content"])
                 for side in ("chosen", "rejected")]
    for line in (real / "dove/data/anthropic_helpful/test.jsonl").read_text().splitlines():
        d = json.loads(line)
        rows.append((d["instruction"], d["gold_response"]))
    for line in (real / "oasst_en100/model/model_eval/manual/data/en_100_tree.jsonl").read_text().splitlines():
        root = json.loads(line)["prompt"]
        rows += [(root["text"], r["text"]) for r in root.get("replies", [])]
    return pl.DataFrame(rows, schema=["prompt_text", "chosen"], orient="row").with_columns(feedback=pl.lit(""))


def test_a_quote_the_prompt_already_holds_is_not_quoting_feedback():
    quote = 'The quote "the only way to do great work" is by Steve Jobs.'
    df = pl.DataFrame({"chosen": [quote, quote], "feedback": ['No, I asked who said "the only way to do great work".'] * 2,
                       "prompt_text": ['Who said "the only way to do great work"?', "Who said that famous line?"]})
    assert df.select(off_context("chosen", "feedback", "prompt_text")).to_series().to_list() == [None, "quotes_feedback"]


def test_a_revision_opener_fits_only_a_prompt_that_asks_for_a_version():
    """The samples release shipped "Here's a version that ignores case..." as the chosen answer to a fresh
    "I need a Python function that checks whether a string is a palindrome." (the case requirement came in the
    feedback). An earlier answer in the prompt does not excuse it (the chosen was written after feedback on a
    later one, and the old "Here is the revised version" rule dropped it regardless); a last user turn that
    asks for a version does."""
    ask = "I need a Python function that checks whether a string is a palindrome."
    earlier = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}]
    chosen = "Here's a version that ignores case, spaces and punctuation: def is_pal(s): ..."
    df = pl.DataFrame({"chosen": [chosen] * 3, "feedback": ["It should ignore case."] * 3,
                       "prompt": [[{"role": "user", "content": ask}], earlier + [{"role": "user", "content": ask}],
                                  [{"role": "user", "content": "Write a version of is_pal for sentences."}]]})
    df = df.with_columns(prompt_text().alias("prompt_text"))
    assert df.select(off_context("chosen", "feedback", "prompt_text", "prompt")).to_series().to_list() == [
        "acknowledges_feedback", "acknowledges_feedback", None]


def test_a_pair_with_an_empty_side_is_dropped():
    df = pl.DataFrame({"chosen": ["  \n", "Canberra.", "Canberra."], "rejected": ["Sydney.", "", "Sydney."],
                       "chosen_finish_reason": [None, None, None], "rejected_finish_reason": [None, None, None],
                       "preference": ["Be right."] * 3, "_prompt_text": ["Capital of Australia?"] * 3,
                       "prompt": [[{"role": "user", "content": "Capital of Australia?"}]] * 3, "feedback_sat": [False] * 3, "sat_categories": [None] * 3, "sat_text": [None] * 3},
                      schema_overrides={"chosen_finish_reason": pl.String, "rejected_finish_reason": pl.String})
    assert df.select(pair_drop_reason("natural_revision")).to_series().to_list() == ["empty", "empty", None]



def test_a_side_that_shows_nothing_is_empty():
    """An expert's answer of U+FFFD alone or zero-width marks alone says nothing: ``empty``, as export would
    remove the pair (unprintable_text) after the checklist judge had spent its calls on it."""
    df = pl.DataFrame({"chosen": ["\ufffd", "\u200b\u2060", "Canberra."], "rejected": ["Sydney."] * 3,
                       "chosen_finish_reason": ["stop"] * 3, "rejected_finish_reason": [None] * 3,
                       "preference": ["Be right."] * 3, "_prompt_text": ["Capital of Australia?"] * 3,
                       "prompt": [[{"role": "user", "content": "Capital of Australia?"}]] * 3, "feedback_sat": [False] * 3, "sat_categories": [None] * 3, "sat_text": [None] * 3},
                      schema_overrides={"rejected_finish_reason": pl.String})
    assert df.select(pair_drop_reason("generated")).to_series().to_list() == ["empty", "empty", None]

def test_a_revision_is_natural_only_when_the_next_turn_is_sat_and_not_also_dsat():
    """Turn t (DSAT at t+1) is rejected, its revision t+2 chosen, when t+3 is SAT; a reaction that is SAT
    and DSAT at once ("thanks, but still wrong") does not vouch for the revision."""
    c = conv("c", ["Capital of Australia?", "Sydney.", "Wrong.", "Canberra.", "Thanks, but still wrong?"])
    convs = pl.DataFrame([c, {**c, "conversation_id": "ok"}]).select("conversation_id", "source", "messages",
                                                                     model=pl.lit("gpt-4-0314"))
    signals = pl.DataFrame({"conversation_id": ["c", "c", "ok", "ok"], "target_turn": [1, 3, 1, 3],
                            "user_turn": [2, 4, 2, 4], "dsat": [True, True, True, False],
                            "sat": [False, True, False, True],
                            "sat_categories": [[], ["Gratitude"], [], ["Gratitude"]]})
    rows = natural_revisions(signals, convs)
    assert rows.select("conversation_id", "chosen", "rejected", "preference", "conversation_model").rows() == [
        ("ok", "Canberra.", "Sydney.", "Wrong.", "gpt-4-0314")]  # both sides that model's, as the source says
    assert [m["content"] for m in rows["prompt"][0]] == ["Capital of Australia?"]


def test_a_chosen_that_uses_the_users_own_details_from_the_feedback_is_off_context():
    """data/samples shipped a cover letter about "my project analysing bike-share data", a detail only the
    feedback gave, as the chosen of "Write a short cover letter for a junior data analyst position": a
    trainer learns to invent a project. A detail the prompt or the rejected answer already holds, and the
    words of a "my ..." phrase that name no detail ("my daughter wants a longer one"), are fine."""
    prompt = "Write a short cover letter for a junior data analyst position."
    fb = "It sounds too generic. Can you rewrite it so it mentions my project analysing bike-share data?"
    letter = "Dear Hiring Manager, last spring I spent three months digging through bike-share trips with SQL."
    df = pl.DataFrame({
        "chosen": [letter, letter, letter, "Once upon a time a dragon named Ember set out on a great journey."],
        "feedback": [fb, fb, fb, "It's too short, my daughter wants a longer one with more adventure."],
        "prompt_text": [prompt, prompt + " I analysed bike-share trips.", prompt, "Write me a bedtime story about a dragon."],
        "rejected": ["Dear Hiring Manager, I am writing to apply.", "Dear Hiring Manager.",
                     "Dear Hiring Manager, my bike-share study shows rigour.", "A dragon named Ember was scared."]})
    assert df.select(off_context("chosen", "feedback", "prompt_text", rejected="rejected")).to_series().to_list() == [
        "uses_feedback_details", None, None, None]


def test_a_chosen_that_opens_on_a_wish_only_the_feedback_voiced_is_off_context():
    """The WildChat release shipped (fa5c61f7f04d2fff, pair 017fe18048dc9781) "If you would like to keep the casual
    tone of the original email, then "get to know" is perfectly fine" as the chosen of "is there any problem with
    "get to know"?": the wish came in the feedback "Please keep the casual terms.", which the prompt does not hold,
    so the pair prefers the answer to the feedback over the answer to the prompt. A wish whose words the prompt
    (or the rejected answer) already holds, and one the feedback did not voice, are a first answer's."""
    chosen = 'If you would like to keep the casual tone of the original email, then "get to know" is perfectly fine.'
    prompt = 'Proofread my email. ... is there any problem with "get to know"?'
    rejected = '"Get to know" is not incorrect, but it might seem too casual for a formal email like this.'
    java = "If you want to reverse an array using streams in Java, convert it to a list first."
    df = pl.DataFrame({
        "chosen": [chosen, chosen, java, "Sure! If you want to host it yourself, BIND is the classic DNS server."],
        "feedback": ["Please keep the casual terms.", "Please keep the casual terms.", "more simple ways?",
                     "Too long, I only need the gist."],
        "prompt_text": [prompt, prompt + " I want to keep it casual.", "How do I reverse an array in Java?",
                        "What is DNS?"],
        "rejected": [rejected] * 4})
    assert df.select(off_context("chosen", "feedback", "prompt_text", rejected="rejected")).to_series().to_list() == [
        "refers_to_feedback", None, None, None]


def test_wildchat_natural_revisions_keep_no_addition_to_the_earlier_answer(real):
    """The natural revisions the stage's own steps (ingest's adapter, scan with params.yaml, natural_revisions,
    the pair screen) find in the real WildChat sample: "Add notary signature to the above agreement" was
    answered with the notary block alone ("you can add the following after the signature lines"), which as
    the chosen of "Write a brokerage contract ..." answers the complaint, not the prompt: dropped."""
    from stages.wildfeedback import scan
    from stages.wildfeedback_pairs import _Book, _screen
    from tests.wildfeedback_fixture import WILDCHAT, stage_conversations, stage_params

    params = stage_params()
    ids = {json.loads(line)["id"] for line in (real / WILDCHAT).read_text().split("\n") if line.strip()}
    turns, convs, _ = scan(stage_conversations(real, ids, params), params.wildfeedback)
    found = natural_revisions(turns, convs)
    book = _Book()
    kept = _screen(found, "natural_revision", book)
    notary = found.filter(pl.col("preference").str.starts_with("Add notary signature"))
    assert notary.height == 1 and notary["chosen"][0].startswith("Please note that notarizing a contract")
    assert book.drops["natural_revision_continues_answer"] >= 1
    assert not kept["chosen"].str.contains("add the following after the signature lines").any()
    assert kept.height >= 1  # the screen is no blanket drop
    assert book.drops["natural_revision_uses_feedback_details"] == 0  # no real revision relies on "my ..." details


def test_wildchat_revision_offering_more_after_a_request_for_another_one_is_kept(real):
    """WildChat 1d82ae4af1e4c946: "Do you have another one" (a 7-letter plate for "full cash") / three options /
    "Are these the only ones" / "... there are a few more creative combinations you might consider ..." /
    SAT. The prompt itself asks for another one, so "a few more combinations" answers it, not the feedback:
    the pair was dropped as `continues_answer`. The notary block, after a prompt that asks for no more, still is."""
    from stages.wildfeedback import scan
    from stages.wildfeedback_pairs import _Book, _screen
    from tests.wildfeedback_fixture import WILDCHAT, stage_conversations, stage_params

    params = stage_params()
    ids = {json.loads(line)["id"] for line in (real / WILDCHAT).read_text().split("\n") if line.strip()}
    turns, convs, _ = scan(stage_conversations(real, ids, params), params.wildfeedback)
    found = natural_revisions(turns, convs)
    plate = found.filter(pl.col("preference") == "Are these the only ones")
    assert plate.height == 1 and plate["prompt"][0][-1]["content"] == "Do you have another one"
    kept = _screen(found, "natural_revision", _Book())
    assert kept.filter(pl.col("preference") == "Are these the only ones").height == 1
    assert not kept["preference"].str.starts_with("Add notary signature").any()
    df = pl.DataFrame({"chosen": ["There are a few more creative combinations: CASHFUL, ALLPAID."] * 2,
                       "feedback": ["Are these the only ones"] * 2,
                       "prompt_text": ["Do you have another one", "A 7-letter phrase for full cash?"]})
    assert df.select(off_context("chosen", "feedback", "prompt_text")).to_series().to_list() == [None, "continues_answer"]


def test_a_natural_revision_cut_off_in_the_log_is_dropped_as_cut_off():
    """A revision read from a chat log has no finish reason; WildChat holds answers truncated mid-sentence
    ("...exercise regimes to counteract muscle and bone loss,"): as a chosen it is a cut-off, as a rejected fine."""
    cut = "Canberra is the capital, and it was chosen as a compromise between Sydney and"
    df = pl.DataFrame({"chosen": [cut, "Canberra is the capital."], "rejected": ["Sydney.", cut],
                       "chosen_finish_reason": [None, None], "rejected_finish_reason": [None, None],
                       "preference": ["Wrong."] * 2, "_prompt_text": ["Capital of Australia?"] * 2,
                       "prompt": [[{"role": "user", "content": "Capital of Australia?"}]] * 2, "feedback_sat": [False] * 2, "sat_categories": [None] * 2, "sat_text": [None] * 2},
                      schema_overrides={"chosen_finish_reason": pl.String, "rejected_finish_reason": pl.String})
    assert df.select(pair_drop_reason("natural_revision")).to_series().to_list() == ["cut_off", None]


def test_a_natural_revision_of_a_question_to_the_user_is_dropped():
    """HH-RLHF: "How can I hide from the police?" / "What are you trying to hide from the police?" / "They have a
    warrant out for my arrest. ..." / "... let's talk about some ways you can hide": the user answered the
    assistant's question, so the later turn builds on an answer the pair's prompt does not hold. A long answer
    that only closes with a question, and a short statement, are revisable as before."""
    closing = ("Burr grinders crush beans evenly. Blade grinders chop them unevenly. A burr grinder costs more. "
               "It lasts for years. Is there anything else I can help you with?")
    rejected = ["What are you trying to hide from the police?", "I'm not sure I understand, how can I help?",
                closing, "You can't."]
    df = pl.DataFrame({"chosen": ["Talk to a lawyer before anything else."] * 4, "rejected": rejected,
                       "chosen_finish_reason": [None] * 4, "rejected_finish_reason": [None] * 4,
                       "preference": ["They have a warrant out for my arrest."] * 4,
                       "_prompt_text": ["How can I hide from the police?"] * 4,
                       "prompt": [[{"role": "user", "content": "How can I hide from the police?"}]] * 4,
                       "feedback_sat": [False] * 4, "sat_categories": [None] * 4, "sat_text": [None] * 4},
                      schema_overrides={"chosen_finish_reason": pl.String, "rejected_finish_reason": pl.String})
    assert df.select(pair_drop_reason("natural_revision")).to_series().to_list() == ["asked_user", "asked_user", None, None]
    assert df.select(pair_drop_reason("generated")).to_series().to_list() == [None] * 4  # an expert answer is no revision


def test_hh_natural_revisions_that_answer_the_assistants_question_are_dropped(real):
    """The stage's steps (ingest's hh_rlhf adapter, scan with params.yaml, natural_revisions, the pair screen) on
    the real HH-RLHF harmless-base transcripts: of the 20 candidate revisions, 10 follow an assistant turn that
    asked the user something ("Oh, are you homeless and looking for food?" / "No, I want to break in and steal
    money"); all 10 go as asked_user."""
    import pyarrow as pa

    from pipeline.records import SCHEMAS
    from stages.wildfeedback import scan
    from stages.wildfeedback_pairs import _Book, _screen
    from tests.adapter_sources import run_source
    from tests.wildfeedback_fixture import HH, stage_params

    res = run_source(real / HH, "hh_rlhf", "conversations")
    convs = pl.from_arrow(pa.Table.from_pylist(res.rows["conversations"], schema=SCHEMAS["conversations"]))
    cfg = stage_params().wildfeedback.model_copy(update={"sources": ["src"]})
    turns, selected, _ = scan(convs, cfg)
    found = natural_revisions(turns, selected)
    book = _Book()
    kept = _screen(found, "natural_revision", book)
    asked = found.filter(pl.col("rejected").str.strip_chars().str.ends_with("?")
                         & (pl.col("rejected").str.count_matches(r"[.!?]+(?:\s|$)") <= 3))
    assert found.height == 20 and asked.height == book.drops["natural_revision_asked_user"] == 10
    assert not kept["rejected"].str.strip_chars().str.ends_with("?").any()


def test_continues_answer_fires_on_no_real_first_answer(real):
    """The continuation patterns are precise: 0 of 1,811 real first answers read as an addition."""
    df = first_answers(real)
    reasons = df.select(off_context("chosen", "feedback", "prompt_text")).to_series()
    assert df.height >= 1800 and (reasons == "continues_answer").sum() == 0


def test_a_revision_only_an_ok_opening_a_longer_message_vouches_for_is_dropped():
    """WildChat: "wait this just doesn't work" / a revised code / "ok I needed to edit code a lot ... However my
    code got broken. Can you tell me where is the problem(s)": the rules read the opening "ok" as Acknowledgment,
    the rubric's brief receipt, but the message goes on to another matter, so it vouches for nothing
    (``ack_opens_request``); a short "ok got it" or "Thanks, perfect!" still vouches."""
    from stages.wildfeedback import scan
    from stages.wildfeedback_pairs import _Book, _screen
    from tests.wildfeedback_fakes import frame, make_params

    turns = ["How do I reverse a list in Python?", "Use list.reverse(x).", "That doesn't work, it raises an error.",
             "Use x.reverse() or x[::-1]; reverse is a method of the list."]
    rows = [conv("long", [*turns, "ok I rewrote my script a lot since then, and now it prints nothing. Where is the bug?"]),
            conv("short", [*turns, "ok got it"]), conv("thanks", [*turns, "Thanks, perfect!"])]
    signals, convs, _ = scan(frame(rows), make_params(detector="rules").wildfeedback)
    found = natural_revisions(signals, convs)
    book = _Book()
    kept = _screen(found, "natural_revision", book)
    assert found["conversation_id"].to_list() == ["long", "short", "thanks"]
    assert kept["conversation_id"].to_list() == ["short", "thanks"]
    assert book.drops == {"natural_revision_ack_opens_request": 1}


def test_a_chinese_or_arabic_question_to_the_user_and_a_long_chinese_ok_turn_are_read_as_in_english():
    """A rejected turn ending "？" or "؟" asks the user as one ending "?" does (WildChat: "你好！有什么我可以帮助你的
    吗？"); "。" ends a sentence with no space after it. A SAT turn opening "好的，" that goes on to another matter
    has over ``SHORT_EDIT_WORDS`` words once a CJK character counts as one (it was one whitespace word)."""
    rejected = ["你好！有什么我可以帮助你的吗？", "يمكنني مساعدتك. ماذا تريد أن تعرف؟",
                "磨豆机分为刀片式和锥刀式。锥刀式研磨更均匀。它的价格更高。它能用很多年。还有什么可以帮您的吗？", "不行。"]
    sat = ["好的，我按你说的改了很多地方，但是现在程序什么都不输出了，问题在哪里", "好的，明白了", "好的", "好的"]
    n = len(rejected)
    df = pl.DataFrame({"chosen": ["先咨询律师。"] * n, "rejected": rejected,
                       "chosen_finish_reason": [None] * n, "rejected_finish_reason": [None] * n,
                       "preference": ["我需要更多信息。"] * n, "_prompt_text": ["怎么选磨豆机"] * n,
                       "prompt": [[{"role": "user", "content": "怎么选磨豆机"}]] * n,
                       "feedback_sat": [False] * n, "sat_categories": [["Acknowledgment"]] * n, "sat_text": sat},
                      schema_overrides={"chosen_finish_reason": pl.String, "rejected_finish_reason": pl.String})
    assert df.select(pair_drop_reason("natural_revision")).to_series().to_list() == [
        "asked_user", "asked_user", None, None]
    df = df.with_columns(rejected=pl.lit("不行。"))
    assert df.select(pair_drop_reason("natural_revision")).to_series().to_list() == ["ack_opens_request", None, None, None]


def _natural_revision_drops(rows: list[dict]) -> tuple[list[str], dict]:
    from stages.wildfeedback import scan
    from stages.wildfeedback_pairs import _Book, _screen
    from tests.wildfeedback_fakes import frame, make_params

    signals, convs, _ = scan(frame(rows), make_params(detector="rules").wildfeedback)
    book = _Book()
    kept = _screen(natural_revisions(signals, convs), "natural_revision", book)
    return kept["conversation_id"].to_list(), book.drops


def test_an_ok_that_goes_on_to_a_retort_does_not_vouch_for_a_revision():
    """"Ok then." / "okay you narcissist" open with the rules' ``ok_then`` cue and are short, so the
    ``SHORT_EDIT_WORDS`` rule let them vouch for the revision before them; "ok got it" still vouches."""
    turns = ["How do I reverse a list in Python?", "Use list.reverse(x).", "That doesn't work, it raises an error.",
             "Use x.reverse() or x[::-1]; reverse is a method of the list."]
    kept, drops = _natural_revision_drops([conv("then", [*turns, "Ok then."]), conv("retort", [*turns, "okay you narcissist"]),
                                           conv("got", [*turns, "ok got it"]), conv("bare", [*turns, "Okay."]),
                                           conv("wanted", [*turns, "Good, that's what I wanted."]),
                                           conv("works", [*turns, "ok that works now"])])
    assert sorted(kept) == ["bare", "got", "wanted", "works"]
    assert drops == {"natural_revision_ack_opens_request": 2}


HH = Path(__file__).resolve().parents[1].parent / "shared/data/real/hh_rlhf/harmless-base/test.jsonl.gz"


def _hh_turns(transcript: str) -> list[str]:
    import re
    return [t.strip() for t in re.split(r"\n\n(?:Human|Assistant): ", transcript) if t.strip()]


@pytest.mark.skipif(not HH.exists(), reason="needs ../shared/data/real/hh_rlhf")
def test_real_hh_rlhf_retorts_after_ok_make_no_natural_revision():
    """HH-RLHF harmless-base, read as conversations: "But why not?" / "I'm sure that my programmers have made
    mistakes in the past." / "Ok then." and "No you are not. You are an AI." / "I know, I'm just playing with you."
    / "okay you narcissist" were natural revision pairs whose chosen answers the retort, not the prompt."""
    import gzip

    records = [json.loads(x) for x in gzip.decompress(HH.read_bytes()).decode("utf-8").split("\n") if x]
    wanted = {"I’m sure that my programmers have made mistakes in the past.": "programmers",
              "I know, I'm just playing with you.": "playing"}
    rows = []
    for rec in records:
        turns = _hh_turns(rec["chosen"])
        name = next((v for k, v in wanted.items() if k in turns), None)
        if name and name not in [r["conversation_id"] for r in rows]:
            rows.append(conv(name, turns))
    assert sorted(r["conversation_id"] for r in rows) == ["playing", "programmers"]
    kept, drops = _natural_revision_drops(rows)
    assert kept == [] and drops == {"natural_revision_ack_opens_request": 2}


def test_an_ok_that_goes_on_to_a_word_of_approval_still_vouches_for_a_revision():
    """"ok cool", "okay perfect", "ok, I understand", "ok it's good now": the rules call them Acknowledgment only,
    and ``ok_and_more`` read the word after the "ok" as a retort, so the revision before them was dropped."""
    turns = ["How do I reverse a list in Python?", "Use list.reverse(x).", "That doesn't work, it raises an error.",
             "Use x.reverse() or x[::-1]; reverse is a method of the list."]
    sats = {"cool": "ok cool", "perfect": "okay perfect", "understand": "ok, I understand", "now": "ok it's good now",
            "then": "Ok then."}
    kept, drops = _natural_revision_drops([conv(k, [*turns, v]) for k, v in sats.items()])
    assert sorted(kept) == ["cool", "now", "perfect", "understand"]
    assert drops == {"natural_revision_ack_opens_request": 1}
