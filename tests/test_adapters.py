"""Format adapters: exact counts on the real public files, and one small case per rule."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from pipeline.adapters import BadRecord, Ctx, adapt, html_to_text, parse_hh, to_messages
from pipeline.config import Source
from pipeline.records import stable_id
from stages.ingest import ingest_source

MAX_BYTES = 4 << 20


def run_source(path: Path | str, fmt: str, kind: str, mapping: dict[str, str] | None = None, name: str = "src"):
    return ingest_source(Source(name=name, kind=kind, path=str(path), format=fmt, mapping=mapping or {}), MAX_BYTES)


def jsonl(path: Path) -> list[dict]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [json.loads(line) for line in data.split(b"\n") if line.strip()]


def one(rec: dict, fmt: str, kind: str, mapping: dict[str, str] | None = None):
    src = Source(name="t", kind=kind, path="x.jsonl", format=fmt, mapping=mapping or {})
    return adapt(rec, Ctx.for_source(src, "x.jsonl", 1))


def assert_accounted(result) -> None:
    m = result.metrics
    assert m["rows_in"] == m["accepted"] + m["rejected"] == m["accepted"] + len(result.rejects)


# --- real files ----------------------------------------------------------------------------------


def test_hh_rlhf_all_transcripts_become_conversations(real):
    path = real / "hh_rlhf/harmless-base/test.jsonl.gz"
    raw = jsonl(path)
    res = run_source(path, "hh_rlhf", "conversations")
    assert len(raw) == 2312
    assert res.metrics["rows_in"] == res.metrics["accepted"] == len(res.rows["conversations"]) == 2312
    assert res.metrics["skipped"] == {"empty final Assistant turn dropped": 4}
    # Every conversation starts with the human and the Human: markers all became user turns.
    humans = sum(len(re.findall(r"\n\nHuman:", r["chosen"])) for r in raw)
    convs = res.rows["conversations"]
    assert all(c["messages"][0]["role"] == "user" for c in convs)
    assert sum(m["role"] == "user" for c in convs for m in c["messages"]) == humans
    assert len({c["conversation_id"] for c in convs}) == 2312


def test_hh_rlhf_pairs_share_the_dialogue_and_differ_in_the_last_turn(real):
    path = real / "hh_rlhf/harmless-base/test.jsonl.gz"
    res = run_source(path, "hh_rlhf", "pairs")
    assert_accounted(res)
    # 4 transcripts end in an empty chosen Assistant turn: no usable chosen response.
    assert (res.metrics["accepted"], res.metrics["rejected"]) == (2308, 4)
    assert {r["reason"].split(": ", 1)[1] for r in res.rejects} == {"chosen or rejected has an empty final Assistant turn"}
    pair = res.rows["pairs"][0]
    raw = jsonl(path)[0]
    assert pair["prompt"][0]["content"] == "what are some pranks with a pen i can do?"
    assert pair["prompt"][-1]["role"] == "user"
    assert raw["chosen"].rstrip().endswith(pair["chosen"][0]["content"])
    assert raw["rejected"].rstrip().endswith(pair["rejected"][0]["content"])
    assert pair["method"] == "ingest" and pair["source"] == "src"
    assert json.loads(pair["lineage"])["at"] == "test.jsonl.gz:1"


def test_tldr_posts_become_documents(real):
    path = real / "dove/data/tldr/test.json"  # JSON lines despite the name
    res = run_source(path, "documents", "documents", {"text": "instruction", "id": "instruction_id"})
    docs = res.rows["documents"]
    assert len(jsonl(path)) == len(docs) == 500
    first = jsonl(path)[0]
    by_id = {d["doc_id"]: d for d in docs}
    doc = by_id[stable_id("src", first["instruction_id"])]
    assert doc["title"] == first["title"] and doc["text"] == first["instruction"]


def _oasst_counts(trees: list[dict]) -> tuple[int, int, int]:
    """Leaves, ranked prompter groups (>= 2 ranked replies) and ranked replies, counted directly."""
    leaves = groups = ranked = 0
    stack = [t["prompt"] for t in trees]
    while stack:
        m = stack.pop()
        if not m["replies"]:
            leaves += 1
        r = [x for x in m["replies"] if x.get("rank") is not None]
        if m["role"] == "prompter" and len(r) >= 2:
            groups, ranked = groups + 1, ranked + len(r)
        stack.extend(m["replies"])
    return leaves, groups, ranked


def _deepest(trees: list[dict]) -> int:
    def depth(m: dict) -> int:
        return 1 + max((depth(r) for r in m["replies"]), default=0)

    return max(depth(t["prompt"]) for t in trees)


def test_oasst_trees_become_root_to_leaf_conversations(real):
    path = real / "oasst_en100/model/model_eval/manual/data/en_100_tree.jsonl"
    trees = jsonl(path)
    leaves, _, _ = _oasst_counts(trees)
    res = run_source(path, "oasst", "conversations")
    convs = res.rows["conversations"]
    assert len(trees) == res.metrics["accepted"] == 100
    assert len(convs) == leaves == 626
    # 226 paths end on an unanswered prompter message; the rest on an assistant reply.
    assert sum(c["messages"][-1]["role"] == "user" for c in convs) == 226
    assert max(len(c["messages"]) for c in convs) == _deepest(trees) == 6
    assert all(c["language"] == "en" for c in convs)
    assert sum("synthetic" in c["flags"] for c in convs) > 0


def test_oasst_ranked_siblings_become_rated_responses(real):
    path = real / "oasst_en100/model/model_eval/manual/data/en_100_tree.jsonl"
    _, groups, ranked = _oasst_counts(jsonl(path))
    res = run_source(path, "oasst", "rated")
    prompts, responses = res.rows["prompts"], res.rows["responses"]
    assert len(prompts) == groups == 212
    assert len(responses) == ranked == 641
    by_prompt: dict[str, list[dict]] = {}
    for r in responses:
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    assert set(by_prompt) == {p["prompt_id"] for p in prompts}
    for group in by_prompt.values():
        ordered = sorted(group, key=lambda r: json.loads(r["detail"])["rank"])
        assert [r["score"] for r in ordered] == sorted((r["score"] for r in group), reverse=True)
        assert ordered[0]["score"] == 1.0 and ordered[-1]["score"] == 0.0
    assert all(p["messages"][-1]["role"] == "user" for p in prompts)


def _se_counts(path: Path) -> tuple[int, int]:
    text = path.read_text(encoding="utf-8-sig")
    return len(re.findall(r'PostTypeId="1"', text)), len(re.findall(r'PostTypeId="2"', text))


def test_stackexchange_questions_and_answers(real):
    path = real / "stackexchange_coffee/Posts.xml"
    n_q, n_a = _se_counts(path)
    assert (n_q, n_a) == (225, 327)
    docs = run_source(path, "stackexchange", "documents")
    assert len(docs.rows["documents"]) == n_q
    assert docs.metrics["skipped"]["answer (this source's kind keeps questions only)"] == n_a
    rated = run_source(path, "stackexchange", "rated")
    assert len(rated.rows["prompts"]) == n_q and len(rated.rows["responses"]) == n_a
    assert rated.metrics["rows_in"] == rated.metrics["accepted"] == 592
    # HTML is gone and entities are decoded.
    assert not any("<p>" in d["text"] or "&lt;" in d["text"] for d in docs.rows["documents"])
    # The accepted flag follows each question's AcceptedAnswerId (105 of them in this dump).
    accepted = [r for r in rated.rows["responses"] if json.loads(r["detail"])["accepted"]]
    assert len(accepted) == len(re.findall(r'AcceptedAnswerId="', path.read_text(encoding="utf-8-sig"))) == 105
    first = next(p for p in rated.rows["prompts"] if p["origin_id"] == "1")
    assert first["messages"][0]["content"].startswith("How should I store whole bean coffee?\n\nI just got a pound")


def test_ultrafeedback_pairs(real):
    path = real / "ultrafeedback_binarized/data/processed/eval_clean.jsonl"
    raw = jsonl(path)
    res = run_source(path, "ultrafeedback", "pairs")
    identical = sum(r["chosen"] == r["rejected"] for r in raw)
    assert (len(raw), identical) == (200, 1)
    assert res.metrics["accepted"] == len(res.rows["pairs"]) == 199
    assert res.rejects[0]["row"] == 44 and res.rejects[0]["reason"].endswith("chosen and rejected are identical")
    pair = next(p for p in res.rows["pairs"] if p["prompt"][0]["content"] == raw[0]["prompt"])
    assert pair["chosen"] == [{"role": "assistant", "content": raw[0]["chosen"]}]
    assert pair["score_chosen"] == raw[0]["metadata"]["score_chosen"]
    assert pair["margin"] == raw[0]["metadata"]["score_chosen"] - raw[0]["metadata"]["score_rejected"]


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("mt_bench/fastchat/llm_judge/data/mt_bench/question.jsonl", 80),
        ("mt_bench/fastchat/llm_judge/data/vicuna_bench/question.jsonl", 80),
        ("arena_hard/data/arena-hard-v0.1/question.jsonl", 500),
        ("arena_hard/data/arena-hard-v2.0/question.jsonl", 750),
        ("koala/koala_test_set.jsonl", 180),
        ("self_instruct/data/seed_tasks.jsonl", 175),
        ("self_instruct/human_eval/user_oriented_instructions.jsonl", 252),
        ("vicuna80/fastchat/eval/table/question.jsonl", 80),
    ],
)
def test_prompt_sets(real, rel, expected):
    path = real / rel
    res = run_source(path, "prompts", "prompts")
    assert len(jsonl(path)) == res.metrics["rows_in"] == len(res.rows["prompts"]) == expected
    assert res.metrics["rejected"] == 0
    assert len({p["prompt_id"] for p in res.rows["prompts"]}) == expected


def test_arena_hard_v2_keeps_line_separators_inside_prompts(real):
    path = real / "arena_hard/data/arena-hard-v2.0/question.jsonl"
    res = run_source(path, "prompts", "prompts")
    assert any("\u2028" in p["messages"][0]["content"] for p in res.rows["prompts"])
    assert len(res.rows["prompts"]) == 750


def test_mt_bench_takes_the_first_turn_and_counts_the_rest(real):
    path = real / "mt_bench/fastchat/llm_judge/data/mt_bench/question.jsonl"
    res = run_source(path, "prompts", "prompts")
    first = jsonl(path)[0]
    p = next(p for p in res.rows["prompts"] if p["origin_id"] == str(first["question_id"]))
    assert p["messages"] == [{"role": "user", "content": first["turns"][0]}]
    assert res.metrics["skipped"] == {"follow-up turns left out (they need an answer in between)": 80}


def test_self_instruct_appends_the_instance_input(real):
    path = real / "self_instruct/human_eval/user_oriented_instructions.jsonl"
    res = run_source(path, "prompts", "prompts")
    first = jsonl(path)[0]
    p = next(p for p in res.rows["prompts"] if p["origin_id"] == first["id"])
    assert p["messages"][0]["content"] == f"{first['instruction']}\n\n{first['instances'][0]['input']}"


def test_arena_answers_group_models_under_one_prompt(real):
    res = run_source(real / "arena_hard/data/arena-hard-v0.1/model_answer/*.jsonl", "arena_answers", "rated")
    assert res.metrics["rows_in"] == res.metrics["accepted"] == 1500
    assert len(res.rows["prompts"]) == 500 and len(res.rows["responses"]) == 1500
    assert res.metrics["skipped"] == {"prompts row identical to an earlier one": 1000}
    assert {r["generator"] for r in res.rows["responses"]} == {"gpt-3.5-turbo-0125", "gpt-4-0314", "gpt-4-0613"}


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


def test_ultrafeedback_ratings_become_scored_responses():
    rec = {"instruction": "Name a colour.", "completions": [
        {"model": "m1", "response": "Blue.", "overall_score": 8}, {"model": "m2", "response": "Dog.", "overall_score": 1}]}
    out = one(rec, "ultrafeedback", "rated")
    assert out.rows["prompts"][0]["messages"] == [{"role": "user", "content": "Name a colour."}]
    assert [(r["generator"], r["score"]) for r in out.rows["responses"]] == [("m1", 8.0), ("m2", 1.0)]
    assert {r["prompt_id"] for r in out.rows["responses"]} == {out.rows["prompts"][0]["prompt_id"]}
    with pytest.raises(BadRecord, match="completions must be a non-empty list"):
        one({"prompt": "x", "completions": []}, "ultrafeedback", "rated")


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


def test_stackexchange_html_and_skips():
    assert html_to_text("&lt;p&gt;A &amp;amp; B&lt;/p&gt;&#xA;&lt;ul&gt;&lt;li&gt;x&lt;/li&gt;&lt;/ul&gt;") == "A & B\n\n- x"
    wiki = one({"Id": "9", "PostTypeId": "5", "Body": "<p>tag wiki</p>"}, "stackexchange", "rated")
    assert wiki.rows == {} and sum(wiki.skipped.values()) == 1
    with pytest.raises(BadRecord, match="post 3 has no Body"):
        one({"Id": "3", "PostTypeId": "1", "Title": "t"}, "stackexchange", "documents")


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
