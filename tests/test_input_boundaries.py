"""Input boundaries, second adversarial pass: each case below crashed, dropped or mangled data silently, or
gave a reason a user could not act on, before its fix (tests/test_hostile.py holds the first pass; stray files
in a source folder and bytes that are not UTF-8 are in tests/test_input_boundaries_sources.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, load_params
from pipeline.io import SourceError
from tests.input_cases import A, U, _ingest, _lines

# --- multi-part (OpenAI-style) message content --------------------------------------------------------

IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}


@pytest.mark.parametrize(("content", "reason"), [
    # Was accepted as "What is in this picture?" alone: the image was dropped without a word.
    ([{"type": "text", "text": "What is in this picture?"}, IMAGE], "conversation[0].content[1] is a 'image_url' part"),
    ([IMAGE], "conversation[0].content[0] is a 'image_url' part; only text content can be used"),
    (["plain", "strings"], "conversation[0].content[0] is 'plain', expected a text part"),
    ([{"type": "text", "text": 3}], "conversation[0].content[0].text is int, expected a string"),
    ([], "conversation[0].content is an empty list, expected a string"),
])
def test_content_with_a_part_that_is_not_text_is_a_reject_naming_the_part(tmp_path, content, reason):
    (tmp_path / "c.jsonl").write_text(_lines({"conversation_id": "c", "conversation": [{**U, "content": content}, A]}))
    res = _ingest(tmp_path / "c.jsonl", "wildchat", "conversations")
    assert res.metrics["rejected"] == 1 and res.rejects[0]["reason"].startswith(f"c.jsonl:1: {reason}"), res.rejects


def test_responses_api_text_parts_are_text(tmp_path):
    """Was a reject ("content is list, expected a string"): input_text/output_text are the Responses API's text."""
    chat = [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}, {"type": "input_text", "text": "there"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]}]
    (tmp_path / "c.jsonl").write_text(_lines({"conversation_id": "c", "conversation": chat}))
    res = _ingest(tmp_path / "c.jsonl", "wildchat", "conversations")
    assert res.metrics["accepted"] == 1
    assert res.rows["conversations"][0]["messages"] == [{"role": "user", "content": "Hi\nthere"},
                                                        {"role": "assistant", "content": "Hello"}]


# --- ids ------------------------------------------------------------------------------------------------

def test_an_id_that_is_not_a_string_or_a_finite_number_is_a_reject(tmp_path):
    """Was accepted as the ids "nan", "inf", "True", "{'a': 1}", "[1]": 1e999 and Infinity even collided."""
    bad = ["NaN", "1e999", "Infinity", "true", '{"a": 1}', "[1]"]
    good = ['"c1"', "7", "2.5"]
    chat = '{"conversation_id": %s, "conversation": [{"role": "user", "content": "hi %d"}]}\n'
    (tmp_path / "c.jsonl").write_text("".join(chat % (v, i) for i, v in enumerate(bad + good)))
    res = _ingest(tmp_path / "c.jsonl", "wildchat", "conversations")
    assert res.metrics["accepted"] == len(good)
    assert [r["reason"] for r in res.rejects] == [
        f"c.jsonl:{i + 1}: conversation_id is {shown}, expected a string or a number (an id)"
        for i, shown in enumerate(["nan", "inf", "inf", "True", "{'a': 1}", "[1]"])]


def test_ids_of_stack_exchange_and_arena_answers_are_checked_too(tmp_path):
    (tmp_path / "posts.jsonl").write_text(_lines({"Id": [1], "PostTypeId": "1", "Body": "<p>Grind?</p>"},
                                                 {"Id": "", "PostTypeId": "1", "Body": "<p>Grind?</p>"}))
    res = _ingest(tmp_path / "posts.jsonl", "stackexchange", "documents")
    assert [r["reason"] for r in res.rejects] == ["posts.jsonl:1: Id is [1], expected a string or a number (an id)",
                                                  "posts.jsonl:2: Id is empty"]
    answer = {"uid": {"q": 1}, "model": "m", "messages": [U, {"role": "assistant", "content": {"answer": "A"}}]}
    (tmp_path / "m.jsonl").write_text(_lines(answer))
    res = _ingest(tmp_path / "m.jsonl", "arena_answers", "rated")
    assert [r["reason"] for r in res.rejects] == ["m.jsonl:1: uid is {'q': 1}, expected a string or a number (an id)"]


def test_a_clashing_id_names_the_file_and_line_of_the_record_that_had_it_first(tmp_path):
    """Was "already produced by row 3": a count over all the source's files, which no file's line 3 is."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jsonl").write_text("\n" + _lines({"conversation_id": "x", "conversation": [U, A]},
                                                            {"conversation_id": "y", "conversation": [U, A]}))
    (tmp_path / "src" / "b.jsonl").write_text(_lines({"conversation_id": "z", "conversation": [U, A]},
                                                     {"conversation_id": "y", "conversation": [U]},
                                                     {"conversation_id": 7, "conversation": [U, A]},
                                                     {"conversation_id": "7", "conversation": [U]}))
    res = _ingest(tmp_path / "src", "wildchat", "conversations")
    reasons = [r["reason"].split(": duplicate: ") for r in res.rejects]
    assert [(where, why.split(" already produced by ")[1]) for where, why in reasons] == [
        ("b.jsonl:2", "a.jsonl:3 with different content (two records share an id: give them distinct ids, or drop one)"),
        ("b.jsonl:4", "b.jsonl:3 with different content (two records share an id: give them distinct ids, or drop one)")]


# --- params: a mapping key no adapter reads --------------------------------------------------------------

def _fields_read(fmt: str) -> set[str]:
    """The canonical names an adapter passes to ``ctx.get``/``ctx.ident``/``ctx.field`` (``ctx.origin`` reads ``id``)."""
    import ast
    import inspect

    from pipeline.adapters import ADAPTERS

    tree = ast.parse(inspect.getsource(ADAPTERS[fmt]))
    loops = {n.target.id: [c.value for c in n.iter.elts] for n in ast.walk(tree)  # for f in ("toxic", "redacted")
             if isinstance(n, ast.comprehension | ast.For) and isinstance(n.iter, ast.Tuple) and isinstance(n.target, ast.Name)}
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and ast.unparse(node.func.value) == "ctx":
            if node.func.attr == "origin":
                names.add("id")
            elif node.func.attr in ("get", "ident", "field"):
                arg = node.args[1]
                names.update(loops[arg.id] if isinstance(arg, ast.Name) else [arg.value])
    return names


def test_format_fields_are_the_fields_the_adapters_read():
    from pipeline.config import FORMAT_FIELDS, FORMAT_KINDS

    assert set(FORMAT_FIELDS) == set(FORMAT_KINDS)
    assert {fmt: set(fields) for fmt, fields in FORMAT_FIELDS.items()} == {fmt: _fields_read(fmt) for fmt in FORMAT_FIELDS}


@pytest.mark.parametrize(("mapping", "error"), [
    # Was accepted and ignored: every record then failed "missing field 'text' ... (set `mapping` to rename)".
    ({"txet": "post_body"}, "ingest.sources[1]: mapping.txet: the documents format reads no field 'txet' (mapping is "
                            "canonical field -> your field); it reads ['id', 'text', 'title', 'score']; did you mean 'text'?"),
    ({"post_body": "text"}, "it reads ['id', 'text', 'title', 'score']"),
    ({"text": ""}, "ingest.sources[1].mapping.text: String should have at least 1 character"),
])
def test_a_mapping_key_the_format_does_not_read_is_a_params_error(tmp_path, root, mapping, error):
    data = yaml.safe_load((root / "params.yaml").read_text())
    assert data["ingest"]["sources"][1]["format"] == "documents"
    data["ingest"]["sources"][1]["mapping"] = mapping
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ParamsError) as err:
        load_params(tmp_path / "params.yaml")
    assert error in str(err.value)


# --- WildChat flags --------------------------------------------------------------------------------------

def test_toxic_and_redacted_flags_spelled_as_text_are_read_and_odd_ones_rejected(tmp_path):
    """Was: only JSON true counted, so a CSV export's "True" let a toxic conversation through unflagged."""
    chat = {"conversation": [U, A]}
    (tmp_path / "c.jsonl").write_text(_lines(
        {**chat, "id": "a", "toxic": "True", "redacted": "false"}, {**chat, "id": "b", "toxic": 1, "redacted": True},
        {**chat, "id": "c", "toxic": False, "redacted": 0}, {**chat, "id": "d"}, {**chat, "id": "g", "toxic": " YES"},
        {**chat, "id": "e", "toxic": "maybe"}, {**chat, "id": "f", "redacted": [True]}))
    res = _ingest(tmp_path / "c.jsonl", "wildchat", "conversations")
    assert [c["flags"] for c in res.rows["conversations"]] == [["toxic"], ["redacted", "toxic"], [], [], ["toxic"]]
    assert [r["reason"] for r in res.rejects] == ["c.jsonl:6: toxic is 'maybe', expected true or false",
                                                  "c.jsonl:7: redacted is [True], expected true or false"]


def test_role_names_are_case_insensitive(tmp_path):
    (tmp_path / "c.jsonl").write_text(_lines({"id": "a", "conversation": [{"role": "User", "content": "hi"},
                                                                          {"role": "ASSISTANT", "content": "yo"}]}))
    res = _ingest(tmp_path / "c.jsonl", "wildchat", "conversations")
    assert [m["role"] for m in res.rows["conversations"][0]["messages"]] == ["user", "assistant"]


def test_the_developer_role_is_the_system_message(tmp_path):
    """Was a reject ("unknown role 'developer'"): OpenAI's newer exports name the system message so."""
    (tmp_path / "c.jsonl").write_text(_lines({"id": "a", "conversation": [{"role": "developer", "content": "Be brief."},
                                                                          U, A]}))
    res = _ingest(tmp_path / "c.jsonl", "wildchat", "conversations")
    assert [m["role"] for m in res.rows["conversations"][0]["messages"]] == ["system", "user", "assistant"]


def test_json_lines_with_bare_cr_line_breaks_say_so(tmp_path):
    """Was "invalid JSON: Extra data at column 30" for the whole file, with no hint at the line breaks."""
    from pipeline.readers import iter_jsonl

    def rows(data: bytes, tmp: Path):
        tmp.write_bytes(data)
        return list(iter_jsonl(tmp))

    tmp = tmp_path / "mac.jsonl"
    recs = [json.dumps({"id": str(i), "text": "x"}).encode() for i in range(3)]
    (row,) = rows(b"\r".join(recs) + b"\r", tmp)
    assert row.error.startswith("invalid JSON: Extra data at column ") and row.error.endswith(
        "; the line holds bare CR line breaks (old Mac style): convert them to \\n (`tr '\\r' '\\n'`)")
    assert [r.error for r in rows(b"\r\n".join(recs) + b"\r\n", tmp)] == [None, None, None]  # CRLF is fine
    assert "bare CR" not in rows(recs[0] + b" " + recs[1] + b"\r\n", tmp)[0].error  # two records, no CR inside


# --- text that shows nothing ------------------------------------------------------------------------------

INVISIBLE = ["\u200b", "\x00\x00", "\ufeff \u2060", "\u202e\u200d",
             "\u2066\u2069", "\u061c \u180e", "\u3164\uffa0",  # bidi isolates, letter/vowel marks, Hangul fillers
             "\ufffd \ufffd"]  # replacement characters only: bytes that did not decode


@pytest.mark.parametrize("text", INVISIBLE)
def test_text_of_only_invisible_characters_is_empty(tmp_path, text):
    """Was accepted: str.strip() keeps NULs and zero-width characters, so a prompt or reply that shows nothing passed."""
    (tmp_path / "c.jsonl").write_text(_lines({"id": "c", "conversation": [U, {**A, "content": text}]}))
    assert _ingest(tmp_path / "c.jsonl", "wildchat", "conversations").rejects[0]["reason"] == (
        "c.jsonl:1: conversation[1] (assistant) has empty content")
    (tmp_path / "d.jsonl").write_text(_lines({"id": "d", "text": text}, {"id": "e", "text": f"{text}visible{text}"}))
    res = _ingest(tmp_path / "d.jsonl", "documents", "documents")
    assert [r["reason"] for r in res.rejects] == ["d.jsonl:1: text is empty"] and res.metrics["accepted"] == 1
    (tmp_path / "p.jsonl").write_text(_lines({"id": "p", "prompt": text}))
    assert _ingest(tmp_path / "p.jsonl", "prompts", "prompts").rejects[0]["reason"] == "p.jsonl:1: prompt text is empty"
    (tmp_path / "r.jsonl").write_text(_lines({"id": "r", "prompt": "Q?", "completions": [{"response": text, "score": 1}]}))
    reason = _ingest(tmp_path / "r.jsonl", "ultrafeedback", "rated").rejects[0]["reason"]
    assert reason == "r.jsonl:1: completions[0].response is missing or empty"


def test_a_pair_whose_scores_prefer_the_rejected_reply_is_a_reject(tmp_path):
    """Was a pair with margin -6: the chosen reply trained as better than one its own scores rate higher."""
    pair = {"prompt": "Q?", "chosen": "A good answer.", "rejected": "A bad answer."}
    (tmp_path / "p.jsonl").write_text(_lines({**pair, "id": "inverted", "score_chosen": 2, "score_rejected": 8},
                                             {**pair, "id": "tie", "score_chosen": 5, "score_rejected": 5},
                                             {**pair, "id": "ok", "metadata": {"score_chosen": 9, "score_rejected": 1.5}}))
    res = _ingest(tmp_path / "p.jsonl", "ultrafeedback", "pairs")
    assert [r["reason"] for r in res.rejects] == [
        "p.jsonl:1: score_chosen 2 is below score_rejected 8: the scores prefer the rejected reply (swap chosen and "
        "rejected, or fix the scores)"]
    assert [p["margin"] for p in res.rows["pairs"]] == [0.0, 7.5]


def test_a_hub_stream_that_breaks_off_fails_in_one_line(monkeypatch):
    """Was a traceback from inside `datasets` (a dropped connection, a shard that cannot be decoded)."""
    import datasets

    from pipeline.readers import iter_records

    def stream():
        yield {"id": "a", "prompt": "Hi?"}
        raise ConnectionError("Connection reset by peer")

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: stream())
    rows = iter_records("hf://org/set:train")
    assert next(rows).value == {"id": "a", "prompt": "Hi?"}
    with pytest.raises(SourceError) as err:
        next(rows)
    assert str(err.value) == ("hf://org/set:train: reading broke off after row 1 (ConnectionError: Connection reset by "
                              "peer); run the stage again, or download the set and point `path` at the local files")


def test_a_stage_input_that_is_the_wrong_table_or_broken_fails_in_one_line(tmp_path):
    """Was a traceback: a params key (curry.inputs[0].prompts) naming data/ingest/conversations raised SchemaError
    "prompts: unexpected column(s) ..." naming no folder; a broken shard raised ArrowInvalid."""
    from pipeline.io import read_table, write_shards
    from pipeline.records import to_table

    write_shards(to_table([{"conversation_id": "c", "messages": [U, A], "source": "s"}], "conversations"),
                 tmp_path / "conversations", name="conversations")
    with pytest.raises(SourceError) as err:
        read_table(tmp_path / "conversations", "prompts")
    assert str(err.value).startswith(f"{tmp_path / 'conversations'}: not a prompts shard set (prompts: unexpected column")
    assert str(err.value).endswith("; point the params key that names it at a folder of prompts (e.g. data/ingest/prompts)")
    with pytest.raises(SourceError) as err:  # given the key that named it, the error names it
        read_table(tmp_path / "conversations", "prompts", key="curry.inputs[0].prompts")
    assert str(err.value).startswith(f"curry.inputs[0].prompts: {tmp_path / 'conversations'}: not a prompts shard set")
    assert str(err.value).endswith("; point curry.inputs[0].prompts at a folder of prompts (e.g. data/ingest/prompts)")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "part-0.parquet").write_bytes(b"PAR1 cut short")
    with pytest.raises(SourceError, match=r"broken/part-0.parquet: not a readable Parquet file \(ArrowInvalid: .*run the stage that writes .*broken again"):
        read_table(tmp_path / "broken", "prompts")


def test_a_csv_header_naming_a_column_twice_is_one_reject(tmp_path):
    """Was accepted with the second column's values only: "id,text,text" silently dropped the first text."""
    (tmp_path / "d.csv").write_text("id,text,title,text\na,first,t,second\nb,third,t,fourth\n")
    res = _ingest(tmp_path / "d.csv", "documents", "documents")
    assert res.metrics["rows_in"] == 1 and [r["reason"] for r in res.rejects] == [
        "d.csv:1: the header names column(s) ['text'] twice (csv keeps the last one only): rename them so each column "
        "has its own name"]


def test_a_json_line_cut_inside_a_string_reads_as_a_sentence():
    """Was 'invalid JSON: Unterminated string starting at at column 270' (json's message ends in 'at')."""
    from pipeline.jsontext import parse_json

    assert parse_json('{"id": "p1", "prompt": "How can I imp') == (
        None, "invalid JSON: Unterminated string starting at column 24")
