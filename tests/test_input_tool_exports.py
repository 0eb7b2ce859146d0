"""Files as other tools write them, fed to ingest as they come: compressed or columnar data under a text file's name,
Arrow IPC files (``datasets`` save_to_disk, polars, Feather) and other compressions, pandas' ``to_json()`` tables, and
a null message inside a Parquet list. Each was a reject per chance line, a wrong suggestion or a reason that named no
cause; each test failed on the code before its fix.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import zipfile

import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from pipeline.errors import SourceError
from pipeline.readers import source_files
from tests.adapter_sources import run_source
from tests.input_cases import A, U, _ingest, _lines

RECORDS = [{"conversation_id": f"c{i}", "conversation": [U, A]} for i in range(40)]
TEXT = _lines(*RECORDS).encode()


def _parquet_bytes() -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(RECORDS), sink)
    return sink.getvalue()


def _ipc_stream_bytes() -> bytes:  # as ``datasets`` writes its data-00000-of-00001.arrow shards
    sink = io.BytesIO()
    table = pa.Table.from_pylist(RECORDS)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _feather_bytes() -> bytes:
    sink = io.BytesIO()
    feather.write_feather(pa.Table.from_pylist(RECORDS), sink)
    return sink.getvalue()


def _zip_bytes() -> bytes:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as z:
        z.writestr("chats.jsonl", TEXT)
    return sink.getvalue()


@pytest.mark.parametrize(("name", "data", "says"), [
    ("chats.jsonl", lambda: gzip.compress(TEXT), "gzip-compressed data, not text (its first bytes say so); none of "
                                                 "it is read: name it with .gz at the end (e.g. chats.jsonl.gz)"),
    ("chats.csv", lambda: gzip.compress(b"id,text\na,b\n"), "gzip-compressed data, not text"),
    ("chats.jsonl.gz", lambda: gzip.compress(gzip.compress(TEXT)), "it was compressed twice: gunzip it once"),
    ("chats.jsonl", lambda: bz2.compress(TEXT), "bzip2-compressed data, not text"),
    ("chats.json", lambda: lzma.compress(TEXT), "xz-compressed data, not text"),
    ("chats.jsonl", lambda: b"\x28\xb5\x2f\xfd" + bytes(range(256)), "Zstandard-compressed data, not text"),
    ("chats.jsonl", _zip_bytes, "a zip archive, not text"),
    ("chats.jsonl", _parquet_bytes, "a Parquet file, not text (its first bytes say so); none of it is read: name it "
                                    ".parquet"),
    ("chats.json", _feather_bytes, "an Arrow IPC (Feather) file, not text"),
    ("chats.jsonl", _ipc_stream_bytes, "an Arrow IPC stream (a `datasets` save_to_disk shard?), not text"),
])
def test_compressed_or_columnar_data_named_as_text_is_one_reject_saying_what_it_is(tmp_path, name, data, says):
    """A gzip stream named .jsonl was 300-odd rejects, one per chance line break in its bytes, each "invalid UTF-8 ...
    re-encode the file as UTF-8 (Latin-1 or Windows-1252 text ...)": a cause it does not have and a fix that cannot
    work. Now one reject, from the file's first bytes (after gzip where the name ends in .gz)."""
    (tmp_path / name).write_bytes(data())
    res = _ingest(tmp_path / name, "wildchat", "conversations")
    assert len(res.rejects) == 1 and not res.rows.get("conversations")
    assert res.rejects[0]["reason"].startswith(f"{name}:1: the file is ") and says in res.rejects[0]["reason"]


@pytest.mark.parametrize("header", ["PAR1", "BZh", "ARROW1 text", "PK"])
def test_text_that_starts_like_a_magic_number_is_read_as_text(tmp_path, header):
    """Only the bytes that follow a magic that text could start with make it one: a CSV column named "PAR1" is text."""
    (tmp_path / "d.csv").write_text(f"{header},text\nd1,hello\n")
    res = _ingest(tmp_path / "d.csv", "documents", "documents")
    assert not res.rejects and [d["text"] for d in res.rows["documents"]] == ["hello"]


def test_a_datasets_save_to_disk_folder_fails_saying_to_write_parquet_not_to_read_its_json(tmp_path):
    """``Dataset.save_to_disk`` writes Arrow stream shards beside dataset_info.json and state.json: the failure
    suggested the glob ``folder/**/*.json``, which reads those two metadata files as the data. It says now how to
    write the data as Parquet, whichever file of the folder sorts first (a README.md)."""
    import datasets

    folder = tmp_path / "saved"
    datasets.Dataset.from_list(RECORDS).save_to_disk(str(folder))
    (folder / "README.md").write_text("# card\n")
    with pytest.raises(SourceError) as e:
        source_files(str(folder))
    message = str(e.value)
    assert "\n" not in message and ".arrow: unknown file type '.arrow'" in message
    assert "Arrow IPC files (a `datasets` save_to_disk folder, polars write_ipc, Feather) are not read" in message
    assert "datasets.load_from_disk(folder).to_parquet('data.parquet')" in message and "*.json" not in message


@pytest.mark.parametrize(("name", "says"), [
    ("chats.feather", "Arrow IPC files"), ("chats.arrow", "Arrow IPC files"),
    ("chats.jsonl.zst", "only .gz is decompressed: decompress the file (`zstd -d`) or recompress it with gzip"),
    ("chats.jsonl.bz2", "(`bunzip2`)"), ("chats.jsonl.xz", "(`xz -d`)"), ("chats.zip", "unzip it")])
def test_a_file_of_a_format_not_read_says_how_to_convert_it(tmp_path, name, says):
    """It said only "unknown file type '.zst'", or, beside a file that is read, to point the path at a glob of that
    one's type (leaving the data out)."""
    (tmp_path / name).write_bytes(b"\x28\xb5\x2f\xfd data")
    (tmp_path / "other.jsonl").write_bytes(TEXT)
    with pytest.raises(SourceError) as e:
        source_files(str(tmp_path))
    assert says in str(e.value) and "**" not in str(e.value)


@pytest.mark.parametrize(("orient", "says"), [
    (None, "holding 2 objects with the same 40 keys each (a table by column or by row index, as pandas `to_json()` "
           "writes by default), not a list of records: write it with `df.to_json(path, orient='records', lines=True)`"),
    ("index", "holding 40 objects with the same 2 keys each"),
    ("split", "holding a table of 40 rows as lists under 'data' (pandas `to_json(orient='split')`), not a list of "
              "records"),
])
def test_a_pandas_to_json_table_is_named_with_the_orient_that_writes_records(tmp_path, orient, says):
    """``df.to_json(path)`` writes a column's values keyed by row number: the whole file was one reject, "messages is
    dict, expected a list of messages", or "missing field" for orient='split', never saying the file is a table."""
    pd.DataFrame(RECORDS).to_json(tmp_path / "t.json", **({"orient": orient} if orient else {}))
    res = _ingest(tmp_path / "t.json", "wildchat", "conversations")
    assert len(res.rejects) == 1 and says in res.rejects[0]["reason"]
    pd.DataFrame(RECORDS).to_json(tmp_path / "t.json", orient="records")  # what it says to write is read
    assert _ingest(tmp_path / "t.json", "wildchat", "conversations").metrics["accepted"] == 40


def test_a_pandas_values_array_says_its_rows_lack_their_column_names(tmp_path):
    """``to_json(orient='values')`` writes each row as an array: each was a reject, "record is list, expected a JSON
    object", not saying why. An array of message lists (each a conversation) is not such a table."""
    pd.DataFrame(RECORDS).to_json(tmp_path / "t.json", orient="values")
    reasons = [r["reason"] for r in _ingest(tmp_path / "t.json", "wildchat", "conversations").rejects]
    assert len(reasons) == 40 and reasons[0] == (
        "t.json:1: record is list, expected a JSON object; the file is an array of 40 arrays, rows without their column "
        "names (pandas `to_json(orient='values')`): write records, `df.to_json(path, orient='records', lines=True)`")
    (tmp_path / "m.json").write_text(json.dumps([[U, A], [U, A]]))
    assert "pandas" not in _ingest(tmp_path / "m.json", "wildchat", "conversations").rejects[0]["reason"]
    (tmp_path / "n.json").write_text(json.dumps([[None, A], [U, A]]))  # a null message in the first conversation
    assert all("pandas" not in r["reason"] for r in _ingest(tmp_path / "n.json", "wildchat", "conversations").rejects)


def test_one_record_whose_fields_are_objects_gets_no_table_hint(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"a": {"x": 1}, "b": {"y": 2}}))
    assert "pandas" not in _ingest(tmp_path / "r.json", "wildchat", "conversations").rejects[0]["reason"]


def test_a_null_message_in_a_parquet_list_is_named_null_not_nonetype(tmp_path):
    """A null struct in a Parquet list of messages said "conversation[1] is NoneType", Python's name for it."""
    struct = pa.struct([("role", pa.string()), ("content", pa.string())])
    pq.write_table(pa.table({"conversation_id": ["a"], "conversation": pa.array([[U, None, A]], pa.list_(struct))}),
                   tmp_path / "n.parquet")
    assert [r["reason"] for r in _ingest(tmp_path / "n.parquet", "wildchat", "conversations").rejects] == [
        "n.parquet:1: conversation[1] is null, expected an object with role and content: a message is missing there; "
        "write it, or drop the conversation"]


def test_a_parquet_struct_that_names_a_field_twice_is_one_reject_naming_it(tmp_path):
    """A list of structs with two ``content`` fields (a join or rename gone wrong upstream) made each row a reject,
    "column 'conversation' holds a value Python cannot represent (ValueError: ...); drop that column": as a column
    named twice, the file is one reject standing for all of its rows, naming the field."""
    fields = [pa.field("role", pa.string()), pa.field("content", pa.string()), pa.field("content", pa.string())]
    turns = pa.StructArray.from_arrays([pa.array(["user", "assistant"] * 3), pa.array(["q", "a"] * 3),
                                        pa.array(["", "other"] * 3)], fields=fields)
    pq.write_table(pa.table({"conversation_id": ["a", "b", "c"],
                             "conversation": pa.ListArray.from_arrays(pa.array([0, 2, 4, 6]), turns)}),
                   tmp_path / "d.parquet")
    res = run_source(tmp_path / "d.parquet", "wildchat", "conversations")
    assert [r["reason"] for r in res.rejects] == [
        "d.parquet:1: the field conversation[].content is named twice in its struct (a record would keep one of them "
        "only): rename them so each field has its own name; none of the file is read"]
    assert (res.metrics["rows_in"], res.metrics["rejected"]) == (3, 3)


@pytest.mark.parametrize(("name", "body"), [("x.csv", "sep=,\r\nid,text\r\nd1,hello\r\n"),
                                            ("x.tsv", "SEP=\t\nid\ttext\nd1\thello\n")])
def test_excels_sep_line_before_the_header_is_read_as_the_separator_it_names(tmp_path, name, body):
    """A first line ``sep=,`` (written for Excel, which reads the separator from it) was taken for the header: each
    row a "missing field 'text'" reject. It names the file's own separator: the header is the next line. One naming
    another separator is the one-column header it always was (``sep=;``: "separated by ';', not by commas")."""
    (tmp_path / name).write_text(body)
    res = _ingest(tmp_path / name, "documents", "documents")
    assert not res.rejects and [d["text"] for d in res.rows["documents"]] == ["hello"]
    (tmp_path / "s.csv").write_text("sep=;\nid;text\nd1;hello\n")
    assert "separated by ';', not by commas" in _ingest(tmp_path / "s.csv", "documents", "documents").rejects[0]["reason"]


def test_a_timestamp_in_a_zone_this_machine_does_not_know_is_read_as_the_same_instant_in_utc(tmp_path):
    """A zone the zone database here lacks (newer than it, or none at all: a slim container without tzdata, where
    every named zone is unknown) made each row a reject, "column 'ts' holds a value Python cannot represent
    (ArrowInvalid: The zoneinfo module or pytz package must be installed.)", though no field was read from it. Known
    zones and fixed offsets read as before."""
    import datetime

    from pipeline.readers import iter_records

    when = datetime.datetime(2024, 1, 1, 12, tzinfo=datetime.UTC)
    msg = pa.struct([("role", pa.string()), ("content", pa.string()), ("at", pa.timestamp("us", tz="Mars/Olympus"))])
    pq.write_table(pa.table({
        "conversation_id": ["a", "b"],
        "conversation": pa.array([[{**U, "at": when}, {**A, "at": None}]] * 2, pa.list_(msg)),
        "ts": pa.array([when, None], pa.timestamp("us", tz="Mars/Olympus")),
        "tokyo": pa.array([when, when], pa.timestamp("us", tz="Asia/Tokyo"))}), tmp_path / "t.parquet")
    res = _ingest(tmp_path / "t.parquet", "wildchat", "conversations")
    assert not res.rejects and res.metrics["accepted"] == 2
    row = next(iter_records(str(tmp_path / "t.parquet"))).value
    assert row["ts"] == when and row["ts"].utcoffset() == datetime.timedelta(0)
    assert row["conversation"][0]["at"] == when
    assert row["tokyo"] == when and str(row["tokyo"].tzinfo) == "Asia/Tokyo"


@pytest.mark.parametrize("store_schema", [True, False])  # False: no Arrow schema in the file, as DuckDB writes it
def test_a_parquet_column_typed_json_is_read_as_the_json_it_holds(tmp_path, store_schema):
    """A JSON column (Parquet's JSON logical type: DuckDB, BigQuery; Arrow's ``pa.json_()``) holding the messages was
    read as their JSON text: a reject, "conversation is str, expected a list of messages; ... write the file as JSON
    lines or Parquet" (it is Parquet). Its values are parsed; one that is not JSON is a reject naming the column."""
    texts = [json.dumps([U, A]), json.dumps([U, A]), "[{'role': 'user'}]", None]
    pq.write_table(pa.table({"conversation_id": ["a", "b", "c", "d"], "conversation": pa.array(texts, pa.json_()),
                             "model": pa.array(['"m1"', '"m2"', '"m3"', '"m4"'], pa.json_())}),
                   tmp_path / "j.parquet", store_schema=store_schema)
    res = _ingest(tmp_path / "j.parquet", "wildchat", "conversations")
    assert [(c["model"], c["messages"]) for c in res.rows["conversations"]] == [("m1", [U, A]), ("m2", [U, A])]
    assert [r["reason"] for r in res.rejects] == [
        "j.parquet:3: column 'conversation' is typed JSON but holds invalid JSON: Expecting property name enclosed in "
        "double quotes at column 3: write the column's values as JSON text",
        "j.parquet:4: field 'conversation' is null: the record has no 'messages' or 'conversation'"]
