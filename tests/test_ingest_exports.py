"""Real exports that ingest read wrongly or not at all: tab-separated files, Parquet text stored as binary, Parquet
written with tiny row groups, a JSON file that names its ``data`` key twice, and how file-level rejects count.

Each test failed on the code before its fix.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import Source
from stages.ingest import ingest_source

MAX_BYTES = 4 << 20


def _ingest(path: Path, fmt: str = "documents", kind: str = "documents", max_bytes: int = MAX_BYTES):
    res = ingest_source(Source(name="s", kind=kind, path=str(path), format=fmt), max_bytes)
    m = res.metrics
    assert m["rows_in"] == m["accepted"] + m["rejected"] == m["accepted"] + len(res.rejects)
    return res


# --- tab-separated values ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["t.tsv", "t.TSV", "t.tsv.gz"])
def test_a_tsv_file_is_read_as_csv_separated_by_tabs(tmp_path, name):
    """``.tsv`` failed the source: "unknown file type '.tsv'". Commas in a field are text; a quoted field may hold
    a tab and a line break, as in CSV."""
    body = b'id\ttext\na\tHello, world\nb\t"two\tparts\nand a line"\n'
    (tmp_path / name).write_bytes(gzip.compress(body) if name.endswith(".gz") else body)
    res = _ingest(tmp_path / name)
    assert not res.rejects
    assert sorted(d["text"] for d in res.rows["documents"]) == ["Hello, world", "two\tparts\nand a line"]


def test_a_tsv_row_keeps_the_csv_reject_rules(tmp_path):
    """A row with a field too many, one over max_record_bytes (read to its end through stand-ins that keep tabs),
    and a header that repeats are rejects as in CSV, and the rows after them are read."""
    long = "x" * 3000
    (tmp_path / "t.tsv").write_text(f"id\ttext\na\tone\tspare\nb\t\"{long}\t\"\"{long}\"\nc\tthree\nid\ttext\nd\tfour\n")
    res = _ingest(tmp_path / "t.tsv", max_bytes=2000)
    assert [r["reason"] for r in res.rejects] == [
        "t.tsv:1: the row has 3 field(s), the header names 2 column(s): quote fields that hold a tab, and give every "
        "row one field per column",
        "t.tsv:2: record is over max_record_bytes=2000 (a CSV row); raise ingest.max_record_bytes to keep it",
        "t.tsv:4: the row repeats the header row (CSV files joined with `cat`?): not a record; join them without their "
        "headers (`tail -n +2`)"]
    assert sorted(d["text"] for d in res.rows["documents"]) == ["four", "three"]


def test_a_comma_separated_file_named_tsv_is_one_reject_saying_so(tmp_path):
    (tmp_path / "c.tsv").write_text("id,text\na,one\nb,two\n")
    assert [r["reason"] for r in _ingest(tmp_path / "c.tsv").rejects] == [
        "c.tsv:1: the header row is one column holding ',': the file is separated by ',', not by tabs; none of it is "
        "read: name it .csv (comma-separated), or save it as tab-separated values"]


# --- Parquet text stored as binary -------------------------------------------------------------------


def test_parquet_text_stored_as_binary_is_read_as_the_text_it_holds(tmp_path):
    """Older Spark and parquet-mr write text with no UTF8 annotation, which Arrow reads as binary: every record was a
    reject, "text is bytes, expected a string". Binary values that are UTF-8 are text (at any depth, dictionary-encoded
    too); one that is not is a reject naming its row and key, and a binary column no adapter reads (an image) costs
    no record."""
    messages = pa.array([[{"role": b"user", "content": "caf\u00e9".encode()}, {"role": b"assistant", "content": b"ok"}]],
                        pa.list_(pa.struct([("role", pa.binary()), ("content", pa.large_binary())])))
    pq.write_table(pa.table({"conversation_id": pa.array([b"c1"]), "model": pa.array([b"m"]).dictionary_encode(),
                             "conversation": messages}), tmp_path / "w.parquet")
    res = _ingest(tmp_path / "w.parquet", "wildchat", "conversations")
    assert not res.rejects
    assert [m["content"] for m in res.rows["conversations"][0]["messages"]] == ["caf\u00e9", "ok"]
    assert res.rows["conversations"][0]["model"] == "m"

    pq.write_table(pa.table({"id": pa.array([b"a", b"b", b"c"], pa.binary()),
                             "text": pa.array([b"hello", b"\xff\xfe latin", b"world"], pa.large_binary()),
                             "image": pa.array([b"\x89PNG\r\n", None, b"\xff\xd8\xff"])}), tmp_path / "d.parquet")
    res = _ingest(tmp_path / "d.parquet")
    assert [r["reason"] for r in res.rejects] == [
        "d.parquet:2: text is bytes that are not UTF-8 (invalid start byte at byte 0; rewrite the file with that "
        "column's text as UTF-8), expected a string"]
    assert sorted(d["text"] for d in res.rows["documents"]) == ["hello", "world"]
