"""Real exports that ingest read wrongly or not at all: tab-separated files, Parquet text stored as binary, Parquet
written with tiny row groups, a JSON file that names its ``data`` key twice, and how file-level rejects count.

Each test failed on the code before its fix.
"""

from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.adapter_sources import run_source
from tests.input_cases import _ingest

# --- tab-separated values ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["t.tsv", "t.TSV", "t.tsv.gz"])
def test_a_tsv_file_is_read_as_csv_separated_by_tabs(tmp_path, name):
    """``.tsv`` failed the source: "unknown file type '.tsv'". Commas in a field are text; a quoted field may hold
    a tab and a line break, as in CSV."""
    body = b'id\ttext\na\tHello, world\nb\t"two\tparts\nand a line"\n'
    (tmp_path / name).write_bytes(gzip.compress(body) if name.endswith(".gz") else body)
    res = _ingest(tmp_path / name, "documents", "documents")
    assert not res.rejects
    assert sorted(d["text"] for d in res.rows["documents"]) == ["Hello, world", "two\tparts\nand a line"]


def test_a_tsv_row_keeps_the_csv_reject_rules(tmp_path):
    """A row with a field too many, one over max_record_bytes (read to its end through stand-ins that keep tabs),
    and a header that repeats are rejects as in CSV, and the rows after them are read."""
    long = "x" * 3000
    (tmp_path / "t.tsv").write_text(f"id\ttext\na\tone\tspare\nb\t\"{long}\t\"\"{long}\"\nc\tthree\nid\ttext\nd\tfour\n")
    res = _ingest(tmp_path / "t.tsv", "documents", "documents", max_bytes=2000)
    assert [r["reason"] for r in res.rejects] == [
        "t.tsv:1: the row has 3 field(s), the header names 2 column(s): quote fields that hold a tab, and give every "
        "row one field per column",
        "t.tsv:2: record is over max_record_bytes=2000 (a CSV row); raise ingest.max_record_bytes to keep it",
        "t.tsv:4: the row repeats the header row (CSV files joined with `cat`?): not a record; join them without their "
        "headers (`tail -n +2`)"]
    assert sorted(d["text"] for d in res.rows["documents"]) == ["four", "three"]


def test_a_comma_separated_file_named_tsv_is_one_reject_saying_so(tmp_path):
    (tmp_path / "c.tsv").write_text("id,text\na,one\nb,two\n")
    assert [r["reason"] for r in _ingest(tmp_path / "c.tsv", "documents", "documents").rejects] == [
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
    res = _ingest(tmp_path / "d.parquet", "documents", "documents")
    assert [r["reason"] for r in res.rejects] == [
        "d.parquet:2: text is bytes that are not UTF-8 (invalid start byte at byte 0; rewrite the file with that "
        "column's text as UTF-8), expected a string"]
    assert sorted(d["text"] for d in res.rows["documents"]) == ["hello", "world"]


def test_parquet_binary_in_maps_and_fixed_size_lists_is_read_as_text(tmp_path):
    """A map's keys and values, and a fixed-size list's items, stored as binary are text where they are UTF-8 (a map
    of bytes keys never matched a field name); a value that is not stays bytes, its row's other keys text."""
    from pipeline.readers import iter_records

    meta = pa.array([[(b"lang", b"en")], [(b"lang", b"\xff")]], pa.map_(pa.binary(), pa.binary()))
    tags = pa.array([[b"a", b"b"], [b"c", b"d"]], pa.list_(pa.binary(), 2))
    pq.write_table(pa.table({"id": ["d1", "d2"], "meta": meta, "tags": tags}), tmp_path / "m.parquet")
    assert [(r.value["meta"], r.value["tags"]) for r in iter_records(str(tmp_path / "m.parquet"))] == [
        ({"lang": "en"}, ["a", "b"]), ({"lang": b"\xff"}, ["c", "d"])]


# --- Parquet with tiny row groups --------------------------------------------------------------------


def _docs_table(n: int) -> pa.Table:
    return pa.table({"id": [f"d{i}" for i in range(n)], "text": [f"document {i} " * 20 for i in range(n)]})


def _calls(monkeypatch) -> list[tuple[list[int], list[int]]]:
    """Each ``ParquetFile.iter_batches`` call: its row groups, and the Arrow bytes of each batch it gave."""
    calls, real = [], pq.ParquetFile.iter_batches

    def spy(self, *args, row_groups=None, **kw):
        sizes: list[int] = []
        calls.append((list(row_groups), sizes))
        for batch in real(self, *args, row_groups=row_groups, **kw):
            sizes.append(batch.nbytes)
            yield batch
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    return calls


def test_parquet_row_groups_of_one_row_are_read_many_at_a_time_within_the_limit(tmp_path, monkeypatch):
    """A file written with one row per row group was read one group per ``iter_batches`` call (0.3 ms each: 1M rows
    took minutes). Small groups are read together, a batch holding no more than max_record_bytes of them, and the
    rows, their numbers and values are those of the file read whole."""
    pq.write_table(_docs_table(1000), tmp_path / "tiny.parquet", row_group_size=1)
    calls = _calls(monkeypatch)
    res = _ingest(tmp_path / "tiny.parquet", "documents", "documents", max_bytes=20_000)
    assert not res.rejects
    assert sorted(int(d["text"].split()[1]) for d in res.rows["documents"]) == list(range(1000))
    assert sorted(g for groups, _ in calls for g in groups) == list(range(1000))
    assert len(calls) < 100 and max(len(groups) for groups, _ in calls) > 10
    assert max(size for _, sizes in calls for size in sizes) <= 20_000


def test_a_damaged_row_group_among_tiny_ones_costs_only_its_own_rows(tmp_path):
    """Row groups read together are read again one by one when their batch cannot be decoded: the damaged one is
    one reject naming its rows, and its neighbours (read in the same batch) are kept."""
    pq.write_table(_docs_table(50), tmp_path / "ok.parquet", row_group_size=1, use_dictionary=False,
                   write_page_checksum=True)
    chunk = pq.ParquetFile(tmp_path / "ok.parquet").metadata.row_group(20).column(1)
    data = bytearray((tmp_path / "ok.parquet").read_bytes())
    data[chunk.data_page_offset + chunk.total_compressed_size - 10] ^= 0xFF  # its page data: the CRC fails
    (tmp_path / "bad.parquet").write_bytes(bytes(data))
    res = _ingest(tmp_path / "bad.parquet", "documents", "documents")
    assert [(r["row"], r["reason"].split(" (")[0]) for r in res.rejects] == [
        (21, "bad.parquet:21: Parquet row group 20 cannot be decoded")]
    assert "(1 of its 1 rows lost" in res.rejects[0]["reason"]
    assert sorted(int(d["text"].split()[1]) for d in res.rows["documents"]) == [*range(20), *range(21, 50)]


# --- a JSON file that names "data" twice -------------------------------------------------------------


def test_a_json_file_naming_data_twice_rejects_every_record_naming_the_key(tmp_path):
    """``{"data": [a, c], "data": [b]}`` kept a and c and lost b under one "unexpected text after the array"
    reject (a JSON reader keeps b only). Every record of both arrays is a reject naming the key and the sizes."""
    (tmp_path / "d.json").write_text('{"data": [{"id": "a", "text": "x"}, {"id": "c", "text": "z"}],\n'
                                     ' "data": [{"id": "b", "text": "y"}]}\n')
    res = _ingest(tmp_path / "d.json", "documents", "documents")
    m = res.metrics
    assert (m["rows_in"], m["accepted"], m["rejected"]) == (3, 0, 3)
    assert {r["reason"].split(": ", 1)[1] for r in res.rejects} == {
        "the file names the key 'data' twice at the top level, holding arrays of 2 and 1 records (a JSON reader "
        "keeps the last one only), so none of them is read: put all the records in one \"data\" array"}
    assert [r["row"] for r in res.rejects] == [1, 2, 3] and '"id": "b"' in res.rejects[2]["raw"]


def test_a_json_file_naming_data_twice_with_the_same_records_loses_nothing(tmp_path):
    (tmp_path / "d.json").write_text('{"data": [{"id": "a", "text": "x"}], "data": [{"id": "a", "text": "x"}]}')
    res = _ingest(tmp_path / "d.json", "documents", "documents")
    assert not res.rejects and [d["text"] for d in res.rows["documents"]] == ["x"]


def test_a_json_file_naming_data_thousands_of_times_is_read_not_a_crash(tmp_path):
    """Each further "data" array was read by one more level of recursion: 2,000 of them raised RecursionError out of
    the reader and failed the stage. Each record is a reject naming the key, as for two."""
    arrays = ", ".join(f'"data": [{{"id": "d{i}", "text": "x"}}]' for i in range(2000))
    (tmp_path / "d.json").write_text("{" + arrays + "}")
    res = _ingest(tmp_path / "d.json", "documents", "documents")
    assert (res.metrics["rows_in"], res.metrics["rejected"]) == (2000, 2000)
    assert all("the file names the key 'data' twice" in r["reason"] for r in res.rejects)


# --- file-level rejects count the rows they lose -----------------------------------------------------


def test_a_parquet_row_group_not_read_counts_its_rows_in_the_metrics(tmp_path):
    """A row group not read (here: a cell far over the limit) was one reject and one row in ``rows_in`` though its
    reason said 100 rows were lost: 400 of 500 rows kept read as a reject fraction of 1/401, under any
    ``max_reject_fraction``. Its rows are counted now: 100 of 500 rejected, one rejects row."""
    texts = [f"document {i}" for i in range(500)]
    texts[150] = "x" * 400_000
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(500)], "text": texts}), tmp_path / "g.parquet",
                   row_group_size=100, use_dictionary=False)
    # not _ingest: 99 rows have no rejects row of their own (ingest_source checks unread_rows adds up)
    res = run_source(tmp_path / "g.parquet", "documents", "documents", max_bytes=1000)
    m = res.metrics
    assert (m["rows_in"], m["accepted"], m["rejected"], m["unread_rows"]) == (500, 400, 100, 99)
    assert m["reject_fraction"] == 0.2 and m["top_reasons"][0][1] == 100
    assert [r["row"] for r in res.rejects] == [101] and "(100 rows lost)" in res.rejects[0]["reason"]


def test_a_parquet_file_naming_a_column_twice_counts_all_its_rows_as_rejected(tmp_path):
    """The file's one reject stands for each of its rows: 3 rows not read are 3 of ``rows_in``, not 1."""
    table = pa.Table.from_arrays([pa.array(["d1", "d2", "d3"]), pa.array(["a", "b", "c"]), pa.array(["d", "e", "f"])],
                                 names=["id", "text", "text"])
    pq.write_table(table, tmp_path / "t.parquet")
    m = run_source(tmp_path / "t.parquet", "documents", "documents").metrics
    assert (m["rows_in"], m["accepted"], m["rejected"], m["unread_rows"]) == (3, 0, 3, 2)
