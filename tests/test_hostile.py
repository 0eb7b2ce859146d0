"""Hostile input: whatever its bytes, every record is accepted or rejected with a reason, in bounded time.

A property test (hypothesis, derandomized, a bounded number of examples) mutates real records of every
format (data/samples and ../shared/data/real) at the value and at the byte level and runs them through
ingest; explicit cases pin each poison value and file-level fault found by hand.
"""

from __future__ import annotations

import copy
import functools
import gzip
import itertools
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.adapters import ADAPTERS
from pipeline.config import FORMAT_KINDS, Source
from pipeline.jsontext import MAX_JSON_DEPTH
from pipeline.readers import iter_records
from pipeline.readers_json import BOM
from pipeline.records import to_table
from stages.ingest import ingest_source
from tests.adapter_sources import MAX_BYTES, run_source

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"
REAL = ROOT.parent / "shared" / "data" / "real"
SECONDS_PER_RECORD = 2.0  # a bound, not a speed claim: the quadratic HTML parser took minutes on one body

HYPOTHESIS = settings(max_examples=20, derandomize=True, deadline=None, database=None, print_blob=False,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _jsonl(path: Path, n: int) -> list[dict]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [json.loads(line) for line in data.split(b"\n") if line.strip()][:n]


@functools.cache
def seeds() -> dict[str, list[dict]]:
    """A few real records per format (ShareGPT and released WildFeedback pairs re-shaped from real ones)."""
    chats = _jsonl(SAMPLES / "conversations.jsonl", 6) + _jsonl(REAL / "wildchat_sample/conversations.jsonl", 3)
    sp = _jsonl(SAMPLES / "seed_pairs.jsonl", 4)
    posts = REAL / "stackexchange_coffee/Posts.xml"
    rows = [dict(e.attrib) for _, e in itertools.islice(ET.iterparse(posts), 60) if e.tag == "row"]
    return {
        "wildchat": chats,
        "sharegpt": [{"id": c["conversation_id"], "conversations": [
            {"from": {"user": "human", "assistant": "gpt"}[m["role"]], "value": m["content"]} for m in c["conversation"]]}
            for c in chats[:5]],
        "oasst": _jsonl(REAL / "oasst_en100/model/model_eval/manual/data/en_100_tree.jsonl", 2),
        "hh_rlhf": _jsonl(REAL / "hh_rlhf/harmless-base/test.jsonl.gz", 4),
        "ultrafeedback": sp + _jsonl(SAMPLES / "rated.jsonl", 3)
        + _jsonl(REAL / "ultrafeedback_binarized/data/processed/eval_clean.jsonl", 3),
        "documents": _jsonl(SAMPLES / "posts.jsonl", 4),
        "prompts": _jsonl(SAMPLES / "prompts.jsonl", 3) + _jsonl(REAL / "mt_bench/fastchat/llm_judge/data/mt_bench/question.jsonl", 2)
        + _jsonl(REAL / "self_instruct/human_eval/user_oriented_instructions.jsonl", 2),
        "stackexchange": [r for r in rows if r["PostTypeId"] in ("1", "2")][:8],
        "wildfeedback": [{"id": r["id"], "conversations": [{"from": "human", "value": r["prompt"]}],
                          "chosen": {"from": "gpt", "value": r["chosen"][-1]["content"]},
                          "rejected": {"from": "gpt", "value": r["rejected"][-1]["content"]}} for r in sp],
        "arena_answers": _jsonl(REAL / "arena_hard/data/arena-hard-v0.1/model_answer/gpt-4-0314.jsonl", 3),
    }


# --- strategies ----------------------------------------------------------------------------------

def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


# Values Python can hold, put into a record before it is written as JSON.
POISON = [None, "", " ", 0, -1, 2**64, 10**400, float("nan"), float("inf"), float("-inf"), True, [], {}, [None],
          {"role": "user"}, {"role": "human", "content": None}, "\ud800", "a\udfffb", "<a " * 30_000,
          "<div>" * 5_000, "x" * 50_000, "NaN", "1e999", "-inf", "\u2028\u2029", "\x00", _nested(MAX_JSON_DEPTH + 5),
          "\n\nHuman: \n\nAssistant:", {"answer": None}, [{"type": "text", "text": 3}]]
# JSON text Python cannot parse into a value, or that breaks the line, spliced in where a value was.
LITERALS = [b"1" * 5000, b"[" * 1200 + b"]" * 1200, b'"\\ud800"', b'"\\udc80x"', b"NaN", b"Infinity", b"-Infinity",
            b"1e999", b'"\xed\xa0\x80"', b'"\xff"', b"[1,", b'"<a ' * 5000 + b'"']
_MARK = "@@poison{}@@"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)
hostile = st.one_of(st.sampled_from(POISON).map(copy.deepcopy), json_values,
                    st.integers(0, len(LITERALS) - 1).map(_MARK.format))


def _mutate(draw, value):
    """One edit somewhere in ``value``: replace, delete or add a field, usually a few levels down."""
    if isinstance(value, dict | list) and value:
        keys = list(value) if isinstance(value, dict) else list(range(len(value)))
        key = draw(st.sampled_from(keys))
        action = draw(st.sampled_from(["descend", "descend", "descend", "replace", "delete", "add"]))
        if action == "descend":
            value[key] = _mutate(draw, value[key])
        elif action == "replace":
            value[key] = draw(hostile)
        elif action == "delete":
            del value[key]
        elif isinstance(value, dict):
            value[draw(st.sampled_from([*keys, "id", "role", "content", "score", "text"]))] = draw(hostile)
        else:
            value.insert(key, draw(hostile))
        return value
    return draw(hostile)


@st.composite
def lines(draw, records: list[dict]) -> bytes:
    """One JSON line: a real record, mutated as a value and/or as bytes."""
    rec = copy.deepcopy(draw(st.sampled_from(records)))
    for _ in range(draw(st.integers(1, 3))):
        rec = _mutate(draw, rec)
    line = json.dumps(rec, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    for i, literal in enumerate(LITERALS):
        line = line.replace(json.dumps(_MARK.format(i)).encode(), literal)
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(line)))
        op = draw(st.sampled_from(["insert", "truncate", "byte"]))
        if op == "insert":
            line = line[:at] + draw(st.sampled_from(LITERALS + [BOM, b"\x00", b"}", b'"'])) + line[at:]
        elif op == "truncate":
            line = line[:at]
        elif line:
            at = min(at, len(line) - 1)
            line = line[:at] + bytes([draw(st.integers(0, 255))]) + line[at + 1:]
    return line.replace(b"\n", b" ")


# --- the property --------------------------------------------------------------------------------

CASES = [(fmt, kind) for fmt, kinds in FORMAT_KINDS.items() for kind in kinds]


def test_every_format_has_seeds():
    assert set(seeds()) == set(ADAPTERS) == set(FORMAT_KINDS)
    assert all(len(v) >= 2 for v in seeds().values())


@pytest.mark.parametrize(("fmt", "kind"), CASES)
def test_any_bytes_are_accepted_or_rejected_with_a_reason(fmt, kind, tmp_path):
    path = tmp_path / "in.jsonl"
    src = Source(name="h", kind=kind, path=str(path), format=fmt)

    @HYPOTHESIS
    @given(st.lists(lines(seeds()[fmt]), min_size=1, max_size=3))
    def check(records: list[bytes]) -> None:
        path.write_bytes(b"\n".join(records) + b"\n")
        expected = sum(1 for r in records if (r[len(BOM):] if r.startswith(BOM) else r).strip())
        start = time.perf_counter()
        res = ingest_source(src, MAX_BYTES)  # no exception escapes
        elapsed = time.perf_counter() - start
        m = res.metrics
        assert m["rows_in"] == expected == m["accepted"] + m["rejected"] == m["accepted"] + len(res.rejects)
        assert all(r["reason"] for r in res.rejects)
        # the adapters themselves raise only BadRecord: nothing falls through to the catch-all
        assert not [r["reason"] for r in res.rejects if "unexpected record shape" in r["reason"]]
        for table, rows in res.rows.items():  # what is accepted can be written
            to_table(rows, table)
        to_table(res.rejects, "rejects")
        assert elapsed < SECONDS_PER_RECORD * max(1, expected)

    check()


# --- poison values, one by one -------------------------------------------------------------------

GOOD = {"conversation_id": "ok", "conversation": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def _chat(value: bytes) -> bytes:
    return b'{"conversation_id": "bad", "conversation": [{"role": "user", "content": ' + value + b"}]}"


POISON_LINES = {
    "integer of 5000 digits": (_chat(b"1" * 5000), "invalid JSON: Exceeds the limit (4300 digits)"),
    "nested 1000 levels": (_chat(b"[" * 1000 + b"]" * 1000), f"nested deeper than {MAX_JSON_DEPTH} levels"),
    "nested 250 levels": (_chat(b"[" * 250 + b"]" * 250), f"nested deeper than {MAX_JSON_DEPTH} levels"),
    "lone surrogate escape": (_chat(b'"\\ud800"'), "lone surrogate \\ud800"),
    "lone low surrogate": (_chat(b'"ok \\uDC80"'), "lone surrogate \\udc80"),
    "surrogate as UTF-8 bytes": (_chat(b'"\xed\xa0\x80"'), "invalid UTF-8"),
    "NaN content": (_chat(b"NaN"), "conversation[0].content is float, expected a string"),
}


@pytest.mark.parametrize("case", sorted(POISON_LINES))
def test_poison_values_are_rejects_with_a_reason(case, tmp_path):
    line, reason = POISON_LINES[case]
    good = json.dumps(GOOD).encode()
    (tmp_path / "p.jsonl").write_bytes(b"\n".join([good, line, good.replace(b'"ok"', b'"ok2"')]) + b"\n")
    res = run_source(tmp_path / "p.jsonl", "wildchat", "conversations")
    assert (res.metrics["rows_in"], res.metrics["accepted"], res.metrics["rejected"]) == (3, 2, 1)
    assert res.rejects[0]["row"] == 2 and reason in res.rejects[0]["reason"], res.rejects[0]["reason"]
    # the same values inside a JSON array: the array is read element by element, the others kept
    (tmp_path / "p.json").write_bytes(b"[" + b",\n".join([good, line, good.replace(b'"ok"', b'"ok2"')]) + b"]")
    res = run_source(tmp_path / "p.json", "wildchat", "conversations")
    assert (res.metrics["rows_in"], res.metrics["accepted"], res.metrics["rejected"]) == (3, 2, 1)


def test_a_parseable_record_deeper_than_the_limit_is_rejected_wherever_it_is_read(tmp_path):
    """Depth is checked, not left to Python's recursion limit (which depends on the caller's stack)."""
    deep = json.dumps({"conversation_id": "d", "conversation": _nested(MAX_JSON_DEPTH + 1)})
    ok = json.dumps({"conversation_id": "d", "conversation": _nested(MAX_JSON_DEPTH - 1)})
    (tmp_path / "d.jsonl").write_text(deep + "\n" + ok + "\n")
    (tmp_path / "d.json").write_text(f"[{deep}, {ok}]")
    for name in ("d.jsonl", "d.json"):
        rows = list(iter_records(str(tmp_path / name)))
        assert "nested deeper than" in rows[0].error and rows[1].error is None


def test_a_json_array_that_breaks_off_keeps_its_elements_and_names_the_rest(tmp_path):
    good = json.dumps(GOOD)
    (tmp_path / "cut.json").write_text(f'[{good}, {"1" * 5000}, {good}, {{"conversation_id": "x", "conv')
    rows = list(iter_records(str(tmp_path / "cut.json")))
    assert [r.value is not None for r in rows] == [True, False, True, False]
    assert "Exceeds the limit" in rows[1].error and "truncated" in rows[3].error


# --- damaged files: the readable part is kept, the rest is a reject naming what happened ------------

def _docs(n: int) -> bytes:
    return b"".join(json.dumps({"id": f"d{i}", "text": f"document number {i}"}).encode() + b"\n" for i in range(n))


def _accounted(res) -> tuple[int, int, int]:
    m = res.metrics
    assert m["rows_in"] == m["accepted"] + m["rejected"] == m["accepted"] + len(res.rejects) + m["unread_rows"]
    return m["rows_in"], m["accepted"], m["rejected"]


def test_a_truncated_gzip_keeps_the_lines_before_the_cut(tmp_path):
    data = gzip.compress(_docs(2000), mtime=0)
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    res = run_source(tmp_path / "cut.jsonl.gz", "documents", "documents")
    rows_in, accepted, rejected = _accounted(res)
    assert rejected == 1 and 0 < accepted < 2000 and rows_in == accepted + 1
    assert f"cannot be read after line {accepted}" in res.rejects[0]["reason"]
    assert "EOFError" in res.rejects[0]["reason"] and "the rest of it is lost" in res.rejects[0]["reason"]


@pytest.mark.parametrize(("name", "damage", "error"), [
    ("flipped.jsonl.gz", lambda d: d[:40] + bytes(b ^ 0xFF for b in d[40:80]) + d[80:], "error: Error -3"),
    ("plain.jsonl.gz", lambda d: gzip.decompress(d), "BadGzipFile: Not a gzipped file"),
    ("flipped.json.gz", lambda d: d[:40] + bytes(b ^ 0xFF for b in d[40:80]) + d[80:], "error: Error -3"),
    ("flipped.csv.gz", lambda d: d[:40] + bytes(b ^ 0xFF for b in d[40:80]) + d[80:], "error: Error -3"),
])
def test_a_corrupt_gzip_is_a_reject_naming_the_error(tmp_path, name, damage, error):
    (tmp_path / name).write_bytes(damage(gzip.compress(_docs(50), mtime=0)))
    res = run_source(tmp_path / name, "documents", "documents")
    assert _accounted(res) == (1, 0, 1)
    assert error in res.rejects[0]["reason"] and res.rejects[0]["reason"].startswith(f"{name}:1: the file cannot be read")


def test_a_corrupt_parquet_footer_is_one_reject(tmp_path):
    (tmp_path / "junk.parquet").write_bytes(b"PAR1" + b"\0" * 100)
    res = run_source(tmp_path / "junk.parquet", "documents", "documents")
    assert _accounted(res) == (1, 0, 1) and "not a readable Parquet file (ArrowInvalid" in res.rejects[0]["reason"]


@pytest.mark.parametrize("where", ["page header", "page data (CRC)"])
def test_a_corrupt_parquet_row_group_loses_only_that_group(tmp_path, where):
    table = pa.table({"id": [f"d{i}" for i in range(300)], "text": [f"document {i} " * 20 for i in range(300)]})
    pq.write_table(table, tmp_path / "ok.parquet", row_group_size=100, use_dictionary=False, write_page_checksum=True)
    chunk = pq.ParquetFile(tmp_path / "ok.parquet").metadata.row_group(1).column(1)
    data = bytearray((tmp_path / "ok.parquet").read_bytes())
    at = chunk.data_page_offset + (0 if where == "page header" else chunk.total_compressed_size - 10)
    data[at] ^= 0xFF
    (tmp_path / "bad.parquet").write_bytes(bytes(data))
    res = run_source(tmp_path / "bad.parquet", "documents", "documents")
    assert _accounted(res) == (300, 200, 100)  # the reject counts the 100 rows it lost (it was 201 in, 1 rejected)
    assert len(res.rejects) == 1 and res.rejects[0]["row"] == 101 and "row group 1 cannot be decoded (100 of its 100 rows lost" in res.rejects[0]["reason"]
    kept = sorted(int(d["text"].split()[1]) for d in res.rows["documents"])
    assert kept == [*range(100), *range(200, 300)]


def test_a_bad_xml_row_in_the_middle_does_not_stop_reading(real, tmp_path):
    """The issue's case: a malformed row in the middle of the real dump once gave "297 in" and exit 0."""
    lines = (real / "stackexchange_coffee/Posts.xml").read_bytes().split(b"\n")
    mid = len(lines) // 2
    bad = [b'  <row Id="90001" PostTypeId="1" Body="an unclosed quote />',
           b'  <row Id="90002" PostTypeId="1" Body="&undefined;" />',
           b'  <row Id="90003" <row Id="90004" PostTypeId="1" Body="&lt;p&gt;Fine.&lt;/p&gt;" />']
    (tmp_path / "Posts.xml").write_bytes(b"\n".join([*lines[:mid], *bad, *lines[mid:]]))
    res = run_source(tmp_path / "Posts.xml", "stackexchange", "documents")
    rows_in, accepted, rejected = _accounted(res)
    assert (rows_in, accepted, rejected) == (592 + 4, 592 + 1, 3)  # row 90004 is whole: it is read
    reasons = [r["reason"] for r in res.rejects]
    assert "malformed <row>" in reasons[0] and "undefined entity" in reasons[1] and "malformed <row>" in reasons[2]
    assert len(res.rows["documents"]) == 225 + 1


def test_an_xml_dump_cut_inside_a_row_keeps_the_rows_before(real, tmp_path):
    data = (real / "stackexchange_coffee/Posts.xml").read_bytes()
    cut = data.index(b"<row", len(data) // 2) + 40
    (tmp_path / "Posts.xml").write_bytes(data[:cut])
    rows = list(iter_records(str(tmp_path / "Posts.xml")))
    assert all(r.error is None for r in rows[:-1]) and len(rows) == data[:cut].count(b"<row ")
    assert rows[-1].error == "the file ends inside this <row> (truncated?)"


@pytest.mark.parametrize("name", ["bom.jsonl", "bom.json", "bom.csv"])
def test_a_byte_order_mark_costs_no_record(tmp_path, name):
    recs = [{"id": "a", "text": "first"}, {"id": "b", "text": "second"}]
    body = {"bom.jsonl": "\n".join(json.dumps(r) for r in recs) + "\n", "bom.json": json.dumps(recs),
            "bom.csv": "id,text\na,first\nb,second\n"}[name]
    (tmp_path / name).write_bytes(BOM + body.encode())
    res = run_source(tmp_path / name, "documents", "documents")
    assert _accounted(res) == (2, 2, 0)
    assert sorted(d["text"] for d in res.rows["documents"]) == ["first", "second"]


def test_csv_fields_up_to_max_record_bytes_and_a_row_over_it(tmp_path):
    (tmp_path / "t.csv").write_text('id,text\na,"' + "x" * 200_000 + '"\nb,fine\n')
    res = run_source(tmp_path / "t.csv", "documents", "documents")  # over the csv module's default field limit (131,072)
    assert _accounted(res) == (2, 2, 0) and max(len(d["text"]) for d in res.rows["documents"]) == 200_000
    res = run_source(tmp_path / "t.csv", "documents", "documents", max_bytes=150_000)
    assert _accounted(res) == (2, 1, 1) and "t.csv:1: record is over max_record_bytes=150000" in res.rejects[0]["reason"]


@pytest.mark.parametrize("big", [False, True])
def test_a_file_of_another_format_named_xml_is_a_reject_not_an_empty_file(tmp_path, big):
    """JSON lines (or CSV) named .xml was read as a dump with no <row>: 'holds no records (an empty file?)' and
    exit 0, its records gone. An empty dump (a declaration, a comment, a root element) is still an empty file,
    also when it runs over several read chunks."""
    lines = (SAMPLES / "prompts.jsonl").read_bytes() * (400 if big else 1)
    (tmp_path / "prompts.xml").write_bytes(lines)
    rows = list(iter_records(str(tmp_path / "prompts.xml")))
    assert len(rows) == 1 and rows[0].error.startswith("the file holds text but no XML <row>: ingest reads a .xml "
                                                       "file as a Stack Exchange dump")
    pad = b"\n" * (3 << 20) if big else b"\n"
    (tmp_path / "Posts.xml").write_bytes(b'<?xml version="1.0" encoding="utf-8"?>\n<!-- no posts -->' + pad
                                         + b"<posts>" + pad + b"</posts>\n")
    assert list(iter_records(str(tmp_path / "Posts.xml"))) == []


@pytest.mark.parametrize("lines", [1, 30])
def test_json_lines_named_csv_is_one_reject_saying_so(tmp_path, lines):
    """Was one 'missing field text or prompt ...' reject per line (the JSON read as CSV, its first line taken for
    the header), or, for a single line, 'holds no records (an empty file?)' and exit 0."""
    (tmp_path / "prompts.csv").write_bytes(b"".join((SAMPLES / "prompts.jsonl").read_bytes().splitlines(True)[:lines]))
    rows = list(iter_records(str(tmp_path / "prompts.csv")))
    assert [r.error for r in rows] == ["the header row starts with '{': the file holds JSON, not CSV; name it .jsonl "
                                       "(JSON lines) or .json"]


def test_a_json_line_of_exactly_max_record_bytes_is_read_a_byte_order_mark_not_counted(tmp_path):
    """The limit is on the record's bytes: one of exactly ``max_record_bytes`` is read (one byte more is not),
    and a byte order mark before it (files joined with `cat`) is not part of it."""
    def line(n: int) -> bytes:
        head = b'{"id": "p1", "text": "'
        return head + b"x" * (n - len(head) - 2) + b'"}'
    (tmp_path / "p.jsonl").write_bytes(line(1000) + b"\n" + b"\xef\xbb\xbf" + line(1000) + b"\n" + line(1001) + b"\n")
    rows = list(iter_records(str(tmp_path / "p.jsonl"), max_record_bytes=1000))
    assert [r.error is None for r in rows] == [True, True, False]
    assert "1001" in rows[2].error


def test_a_json_array_of_exactly_its_cap_is_read_one_byte_more_is_not(tmp_path):
    """A .json array is parsed whole up to ``JSON_FILE_RECORDS`` x max_record_bytes, that size included."""
    from pipeline.limits import JSON_FILE_RECORDS

    cap = JSON_FILE_RECORDS * 100
    for extra, read in ((0, True), (1, False)):
        text = '[\n{"id": "p1", "prompt": "Hi?"},\n{"id": "p2", "prompt": ""}\n]\n'  # its first line no record
        text = text.replace('""', '"' + "x" * (cap + extra - len(text)) + '"')
        (tmp_path / "a.json").write_text(text)
        rows = list(iter_records(str(tmp_path / "a.json"), max_record_bytes=100))
        assert (rows[0].error is None) == read and (read or rows[0].error.startswith(f"the file is over {cap} bytes"))


def test_json_named_csv_is_one_reject_though_its_first_line_is_indented(tmp_path):
    (tmp_path / "p.csv").write_text('  [{"id": "p1", "prompt": "Hi?"},\n  {"id": "p2", "prompt": "Yo?"}]\n')
    rows = list(iter_records(str(tmp_path / "p.csv")))
    assert [r.error for r in rows] == ["the header row starts with '[': the file holds JSON, not CSV; name it .jsonl "
                                       "(JSON lines) or .json"]


def test_a_truncated_gzipped_csv_keeps_the_records_before_the_cut_and_names_the_last(tmp_path):
    rows = "".join(f"d{i},document number {i}\n" for i in range(2000))
    data = gzip.compress(f"id,text\n{rows}".encode(), mtime=0)
    (tmp_path / "cut.csv.gz").write_bytes(data[: len(data) // 2])
    res = run_source(tmp_path / "cut.csv.gz", "documents", "documents")
    rows_in, accepted, rejected = _accounted(res)
    assert rejected == 1 and 0 < accepted < 2000 and rows_in == accepted + 1
    assert f"cannot be read after record {accepted} (EOFError" in res.rejects[0]["reason"]


def test_a_gzip_cut_before_its_first_line_cannot_be_read_at_all(tmp_path):
    data = gzip.compress(_docs(1000), mtime=0)
    (tmp_path / "cut.jsonl.gz").write_bytes(data[:12])
    assert [r.error for r in iter_records(str(tmp_path / "cut.jsonl.gz"))] == [
        "the file cannot be read (EOFError: Compressed file ended before the end-of-stream marker was reached); the "
        "rest of it is lost: copy or write the file again whole"]  # not "after line 0"
