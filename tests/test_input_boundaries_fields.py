"""Input boundaries, fourth pass (fields): each case below lost or changed a record's content without a word, or
rejected it for a reason that was not its fault, before its fix. Found by writing what a careless export
writes (pandas' floats for integer ids, flattened column names, chat-format prompt files, OpenAssistant trees
with a repeated message_id, a ``null`` beside the field that holds the value)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.adapter_sources import run_source
from tests.test_ingest_fuzz import _ingest


def _jsonl(path, recs: list) -> object:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


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
        "hh.jsonl:2: chosen or rejected has an empty final Assistant turn"]
    assert [r["chosen"][0]["content"] for r in res.rows["pairs"]] == ["good"]


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


# --- decontamination sets: every turn of an eval prompt is read, or its record is counted unread -------------

def test_an_eval_prompt_turn_that_cannot_be_read_counts_its_record_as_unread(tmp_path):
    """A null or numeric turn was left out without a word (the record counted as read), white space counted as a
    prompt, and content given as text parts was not read."""
    from pipeline.config import EvalSet
    from pipeline.decontam import ReleaseInputError, load_eval_sets

    _jsonl(tmp_path / "q.jsonl", [
        {"question_id": 1, "turns": ["Name three primes.", None]},
        {"question_id": 2, "turns": [{"content": "Explain DNS."}, {"content": 5}]},
        {"question_id": 3, "turns": [{"role": "user", "content": [{"type": "text", "text": "Define entropy."}]}]},
        {"question_id": 4, "turns": "   "},
    ])
    sets = [EvalSet(name="mt", path=str(tmp_path / "q.jsonl"), text_field="turns", id_field="question_id",
                    optional=True)]
    evals, status = load_eval_sets(sets)
    assert evals["text"].to_list() == ["Name three primes.", "Explain DNS.", "Define entropy."]
    assert status["mt"]["status"] == ("ok; 3 record(s) without a prompt (first: q.jsonl:1: no text in field "
                                      "'turns[1]' (it is NoneType))")
    with pytest.raises(ReleaseInputError, match="3 record"):
        load_eval_sets([sets[0].model_copy(update={"optional": False})])


def test_a_blank_language_tag_is_no_tag(tmp_path):
    """"" was kept as the conversation's language: WildFeedback dropped it as a language not in its list, never
    detecting its language nor keeping it as unknown (``keep_unknown_language``)."""
    convo = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    res = _ingest(_jsonl(tmp_path / "w.jsonl", [{"id": i, "conversation": convo, "language": lang}
                                                for i, lang in enumerate(["", "  ", " English "])]),
                  "wildchat", "conversations")
    assert [c["language"] for c in res.rows["conversations"]] == [None, None, "English"]


def test_text_that_is_not_utf8_says_to_re_encode_the_file(tmp_path):
    """A Latin-1 export was one "invalid UTF-8 at byte 19" per line: what was wrong, not what to do."""
    text = "café crème"
    (tmp_path / "l.jsonl").write_bytes(f'{{"id": 1, "text": "{text}"}}\n'.encode("latin-1"))
    (tmp_path / "l.csv").write_bytes(f"id,text\n1,{text}\n".encode("latin-1"))
    (tmp_path / "l.json").write_bytes(f'[{{"id": 1, "text": "{text}"}}]'.encode("latin-1"))
    for name in ("l.jsonl", "l.csv", "l.json"):
        (reason,) = [r["reason"] for r in _ingest(tmp_path / name).rejects]
        assert reason.startswith(f"{name}:1: invalid UTF-8 ") and reason.endswith(
            ": re-encode the file as UTF-8 (Latin-1 or Windows-1252 text: `iconv -f WINDOWS-1252 -t UTF-8`)"), reason


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


# --- files a careless export writes ------------------------------------------------------------------------------

def test_a_gzip_file_named_in_capitals_is_read(tmp_path):
    """``x.JSONL.GZ`` failed the source: "unknown file type '.gz'; expected ... (optionally .gz ...)"."""
    import gzip

    (tmp_path / "x.JSONL.GZ").write_bytes(gzip.compress(b'{"id": 1, "text": "hi"}\n'))
    assert [r["messages"][0]["content"] for r in _ingest(tmp_path / "x.JSONL.GZ").rows["prompts"]] == ["hi"]


def test_a_csv_separated_by_semicolons_or_tabs_is_one_reject_saying_so(tmp_path):
    """Excel in many locales writes ';': each row was a "missing field 'text'" reject, none saying why."""
    for name, sep in (("semi.csv", ";"), ("tab.csv", "\t")):
        (tmp_path / name).write_text(f"id{sep}text\n1{sep}hello\n2{sep}world\n")
        assert [r["reason"] for r in _ingest(tmp_path / name).rejects] == [
            f"{name}:1: the header row is one column holding {sep!r}: the file is separated by {sep!r}, not by commas; "
            "none of it is read: save it as comma-separated CSV"]


def test_pretty_printed_json_named_jsonl_says_so(tmp_path):
    """Each line was an "invalid JSON: ..." reject, none saying why: the bracket lines now say what the file is."""
    (tmp_path / "p.jsonl").write_text(json.dumps([{"id": 1, "text": "hi"}, {"id": 2, "text": "yo"}], indent=2) + "\n")
    res = _ingest(tmp_path / "p.jsonl")
    assert res.metrics["rows_in"] == res.metrics["rejected"] == 10  # every line, each a reject
    hint = ("is JSON written over several lines (pretty-printed), not JSON lines: write one record per line (`jq -c "
            "'.[]'` for an array, `jq -c .` for objects one after another), or name the file .json if it holds one array")
    hinted = [r["reason"] for r in res.rejects if r["reason"].endswith(hint)]
    assert [int(r.split(":")[1]) for r in hinted] == [1, 2, 5, 6, 9, 10]  # the lines that are only a bracket
    assert hinted[0] == f"p.jsonl:1: invalid JSON: Expecting value at column 2; a line that is only '[' {hint}"
    (tmp_path / "ok.jsonl").write_text('{\n{"id": 1, "text": "hi"}\n')  # a stray '{' is one reject, the record read
    assert [r["messages"][0]["content"] for r in _ingest(tmp_path / "ok.jsonl").rows["prompts"]] == ["hi"]


def test_parquet_maps_and_uuids_are_read_as_the_objects_and_ids_they_hold(tmp_path):
    """A map column (Spark, DuckDB) was a list of (key, value) pairs, so ``metadata.score_chosen`` was not found and
    the scores were None; a UUID id was a reject ("id is UUID('...'), expected a string or a number")."""
    import uuid

    scores = pa.array([[("score_chosen", 8.0), ("score_rejected", 2.0)]], pa.map_(pa.string(), pa.float64()))
    pq.write_table(pa.table({"id": pa.array([uuid.UUID(int=1).bytes], pa.uuid()), "prompt": ["Q?"], "chosen": ["good"],
                             "rejected": ["bad"], "metadata": scores}), tmp_path / "uf.parquet")
    (pair,) = _ingest(tmp_path / "uf.parquet", "ultrafeedback", "pairs").rows["pairs"]
    assert (pair["score_chosen"], pair["score_rejected"]) == (8.0, 2.0)
    assert json.loads(pair["lineage"])["origin_id"] == "00000000-0000-0000-0000-000000000001"
    twice = pa.array([[("score_chosen", 8.0), ("score_chosen", 1.0)]], pa.map_(pa.string(), pa.float64()))
    pq.write_table(pa.table({"prompt": ["Q?"], "chosen": ["good"], "rejected": ["bad"], "metadata": twice}),
                   tmp_path / "twice.parquet")
    assert [r["reason"] for r in _ingest(tmp_path / "twice.parquet", "ultrafeedback", "pairs").rejects] == [
        "twice.parquet:1: column 'metadata' holds a map that names the key 'score_chosen' twice (a record would keep "
        "one of them): give each key once"]


def test_a_null_required_field_says_it_is_null_not_missing(tmp_path):
    pq.write_table(pa.table({"id": ["a", "b"], "text": pa.array(["x", None])}), tmp_path / "d.parquet")
    assert [r["reason"] for r in _ingest(tmp_path / "d.parquet", "documents", "documents").rejects] == [
        "d.parquet:2: field 'text' is null: the record has no 'text' or 'body' or 'content' or 'selftext'"]


def test_oasst_ranks_written_as_floats_still_rank_the_replies(tmp_path):
    """pandas writes the nullable ``rank`` as 0.0, 1.0: the replies were counted as unranked and no prompt was rated."""
    tree = {"message_tree_id": "t", "prompt": {"message_id": "r", "role": "prompter", "text": "Q?", "replies": [
        {"message_id": "a", "role": "assistant", "text": "worse", "rank": 1.0},
        {"message_id": "b", "role": "assistant", "text": "better", "rank": 0.0},
        {"message_id": "c", "role": "assistant", "text": "unranked", "rank": None}]}}
    res = _ingest(_jsonl(tmp_path / "o.jsonl", [tree]), "oasst", "rated")
    assert [(r["text"], r["score"]) for r in res.rows["responses"]] == [("better", 1.0), ("worse", 0.0)]
    assert res.metrics["skipped"] == {"unranked reply in a ranked group": 1}


def test_a_held_out_set_whose_prompt_is_not_messages_is_one_line_not_a_traceback(tmp_path):
    """A prompt column of plain strings was a polars InvalidOperationError and its traceback."""
    from pipeline.decontam import ReleaseInputError, load_held_out

    (tmp_path / "set").mkdir()
    pq.write_table(pa.table({"prompt": ["What is up?"]}), tmp_path / "set" / "part-00000-of-00001.parquet")
    with pytest.raises(ReleaseInputError) as err:
        load_held_out(["set"], tmp_path)
    assert str(err.value) == ("set: column 'prompt' is string, expected a list of {role, content} messages; "
                              "export.held_out takes pairs, joint pairs or prompts shard sets")
    messages = pa.array([[{"role": "user", "content": "What is up?"}]], pa.large_list(pa.struct(
        [("role", pa.large_string()), ("content", pa.large_string())])))
    pq.write_table(pa.table({"prompt": messages}), tmp_path / "set" / "part-00000-of-00001.parquet")
    assert load_held_out(["set"], tmp_path)[1] == {"set": {"rows": 1, "prompts": 1}}


def test_a_json_file_holding_one_record_with_a_data_list_is_that_record(tmp_path):
    """The record's ``data`` list was taken for the file's records: two "record is int" rejects, the record lost."""
    (tmp_path / "one.json").write_text(json.dumps({"id": 1, "text": "hello", "data": [1, 2]}))
    (tmp_path / "wrapped.json").write_text(json.dumps({"version": "1", "data": [{"id": 1, "text": "hello"}]}))
    for name in ("one.json", "wrapped.json"):
        res = _ingest(tmp_path / name)
        assert res.rejects == [] and [r["messages"][0]["content"] for r in res.rows["prompts"]] == ["hello"], name


def test_a_glob_that_matches_a_folder_but_not_its_files_fails_naming_the_file(tmp_path):
    """``logs/*`` matched ``logs/2024/`` and read none of its files, without a word."""
    from pipeline.io import SourceError
    from pipeline.readers import expand_paths

    (tmp_path / "logs" / "2024").mkdir(parents=True)
    for name in ("logs/a.jsonl", "logs/2024/b.jsonl", "logs/2024/_card.json"):
        (tmp_path / name).write_text('{"id": 1, "text": "a"}\n')
    (tmp_path / "logs" / "2024" / "README.md").write_text("not data")
    with pytest.raises(SourceError) as err:
        expand_paths(str(tmp_path / "logs" / "*"))
    assert str(err.value) == (f"{tmp_path}/logs/*: the glob matches the folder {tmp_path}/logs/2024 but not "
                              f"{tmp_path}/logs/2024/b.jsonl in it, which would be left out; match the files below it "
                              f"too (e.g. {tmp_path}/logs/**/*.jsonl) or point the path at the folder")
    assert expand_paths(str(tmp_path / "logs" / "**" / "*.jsonl")) == [tmp_path / "logs/2024/b.jsonl",
                                                                         tmp_path / "logs/a.jsonl"]
    assert expand_paths(str(tmp_path / "logs" / "*.jsonl")) == [tmp_path / "logs/a.jsonl"]


def test_messages_held_as_text_in_a_csv_cell_say_how_to_write_them(tmp_path):
    """Was "conversation is str, expected a list of messages": true, but not what to do."""
    (tmp_path / "c.csv").write_text('id,conversation\n1,"[{""role"": ""user"", ""content"": ""hi""}]"\n')
    assert [r["reason"] for r in _ingest(tmp_path / "c.csv", "wildchat", "conversations").rejects] == [
        "c.csv:1: conversation is str, expected a list of messages; it holds a list as text (a CSV cell, or JSON "
        "written into a string): write the file as JSON lines or Parquet, with the messages as a list"]


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


def test_an_eval_prompt_without_an_id_is_named_by_its_row_not_none(tmp_path):
    from pipeline.config import EvalSet
    from pipeline.decontam import load_eval_sets

    _jsonl(tmp_path / "q.jsonl", [{"question_id": None, "turns": ["One."]}, {"question_id": 81.0, "turns": ["Two."]},
                                  {"turns": ["Three."]}])
    evals, _ = load_eval_sets([EvalSet(name="mt", path=str(tmp_path / "q.jsonl"), text_field="turns",
                                       id_field="question_id", optional=False)])
    assert evals["eval_id"].to_list() == ["row1", "81", "row3"]


def test_assistants_api_text_parts_are_read(tmp_path):
    """OpenAI's Assistants API writes a text part as ``{"type": "text", "text": {"value": ..., "annotations": []}}``:
    each such message was a reject ("content[0].text is dict, expected a string")."""
    part = {"type": "text", "text": {"value": "Hello there.", "annotations": []}}
    convo = [{"role": "user", "content": [part]}, {"role": "assistant", "content": "Hi."}]
    res = _ingest(_jsonl(tmp_path / "w.jsonl", [{"id": 1, "conversation": convo}]), "wildchat", "conversations")
    assert res.rejects == [] and res.rows["conversations"][0]["messages"][0]["content"] == "Hello there."


def test_a_csv_with_empty_trailing_columns_is_read(tmp_path):
    """Excel writes "id,text,," when cells right of the data were touched: the whole file was one reject ("the header
    names column(s) [''] twice")."""
    (tmp_path / "x.csv").write_text("id,text,,\n1,hello,,\n2,world,,x\n")
    res = _ingest(tmp_path / "x.csv")
    assert res.rejects == [] and [r["messages"][0]["content"] for r in res.rows["prompts"]] == ["hello", "world"]


def test_a_csv_header_repeated_inside_the_file_is_a_reject_not_a_record(tmp_path):
    """Two CSV files joined with ``cat``: the second header was a record, its text the word "text"."""
    (tmp_path / "j.csv").write_bytes(b"id,text\n1,hello\n\xef\xbb\xbfid,text\n2,world\n")
    res = _ingest(tmp_path / "j.csv")
    assert [r["messages"][0]["content"] for r in res.rows["prompts"]] == ["hello", "world"]
    assert [r["reason"] for r in res.rejects] == [
        "j.csv:2: the row repeats the header row (CSV files joined with `cat`?): not a record; join them without "
        "their headers (`tail -n +2`)"]


def test_two_json_records_on_one_line_say_so(tmp_path):
    """A JSON lines file without a final line break joined to another with ``cat``: "invalid JSON: Extra data at
    column 23", not saying why."""
    (tmp_path / "j.jsonl").write_text('{"id": 1, "text": "a"}{"id": 2, "text": "b"}\n')
    assert [r["reason"] for r in _ingest(tmp_path / "j.jsonl").rejects] == [
        "j.jsonl:1: invalid JSON: Extra data at column 23; the line holds two records (a file that did not end in a "
        "line break, joined to another with `cat`?): put each record on a line of its own"]


def test_a_message_without_a_role_says_so(tmp_path):
    """Was "has unknown role None; expected one of [...]"."""
    res = _ingest(_jsonl(tmp_path / "s.jsonl", [{"id": 1, "conversations": [{"value": "hi"}]}]), "sharegpt",
                  "conversations")
    assert [r["reason"] for r in res.rejects] == [
        "s.jsonl:1: conversations[0] has no role (a 'from' or 'role' key naming the speaker)"]
