"""Readers and the shard writer: deterministic, sorted, manifest-checked, atomic."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import io as pio
from pipeline.encodings import RE_ENCODE
from pipeline.files import built_dir
from pipeline.io import SourceError, iter_records, read_manifest, read_table, verify_shards, write_shards
from pipeline.records import SchemaError, to_table


def docs(n: int, *, reverse: bool = True) -> pa.Table:
    ids = range(n - 1, -1, -1) if reverse else range(n)
    return to_table([{"doc_id": f"d{i:05d}", "text": f"text number {i} " * 20, "source": "s", "score": float(i)}
                     for i in ids], "documents")


# --- shard writer --------------------------------------------------------------------------------


def test_names_bytes_and_order_are_deterministic(tmp_path):
    table = docs(300)
    m1 = write_shards(table, tmp_path / "a", name="documents", fingerprint="fp", target_shard_bytes=20_000)
    m2 = write_shards(docs(300, reverse=False), tmp_path / "b", name="documents", fingerprint="fp",
                      target_shard_bytes=20_000)
    names = [f["path"] for f in m1["files"]]
    n = len(names)
    assert n > 1 and names == [f"part-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    assert m1 == m2  # input order does not matter: rows are sorted by id before writing
    for name in [*names, "_manifest.json"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    ids = read_table(tmp_path / "a", "documents").column("doc_id").to_pylist()
    assert ids == sorted(ids) and len(ids) == 300


def test_manifest_records_rows_checksums_schema_fingerprint(tmp_path):
    m = write_shards(docs(50), tmp_path / "out", name="documents", fingerprint="abc123", target_shard_bytes=10_000)
    assert read_manifest(tmp_path / "out") == m
    assert m["rows"] == 50 == sum(f["rows"] for f in m["files"])
    for f in m["files"]:
        data = (tmp_path / "out" / f["path"]).read_bytes()
        assert f["sha256"] == hashlib.sha256(data).hexdigest()
        assert pq.ParquetFile(tmp_path / "out" / f["path"]).metadata.num_rows == f["rows"]
    assert m["fingerprint"] == "abc123" and m["table"] == "documents" and m["prefpipe_version"]
    assert [c["name"] for c in m["schema"]] == ["doc_id", "text", "title", "source", "score"]
    assert pq.ParquetFile(tmp_path / "out" / m["files"][0]["path"]).metadata.row_group(0).column(0).compression == "ZSTD"
    assert verify_shards(tmp_path / "out") == []
    victim = tmp_path / "out" / m["files"][0]["path"]
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    assert verify_shards(tmp_path / "out") == [f"{victim}: sha256 differs from the manifest"]


def test_replace_is_atomic_and_a_failed_write_keeps_the_old_set(tmp_path, monkeypatch):
    out = tmp_path / "out"
    write_shards(docs(10), out, name="documents")
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    write_shards(docs(20), out, name="documents")
    assert read_table(out, "documents").num_rows == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or old folders left

    real_write = pio._write_shard
    calls = []

    def dies_on_second_file(path, *args):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_write(path, *args)

    monkeypatch.setattr(pio, "_write_shard", dies_on_second_file)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(OSError, match="disk full"):
        write_shards(docs(300), out, name="documents", target_shard_bytes=20_000)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before != old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    def ctrl_c_on_second_file(path, *args):  # a Ctrl-C is no Exception: it must clean up just the same
        calls.append(path)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_write(path, *args)

    monkeypatch.setattr(pio, "_write_shard", ctrl_c_on_second_file)
    with pytest.raises(KeyboardInterrupt):
        write_shards(docs(300), out, name="documents", target_shard_bytes=20_000)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_built_dir_renames_on_success_keeps_a_finished_copy_and_cleans_up(tmp_path):
    dest = tmp_path / "model"
    with built_dir(dest) as tmp:
        tmp.mkdir()
        (tmp / "config.json").write_text("first")
    assert (dest / "config.json").read_text() == "first"
    with built_dir(dest) as tmp:  # another process finished first: its folder stays
        tmp.mkdir()
        (tmp / "config.json").write_text("second")
    assert (dest / "config.json").read_text() == "first"
    with pytest.raises(KeyError), built_dir(tmp_path / "failed") as tmp:
        tmp.mkdir()
        raise KeyError("build failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_empty_tables_still_make_a_shard_set(tmp_path):
    m = write_shards(docs(0), tmp_path / "empty", name="documents")
    assert m["rows"] == 0 and len(m["files"]) == 1
    assert read_table(tmp_path / "empty", "documents").num_rows == 0


def test_contract_violations_are_named(tmp_path):
    bad = pa.table({"doc_id": ["a"], "source": ["s"]})
    with pytest.raises(SchemaError, match="documents: missing required column 'text'"):
        write_shards(bad, tmp_path / "x", name="documents")
    assert not (tmp_path / "x").exists()


def shuffled_docs(n: int, seed: int = 0) -> pa.Table:
    """Documents in random order, some ids repeated with different text (ties must keep input order)."""
    import random

    rng = random.Random(seed)
    ids = [f"d{rng.randrange(n // 2):05d}" for _ in range(n)]
    return to_table([{"doc_id": d, "text": f"text {i} " * rng.randint(1, 30), "source": "s", "score": float(i)}
                     for i, d in enumerate(ids)], "documents")


@pytest.mark.parametrize("spill_bytes", [1, 5_000, 60_000])
def test_streamed_writer_spills_and_merges_to_the_same_bytes(tmp_path, spill_bytes):
    table = shuffled_docs(2000)
    kw = dict(name="documents", fingerprint="fp", target_shard_bytes=40_000, row_group_bytes=3_000)
    expected = write_shards(table, tmp_path / "whole", **kw)
    with pio.ShardWriter(tmp_path / "streamed", spill_bytes=spill_bytes, **kw) as w:
        for batch in table.to_batches(max_chunksize=97):
            w.write(pa.Table.from_batches([batch]))
        assert len(w._runs) > 1  # it really spilled
    assert w.manifest == expected and len(expected["files"]) > 1
    for f in [*expected["files"], {"path": "_manifest.json"}]:
        assert (tmp_path / "streamed" / f["path"]).read_bytes() == (tmp_path / "whole" / f["path"]).read_bytes()
    assert pq.ParquetFile(tmp_path / "whole" / expected["files"][0]["path"]).metadata.num_row_groups > 1
    out = read_table(tmp_path / "streamed", "documents").to_pylist()
    # a stable sort by id: equal ids keep the order they were written in
    assert out == sorted(table.to_pylist(), key=lambda r: r["doc_id"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["streamed", "whole"]  # runs removed


def test_shards_and_row_groups_do_not_depend_on_the_pieces_the_rows_came_in(tmp_path):
    """Shards were sized by the sum of pyarrow's ``nbytes`` of the pieces written, which grows with each piece
    (an offset more per string column, bitmaps rounded up to a byte): the same 60 rows in one table gave one
    shard, in pieces of 3 (a stage's batches or partitions) two, so `execution.batch_size` could change files."""
    table = docs(60)
    kw = dict(name="documents", fingerprint="fp", target_shard_bytes=table.nbytes,
              row_group_bytes=table.nbytes // 60 * 7)
    whole = write_shards(table, tmp_path / "whole", **kw)
    for size in (1, 3, 7):
        with pio.ShardWriter(tmp_path / f"pieces{size}", **kw) as w:
            for i in range(0, 60, size):
                w.write(table.slice(i, size))
        assert w.manifest == whole, size
        for f in whole["files"]:
            assert (tmp_path / f"pieces{size}" / f["path"]).read_bytes() == (tmp_path / "whole" / f["path"]).read_bytes()
    assert pq.ParquetFile(tmp_path / "whole" / whole["files"][0]["path"]).metadata.num_row_groups > 1


def test_streamed_writer_merges_multi_column_keys(tmp_path):
    rows = [{"source": s, "row": r, "reason": f"{s}:{r}", "raw": ""} for r in range(300, 0, -1) for s in ("b", "a")]
    with pio.ShardWriter(tmp_path / "rej", name="rejects", spill_bytes=2_000) as w:
        for i in range(0, len(rows), 50):
            w.write(pa.Table.from_pylist(rows[i:i + 50], schema=pio.SCHEMAS["rejects"]))
    got = [(r["source"], r["row"]) for r in read_table(tmp_path / "rej", "rejects").to_pylist()]
    assert got == sorted((r["source"], r["row"]) for r in rows)


def test_streamed_writer_merges_keys_with_nulls_as_an_unspilled_write_orders_them(tmp_path):
    """WildFeedback's rejects leave ``row`` null (records.Reject): once they spilled (more than execution.spill_bytes
    of rejects), the merge compared nulls (null <= null is null) and stopped with "Must pass at least one table".
    Nulls sort last, as an unspilled write sorts them; equal keys keep their write order."""
    rows = [{"source": s, "row": None if r % 3 else r, "reason": f"{s}:{r}", "raw": str(r)}
            for r in range(300, 0, -1) for s in ("b", "a")]
    table = pa.Table.from_pylist(rows, schema=pio.SCHEMAS["rejects"])
    expected = write_shards(table, tmp_path / "whole", name="rejects")
    with pio.ShardWriter(tmp_path / "rej", name="rejects", spill_bytes=2_000) as w:
        for i in range(0, len(rows), 50):
            w.write(table.slice(i, 50))
        assert len(w._runs) > 1  # it really spilled
    assert w.manifest == expected
    got = [(r["source"], r["row"], r["raw"]) for r in read_table(tmp_path / "rej", "rejects").to_pylist()]
    assert got == [(r["source"], r["row"], r["raw"]) for r in
                   sorted(rows, key=lambda r: (r["source"], r["row"] is None, r["row"] or 0))]


def test_streamed_writer_without_sort_keeps_write_order(tmp_path):
    table = shuffled_docs(500)
    with pio.ShardWriter(tmp_path / "o", name="documents", sort=False, spill_bytes=3_000) as w:
        for batch in table.to_batches(max_chunksize=40):
            w.write(pa.Table.from_batches([batch]))
    assert read_table(tmp_path / "o", "documents").to_pylist() == table.to_pylist()


def test_a_failure_while_streaming_leaves_the_old_set_and_no_temporaries(tmp_path):
    write_shards(docs(10), tmp_path / "out", name="documents")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    with pytest.raises(RuntimeError, match="source died"):
        with pio.ShardWriter(tmp_path / "out", name="documents", spill_bytes=1) as w:
            w.write(docs(50))
            raise RuntimeError("source died")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- readers -------------------------------------------------------------------------------------


def values(path: str | Path, **kw) -> list:
    return [r.value for r in iter_records(str(path), **kw)]


def test_jsonl_splits_on_newline_only(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"t": "one\u2028still one"}\n\n{"t": "two\u2029"}\r\n', encoding="utf-8")
    rows = list(iter_records(str(path)))
    assert [r.value for r in rows] == [{"t": "one\u2028still one"}, {"t": "two\u2029"}]
    assert [r.row for r in rows] == [1, 3]  # row = line number; blank lines are not records


def test_jsonl_bad_lines_become_errors_not_crashes(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": \n\xff\xfe\n' + b'{"a": "' + b"x" * 100 + b'"}\n')
    rows = list(iter_records(str(path), max_record_bytes=50))
    assert rows[0].value == {"a": 1} and rows[0].error is None
    assert rows[1].error.startswith("invalid JSON")
    assert rows[2].error == f"invalid UTF-8 at byte 0: {RE_ENCODE}"
    assert rows[3].error == "record is 109 bytes, over max_record_bytes=50; raise ingest.max_record_bytes to keep it"


def test_jsonl_streams_long_lines_gzip_and_a_last_line_without_newline(tmp_path):
    body = b'{"a": 1}\n{"big": "' + b"x" * 5000 + b'"}\n{"a": 2}\n{"a": 3}'
    for name, data in (("p.jsonl", body), ("p.jsonl.gz", gzip.compress(body))):
        (tmp_path / name).write_bytes(data)
        rows = list(iter_records(str(tmp_path / name), max_record_bytes=100))
        assert [r.value for r in rows] == [{"a": 1}, None, {"a": 2}, {"a": 3}]
        assert rows[1].error == "record is 5011 bytes, over max_record_bytes=100; raise ingest.max_record_bytes to keep it" and len(rows[1].raw) <= 500
        assert [r.row for r in rows] == [1, 2, 3, 4]


def test_json_array_data_key_and_jsonl_fallback(tmp_path):
    (tmp_path / "arr.json").write_text(json.dumps([{"i": 1}, {"i": 2}]))
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": [{"i": 3}]}))
    (tmp_path / "lines.json").write_text('{"i": 4}\n{"i": 5}\n')
    assert values(tmp_path / "arr.json") == [{"i": 1}, {"i": 2}]
    assert values(tmp_path / "wrapped.json") == [{"i": 3}]
    assert values(tmp_path / "lines.json") == [{"i": 4}, {"i": 5}]


def test_csv_parquet_gzip(tmp_path):
    (tmp_path / "t.csv").write_text('id,text\n1,"hello, world"\n2,"two\nlines"\n')
    assert values(tmp_path / "t.csv") == [{"id": "1", "text": "hello, world"}, {"id": "2", "text": "two\nlines"}]
    pq.write_table(pa.table({"id": [1, 2], "text": ["a", "b"]}), tmp_path / "t.parquet")
    assert values(tmp_path / "t.parquet") == [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}]
    (tmp_path / "t.jsonl.gz").write_bytes(gzip.compress(b'{"z": 1}\n'))
    assert values(tmp_path / "t.jsonl.gz") == [{"z": 1}]


def test_glob_and_folder_in_sorted_order(tmp_path):
    d = tmp_path / "src"
    (d / "sub").mkdir(parents=True)
    (d / "b.jsonl").write_text('{"f": "b"}\n')
    (d / "a.jsonl").write_text('{"f": "a"}\n')
    (d / "sub" / "c.jsonl").write_text('{"f": "c"}\n')
    (d / "_manifest.json").write_text("{}")  # bookkeeping files are not data
    (d / ".hidden.jsonl").write_text('{"f": "h"}\n')
    assert values(d) == [{"f": "a"}, {"f": "b"}, {"f": "c"}]
    assert values(f"{d}/*.jsonl") == [{"f": "a"}, {"f": "b"}]
    assert values(f"{d}/**/*.jsonl") == [{"f": "a"}, {"f": "b"}, {"f": "c"}]


def test_missing_and_unknown_sources_say_what_to_do(tmp_path):
    with pytest.raises(SourceError, match="no such file, folder or matching glob"):
        values(tmp_path / "nothing.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(SourceError, match=r"unknown file type '\.txt'"):
        values(tmp_path / "x.txt")


def test_an_absent_shard_set_is_an_error_for_every_reader_not_an_empty_input(tmp_path):
    """A stage run before the stage it reads from must say so, whether it reads the set whole or streams it."""
    with pytest.raises(SourceError, match="not found; run the stage that writes it first"):
        read_table(tmp_path / "data/ingest/conversations", "conversations")
    with pytest.raises(SourceError, match="not found; run the stage that writes it first"):
        list(pio.iter_batches(tmp_path / "data/ingest/conversations"))


def test_a_bare_folder_is_an_error_not_an_empty_input(tmp_path):
    """A folder with no shards and no manifest is a write that never happened (a copy left it out, a run died
    before it), not an empty shard set: read as empty, Curry-DPO ran on it and reported every pair orphaned."""
    (tmp_path / "prompts").mkdir()
    with pytest.raises(SourceError, match=r"^curry.inputs\[0\].prompts: .*prompts: holds no Parquet shards and no "
                                          r"_manifest.json; run the stage .* or correct curry.inputs\[0\].prompts"):
        read_table(tmp_path / "prompts", "prompts", key="curry.inputs[0].prompts")
    with pytest.raises(SourceError, match="holds no Parquet shards and no _manifest.json"):
        list(pio.iter_batches(tmp_path / "prompts"))


def test_a_tree_of_shard_sets_is_named_by_every_reader(tmp_path):
    """A folder holding only shard sets in sub-folders (Curry-DPO's level=N) says so, streamed or read whole."""
    for level in ("level=0", "level=1"):
        (tmp_path / "pairs" / level).mkdir(parents=True)
        (tmp_path / "pairs" / level / "_manifest.json").write_text("{}")
    for read in (lambda p: read_table(p, "pairs"), lambda p: list(pio.iter_batches(p))):
        with pytest.raises(SourceError, match=r"holds shard sets in sub-folders \(level=0, level=1\)"):
            read(tmp_path / "pairs")


def test_hub_id_fails_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceError) as err:
        values("hf://prefpipe-tests/no-such-dataset:train")
    msg = str(err.value)
    assert msg.startswith("hf://prefpipe-tests/no-such-dataset:train: could not load from the Hugging Face Hub")
    assert "point `path` at the local files" in msg
    # offline, a set missing from the cache is not a network or login problem: say what offline mode does
    assert "HF_HUB_OFFLINE is set and the set is not in the local cache: run once with HF_HUB_OFFLINE=0" in msg
    assert "your network" not in msg and "hf auth login" not in msg
