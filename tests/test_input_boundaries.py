"""Input boundaries, second adversarial pass: each case below crashed, dropped or mangled data silently, or
gave a reason a user could not act on, before its fix (tests/test_hostile.py holds the first pass)."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, Source, load_params
from pipeline.encodings import RE_ENCODE, REWRITE_UTF8
from pipeline.io import SourceError
from stages.ingest import ingest_source, run
from tests.test_ingest import with_ingest

MAX_BYTES = 4 << 20
U, A = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}


def _lines(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _ingest(path: Path, fmt: str = "wildchat", kind: str = "conversations", **mapping: str):
    res = ingest_source(Source(name="s", kind=kind, path=str(path), format=fmt, mapping=mapping), MAX_BYTES)
    m = res.metrics
    assert m["rows_in"] == m["accepted"] + m["rejected"] == m["accepted"] + len(res.rejects)
    return res


# --- a source folder holding files no reader knows ----------------------------------------------------

@pytest.mark.parametrize("stray", ["README.md", "LICENSE", "part-0.jsonl.zst"])
def test_a_file_no_reader_knows_fails_before_any_work_naming_the_key(params, tmp_path, stray):
    """Was: the stage read every earlier source, then stopped at the stray file (an HF snapshot's README.md)."""
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "p.jsonl").write_text(_lines({"id": "p1", "prompt": "Hi?"}))
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "a.jsonl").write_text(_lines({"id": "p2", "prompt": "Hello?"}))
    (tmp_path / "set" / stray).write_text("# a dataset card\n")
    p = with_ingest(params, [{"name": "ok", "kind": "prompts", "path": str(tmp_path / "ok"), "format": "prompts"},
                             {"name": "set", "kind": "prompts", "path": str(tmp_path / "set"), "format": "prompts"}])
    with pytest.raises(SourceError) as err:
        run(p, tmp_path / "out")
    msg = str(err.value)
    assert msg.startswith("ingest.sources[1].path: ") and f"{stray}: unknown file type" in msg
    assert f"e.g. {tmp_path / 'set' / '**' / '*.jsonl'}" in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["test.jsonl.gz", "DATA.JSONL"])
def test_the_glob_a_stray_file_error_suggests_reads_the_data_files(tmp_path, name):
    """Was `**/*.jsonl` for a folder of `.jsonl.gz` files (the real HH-RLHF layout, beside its LICENSE): the
    suggested path matched nothing."""
    from pipeline.readers import source_files

    data = tmp_path / "hh" / "harmless-base"
    data.mkdir(parents=True)
    (data / name).write_bytes(b"")
    (tmp_path / "hh" / "LICENSE").write_text("MIT\n")
    with pytest.raises(SourceError) as err:
        source_files(str(tmp_path / "hh"))
    suggested = str(err.value).rsplit("e.g. ", 1)[1]
    assert source_files(suggested) == [data / name]


@pytest.mark.parametrize("pattern", ["*", "a*", "**/*", "*/*"])
def test_the_glob_a_stray_file_error_suggests_for_a_glob_source_reads_its_data_files(tmp_path, pattern):
    """A glob source (`logs/*` beside a README.md) got `logs/*/**/*.jsonl`, which needs a folder below `logs`
    and matched none of the data files: following the error's advice failed with "no file matches"."""
    from pipeline.readers import source_files

    data = tmp_path / "logs"
    (data / "a").mkdir(parents=True) if "/" in pattern else data.mkdir()  # a folder the glob matches fails first
    for f in (data / "a1.jsonl", data / "a" / "a2.jsonl") if "/" in pattern else (data / "a1.jsonl",):
        f.write_text('{"id": 1}\n')
    (data / "a" / "README.md" if "/" in pattern else data / "aREADME.md").write_text("# card\n")
    with pytest.raises(SourceError, match="unknown file type '.md'") as err:
        source_files(str(data / pattern))
    suggested = str(err.value).rsplit("e.g. ", 1)[1]
    wanted = {Path(f) for f in glob.glob(str(data / pattern), recursive=True) if f.endswith(".jsonl")}
    assert wanted and set(source_files(suggested)) == wanted
    assert pattern != "*" or suggested == str(data / "*.jsonl")


def test_the_glob_a_stray_file_error_suggests_leaves_other_gzipped_files_out(tmp_path):
    """The suggested glob names the data files' whole ending (``*.jsonl.gz``), not ``*.gz``, which matches a gzipped
    stray beside them and fails again."""
    from pipeline.readers import source_files

    data = tmp_path / "hh"
    data.mkdir()
    (data / "test.jsonl.gz").write_bytes(b"")
    (data / "notes.txt.gz").write_bytes(b"")
    with pytest.raises(SourceError) as err:
        source_files(str(data))
    assert str(err.value).endswith(f"e.g. {data / '**' / '*.jsonl.gz'}")
    assert source_files(str(data / "**" / "*.jsonl.gz")) == [data / "test.jsonl.gz"]


def test_an_empty_source_path_is_a_params_error(tmp_path, root):
    """Was accepted: "" is the working folder, so ingest read the whole project."""
    data = yaml.safe_load((root / "params.yaml").read_text())
    data["ingest"]["sources"][0]["path"] = ""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ParamsError, match=r"ingest\.sources\[0\]\.path: String should have at least 1 character"):
        load_params(tmp_path / "params.yaml")


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
    res = _ingest(tmp_path / "c.jsonl")
    assert res.metrics["rejected"] == 1 and res.rejects[0]["reason"].startswith(f"c.jsonl:1: {reason}"), res.rejects


def test_responses_api_text_parts_are_text(tmp_path):
    """Was a reject ("content is list, expected a string"): input_text/output_text are the Responses API's text."""
    chat = [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}, {"type": "input_text", "text": "there"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]}]
    (tmp_path / "c.jsonl").write_text(_lines({"conversation_id": "c", "conversation": chat}))
    res = _ingest(tmp_path / "c.jsonl")
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
    res = _ingest(tmp_path / "c.jsonl")
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
    res = _ingest(tmp_path / "src")
    reasons = [r["reason"].split(": duplicate: ") for r in res.rejects]
    assert [(where, why.split(" already produced by ")[1]) for where, why in reasons] == [
        ("b.jsonl:2", "a.jsonl:3 with different content (two records share an id: give them distinct ids, or drop one)"),
        ("b.jsonl:4", "b.jsonl:3 with different content (two records share an id: give them distinct ids, or drop one)")]


# --- encodings ----------------------------------------------------------------------------------------

def test_csv_bytes_that_are_not_utf8_are_a_reject_naming_the_field(tmp_path):
    """Was accepted with U+FFFD in place of the bytes (JSON lines reject the same bytes)."""
    (tmp_path / "d.csv").write_bytes(b"id,text\na,caf\xe9 au lait\nb,fine\n")
    res = _ingest(tmp_path / "d.csv", "documents", "documents")
    assert [r["reason"] for r in res.rejects] == [f"d.csv:1: invalid UTF-8 in field 'text': {RE_ENCODE}"]
    assert [d["text"] for d in res.rows["documents"]] == ["fine"]


@pytest.mark.parametrize("name", ["d.jsonl", "d.json", "d.csv"])
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_a_utf16_file_is_one_reject_saying_to_re_encode_it(tmp_path, name, encoding):
    """Was one "invalid UTF-8" or "missing field" reject per line, none saying why."""
    recs = [{"id": "a", "text": "first"}, {"id": "b", "text": "second"}]
    body = {"d.jsonl": _lines(*recs), "d.json": json.dumps(recs), "d.csv": "id,text\na,first\nb,second\n"}[name]
    data = body.encode(encoding)
    (tmp_path / name).write_bytes(data if data[:2] in (b"\xff\xfe", b"\xfe\xff") else b"\xfe\xff" + data)
    res = _ingest(tmp_path / name, "documents", "documents")
    assert res.metrics["rows_in"] == 1 and [r["reason"] for r in res.rejects] == [
        f"{name}:1: the file is UTF-16 text (it starts with a byte order mark), not UTF-8; none of it is read: "
        "re-encode it as UTF-8 (e.g. `iconv -f UTF-16 -t UTF-8`)"]


POST = '<row Id="1" PostTypeId="1" Title="Caf\u00e9 grind?" Body="&lt;p&gt;How fine?&lt;/p&gt;" />'


@pytest.mark.parametrize(("data", "reason"), [
    # Was 0 records and a warning "holds no records (an empty file?)": the whole dump silently lost.
    (f'<?xml version="1.0" encoding="utf-16"?>\n<posts>\n{POST}\n</posts>\n'.encode("utf-16"),
     "the file is UTF-16 text (it starts with a byte order mark), not UTF-8; none of it is read: re-encode it as "
     "UTF-8 (e.g. `iconv -f UTF-16 -t UTF-8`)"),
    # Was a reject per row with a non-ASCII character: "invalid XML in this <row>: not well-formed (invalid token)".
    (f'<?xml version="1.0" encoding="ISO-8859-1"?>\n<posts>\n{POST}\n</posts>\n'.encode("latin-1"),
     "the file is ISO-8859-1 text (its XML declaration says so), not UTF-8; none of it is read: re-encode it as "
     "UTF-8 (e.g. `iconv -f ISO-8859-1 -t UTF-8`)"),
])
def test_an_xml_dump_that_is_not_utf8_is_one_reject_saying_to_re_encode_it(tmp_path, data, reason):
    (tmp_path / "Posts.xml").write_bytes(data)
    res = _ingest(tmp_path / "Posts.xml", "stackexchange", "documents")
    assert res.metrics["rows_in"] == 1 and [r["reason"] for r in res.rejects] == [f"Posts.xml:1: {reason}"]


def test_an_xml_row_with_bytes_that_are_not_utf8_says_so(tmp_path):
    """Was "invalid XML in this <row>: not well-formed (invalid token): line 1, column 37"."""
    (tmp_path / "Posts.xml").write_bytes(f"<posts>\n{POST}\n{POST.replace('1', '2', 1)}\n</posts>\n".encode()
                                         .replace(b"Caf\xc3\xa9", b"Caf\xe9", 1))
    res = _ingest(tmp_path / "Posts.xml", "stackexchange", "documents")
    assert [r["reason"] for r in res.rejects] == [f"Posts.xml:1: invalid UTF-8 at byte 37 of this <row>: {RE_ENCODE}"]
    assert res.metrics["accepted"] == 1


def test_a_byte_order_mark_starting_a_later_line_costs_no_record(tmp_path):
    """Was "invalid JSON: Unexpected UTF-8 BOM (decode using utf-8-sig)": files that each had one, joined with `cat`."""
    from pipeline.readers_json import BOM

    (tmp_path / "d.jsonl").write_bytes(BOM + b'{"id": "a", "text": "first"}\n' + BOM + b'{"id": "b", "text": "second"}\n')
    res = _ingest(tmp_path / "d.jsonl", "documents", "documents")
    assert res.metrics["accepted"] == 2 and not res.rejects


def test_an_xml_dump_declaring_utf8_is_read(tmp_path):
    (tmp_path / "Posts.xml").write_text(f"<?xml version='1.0' encoding='UTF-8'?>\n<posts>\n{POST}\n</posts>\n")
    res = _ingest(tmp_path / "Posts.xml", "stackexchange", "documents")
    assert res.metrics["accepted"] == 1 and res.rows["documents"][0]["title"] == "Caf\u00e9 grind?"


def test_a_parquet_string_that_is_not_utf8_rejects_its_row_not_its_row_group(tmp_path):
    """Was "row group 0 cannot be decoded (10 of its 10 rows lost; UnicodeDecodeError ...)": one bad string
    (in a file another tool wrote) cost every row of its group, often the whole file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [b"document %d" % i for i in range(10)]
    texts[5] = b"caf\xe9 au lait"
    offsets = pa.array([sum(len(t) for t in texts[:i]) for i in range(11)], pa.int32())
    column = pa.Array.from_buffers(pa.string(), 10, [None, offsets.buffers()[1], pa.py_buffer(b"".join(texts))])
    pq.write_table(pa.table({"id": [str(i) for i in range(10)], "text": column}), tmp_path / "d.parquet")
    res = _ingest(tmp_path / "d.parquet", "documents", "documents")
    assert [r["reason"] for r in res.rejects] == [
        f"d.parquet:6: column 'text' holds bytes that are not UTF-8 (invalid continuation byte at byte 3): {REWRITE_UTF8}"]
    assert [d["text"] for d in res.rows["documents"]] == [f"document {i}" for i in range(10) if i != 5]


# --- params: a mapping key no adapter reads --------------------------------------------------------------

def _fields_read(fmt: str) -> set[str]:
    """The canonical names an adapter passes to ``ctx.get``/``ctx.ident`` (``ctx.origin`` reads ``id``)."""
    import ast
    import inspect

    from pipeline.adapters import ADAPTERS

    tree = ast.parse(inspect.getsource(ADAPTERS[fmt]))
    loops = {n.target.id: [c.value for c in n.iter.elts] for n in ast.walk(tree)  # for f in ("toxic", "redacted")
             if isinstance(n, ast.comprehension | ast.For) and isinstance(n.iter, ast.Tuple)}
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and ast.unparse(node.func.value) == "ctx":
            if node.func.attr == "origin":
                names.add("id")
            elif node.func.attr in ("get", "ident"):
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
    res = _ingest(tmp_path / "c.jsonl")
    assert [c["flags"] for c in res.rows["conversations"]] == [["toxic"], ["redacted", "toxic"], [], [], ["toxic"]]
    assert [r["reason"] for r in res.rejects] == ["c.jsonl:6: toxic is 'maybe', expected true or false",
                                                  "c.jsonl:7: redacted is [True], expected true or false"]


def test_role_names_are_case_insensitive(tmp_path):
    (tmp_path / "c.jsonl").write_text(_lines({"id": "a", "conversation": [{"role": "User", "content": "hi"},
                                                                          {"role": "ASSISTANT", "content": "yo"}]}))
    res = _ingest(tmp_path / "c.jsonl")
    assert [m["role"] for m in res.rows["conversations"][0]["messages"]] == ["user", "assistant"]


def test_the_developer_role_is_the_system_message(tmp_path):
    """Was a reject ("unknown role 'developer'"): OpenAI's newer exports name the system message so."""
    (tmp_path / "c.jsonl").write_text(_lines({"id": "a", "conversation": [{"role": "developer", "content": "Be brief."},
                                                                          U, A]}))
    res = _ingest(tmp_path / "c.jsonl")
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

INVISIBLE = ["\u200b", "\x00\x00", "\ufeff \u2060", "\u202e\u200d"]


@pytest.mark.parametrize("text", INVISIBLE)
def test_text_of_only_invisible_characters_is_empty(tmp_path, text):
    """Was accepted: str.strip() keeps NULs and zero-width characters, so a prompt or reply that shows nothing passed."""
    (tmp_path / "c.jsonl").write_text(_lines({"id": "c", "conversation": [U, {**A, "content": text}]}))
    assert _ingest(tmp_path / "c.jsonl").rejects[0]["reason"] == "c.jsonl:1: conversation[1] (assistant) has empty content"
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
    with pytest.raises(SourceError, match=r"broken: not readable Parquet \(ArrowInvalid: .*run the stage that writes it"):
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
