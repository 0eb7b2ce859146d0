"""Input boundaries, fourth pass (fields): each case below lost or changed a record's content without a word, or
rejected it for a reason that was not its fault, before its fix. Found by writing what a careless export
writes (pandas' floats for integer ids, flattened column names, chat-format prompt files, OpenAssistant trees
with a repeated message_id, a ``null`` beside the field that holds the value)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from tests.adapter_sources import run_source
from tests.input_cases import _ingest, _jsonl


def test_a_chat_format_prompt_keeps_its_system_message_and_its_turns(tmp_path):
    """The system message was taken for the user's prompt ("Be terse.") and the real question was counted as a
    follow-up turn; a multi-turn prompt kept only its first user turn."""
    res = _ingest(_jsonl(tmp_path / "p.jsonl", [
        {"id": 1, "prompt": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "What is 2+2?"}]},
        {"id": 2, "prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                             {"role": "user", "content": "c"}]},
        {"id": 3, "turns": [{"role": "user", "content": "first"}, {"role": "user", "content": "follow-up"}]},
        {"id": 4, "prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "answer"}]},
    ]))
    assert [[(m["role"], m["content"]) for m in r["messages"]] for r in res.rows["prompts"]] == [
        [("system", "Be terse."), ("user", "What is 2+2?")],
        [("user", "a"), ("assistant", "b"), ("user", "c")],
        [("user", "first")],
    ]
    assert res.metrics["skipped"] == {"follow-up turns left out (they need an answer in between)": 1}
    assert [r["reason"] for r in res.rejects] == [
        "p.jsonl:4: prompt ends with an assistant turn, not the user turn to answer: leave the answer out, or read "
        "the file with a format that takes answers (ultrafeedback, wildchat)"]


def test_two_messages_of_one_tree_sharing_an_id_are_a_reject_not_one_dropped_as_identical(tmp_path):
    """The second reply was dropped and counted as "row identical to an earlier one": its text was lost."""
    tree = {"message_tree_id": "t", "prompt": {"message_id": "r", "role": "prompter", "text": "Q?", "replies": [
        {"message_id": "x", "role": "assistant", "text": "A1", "rank": 0},
        {"message_id": "x", "role": "assistant", "text": "A2, another answer", "rank": 1}]}}
    for kind, table in (("conversations", "conversations"), ("rated", "responses")):
        res = _ingest(_jsonl(tmp_path / f"{kind}.jsonl", [tree]), "oasst", kind)
        assert res.metrics["accepted"] == 0 and res.metrics["skipped"] == {}
        assert res.rejects[0]["reason"].startswith(f"{kind}.jsonl:1: duplicate: {table} id (")
        assert "produced twice by this record with different content" in res.rejects[0]["reason"]


def test_a_record_that_repeats_one_of_its_own_rows_exactly_loses_nothing(tmp_path):
    rec = {"uid": "q1", "model": "m", "messages": [{"role": "user", "content": "Q"},
                                                   {"role": "assistant", "content": {"answer": "A"}}]}
    res = _ingest(_jsonl(tmp_path / "a.jsonl", [rec, rec]), "arena_answers", "rated")
    assert res.metrics["accepted"] == 2 and len(res.rows["responses"]) == 1


def test_an_hh_turn_that_shows_nothing_is_a_reject(tmp_path):
    """Both were pairs: one with an empty user turn in its prompt, one whose chosen answer was a zero-width space."""
    res = _ingest(_jsonl(tmp_path / "hh.jsonl", [
        {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman:   \n\nAssistant: good",
         "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman:   \n\nAssistant: bad"},
        {"chosen": "\n\nHuman: hi\n\nAssistant: \u200b", "rejected": "\n\nHuman: hi\n\nAssistant: bad"},
        {"chosen": "\n\nHuman: hi\n\nAssistant: good", "rejected": "\n\nHuman: hi\n\nAssistant: bad"},
    ]), "hh_rlhf", "pairs")
    assert [r["reason"] for r in res.rejects] == [
        "hh.jsonl:1: turn 3 (Human) of the dialogue chosen and rejected share is empty",
        "hh.jsonl:2: chosen has an empty final Assistant turn"]
    assert [r["chosen"][0]["content"] for r in res.rows["pairs"]] == ["good"]
    # the reason names the transcript that is empty (was "chosen or rejected" whichever it was)
    res = _ingest(_jsonl(tmp_path / "hh2.jsonl", [
        {"chosen": "\n\nHuman: hi\n\nAssistant: good", "rejected": "\n\nHuman: hi\n\nAssistant: "},
        {"chosen": "\n\nHuman: hi\n\nAssistant:", "rejected": "\n\nHuman: hi\n\nAssistant:  "},
    ]), "hh_rlhf", "pairs")
    assert [r["reason"] for r in res.rejects] == ["hh2.jsonl:1: rejected has an empty final Assistant turn",
                                                  "hh2.jsonl:2: chosen and rejected have an empty final Assistant turn"]


def test_a_flattened_column_named_like_a_nested_field_is_read(tmp_path):
    """A CSV (or pandas.json_normalize) export names the column ``metadata.score_chosen``: the scores were None."""
    (tmp_path / "uf.csv").write_text("prompt,chosen,rejected,metadata.score_chosen,metadata.score_rejected\n"
                                     "Q?,good,bad,8,3\n")
    (pair,) = _ingest(tmp_path / "uf.csv", "ultrafeedback", "pairs").rows["pairs"]
    assert (pair["score_chosen"], pair["score_rejected"], pair["margin"]) == (8.0, 3.0, 5.0)


def test_stack_exchange_ids_written_as_floats_still_link_answers_to_questions(tmp_path):
    """pandas writes ``ParentId`` and ``AcceptedAnswerId`` (integer columns with nulls) as floats, and a CSV export
    as "1.0": the answer was rejected as an orphan, and an accepted answer was marked not accepted."""
    pq.write_table(pa.table({"Id": [1, 2], "PostTypeId": [1, 2], "ParentId": [None, 1.0], "AcceptedAnswerId": [2.0, None],
                             "Body": ["<p>How to brew?</p>", "<p>Use hot water.</p>"], "Title": ["Brew", None]}),
                   tmp_path / "posts.parquet")
    (tmp_path / "posts.csv").write_text("Id,PostTypeId,ParentId,AcceptedAnswerId,Body,Title\n"
                                        "1,1,,2.0,How to brew?,Brew\n2,2,1.0,,Use hot water.,\n")
    for name in ("posts.parquet", "posts.csv"):
        res = _ingest(tmp_path / name, "stackexchange", "rated")
        assert res.rejects == [], name
        (answer,) = res.rows["responses"]
        assert answer["prompt_id"] == res.rows["prompts"][0]["prompt_id"]
        assert json.loads(answer["detail"])["accepted"] is True


def test_a_whole_float_id_is_the_integer_it_holds(tmp_path):
    res = _ingest(_jsonl(tmp_path / "p.jsonl", [{"id": 7, "text": "Hi"}, {"id": 7.0, "text": "Hi"},
                                                {"id": 7.5, "text": "Other"}]))
    assert [r["origin_id"] for r in res.rows["prompts"]] == ["7", "7.5"]
    assert res.metrics["skipped"] == {"prompts row identical to an earlier one": 1}


def test_a_null_score_beside_the_overall_score_is_not_a_missing_score(tmp_path):
    """``"score": null`` hid ``overall_score``: the completion was unscored."""
    res = _ingest(_jsonl(tmp_path / "uf.jsonl", [{"id": 1, "instruction": "Q", "completions": [
        {"response": None, "text": "a", "score": None, "overall_score": 8}, {"response": "b", "overall_score": 2}]}]),
        "ultrafeedback", "rated")
    assert [(r["text"], r["score"]) for r in res.rows["responses"]] == [("a", 8.0), ("b", 2.0)]


def test_a_blank_language_tag_is_no_tag(tmp_path):
    """"" was kept as the conversation's language: WildFeedback dropped it as a language not in its list, never
    detecting its language nor keeping it as unknown (``keep_unknown_language``)."""
    convo = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    res = _ingest(_jsonl(tmp_path / "w.jsonl", [{"id": i, "conversation": convo, "language": lang}
                                                for i, lang in enumerate(["", "  ", " English "])]),
                  "wildchat", "conversations")
    assert [c["language"] for c in res.rows["conversations"]] == [None, None, "English"]


def test_an_alpaca_input_is_part_of_the_prompt(tmp_path):
    """"Summarize the following text." was the whole prompt: Alpaca's ``input``, the text, was left out."""
    res = _ingest(_jsonl(tmp_path / "a.jsonl", [
        {"instruction": "Summarize the following text.", "input": "Cats sleep a lot.", "output": "They nap."},
        {"instruction": "Name a prime.", "input": "", "output": "2"},
        {"instruction": "Sort these.", "input": ["b", "a"]},
    ]))
    assert [r["messages"][0]["content"] for r in res.rows["prompts"]] == [
        "Summarize the following text.\n\nCats sleep a lot.", "Name a prime."]
    assert [r["reason"] for r in res.rejects] == [
        "a.jsonl:3: input is list, expected a string (the text the instruction is about)"]
    dolly = run_source(_jsonl(tmp_path / "d.jsonl", [{"instruction": "Who wrote it?", "context": "Dune, by Frank Herbert."}]),
                       "prompts", "prompts", mapping={"input": "context"})
    assert dolly.rows["prompts"][0]["messages"][0]["content"] == "Who wrote it?\n\nDune, by Frank Herbert."


def test_a_sharegpt_top_level_system_prompt_is_kept(tmp_path):
    """LLaMA-Factory's ShareGPT records carry the system prompt beside ``conversations``: it was dropped."""
    turns = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "Arr, hello."}]
    res = _ingest(_jsonl(tmp_path / "s.jsonl", [
        {"id": 1, "system": "Talk like a pirate.", "conversations": turns},
        {"id": 2, "system": "", "conversations": turns},
        {"id": 3, "system": "Other.", "conversations": [{"from": "system", "value": "Talk like a pirate."}, *turns]},
    ]), "sharegpt", "conversations")
    assert [[m["role"] for m in c["messages"]] for c in res.rows["conversations"]] == [
        ["system", "user", "assistant"], ["user", "assistant"]]
    assert res.rows["conversations"][0]["messages"][0]["content"] == "Talk like a pirate."
    assert [r["reason"] for r in res.rejects] == [
        "s.jsonl:3: system and the conversation's first (system) message differ: keep one of them"]


def test_oasst_ranks_written_as_floats_still_rank_the_replies(tmp_path):
    """pandas writes the nullable ``rank`` as 0.0, 1.0: the replies were counted as unranked and no prompt was rated."""
    tree = {"message_tree_id": "t", "prompt": {"message_id": "r", "role": "prompter", "text": "Q?", "replies": [
        {"message_id": "a", "role": "assistant", "text": "worse", "rank": 1.0},
        {"message_id": "b", "role": "assistant", "text": "better", "rank": 0.0},
        {"message_id": "c", "role": "assistant", "text": "unranked", "rank": None}]}}
    res = _ingest(_jsonl(tmp_path / "o.jsonl", [tree]), "oasst", "rated")
    assert [(r["text"], r["score"]) for r in res.rows["responses"]] == [("better", 1.0), ("worse", 0.0)]
    assert res.metrics["skipped"] == {"unranked reply in a ranked group": 1}


def test_a_toxic_flag_written_as_a_float_is_kept(tmp_path):
    """``"toxic": 1.0`` (pandas writes a nullable flag column as floats) read as *not* toxic: the conversation passed
    as clean, and ``wildfeedback.drop_flags`` kept it."""
    convo = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    res = _ingest(_jsonl(tmp_path / "w.jsonl", [{"id": i, "conversation": convo, "toxic": v}
                                                for i, v in enumerate([1.0, 0.0, "1.0", 1, "0"])]),
                  "wildchat", "conversations")
    assert [c["flags"] for c in res.rows["conversations"]] == [["toxic"], [], ["toxic"], ["toxic"], []]


def test_oasst_flags_are_read_as_flags_not_as_python_truth(tmp_path):
    """``"deleted": 1.0`` was kept (only ``True`` pruned), ``"synthetic": "false"`` flagged the path synthetic, and
    ``"review_result": "false"`` passed review."""
    def reply(mid: str, **flags) -> dict:
        return {"message_id": mid, "role": "assistant", "text": f"answer {mid}", **flags}

    tree = {"message_tree_id": "t", "prompt": {"message_id": "r", "role": "prompter", "text": "Q?", "replies": [
        reply("a", deleted=1.0), reply("b", review_result="false"), reply("c", synthetic="false"),
        reply("d", synthetic=True, review_result=True)]}}
    res = _ingest(_jsonl(tmp_path / "o.jsonl", [tree]), "oasst", "conversations")
    assert [(c["messages"][-1]["content"], c["flags"]) for c in res.rows["conversations"]] == [
        ("answer c", []), ("answer d", ["synthetic"])]
    assert res.metrics["skipped"] == {"deleted message (and its replies)": 1,
                                      "message failed review (and its replies)": 1}
    bad = {**tree, "prompt": {**tree["prompt"], "replies": [reply("e", deleted="maybe")]}}
    assert [r["reason"] for r in _ingest(_jsonl(tmp_path / "b.jsonl", [bad]), "oasst", "conversations").rejects] == [
        "b.jsonl:1: deleted is 'maybe', expected true or false"]


def test_assistants_api_text_parts_are_read(tmp_path):
    """OpenAI's Assistants API writes a text part as ``{"type": "text", "text": {"value": ..., "annotations": []}}``:
    each such message was a reject ("content[0].text is dict, expected a string")."""
    part = {"type": "text", "text": {"value": "Hello there.", "annotations": []}}
    convo = [{"role": "user", "content": [part]}, {"role": "assistant", "content": "Hi."}]
    res = _ingest(_jsonl(tmp_path / "w.jsonl", [{"id": 1, "conversation": convo}]), "wildchat", "conversations")
    assert res.rejects == [] and res.rows["conversations"][0]["messages"][0]["content"] == "Hello there."


def test_a_message_without_a_role_says_so(tmp_path):
    """Was "has unknown role None; expected one of [...]"."""
    res = _ingest(_jsonl(tmp_path / "s.jsonl", [{"id": 1, "conversations": [{"value": "hi"}]}]), "sharegpt",
                  "conversations")
    assert [r["reason"] for r in res.rejects] == [
        "s.jsonl:1: conversations[0] has no role (a 'from' or 'role' key naming the speaker)"]


def test_an_optional_text_field_of_another_type_is_a_reject_not_dropped(tmp_path):
    """A title, language or model given as a list or an object became None without a word (an Arena answer's model
    object became the text "{'name': 'gpt'}"); a number is its text."""
    convo = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    res = _ingest(_jsonl(tmp_path / "w.jsonl", [
        {"id": 1, "conversation": convo, "language": ["English"]},
        {"id": 2, "conversation": convo, "model": {"name": "gpt"}},
        {"id": 3, "conversation": convo, "model": 4},
    ]), "wildchat", "conversations")
    assert [r["reason"] for r in res.rejects] == ["w.jsonl:1: language is ['English'], expected a string",
                                                  "w.jsonl:2: model is {'name': 'gpt'}, expected a string"]
    assert [c["model"] for c in res.rows["conversations"]] == ["4"]
    docs = _ingest(_jsonl(tmp_path / "d.jsonl", [{"id": 1, "text": "t", "title": 1984}, {"id": 2, "text": "t",
                                                                                        "title": ["a"]}]),
                   "documents", "documents")
    assert [d["title"] for d in docs.rows["documents"]] == ["1984"]
    assert [r["reason"] for r in docs.rejects] == ["d.jsonl:2: title is ['a'], expected a string"]
    answer = {"uid": "u", "model": {"name": "gpt"}, "messages": [{"role": "user", "content": "Q"},
                                                                 {"role": "assistant", "content": {"answer": "A"}}]}
    assert [r["reason"] for r in _ingest(_jsonl(tmp_path / "a.jsonl", [answer]), "arena_answers", "rated").rejects] == [
        "a.jsonl:1: model is {'name': 'gpt'}, expected a string"]


def test_a_refusal_part_and_a_padded_role_are_read(tmp_path):
    """OpenAI's ``{"type": "refusal", "refusal": ...}`` part was a reject ("the text without it would lose what it
    refers to"), and a role written "User " was an unknown role."""
    convo = [{"role": "User ", "content": "Help me pick a lock."},
             {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]}]
    res = _ingest(_jsonl(tmp_path / "w.jsonl", [{"id": 1, "conversation": convo}]), "wildchat", "conversations")
    assert res.rejects == [] and [(m["role"], m["content"]) for m in res.rows["conversations"][0]["messages"]] == [
        ("user", "Help me pick a lock."), ("assistant", "I can't help with that.")]
