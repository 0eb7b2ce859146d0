"""Reading stays bounded by max_record_bytes whatever the input (pipeline.limits): a .json gzip bomb, a CSV row
of many large fields and a Parquet row group of huge cells are read a limit's worth at a time, and what is over
the limit is a reject with a reason. A small max_record_bytes makes modest files trip each rule."""

from __future__ import annotations

import csv
import gzip
import io
import json
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

import pipeline.limits as limits
from pipeline.jsontext import preview_of
from pipeline.limits import stand_ins
from pipeline.readers import iter_records
from tests.adapter_sources import MAX_BYTES
from tests.input_cases import _ingest

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
LIMIT = 1000  # max_record_bytes in these tests: a .json file may hold 16 x 1000 bytes


def _peak(fn):
    """What ``fn()`` returns and the most memory Python held while it ran."""
    tracemalloc.start()
    try:
        return fn(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_json_gz_bomb_is_one_reject_and_is_read_only_to_the_cap(tmp_path):
    path = tmp_path / "bomb.json.gz"
    path.write_bytes(gzip.compress(b'[{"id": "a", "text": "' + b"x" * (20 << 20) + b'"}]'))  # 20 KiB -> 20 MiB
    rows, peak = _peak(lambda: list(iter_records(str(path), max_record_bytes=LIMIT)))
    assert peak < 1 << 20  # decompressing it whole holds 20 MiB (and the text, and the value)
    assert len(rows) == 1 and rows[0].value is None
    assert rows[0].error.startswith("the file is over 16000 bytes (16 x max_record_bytes)")
    assert rows[0].error.endswith("convert it to JSON lines (one record per line, named .jsonl)")
    res = _ingest(path, "documents", "documents", LIMIT)
    assert (len(res.rejects), sum(len(v) for v in res.rows.values())) == (1, 0)
    assert res.rejects[0]["reason"].startswith("bomb.json.gz:1: the file is over 16000 bytes")


def test_a_json_file_over_the_cap_is_one_reject_unless_it_is_json_lines(tmp_path):
    records = [{"id": str(i), "text": "y" * 150} for i in range(120)]  # ~21 KB, each record under the limit
    (tmp_path / "array.json").write_text(json.dumps(records, indent=1))
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    (tmp_path / "small.json").write_text(json.dumps(records[:20]))  # under the cap: parsed whole, as before
    array = list(iter_records(str(tmp_path / "array.json"), max_record_bytes=LIMIT))
    assert len(array) == 1 and "is not JSON lines" in array[0].error
    for name, n in (("lines.json", 120), ("small.json", 20)):
        rows = list(iter_records(str(tmp_path / name), max_record_bytes=LIMIT))
        assert [r.value for r in rows] == records[:n] and all(r.error is None for r in rows)


def test_a_csv_row_over_the_limit_is_a_reject_that_is_never_held_whole(tmp_path):
    field = "z" * 900  # each field is under the limit (the csv module's field_size_limit)
    wide = ",".join(["w"] + [field] * 2000)  # 1.8 MB on one line
    tall = 'v,"' + '\n"",'.join([field] * 5) + '"'  # 4.5 KB in one quoted field over five lines
    odd = "p," + 'a"' * 2000  # quotes inside an unquoted field: even its stand-ins are over the limit
    path = tmp_path / "t.csv"
    path.write_text("id,text\na,first\n" + wide + "\nb,second\n" + tall + "\nc,third\n" + odd + "\nd,fourth\n")
    rows, peak = _peak(lambda: list(iter_records(str(path), max_record_bytes=LIMIT)))
    assert peak < 200_000  # the wide row parsed is 1.8 MB of fields
    over = "record is over max_record_bytes=1000 (a CSV row); raise ingest.max_record_bytes to keep it"
    assert [r.value["text"] if r.value else r.error for r in rows] == [
        "first", over, "second", over, "third",
        "record is over max_record_bytes=1000 (a CSV row; reading goes on at the next line)"
        "; raise ingest.max_record_bytes to keep it", "fourth"]
    res = _ingest(path, "documents", "documents", LIMIT)
    assert [r["reason"].split(":")[1] for r in res.rejects] == ["2", "4", "6"]
    assert [d["text"] for d in res.rows["documents"]] == ["first", "second", "third", "fourth"]


def test_real_csv_rows_over_the_limit_are_rejects_and_every_other_row_is_read_as_before(tmp_path):
    """Real WildChat turns (quotes, commas, multi-line text) as CSV: the 7 rows over 20,000 characters are
    rejects, the 582 others read exactly as under the shipped limit (the csv module's field limit used to stop
    the file at the first long field, losing every row after it)."""
    chats = [json.loads(line) for line in (REAL / "wildchat_sample" / "conversations.jsonl").open()]
    with (tmp_path / "w.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "user", "reply"])
        out.writerows([c["id"], *(m["content"] for m in c["messages"][:2])] for c in chats)
    small = list(iter_records(str(tmp_path / "w.csv"), max_record_bytes=20_000))
    full = list(iter_records(str(tmp_path / "w.csv"), max_record_bytes=MAX_BYTES))
    assert len(small) == len(full) == len(chats) == 589 and all(r.error is None for r in full)
    assert [r.row for r in small if r.error] == [
        i + 1 for i, c in enumerate(chats) if sum(len(m["content"]) for m in c["messages"][:2]) > 20_000]
    assert {r.error for r in small if r.error} == {"record is over max_record_bytes=20000 (a CSV row); raise ingest.max_record_bytes to keep it"}
    assert [r.value for r in small if not r.error] == [f.value for f, r in zip(full, small, strict=True) if not r.error]


@given(st.text(alphabet='ab,"\r\n', max_size=60))
@settings(max_examples=300, derandomize=True, database=None)
def test_csv_stand_ins_end_rows_where_the_text_does(text):
    def rows(t):  # the rows and errors, in order, in strict mode as ingest reads, and whether a row after it is read
        reader, got = csv.reader(io.StringIO(t + '\nq,"r"\n', newline=""), strict=True), []
        while True:
            try:
                row = next(reader, None)
            except csv.Error:
                got.append("error")
                continue
            if row is None:
                return got[:-1], got[-1] == ["q", "r"]
            got.append("row")
            if row == ["q", "r"]:
                got[-1] = row
    assert rows(text) == rows(stand_ins(text))


def test_a_csv_header_over_the_limit_is_one_reject(tmp_path):
    (tmp_path / "h.csv").write_text(",".join(f"column_{i}" for i in range(200)) + "\n" + "1," * 199 + "1\n")
    rows = list(iter_records(str(tmp_path / "h.csv"), max_record_bytes=LIMIT))
    assert [(r.row, r.error) for r in rows] == [
        (1, "the header row is over max_record_bytes=1000; none of the file is read: raise "
            "ingest.max_record_bytes to read it")]


def test_parquet_batches_hold_about_max_record_bytes_not_10000_rows(tmp_path, monkeypatch):
    seen = []
    real = limits.batch_rows
    monkeypatch.setattr(limits, "batch_rows", lambda batch: seen.append(batch.nbytes) or real(batch))
    huge = [f"{i:05d}" + "q" * 4995 for i in range(300)]  # 5 KB cells: 1.5 MB in one row group
    pq.write_table(pa.table({"id": [str(i) for i in range(300)], "text": huge}), tmp_path / "huge.parquet")
    rows = list(iter_records(str(tmp_path / "huge.parquet"), max_record_bytes=50_000))
    assert [r.value["text"] for r in rows] == huge and max(seen) <= 50_000
    seen.clear()  # small rows keep the 10,000-row batches of the fast path
    pq.write_table(pa.table({"id": [str(i) for i in range(25_000)]}), tmp_path / "small.parquet")
    assert len(list(iter_records(str(tmp_path / "small.parquet"), max_record_bytes=MAX_BYTES))) == 25_000
    assert len(seen) == 3


def _arrow_peak(fn):
    """What ``fn()`` returns and the most memory Arrow's default pool held while it ran."""
    old = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(old)  # its own peak
    pa.set_memory_pool(pool)
    try:
        return fn(), pool.max_memory()
    finally:
        pa.set_memory_pool(old)


def test_a_parquet_dictionary_bomb_is_read_in_batches_of_its_decoded_size(tmp_path):
    """One 16 KiB string 2,000 times is a dictionary page and 2,000 indices: 34 KB stored, 32 MiB decoded. The
    footer's size said ~18 bytes a row, so all 2,000 rows were one batch (32 MiB of Arrow memory)."""
    text = "x" * (16 << 10)
    pq.write_table(pa.table({"id": [str(i) for i in range(2000)], "text": [text] * 2000}), tmp_path / "b.parquet")
    assert pq.ParquetFile(tmp_path / "b.parquet").metadata.row_group(0).total_byte_size < 64_000
    rows, peak = _arrow_peak(lambda: list(iter_records(str(tmp_path / "b.parquet"), max_record_bytes=100_000)))
    assert [(r.row, r.value, r.error) for r in rows] == [(i + 1, {"id": str(i), "text": text}, None) for i in range(2000)]
    assert peak < 1 << 20  # one batch of ~100 KB decoded, the dictionary, the compressed chunk


def test_a_parquet_cell_far_over_the_limit_is_one_reject_and_is_not_decoded(tmp_path):
    """A row group whose one row holds a 4 MiB cell (1000-byte limit): its page is decompressed whole, so it
    was read (8 MiB of Arrow memory) before the row was rejected as over the limit; now its page header says
    so and the group is one reject naming the column and what to do. The rows around it are read as before."""
    texts = ["short one", "q" * (4 << 20), "short two"]
    table = pa.table({"id": ["1", "2", "3"], "text": texts})
    for dictionary, page in ((True, "dictionary page of 4194308"), (False, "page of 4194314")):  # its length prefix
        pq.write_table(table, tmp_path / "c.parquet", row_group_size=1, use_dictionary=dictionary)  # (and levels)
        rows, peak = _arrow_peak(lambda: list(iter_records(str(tmp_path / "c.parquet"), max_record_bytes=LIMIT)))
        assert [(r.row, r.value, r.error) for r in rows] == [
            (1, {"id": "1", "text": "short one"}, None),
            (2, None, f"Parquet row group 1 is not read (1 row lost): column 'text' has a {page} bytes "
                      "holding 1 value(s), over max_record_bytes=1000 each on average, and a page is read whole: this "
                      "one is over 16 x max_record_bytes; rewrite the file with smaller row groups, or raise "
                      "ingest.max_record_bytes"),
            (3, {"id": "3", "text": "short two"}, None)]
        assert peak < 1 << 20
    res = _ingest(tmp_path / "c.parquet", "documents", "documents", LIMIT)
    assert [r["reason"][:39] for r in res.rejects] == ["c.parquet:2: Parquet row group 1 is not"]
    assert sum(len(v) for v in res.rows.values()) == 2


def test_a_parquet_row_over_the_limit_is_rejected_before_it_becomes_python_values(tmp_path):
    """A 1 MiB cell among 1,000 short ones (a page too small to refuse): its row was turned into a 1 MiB
    Python string, then into JSON by ingest, only to be rejected; now its size is read from Arrow first, and the
    reject and its preview are what ingest made of it."""
    texts = [f"short {i}" for i in range(1000)]
    texts[500] = "\u00e9" + "q" * (1 << 20)
    pq.write_table(pa.table({"id": [str(i) for i in range(1000)], "text": texts}), tmp_path / "h.parquet")
    rejects, peak = _peak(lambda: [(r.row, r.error, r.raw) for r in
                                   iter_records(str(tmp_path / "h.parquet"), max_record_bytes=100_000) if r.error])
    assert peak < 256 << 10  # the 1 MiB string was made, and held with its batch
    rows = list(iter_records(str(tmp_path / "h.parquet"), max_record_bytes=100_000))
    assert [(r.row, r.value) for r in rows if r.error is None] == [
        (i + 1, {"id": str(i), "text": t}) for i, t in enumerate(texts) if i != 500]
    assert [(r.row, r.error, r.raw) for r in rows if r.error] == rejects == [
        (501, "record is over max_record_bytes=100000; raise ingest.max_record_bytes to keep it", preview_of({"id": "500", "text": texts[500]}))]
    res = _ingest(tmp_path / "h.parquet", "documents", "documents", 100_000)
    assert [(r["reason"], r["raw"]) for r in res.rejects] == [
        ("h.parquet:501: record is over max_record_bytes=100000; raise ingest.max_record_bytes to keep it", preview_of({"id": "500", "text": texts[500]}))]
