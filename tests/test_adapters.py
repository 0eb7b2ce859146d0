"""Format adapters: one small case per rule, and hostile values. Exact counts on the real public files are in
tests/test_adapters_real.py."""

from __future__ import annotations

import json
import re

import pytest

from pipeline.adapters import BadRecord, Ctx, adapt, html_to_text, parse_hh, to_messages
from pipeline.config import Source
from pipeline.records import stable_id
from tests.adapter_sources import assert_accounted, run_source


def one(rec: dict, fmt: str, kind: str, mapping: dict[str, str] | None = None):
    src = Source(name="t", kind=kind, path="x.jsonl", format=fmt, mapping=mapping or {})
    return adapt(rec, Ctx.for_source(src, "x.jsonl", 1))


# --- rules on small records ----------------------------------------------------------------------


def test_wildchat_roles_flags_and_mapping():
    rec = {"conversation_id": "c1", "conversation": [{"role": "human", "content": "hi", "turn": 1},
                                                     {"role": "gpt", "content": "hello"}],
           "language": "English", "model": "gpt-4", "toxic": True, "redacted": False}
    conv = one(rec, "wildchat", "conversations").rows["conversations"][0]
    assert conv["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert conv["flags"] == ["toxic"] and conv["model"] == "gpt-4" and conv["conversation_id"] == stable_id("t", "c1")
    lmsys = {"id": "x", "messages": [{"role": "user", "content": "q"}]}
    assert one(lmsys, "wildchat", "conversations").rows["conversations"][0]["messages"][0]["content"] == "q"
    renamed = {"dialog": [{"role": "user", "content": "q"}]}
    out = one(renamed, "wildchat", "conversations", {"messages": "dialog"})
    assert out.rows["conversations"][0]["messages"] == [{"role": "user", "content": "q"}]


def test_sharegpt_from_value():
    rec = {"id": "s1", "conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "q"},
                                         {"from": "gpt", "value": "a"}]}
    conv = one(rec, "sharegpt", "conversations").rows["conversations"][0]
    assert [m["role"] for m in conv["messages"]] == ["system", "user", "assistant"]
    prompt = one(rec, "sharegpt", "prompts").rows["prompts"][0]
    assert prompt["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}]


def test_wildchat_flags_spelt_as_words_and_the_conversation_id_before_the_hash():
    rec = {"conversation_id": "c1", "conversation_hash": "h1", "conversation": [{"role": "user", "content": "q"}],
           "toxic": " Yes", "redacted": "no"}
    conv = one(rec, "wildchat", "conversations").rows["conversations"][0]
    assert conv["flags"] == ["toxic"] and conv["conversation_id"] == stable_id("t", "c1")


def test_wildchat_prompt_keeps_a_leading_system_message():
    rec = {"conversation": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"},
                            {"role": "assistant", "content": "a"}]}
    prompt = one(rec, "wildchat", "prompts").rows["prompts"][0]
    assert prompt["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}]


def test_ultrafeedback_null_response_falls_back_to_text():
    rec = {"instruction": "Name a colour.", "completions": [
        {"model": "m1", "response": None, "text": "Blue.", "fine-grained_score": 4.75}]}
    assert one(rec, "ultrafeedback", "rated").rows["responses"][0]["text"] == "Blue."


def test_sharegpt_top_level_system_becomes_the_first_message():
    rec = {"system": "be brief", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    prompt = one(rec, "sharegpt", "prompts").rows["prompts"][0]
    assert prompt["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}]


def test_alpaca_input_goes_below_the_instruction_once():
    rec = {"instruction": "Summarize the following text.", "input": "Cats sleep a lot."}
    prompt = one(rec, "prompts", "prompts").rows["prompts"][0]
    assert prompt["messages"][0]["content"] == "Summarize the following text.\n\nCats sleep a lot."
    same = one({"instruction": "Name a cat.", "input": "Name a cat."}, "prompts", "prompts").rows["prompts"][0]
    assert same["messages"][0]["content"] == "Name a cat."  # an input copying the instruction is not doubled


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        (None, "missing field"),
        ([], "is empty"),
        ("hello", "expected a list of messages"),
        ([{"role": "wizard", "content": "x"}], "unknown role 'wizard'"),
        ([{"role": "user"}], "has no content"),
        ([{"role": "user", "content": 5}], "is int, expected a string"),
        ([{"role": "user", "content": "  "}], "has empty content"),
        (["just text"], "expected an object with role and content"),
    ],
)
def test_bad_messages_say_why(messages, reason):
    rec = {"id": "x"} if messages is None else {"id": "x", "conversation": messages}
    with pytest.raises(BadRecord, match=re.escape(reason)):
        one(rec, "wildchat", "conversations")


def test_parse_hh_merges_repeated_speakers_and_trims():
    msgs = parse_hh("\n\nHuman: hi \n\nAssistant: one\n\nAssistant: two\n\nHuman: ok", "chosen")
    assert msgs == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "one\n\ntwo"},
                    {"role": "user", "content": "ok"}]
    with pytest.raises(BadRecord, match="does not start with"):
        parse_hh("Human: no leading blank line", "chosen")
    with pytest.raises(BadRecord, match="expected a transcript string"):
        parse_hh(["not", "text"], "chosen")


def test_parse_hh_rejects_a_turn_that_opens_with_a_speaker_label():
    """HH-RLHF's "Assistant: Human: No, you are racist.": the model wrote the user's line, so as a chosen
    answer (18 real records) it would teach speaking for the user; the record's roles are mixed up."""
    with pytest.raises(BadRecord, match=r"turn 2 \(Assistant\) opens with the speaker label 'Human:'"):
        parse_hh("\n\nHuman: Do you think so?\n\nAssistant: Human: No, you are wrong.", "chosen")
    with pytest.raises(BadRecord, match=r"turn 1 \(Human\) opens with the speaker label 'Assistant :'"):
        parse_hh("\n\nHuman: Assistant : hello\n\nAssistant: Hi.", "rejected")
    # a label later in a turn, or a word that only starts like one, is text
    assert parse_hh("\n\nHuman: Who said 'Human: know thyself'?\n\nAssistant: Humanity's sages.", "chosen") == [
        {"role": "user", "content": "Who said 'Human: know thyself'?"},
        {"role": "assistant", "content": "Humanity's sages."}]


def test_parse_hh_rejects_a_turn_that_holds_the_other_speakers_line():
    """HH-RLHF's chosen "Well that doesn't seem like a good idea.  Human:  Why not?" (7 real records): the
    model went on to write the user's next line after a sentence gap; a quote ("from Human: ...") is text."""
    with pytest.raises(BadRecord, match=r"turn 2 \(Assistant\) holds the other speaker's line 'Human:'"):
        parse_hh("\n\nHuman: Should I?\n\nAssistant: Well that doesn't seem like a good idea.  Human:  Why not?", "chosen")
    with pytest.raises(BadRecord, match=r"turn 1 \(Human\) holds the other speaker's line 'Assistant:'"):
        parse_hh("\n\nHuman: Tell me a joke.\nAssistant: Sure!\n\nAssistant: Hi.", "rejected")
    assert parse_hh("\n\nHuman: Hi\n\nAssistant: A real quote from Human: What is it?  Assistant: is my name.",
                    "chosen")[1]["content"] == "A real quote from Human: What is it?  Assistant: is my name."


def test_hh_pairs_need_a_shared_prefix():
    rec = {"chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: good",
           "rejected": "\n\nHuman: a\n\nAssistant: OTHER\n\nHuman: c\n\nAssistant: bad"}
    with pytest.raises(BadRecord, match="do not share the dialogue"):
        one(rec, "hh_rlhf", "pairs")


def test_ultrafeedback_implicit_prompt_in_message_lists():
    user = {"role": "user", "content": "2+2?"}
    rec = {"chosen": [user, {"role": "assistant", "content": "4"}],
           "rejected": [user, {"role": "assistant", "content": "5"}], "score_chosen": 9, "score_rejected": 2}
    pair = one(rec, "ultrafeedback", "pairs").rows["pairs"][0]
    assert pair["prompt"] == [user]
    assert pair["chosen"] == [{"role": "assistant", "content": "4"}]
    assert (pair["score_chosen"], pair["score_rejected"], pair["margin"]) == (9.0, 2.0, 7.0)
    with pytest.raises(BadRecord, match="score_chosen is 'high', expected a number"):
        one({**rec, "score_chosen": "high"}, "ultrafeedback", "pairs")


def test_a_message_reject_names_the_key_the_record_holds():
    # was "conversation[1] ..." for a record whose key is `messages` (converted WildChat exports) or a mapped one
    empty = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " "}]
    for rec, mapping, key in [({"conversation": empty}, None, "conversation"), ({"messages": empty}, None, "messages"),
                              ({"dialog": empty}, {"messages": "dialog"}, "dialog")]:
        with pytest.raises(BadRecord, match=rf"^{key}\[1\] \(assistant\) has empty content$"):
            one(rec, "wildchat", "conversations", mapping)
    chat = [{"from": "human", "value": "Hi"}, {"from": "narrator", "value": "x"}]
    with pytest.raises(BadRecord, match=r"^messages\[1\] has unknown role 'narrator'"):
        one({"messages": chat}, "sharegpt", "conversations")
    with pytest.raises(BadRecord, match=r"^conversations\[1\] has unknown role 'narrator'"):
        one({"conversations": chat}, "sharegpt", "conversations")


def test_ultrafeedback_rejects_a_reply_that_speaks_as_the_user():
    # HH-derived replies (DOVE's val_conditional_pref.jsonl) open with the user's label or hold the user's next line
    rec = {"prompt": "How do I open a new window?", "chosen": "Human: Here's a simple method: press CTRL + N.",
           "rejected": "Try the menu."}
    with pytest.raises(BadRecord, match=r"^chosen opens with the speaker label 'Human:' \(the reply speaks as the user"):
        one(rec, "ultrafeedback", "pairs")
    gap = {**rec, "chosen": "Use CTRL + N.", "rejected": "It is negotiation.  Human:  Do you think people are good at it?"}
    with pytest.raises(BadRecord, match=r"^rejected holds the other speaker's line 'Human:'"):
        one(gap, "ultrafeedback", "pairs")
    rated = {"prompt": "x", "completions": [{"response": "ok", "score": 2}, {"response": "Human: y", "score": 1}]}
    with pytest.raises(BadRecord, match=r"^completions\[1\].response opens with the speaker label 'Human:'"):
        one(rated, "ultrafeedback", "rated")
    # its own label, or a quote of the user's label inside a sentence, loses nothing: kept
    ok = {**rec, "chosen": "Assistant: press CTRL + N.", "rejected": "Type what the Human: prompt asks."}
    assert one(ok, "ultrafeedback", "pairs").rows["pairs"][0]["chosen"][0]["content"] == "Assistant: press CTRL + N."


def test_ultrafeedback_ratings_become_scored_responses():
    rec = {"instruction": "Name a colour.", "completions": [
        {"model": "m1", "response": "Blue.", "overall_score": 8}, {"model": "m2", "response": "Dog.", "overall_score": 1}]}
    out = one(rec, "ultrafeedback", "rated")
    assert out.rows["prompts"][0]["messages"] == [{"role": "user", "content": "Name a colour."}]
    assert [(r["generator"], r["score"]) for r in out.rows["responses"]] == [("m1", 8.0), ("m2", 1.0)]
    assert {r["prompt_id"] for r in out.rows["responses"]} == {out.rows["prompts"][0]["prompt_id"]}
    with pytest.raises(BadRecord, match="completions must be a non-empty list"):
        one({"prompt": "x", "completions": []}, "ultrafeedback", "rated")


def test_ultrafeedback_ranks_by_the_fine_grained_ratings_not_the_overall_score():
    """UltraFeedback completions carry ``overall_score`` (1-10 critique score) and ``fine-grained_score`` (mean of
    the four 1-5 aspect ratings). Curry-DPO ranks by the ratings (its Figure 1: "R1 has the maximum score of 5");
    the adapter read ``overall_score``, whose bug turned critique 1s into 10s (OpenBMB/UltraFeedback #8), so the
    worst answer below ranked first."""
    rec = {"instruction": "Name a colour.", "completions": [
        {"model": "m1", "response": "Blue.", "overall_score": 7, "fine-grained_score": 4.75},
        {"model": "m2", "response": "Dog.", "overall_score": 10, "fine-grained_score": 1.25},
        {"model": "m3", "response": "Blue, I think.", "overall_score": 6.5, "fine-grained_score": None}]}
    rows = one(rec, "ultrafeedback", "rated").rows["responses"]
    assert [r["score"] for r in rows] == [4.75, 1.25, None]  # never the other scale for the unrated one
    assert all(json.loads(r["detail"])["score_field"] == "fine-grained_score" for r in rows)
    explicit = one({**rec, "completions": [{**c, "score": 9 - i} for i, c in enumerate(rec["completions"])]},
                   "ultrafeedback", "rated").rows["responses"]
    assert [r["score"] for r in explicit] == [9.0, 8.0, 7.0]  # an explicit `score` wins


def test_oasst_prunes_deleted_and_failed_review_messages():
    def msg(mid, role, replies=(), **kw):
        return {"message_id": mid, "role": role, "text": f"text {mid}", "replies": list(replies), **kw}

    tree = {"message_tree_id": "t1", "prompt": msg("r", "prompter", [
        msg("a1", "assistant", rank=0), msg("a2", "assistant", rank=1), msg("a3", "assistant", rank=2),
        msg("a4", "assistant", deleted=True, rank=3), msg("a5", "assistant", review_result=False)])}
    conv = one(tree, "oasst", "conversations")
    assert len(conv.rows["conversations"]) == 3
    assert conv.skipped == {"deleted message (and its replies)": 1, "message failed review (and its replies)": 1}
    rated = one(tree, "oasst", "rated")
    assert [r["score"] for r in rated.rows["responses"]] == [1.0, 0.5, 0.0]


def test_oasst_ranks_written_as_whole_floats_still_rank():
    def msg(mid, role, replies=(), **kw):
        return {"message_id": mid, "role": role, "text": f"text {mid}", "replies": list(replies), **kw}

    tree = {"message_tree_id": "t1", "prompt": msg("r", "prompter", [  # pandas' nullable rank column
        msg("a1", "assistant", rank=1.0), msg("a2", "assistant", rank=0.0)])}
    rated = one(tree, "oasst", "rated")
    assert [(r["text"], r["score"]) for r in rated.rows["responses"]] == [("text a2", 1.0), ("text a1", 0.0)]


def test_stackexchange_html_and_skips():
    assert html_to_text("&lt;p&gt;A &amp;amp; B&lt;/p&gt;&#xA;&lt;ul&gt;&lt;li&gt;x&lt;/li&gt;&lt;/ul&gt;") == "A & B\n\n- x"
    wiki = one({"Id": "9", "PostTypeId": "5", "Body": "<p>tag wiki</p>"}, "stackexchange", "rated")
    assert wiki.rows == {} and sum(wiki.skipped.values()) == 1
    with pytest.raises(BadRecord, match="post 3 has no Body"):
        one({"Id": "3", "PostTypeId": "1", "Title": "t"}, "stackexchange", "documents")


def test_a_link_whose_words_do_not_show_its_address_keeps_the_address():
    """The real coffee answer "here is the website ...: Caffeine In Coffee" lost the page it points to."""
    assert html_to_text('<p>See <a href="http://www.caffeineinformer.com/the-caffeine-database" rel="nofollow">'
                        "Caffeine In Coffee</a>.</p>") == (
        "See Caffeine In Coffee (http://www.caffeineinformer.com/the-caffeine-database).")
    # words that are the address, an in-page or relative link, a mail link and an image link add nothing
    assert html_to_text('<p><a href="http://www.ico.org/">www.ico.org</a> <a href="https://x.org">https://x.org</a> '
                        '<a href="#note">note</a> <a href="/questions/6">this question</a> '
                        '<a href="mailto:a@b.org">mail</a> <a href="http://i.org/p.png"><img src="p.png"></a></p>') == (
        "www.ico.org https://x.org note this question mail")


@pytest.mark.parametrize("body", [
    "<p>Burr grinders are better, as mentioned in the comments.</p>",
    "<p>As @Chris said, washed beans are less acidic.</p>",
    "<p>To expand on @Tom Medley's answer: the pivot matters.</p>",
    "<p>@henryJ exposed plunging in detail. For drip, use a finer grind.</p>",
    "<p>The other answers cover French press; for AeroPress, invert it.</p>",
])
def test_stackexchange_answer_that_leans_on_its_thread_is_a_reject(body):
    """Real coffee.stackexchange answers: the pair's prompt is the question alone, so a chosen answer that
    points at comments, other answers or a user it @-mentions refers to posts the prompt does not hold."""
    with pytest.raises(BadRecord, match=r"answer 7 refers to posts of its thread"):
        one({"Id": "7", "PostTypeId": "2", "ParentId": "1", "Score": "3", "Body": body}, "stackexchange", "rated")


@pytest.mark.parametrize(("post", "kind", "what"), [
    ({"Id": "39", "PostTypeId": "1", "Title": "What is this for?",
      "Body": '<p>My aeropress came with this thingy:</p><p><img src="http://i.stack.imgur.com/x.jpg"></p>'},
     "rated", "question 39"),
    ({"Id": "39", "PostTypeId": "1", "Title": "What do the letters mean?",
      "Body": "&lt;p&gt;It came with this lid: &lt;img src=&quot;lid.png&quot; alt=&quot;lid&quot;&gt;&lt;/p&gt;"},
     "prompts", "question 39"),
    ({"Id": "166", "PostTypeId": "2", "ParentId": "1", "Score": "4",
      "Body": '<p>The graph below shows the drop.</p><p><IMG src="g.jpg" alt="Quality over time"></p>'}, "rated", "answer 166"),
])
def test_stackexchange_post_that_shows_an_image_is_a_reject(post, kind, what):
    """Real coffee.stackexchange posts: html_to_text drops an image, so "it came with this lid:" or "the graph
    below shows" would point at nothing the prompt or response holds (a chat message with an image is a reject too)."""
    with pytest.raises(BadRecord, match=rf"{what} shows an image"):
        one(post, "stackexchange", kind)


def test_stackexchange_question_with_an_image_stays_a_document():
    """As a document (PUGC's reference) the text is read, not trained on: the question stays."""
    post = {"Id": "39", "PostTypeId": "1", "Title": "What is this for?",
            "Body": '<p>My aeropress came with this thingy:</p><p><img src="x.jpg"></p><p>What is it for?</p>'}
    doc = one(post, "stackexchange", "documents").rows["documents"][0]
    assert doc["text"] == "My aeropress came with this thingy:\n\nWhat is it for?"


@pytest.mark.parametrize("body", [
    "<pre><code>@property\ndef grind(self): ...</code></pre><p>Use a property.</p>",
    "<p>Comments in your recipe notes help; an answer to the roast question is below 200 words.</p>",
    "<p>An answer to your question: store beans in an airtight jar.</p>",
])
def test_stackexchange_self_contained_answer_is_a_response(body):
    res = one({"Id": "7", "PostTypeId": "2", "ParentId": "1", "Score": "3", "Body": body}, "stackexchange", "rated")
    assert len(res.rows["responses"]) == 1


def test_wildfeedback_released_pairs():
    rec = {"conversations": [{"from": "human", "value": "Write a title."}],
           "chosen": {"from": "gpt", "value": "A Short Title"}, "rejected": {"from": "gpt", "value": "title"}}
    pair = one(rec, "wildfeedback", "pairs").rows["pairs"][0]
    assert pair["prompt"] == [{"role": "user", "content": "Write a title."}]
    assert pair["chosen"] == [{"role": "assistant", "content": "A Short Title"}]


def test_documents_and_prompts_rules():
    doc = one({"body": "Some text", "title": " ", "score": "12"}, "documents", "documents").rows["documents"][0]
    assert (doc["text"], doc["title"], doc["score"]) == ("Some text", None, 12.0)
    assert doc["doc_id"] == stable_id("t", "x.jsonl:1")  # no id field: the position is the id
    with pytest.raises(BadRecord, match="text is empty"):
        one({"text": ""}, "documents", "documents")
    with pytest.raises(BadRecord, match="missing field 'body'"):
        one({"text": "x"}, "documents", "documents", {"text": "body"})
    with pytest.raises(BadRecord, match="turns is empty"):
        one({"turns": []}, "prompts", "prompts")


def test_to_messages_joins_text_parts():
    parts = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert to_messages(parts) == [{"role": "user", "content": "a\nb"}]


def test_adapt_rejects_non_objects():
    with pytest.raises(BadRecord, match="record is list, expected a JSON object"):
        one([1, 2], "documents", "documents")  # type: ignore[arg-type]


# --- hostile values ------------------------------------------------------------------------------

HOSTILE_HTML = {
    "unclosed tags": "<a " * 100_000,  # the stdlib parser rescanned this from every "<": ~40 minutes
    "deeply nested blocks": "<div>" * 100_000 + "deep",  # lexbor's tree builder is quadratic in depth here
    "nested lists": "<ul><li>" * 20_000 + "item",
    "unclosed comments": "<!--" * 100_000,
    "unclosed attribute quotes": '<a b="' * 100_000,
    "escaped once more": "&lt;p&gt;" * 60_000 + "x",
    "unclosed scripts": "<script>" * 60_000 + "x",
    "many scripts": "<style>a</style>" * 30_000 + "x",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_HTML))
def test_html_to_text_takes_linear_time_on_large_hostile_bodies(case):
    """A bound, not a speed claim (bench/html_to_text.py has the ratio): each body is 300-600 KB."""
    import time

    body = HOSTILE_HTML[case]
    start = time.perf_counter()
    html_to_text(body)
    assert time.perf_counter() - start < 1.0


def test_html_to_text_keeps_the_words_of_deep_markup():
    assert html_to_text("<div>" * 100_000 + "deep &amp; down") == "deep & down"
    assert html_to_text("<ul>" + "<li>x</li>" * 3 + "</ul>") == "- x\n\n- x\n\n- x"
    assert html_to_text("<p>a<br>b</p>") == "a\nb"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), "nan", "Infinity", "-inf", "1e999", 10**400],
                         ids=["nan", "inf", "-inf", "'nan'", "'Infinity'", "'-inf'", "'1e999'", "10**400"])
def test_scores_must_be_finite(bad):
    shown = "an integer of about 400 digits" if bad == 10**400 else repr(bad)
    pair = {"prompt": "Q?", "chosen": "good", "rejected": "bad", "score_chosen": bad, "score_rejected": 1}
    with pytest.raises(BadRecord, match=re.escape(f"score_chosen is {shown}, expected a")):
        one(pair, "ultrafeedback", "pairs")
    rated = {"prompt": "Q?", "completions": [{"response": "a", "score": 1}, {"response": "b", "score": bad}]}
    with pytest.raises(BadRecord, match=re.escape(f"completions[1].score is {shown}, expected a")):
        one(rated, "ultrafeedback", "rated")
    with pytest.raises(BadRecord, match="score is .*expected a"):
        one({"text": "doc", "score": bad}, "documents", "documents")
    post = {"Id": "1", "PostTypeId": "1", "Title": "t", "Body": "<p>b</p>", "Score": str(bad)}
    with pytest.raises(BadRecord, match="Score is .*expected a"):
        one(post, "stackexchange", "documents")


def test_non_finite_scores_in_a_file_are_rejects_not_pairs(tmp_path):
    """JSON's NaN, Infinity and 1e999 literals parse to floats: they become rejects, not margins of NaN."""
    lines = [b'{"id": "%d", "prompt": "Q%d?", "chosen": "good", "rejected": "bad", "score_chosen": %s, '
             b'"score_rejected": 1}' % (i, i, v) for i, v in enumerate([b"2", b"NaN", b"Infinity", b"-Infinity", b"1e999"])]
    (tmp_path / "p.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    res = run_source(tmp_path / "p.jsonl", "ultrafeedback", "pairs")
    assert_accounted(res)
    assert [p["margin"] for p in res.rows["pairs"]] == [1.0]
    assert [r["row"] for r in res.rejects] == [2, 3, 4, 5]
    assert all("expected a finite number" in r["reason"] for r in res.rejects)
