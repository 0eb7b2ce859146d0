"""Input boundaries, third pass (records): each case below crashed the stage, dropped or mangled a record
silently, or kept text that was never content, before its fix. The fuzz campaign that found them is
tests/test_ingest_fuzz.py; files and paths are in tests/test_input_boundaries_files.py."""

from __future__ import annotations

import datetime
import json
from xml.sax.saxutils import quoteattr

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.input_cases import _ingest


def _contents(res) -> list[str]:
    return [m["content"] for t in ("prompts", "conversations") for r in res.rows[t] for m in r["messages"]]


@pytest.mark.parametrize(("column", "where"), [
    (pa.array([2**62, 0], pa.timestamp("us")), "date value out of range"),  # year ~146,000
    (pa.array([2**31 - 1, 0], pa.date32()), "days=2147483647"),
])
def test_a_parquet_value_python_cannot_hold_rejects_its_row_naming_the_column(tmp_path, column, where):
    """Was a crash (OverflowError and a traceback), even for a column no adapter reads."""
    pq.write_table(pa.table({"id": ["p1", "p2"], "text": ["first", "second"], "written": column}), tmp_path / "t.parquet")
    res = _ingest(tmp_path / "t.parquet")
    assert res.metrics["rejected"] == 1 and _contents(res) == ["second"]
    reason = res.rejects[0]["reason"]
    assert reason.startswith("t.parquet:1: column 'written' holds a value Python cannot represent") and where in reason


def test_a_long_parquet_row_with_a_value_python_cannot_hold_is_the_usual_reject(tmp_path):
    pq.write_table(pa.table({"id": ["p1"], "text": ["x" * 5000], "written": pa.array([2**62], pa.timestamp("us"))}),
                   tmp_path / "t.parquet")
    res = _ingest(tmp_path / "t.parquet", max_bytes=1000)
    assert [r["reason"] for r in res.rejects] == ["t.parquet:1: record is over max_record_bytes=1000; raise ingest.max_record_bytes to keep it"]


def test_parquet_dates_python_can_hold_are_kept(tmp_path):
    pq.write_table(pa.table({"id": ["p1"], "text": ["hi"], "day": [datetime.date(2024, 1, 2)]}), tmp_path / "t.parquet")
    assert _contents(_ingest(tmp_path / "t.parquet")) == ["hi"]


FIELDS = "quote fields that hold a comma, and give every row one field per column"


@pytest.mark.parametrize(("row", "reason"), [
    # Was accepted as the text "Hello": ", world" went to csv's extra-fields list and was never read.
    ("p1,Hello, world", f"the row has 3 field(s), the header names 2 column(s): {FIELDS}"),
    ("p1", f"the row has 1 field(s), the header names 2 column(s): {FIELDS}"),
    # Was accepted as 'ab"': the csv module's lenient mode drops a quote it cannot place.
    ('p1,"a"b"', "invalid CSV: ',' expected after '\"'"),
])
def test_a_csv_row_whose_fields_do_not_line_up_is_a_reject(tmp_path, row, reason):
    (tmp_path / "p.csv").write_text(f"id,text\n{row}\np2,second\n")
    res = _ingest(tmp_path / "p.csv")
    assert [r["reason"] for r in res.rejects] == [f"p.csv:1: {reason}"] and _contents(res) == ["second"]


def test_a_trailing_comma_on_csv_rows_loses_nothing_and_is_read(tmp_path):
    (tmp_path / "p.csv").write_text("id,text\np1,first,\np2,second,,\n")
    res = _ingest(tmp_path / "p.csv")
    assert _contents(res) == ["first", "second"] and res.rejects == []


def test_a_csv_quote_never_closed_is_a_reject_not_a_record_holding_the_rest_of_the_file(tmp_path):
    """Was accepted: one prompt "Hello\\np2,second\\np3,third\\n", the two rows after it gone without a word."""
    (tmp_path / "p.csv").write_text('id,text\np0,fine\np1,"Hello\np2,second\np3,third\n')
    res = _ingest(tmp_path / "p.csv")
    assert _contents(res) == ["fine"] and [r["reason"] for r in res.rejects] == [
        "p.csv:2: invalid CSV: unexpected end of data; a quoted field opened in this row is never closed, "
        "so the rest of the file was read into it"]


def test_csv_quoting_that_strict_mode_reads_is_kept(tmp_path):
    (tmp_path / "p.csv").write_text('id,text\np1,"say ""hi"", then\nleave"\np2,a"b\np3,""\n')
    res = _ingest(tmp_path / "p.csv")
    assert _contents(res) == ['say "hi", then\nleave', 'a"b'] and res.rejects[0]["reason"].startswith("p.csv:3: ")


def test_a_csv_header_that_is_not_valid_csv_is_one_reject(tmp_path):
    (tmp_path / "p.csv").write_text('"id"x,text\np1,first\n')
    res = _ingest(tmp_path / "p.csv")
    assert [r["reason"] for r in res.rejects] == [
        "p.csv:1: the header row is invalid CSV: ',' expected after '\"'; none of the file is read"]


def test_a_parquet_file_naming_a_column_twice_is_one_reject(tmp_path):
    """Was accepted with the last column's text ("second"), the first one's dropped without a word."""
    table = pa.Table.from_arrays([pa.array(["p1"]), pa.array(["first"]), pa.array(["second"])], names=["id", "text", "text"])
    pq.write_table(table, tmp_path / "t.parquet")
    res = _ingest(tmp_path / "t.parquet")
    assert [r["reason"] for r in res.rejects] == [
        "t.parquet:1: the file names column(s) ['text'] twice (a row keeps the last one only): rename them so each "
        "column has its own name; none of the file is read"]


def test_a_parquet_struct_naming_a_field_twice_is_a_reject_naming_the_field(tmp_path):
    """Was a reject of each row, "column 'meta' holds a value Python cannot represent"; now one for the file, as a
    column named twice (tests/test_input_tool_exports.py)."""
    meta = pa.StructArray.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["x", "x"])
    pq.write_table(pa.table({"id": ["p1"], "text": ["hi"], "meta": meta}), tmp_path / "t.parquet")
    res = _ingest(tmp_path / "t.parquet")
    assert res.rejects[0]["reason"].startswith("t.parquet:1: the field meta.x is named twice in its struct")


DUP = '{"id": "p1", "text": "first", "meta": {"a": 1, "a": 2}, "text": "second"}'


@pytest.mark.parametrize(("name", "data"), [("p.jsonl", DUP + '\n{"id": "p2", "text": "ok"}\n'),
                                            ("p.json", f'[{DUP}, {{"id": "p2", "text": "ok"}}]')])
def test_a_json_key_repeated_with_another_value_is_a_reject(tmp_path, name, data):
    """Was accepted with the last value ("second"), the first dropped without a word."""
    (tmp_path / name).write_text(data)
    res = _ingest(tmp_path / name)
    assert _contents(res) == ["ok"] and [r["reason"] for r in res.rejects] == [
        f"{name}:1: invalid JSON: key 'a' appears twice in one object with different values (a JSON reader keeps "
        "one of them): keep one"]


def test_a_json_key_repeated_with_the_same_value_loses_nothing(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"id": "p1", "text": "same", "text": "same"}\n')
    assert _contents(_ingest(tmp_path / "p.jsonl")) == ["same"]


def _post_text(tmp_path, body: str) -> str:

    (tmp_path / "Posts.xml").write_text(f'<posts>\n  <row Id="1" PostTypeId="1" Title="t" Score="1" Body={quoteattr(body)} />\n'
                                        "</posts>\n")
    res = _ingest(tmp_path / "Posts.xml", "stackexchange", "documents")
    assert res.metrics["accepted"] == 1, res.rejects
    return res.rows["documents"][0]["text"]


@pytest.mark.parametrize("tags", [1, 10_001])  # parsed by lexbor, and stripped by the regex pass past MAX_TAGS
def test_script_and_style_content_is_not_text(tmp_path, tags):
    """Was kept: 'hi\\nalert(document.cookie)p{color:red}' (a post's code and styles as its words)."""
    body = ("<p>hi</p><script>alert(document.cookie)</script><STYLE type='x'>p{color:red}</style >"
            "<noscript>enable js</noscript><p>bye</p>" + "<b></b>" * (tags // 2))
    assert _post_text(tmp_path, body) == "hi\n\nbye"


def test_a_script_never_closed_hides_the_rest_as_a_browser_does(tmp_path):
    assert _post_text(tmp_path, "<p>shown</p><script>var a = '<p>not shown</p>'") == "shown"


def test_code_shown_as_text_in_a_post_is_kept(tmp_path):
    """Was lost: any "&lt;" made the whole body unescaped once more, so '<code>&lt;br&gt;</code>' became a tag
    and 'Use <br> to break' the text 'Use\\n to break'."""
    assert _post_text(tmp_path, "<p>Use <code>&lt;br&gt;</code> to break</p>") == "Use <br> to break"
    assert _post_text(tmp_path, "<pre><code>&lt;script&gt;alert(1)&lt;/script&gt;</code></pre>") == \
        "<script>alert(1)</script>"


def test_a_body_escaped_once_more_than_usual_is_still_read_as_markup(tmp_path):
    assert _post_text(tmp_path, "&lt;p&gt;A &amp;amp; B&lt;/p&gt;&lt;script&gt;x()&lt;/script&gt;") == "A & B"


def test_xml_elements_that_are_not_rows_are_a_reject_not_an_empty_file(tmp_path):
    """Was 0 records and a warning '(an empty file?)': 3 posts lost, and the stage passed."""
    (tmp_path / "Posts.xml").write_text('<?xml version="1.0"?>\n<posts>\n' + '  <post Id="1" PostTypeId="1" Body="x"/>\n' * 3
                                        + "</posts>\n")
    res = _ingest(tmp_path / "Posts.xml", "stackexchange", "documents")
    assert res.metrics["empty_files"] == [] and [r["reason"] for r in res.rejects] == [
        "Posts.xml:1: the file holds 4 XML elements but no <row>: ingest reads Stack Exchange dumps (one <row .../> "
        "per post); convert other XML to JSON lines"]


def test_one_xml_element_that_is_not_a_row_is_a_reject_not_an_empty_file(tmp_path):
    (tmp_path / "Posts.xml").write_text('<posts>\n  <post Id="1" PostTypeId="1" Body="x"/>\n</posts>\n')
    res = _ingest(tmp_path / "Posts.xml", "stackexchange", "documents")
    assert [r["reason"] for r in res.rejects] == [
        "Posts.xml:1: the file holds 2 XML elements but no <row>: ingest reads Stack Exchange dumps (one <row .../> "
        "per post); convert other XML to JSON lines"]


def test_an_xml_row_of_exactly_max_record_bytes_is_read_one_byte_more_is_not(tmp_path):
    from pipeline.readers import iter_records

    def row(n: int) -> bytes:
        return b'<row Id="1" Body="' + b"x" * (n - 21) + b'"/>'
    (tmp_path / "Posts.xml").write_bytes(b"<posts>\n" + row(200) + b"\n" + row(201) + b"\n</posts>\n")
    assert [r.error for r in iter_records(str(tmp_path / "Posts.xml"), max_record_bytes=200)] == [
        None, "<row> is over max_record_bytes=200; raise ingest.max_record_bytes to keep it"]


def test_a_dump_of_a_site_without_posts_is_an_empty_file(tmp_path):
    (tmp_path / "Posts.xml").write_text('<?xml version="1.0" encoding="utf-8"?>\n<posts>\n</posts>\n')
    res = _ingest(tmp_path / "Posts.xml", "stackexchange", "documents")
    assert res.metrics["rows_in"] == 0 and res.metrics["empty_files"] == ["Posts.xml"]


def test_finite_scores_whose_margin_overflows_are_a_reject(tmp_path):
    """Was a pair with margin inf (1e308 - -1e308), though every score was finite."""
    recs = [{"prompt": "q1", "chosen": "a", "rejected": "b", "score_chosen": 1e308, "score_rejected": -1e308},
            {"prompt": "q2", "chosen": "a", "rejected": "b", "score_chosen": 1e308, "score_rejected": 1e307}]
    (tmp_path / "u.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = _ingest(tmp_path / "u.jsonl", "ultrafeedback", "pairs")
    assert [r["reason"] for r in res.rejects] == [
        "u.jsonl:1: score_chosen - score_rejected is inf (the scores 1e+308 and -1e+308 are too far apart for a "
        "float), expected a finite margin"]
    assert [p["margin"] for p in res.rows["pairs"]] == [1e308 - 1e307]


@pytest.mark.parametrize(("name", "encoding"), [("p.jsonl", "utf-16-le"), ("p.csv", "utf-16-be"), ("p.json", "utf-16-le")])
def test_utf16_without_a_byte_order_mark_is_one_reject_saying_to_re_encode_it(tmp_path, name, encoding):
    """Was read as UTF-8 (a NUL after each character is valid UTF-8): for JSON lines, 3 rejects for 2 records,
    'invalid JSON: Expecting property name ...' and no word of the encoding; for CSV, 'missing field'."""
    text = {"p.csv": "id,text\np1,hi\np2,yo\n",
            "p.jsonl": '{"id": "p1", "text": "hi"}\n{"id": "p2", "text": "yo"}\n'}.get(name, '[{"id": "p1", "text": "hi"}]')
    (tmp_path / name).write_bytes(text.encode(encoding))
    res = _ingest(tmp_path / name)
    wide = encoding.upper().replace("-LE", "LE").replace("-BE", "BE")
    assert [r["reason"] for r in res.rejects] == [
        f"{name}:1: the file is {wide} text (every other byte of its start is a NUL, without a byte order mark), not "
        f"UTF-8; none of it is read: re-encode it as UTF-8 (e.g. `iconv -f {wide} -t UTF-8`)"]


def test_utf16_without_a_byte_order_mark_is_found_though_some_characters_hold_no_nul(tmp_path):
    """Prices in euros: "€" is two bytes without a NUL in UTF-16, so fewer than half the bytes are NULs."""
    text = "".join(json.dumps({"id": f"p{i}", "text": f"{i}€ {i}€"}, ensure_ascii=False) + "\n" for i in range(9))
    data = text.encode("utf-16-le")
    assert len(data[:256]) // 3 <= data[:256].count(0) < 128  # between the two thresholds
    (tmp_path / "p.jsonl").write_bytes(data)
    assert [r["reason"] for r in _ingest(tmp_path / "p.jsonl").rejects] == [
        "p.jsonl:1: the file is UTF-16LE text (every other byte of its start is a NUL, without a byte order mark), "
        "not UTF-8; none of it is read: re-encode it as UTF-8 (e.g. `iconv -f UTF-16LE -t UTF-8`)"]


def test_a_file_of_nul_bytes_is_not_taken_for_utf16(tmp_path):
    """A write cut by a crash can leave a file of NULs: every byte is a NUL, not every other one."""
    (tmp_path / "z.jsonl").write_bytes(b"\x00" * 1000)
    assert [r["reason"] for r in _ingest(tmp_path / "z.jsonl").rejects] == ["z.jsonl:1: invalid JSON: Expecting value "
                                                                            "at column 1"]


def test_utf8_text_with_nuls_is_not_taken_for_utf16(tmp_path):
    (tmp_path / "p.jsonl").write_bytes(b'{"id": "p1", "text": "a\\u0000b"}\n' + b"\x00" * 64 + b"\n")
    assert _ingest(tmp_path / "p.jsonl").metrics["rows_in"] == 2


@pytest.mark.parametrize("chars", [1000, 1400])  # 3,000 and 4,200 bytes of UTF-8
def test_max_record_bytes_counts_utf8_bytes_whatever_the_container(tmp_path, chars):
    """Was: 1,000 CJK characters (3,000 bytes) accepted from JSON lines but 'over max_record_bytes=4096' from CSV,
    Parquet and JSON, which measured the record ASCII-escaped (6 characters each)."""
    text = "漢" * chars
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "p1", "text": text}, ensure_ascii=False) + "\n")
    (tmp_path / "p.json").write_text(json.dumps([{"id": "p1", "text": text}], ensure_ascii=False))
    (tmp_path / "p.csv").write_text(f"id,text\np1,{text}\n")
    pq.write_table(pa.table({"id": ["p1"], "text": [text]}), tmp_path / "p.parquet")
    accepted = {name: _ingest(tmp_path / name, max_bytes=4096).metrics["accepted"]
                for name in ("p.jsonl", "p.json", "p.csv", "p.parquet")}
    assert set(accepted.values()) == {1 if chars == 1000 else 0}, accepted


def test_a_broken_data_wrapper_is_split_into_its_records_like_an_array(tmp_path):
    """Was read as JSON lines: the whole file one reject ('Expecting value at column 59'), both records lost."""
    (tmp_path / "p.json").write_text('{"data": [{"id": "p1", "text": "one"},\n {"id": "p2", "text": "two"}, 1e, ]}')
    res = _ingest(tmp_path / "p.json")
    assert _contents(res) == ["one", "two"] and [r["reason"] for r in res.rejects] == [
        "p.json:3: invalid JSON: Extra data at column 3"]


def test_json_lines_whose_records_hold_a_data_list_are_still_json_lines(tmp_path):
    (tmp_path / "p.json").write_text('{"data": [1], "id": "p1", "text": "one"}\n{"data": [2], "id": "p2", "text": "two"}\n')
    assert _contents(_ingest(tmp_path / "p.json")) == ["one", "two"]


@pytest.mark.parametrize("chunk", [16, 1 << 20])  # comments and rows cut by the read chunk's edge, and whole
def test_a_row_in_an_xml_comment_or_cdata_section_is_not_read(tmp_path, monkeypatch, chunk):
    """Was read: a commented-out post ('removed') became a document."""
    from pipeline import xmlrows

    monkeypatch.setattr(xmlrows, "CHUNK", chunk)
    (tmp_path / "Posts.xml").write_text(
        '<posts>\n<!-- <row Id="9" PostTypeId="1" Title="old" Body="removed" Score="1"/> -->\n'
        '<![CDATA[ <row Id="8" PostTypeId="1" Title="c" Body="cdata" Score="1"/> ]]>\n'
        '<row Id="1" PostTypeId="1" Title="t" Body="kept" Score="1"/>\n<!-- a note -->'
        '<row Id="2" PostTypeId="1" Title="t" Body="kept too" Score="1"/>\n</posts>\n')
    res = _ingest(tmp_path / "Posts.xml", "stackexchange", "documents")
    assert [d["text"] for d in res.rows["documents"]] == ["kept", "kept too"] and res.rejects == []


# --- a record that expands far past max_record_bytes --------------------------------------------------

def _broom(depth: int, leaves: int) -> dict:
    """An OASST tree: a chain of ``depth`` messages, then ``leaves`` replies to its last one."""
    root = node = {"message_id": "m0", "role": "prompter", "text": "q", "replies": []}
    for i in range(1, depth):
        node["replies"].append({"message_id": f"m{i}", "role": "assistant" if i % 2 else "prompter", "text": "t",
                                "replies": []})
        node = node["replies"][0]
    node["replies"] = [{"message_id": f"l{j}", "role": "assistant" if depth % 2 else "prompter", "text": "x"}
                       for j in range(leaves)]
    return {"message_tree_id": "t", "prompt": root}


def test_an_oasst_tree_that_expands_past_16_times_the_limit_is_a_reject(tmp_path):
    """Was accepted whatever it expanded to: a 580 KB tree (a 90-message chain, then 8,000 leaves) gave 720,000
    messages and 250 MB of memory, and a 4 MiB one would take gigabytes."""
    (tmp_path / "t.jsonl").write_text(json.dumps(_broom(16, 30)) + "\n" + json.dumps(_broom(5, 3) | {"message_tree_id": "u"})
                                      + "\n")
    res = _ingest(tmp_path / "t.jsonl", "oasst", "conversations", max_bytes=4096)
    assert len(res.rows["conversations"]) == 3 and [r["reason"] for r in res.rejects] == [
        "t.jsonl:1: the tree expands to over 65536 bytes of messages (each path repeated for every leaf or ranked "
        "group below it), over 16 x max_record_bytes: split the tree"]


def test_a_json_array_of_many_records_is_read_in_linear_time(tmp_path):
    """A bound, not a speed claim: was quadratic (each record's checks counted brackets over the whole file's
    text): 8,000 records of a 4 MB array took 75 s, so these 20,000 would take minutes."""
    import time

    (tmp_path / "p.json").write_text(json.dumps([{"id": f"p{i}", "text": "word " * 100} for i in range(20_000)]))
    start = time.perf_counter()
    res = _ingest(tmp_path / "p.json")
    assert res.metrics["accepted"] == 20_000 and time.perf_counter() - start < 30
