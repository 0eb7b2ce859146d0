"""Format adapters on the real public files (../shared/data/real): exact counts per format, checked against
small independent readers of the raw files. The rules, one small case each, are in tests/test_adapters.py."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from pipeline.records import stable_id
from tests.adapter_sources import (
    SE_IMAGE_ANSWERS,
    SE_IMAGE_QUESTIONS,
    SE_THREAD_REFERENCES,
    assert_accounted,
    run_source,
)


def jsonl(path: Path) -> list[dict]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [json.loads(line) for line in data.split(b"\n") if line.strip()]


# --- real files ----------------------------------------------------------------------------------


def labelled_turn(transcript: str) -> bool:
    """An independent reader: some turn of an HH-RLHF transcript opens with a speaker label of its own, or holds the
    other speaker's line after two spaces or a line break ("...a good idea.  Human:  Why not?")."""
    parts = re.split(r"\n\n(Human|Assistant):", transcript)
    return any(re.match(r"\s*(?:Human|Assistant)\s*:", t)
               or re.search(r"(?:  |\n)" + ("Human" if who == "Assistant" else "Assistant") + r" ?:\s*\S", t.strip())
               for who, t in zip(parts[1::2], parts[2::2], strict=True))


def other_speakers_line(messages: list[dict]) -> bool:
    """A message that holds the other role's line after a sentence gap: the transcript's roles were mixed up."""
    return any(re.search(r"(?:  |\n)" + ("Human" if m["role"] == "assistant" else "Assistant") + r" ?:\s*\S",
                         m["content"]) for m in messages)


def test_hh_rlhf_all_transcripts_become_conversations(real):
    path = real / "hh_rlhf/harmless-base/test.jsonl.gz"
    raw = jsonl(path)
    res = run_source(path, "hh_rlhf", "conversations")
    assert len(raw) == 2312
    assert_accounted(res)
    # 32 chosen transcripts hold a turn that opens with a speaker label ("Assistant: Human: No, you are
    # racist.") and 4 more one that holds the user's next line ("...a good idea.  Human:  Why not?"): the model
    # wrote the user's line, the roles are mixed up; rejected, naming the turn.
    clean = [r for r in raw if not labelled_turn(r["chosen"])]
    assert res.metrics["accepted"] == len(res.rows["conversations"]) == len(clean) == 2276
    reasons = [r["reason"] for r in res.rejects]
    assert len(reasons) == 36 and all(re.search(r"turn \d+ \((Human|Assistant)\) (opens with the speaker label|holds the "
                                                r"other speaker's line) '(Human|Assistant) ?:'", r) for r in reasons)
    assert sum("other speaker's line" in r for r in reasons) == 4
    assert not any(other_speakers_line(c["messages"]) for c in res.rows["conversations"])
    assert res.metrics["skipped"] == {"empty final Assistant turn dropped": 4}
    # Every conversation starts with the human and the Human: markers all became user turns.
    humans = sum(len(re.findall(r"\n\nHuman:", r["chosen"])) for r in clean)
    convs = res.rows["conversations"]
    assert all(c["messages"][0]["role"] == "user" for c in convs)
    assert sum(m["role"] == "user" for c in convs for m in c["messages"]) == humans
    assert len({c["conversation_id"] for c in convs}) == 2276
    assert not any(re.match(r"(Human|Assistant)\s*:", m["content"]) for c in convs for m in c["messages"])


def test_hh_rlhf_pairs_share_the_dialogue_and_differ_in_the_last_turn(real):
    path = real / "hh_rlhf/harmless-base/test.jsonl.gz"
    res = run_source(path, "hh_rlhf", "pairs")
    assert_accounted(res)
    # 4 transcripts end in an empty chosen Assistant turn: no usable chosen response. 40 hold a turn that
    # opens with a speaker label (18 of them the chosen answer itself: "Human: No, you are racist."), 5 more
    # one that holds the other speaker's line ("Well that doesn't seem like a good idea.  Human:  Why not?"
    # as the chosen answer): rejected.
    raw = jsonl(path)
    labelled = [r for r in raw if labelled_turn(r["chosen"]) or labelled_turn(r["rejected"])]
    assert (res.metrics["accepted"], res.metrics["rejected"]) == (2263, 49) and len(labelled) == 45
    reasons = [r["reason"].split(": ", 1)[1] for r in res.rejects]
    empty_chosen = [i for i, r in enumerate(raw, 1) if r["chosen"].endswith("\n\nAssistant: ")]
    assert [r["row"] for r in res.rejects if r["reason"].endswith("chosen has an empty final Assistant turn")] == empty_chosen
    assert len(empty_chosen) == 4
    assert sum("opens with the speaker label" in r for r in reasons) == 40
    assert sum("holds the other speaker's line" in r for r in reasons) == 5
    assert not any(other_speakers_line(p["prompt"] + p["chosen"] + p["rejected"]) for p in res.rows["pairs"])
    assert not any(re.match(r"(Human|Assistant)\s*:", m["content"])
                   for p in res.rows["pairs"] for m in p["prompt"] + p["chosen"] + p["rejected"])
    pair = res.rows["pairs"][0]
    assert pair["prompt"][0]["content"] == "what are some pranks with a pen i can do?"
    assert pair["prompt"][-1]["role"] == "user"
    assert raw[0]["chosen"].rstrip().endswith(pair["chosen"][0]["content"])
    assert raw[0]["rejected"].rstrip().endswith(pair["rejected"][0]["content"])
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
    assert_accounted(rated)
    # 19 answers lean on posts of their thread the prompt does not hold (read one by one: "as mentioned in the
    # comments", "As @Chris said", "@PythonMaster's answer", "other answers by @henryJ", "The accepted answer"):
    # rejected, so no pair's chosen answer refers to them.
    def posts(why: str) -> set[str]:
        return {r["reason"].split(": ")[1].split(" ")[1] for r in rated.rejects if why in r["reason"]}

    assert posts("refers to posts of its thread") == SE_THREAD_REFERENCES
    # 15 questions and 30 answers show an image ("It came with this lid:", "The graph below shows"), which the text
    # loses: rejected, and with each such question its 19 other answers (their prompt is not accepted).
    assert posts("shows an image") == SE_IMAGE_QUESTIONS | SE_IMAGE_ANSWERS
    # Each of those 19 is in the file and rejected itself: the reason says so, not that it is missing.
    orphans = [r["reason"] for r in rated.rejects if "response to a prompt this source does not accept" in r["reason"]]
    assert len(orphans) == 19 and all(r.endswith("or was rejected itself (see its own reject)") for r in orphans)
    assert len(rated.rejects) == 19 + 45 + 19
    assert len(rated.rows["prompts"]) == n_q - 15 == 210
    assert len(rated.rows["responses"]) == n_a - 19 - 30 - 19 == 259
    assert rated.metrics["rows_in"] == 592 and rated.metrics["accepted"] == 509
    # HTML is gone and entities are decoded; a link whose words do not show its address keeps the address
    # (422 links in 158 answers, 116 in 57 questions: "...cups of coffee (types will vary): Caffeine In Coffee" lost
    # the page the answer gives).
    assert not any("<p>" in d["text"] or "&lt;" in d["text"] for d in docs.rows["documents"])
    answer = next(r["text"] for r in rated.rows["responses"] if json.loads(r["detail"])["post_id"] == "88")
    assert "(types will vary): Caffeine In Coffee (http://www.caffeineinformer.com/the-caffeine-database)" in answer
    links = [len(re.findall(r" \(https?://", r["text"])) for r in rated.rows["responses"]]
    assert (sum(n > 0 for n in links), sum(links)) == (121, 292)  # of the 259 answers kept
    assert sum(len(re.findall(r" \(https?://", d["text"])) for d in docs.rows["documents"]) == 116
    # The accepted flag follows each question's AcceptedAnswerId (105 of them in this dump; 21 of those
    # answers are among the rejected: 34 and 1574 lean on their thread, the rest show an image or answer a
    # question that does).
    accepted = [r for r in rated.rows["responses"] if json.loads(r["detail"])["accepted"]]
    assert len(re.findall(r'AcceptedAnswerId="', path.read_text(encoding="utf-8-sig"))) == 105 and len(accepted) == 84
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


def test_dove_conditional_pairs_reject_replies_that_speak_as_the_user(real):
    # DOVE's HH-derived pairs, read as docs/ingest.md tells a user (ultrafeedback format, mapped fields): 8 rows hold
    # a reply that opens with "Human:" or holds the user's next line ("...negotiation.  Human:  Do you think...")
    path = real / "dove/data/anthropic_helpful/val_conditional_pref.jsonl"
    raw = jsonl(path)
    mapping = {"prompt": "i_chosen", "chosen": "r_chosen", "rejected": "r_reject"}
    res = run_source(path, "ultrafeedback", "pairs", mapping)
    assert_accounted(res)
    mixed = [i for i, r in enumerate(raw, 1) if other_speakers_line([{"role": "assistant", "content": "  " + r[k]}
                                                                     for k in ("r_chosen", "r_reject")])]
    assert [r["row"] for r in res.rejects] == mixed == [16, 23, 118, 155, 216, 224, 238, 298]
    assert [r["reason"].split(": ", 1)[1].split(" ")[0] for r in res.rejects].count("chosen") == 3
    assert len(res.rows["pairs"]) == 363 - 8
    assert not any(re.match(r"\s*Human\s*:", p[k][0]["content"]) for p in res.rows["pairs"] for k in ("chosen", "rejected"))


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


def test_wildchat_sample_flags_nested_under_metadata_are_read(real):
    """The shared WildChat sample nests `toxic`/`redacted` under `metadata` (a converted export, not the Hub's
    top-level columns). Read with no mapping, its 4 redacted conversations came in unflagged, so `drop_flags`
    kept them and WildFeedback mined them (3 of them drew DSAT signals)."""
    path = real / "wildchat_sample/conversations.jsonl"
    raw = jsonl(path)
    redacted = {stable_id("src", r["id"]) for r in raw if r["metadata"]["redacted"]}
    assert len(redacted) == 4 and not any(r["metadata"]["toxic"] for r in raw)
    res = run_source(path, "wildchat", "conversations")
    flagged = {c["conversation_id"]: c["flags"] for c in res.rows["conversations"] if c["flags"]}
    assert flagged == dict.fromkeys(redacted, ["redacted"])
    # a top-level flag (the Hub's WildChat columns) still decides, and a mapping still points elsewhere
    res = run_source(path, "wildchat", "conversations", mapping={"redacted": "metadata.toxic"})
    assert not any(c["flags"] for c in res.rows["conversations"])


def test_wildchat_sample_model_nested_under_metadata_is_read_language_only_when_mapped(real):
    """The same export nests `model` and `language` under `metadata`. The model is read; the nested language tag
    is not (10 of its 187 "English" conversations are not English, and a tag wins over language identification)
    unless a mapping names it."""
    path = real / "wildchat_sample/conversations.jsonl"
    raw = {stable_id("src", r["id"]): r["metadata"] for r in jsonl(path)}
    convs = run_source(path, "wildchat", "conversations").rows["conversations"]
    assert len(convs) == 568
    assert all(c["model"] == raw[c["conversation_id"]]["model"] for c in convs)
    assert {c["model"] for c in convs} >= {"gpt-3.5-turbo-0613", "gpt-4-0314"}
    assert all(c["language"] is None for c in convs)
    mapped = run_source(path, "wildchat", "conversations", mapping={"language": "metadata.language"})
    assert all(c["language"] == raw[c["conversation_id"]]["language"] for c in mapped.rows["conversations"])
    assert sum(c["language"] == "English" for c in mapped.rows["conversations"]) > 150


def test_wildchat_sample_rejects_say_what_is_wrong_and_name_the_key_it_holds(real):
    """21 of the 589 conversations are rejects, each for a true cause: the host's downloader dropped messages, so 20 do
    not alternate or start with an assistant turn, and one user turn is only line breaks. The empty turn's reason
    names the record's key (`messages`), not `conversation`, a key the file does not have."""
    path = real / "wildchat_sample/conversations.jsonl"
    raw = jsonl(path)
    res = run_source(path, "wildchat", "conversations")
    assert_accounted(res)
    roles = [[m["role"] for m in r["messages"]] for r in raw]
    out_of_order = [i for i, rs in enumerate(roles, 1) if rs[::2] != ["user"] * len(rs[::2])
                    or rs[1::2] != ["assistant"] * len(rs[1::2])]
    blank_turns = [(i, n) for i, r in enumerate(raw, 1) for n, m in enumerate(r["messages"]) if not m["content"].strip()]
    assert len(out_of_order) == 20 and blank_turns == [(131, 6)]
    reasons = {r["row"]: r["reason"] for r in res.rejects}
    assert sorted(reasons) == sorted([*out_of_order, 131])
    assert reasons[131] == "conversations.jsonl:131: messages[6] (user) has empty content"
    assert all("roles out of order" in reasons[i] for i in out_of_order)
