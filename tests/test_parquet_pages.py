"""Parquet page headers (pipeline.parquetpages) and the batch plan drawn from them (pipeline.limits.parquet_plan).

The headers are read by hand (pyarrow keeps them to itself), so they are checked against what the footer says
of every column chunk of real data written as Parquet in every codec and page layout pyarrow writes: page
headers and bodies add up to the chunk's compressed and uncompressed sizes, and data pages hold its values.
Bytes that are not page headers raise ValueError, whatever they are.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from random import Random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.encodings import REWRITE_UTF8
from pipeline.limits import PARQUET_BATCH_ROWS, decoded_bound, parquet_batch_size, parquet_plan
from pipeline.parquetpages import DICTIONARY_PAGE, Chunk, Page, chunk_pages, longest_entry, row_group_chunks
from pipeline.readers import iter_records

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
LAYOUTS = {
    "defaults": {},
    "page v2, zstd": {"data_page_version": "2.0", "compression": "zstd"},
    "gzip, page index, small pages": {"compression": "gzip", "write_page_index": True, "data_page_size": 4096},
    "no dictionary, brotli": {"use_dictionary": False, "compression": "brotli"},
    "lz4, page checksums": {"compression": "lz4", "write_page_checksum": True},
    "uncompressed, delta byte array": {"compression": "none", "use_dictionary": False,
                                       "column_encoding": "DELTA_BYTE_ARRAY"},
}


def _wildchat() -> pa.Table:
    with open(REAL / "wildchat_sample" / "conversations.jsonl") as f:  # nested: lists of structs of strings
        return pa.Table.from_pylist([json.loads(line) for line in f][:300])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_page_headers_add_up_to_what_the_footer_says(layout, tmp_path):
    table = _wildchat()
    options = dict(LAYOUTS[layout])
    if "column_encoding" in options:  # only byte-array columns take it
        table = table.select([n for n in table.column_names if pa.types.is_string(table.schema.field(n).type)])
        options["column_encoding"] = dict.fromkeys(table.column_names, options["column_encoding"])
    pq.write_table(table, tmp_path / "w.parquet", row_group_size=128, **options)
    meta = pq.ParquetFile(tmp_path / "w.parquet").metadata
    checked = 0
    with open(tmp_path / "w.parquet", "rb") as f:
        for g in range(meta.num_row_groups):
            for c, chunk in enumerate(row_group_chunks(f, meta.row_group(g))):
                footer = meta.row_group(g).column(c)
                start = min(o for o in (footer.dictionary_page_offset, footer.data_page_offset) if o)
                ends = [start] + [p.at + p.stored for p in chunk.pages]
                headers = sum(p.at - end for p, end in zip(chunk.pages, ends, strict=False))
                assert headers + sum(p.stored for p in chunk.pages) == footer.total_compressed_size
                assert headers + sum(p.size for p in chunk.pages) == footer.total_uncompressed_size
                assert sum(p.values for p in chunk.pages if p.kind != DICTIONARY_PAGE) == footer.num_values
                checked += 1
    assert checked == meta.num_row_groups * meta.num_columns


def test_the_longest_dictionary_entry_is_read_from_its_page(tmp_path):
    texts = ["a" * n for n in (3, 700, 41, 700, 5)]
    for compression in ("snappy", "zstd", "gzip", "brotli", "lz4", "none"):
        pq.write_table(pa.table({"t": texts, "n": [1, 2, 3, 4, 5]}), tmp_path / "d.parquet", compression=compression)
        meta = pq.ParquetFile(tmp_path / "d.parquet").metadata
        with open(tmp_path / "d.parquet", "rb") as f:
            chunks = list(row_group_chunks(f, meta.row_group(0)))
            assert [c.byte_array for c in chunks] == [True, False]
            assert longest_entry(f, chunks[0]) == 700
            assert chunks[0].dictionary.values == 4  # entries, not rows


@given(st.binary(max_size=64))
@settings(max_examples=300, derandomize=True, database=None)
def test_bytes_that_are_not_a_page_header_raise_value_error(data):
    try:
        list(chunk_pages(io.BytesIO(data), 0, max(len(data), 1)))
    except ValueError:
        pass


def _chunk(*pages: Page, byte_array: bool = True) -> Chunk:
    return Chunk("text", list(pages), "SNAPPY", byte_array)


def test_a_plan_counts_each_dictionary_encoded_value_at_its_longest_entry():
    bomb = _chunk(Page(DICTIONARY_PAGE, 262_148, 1, 0), Page(0, 11, 2000, 8))  # one 256 KiB entry, 2,000 rows
    assert decoded_bound(bomb.pages, True) == 262_148 + 2000 * (262_144 + 8)  # as long as the page allows
    assert parquet_plan([bomb], 2000, 4 << 20, lambda c: 262_144) == (15, None)
    ids = _chunk(Page(DICTIONARY_PAGE, 888_890, 100_000, 0), Page(0, 40_000, 100_000, 8))
    asked = []
    assert parquet_plan([ids], 100_000, 4 << 20, lambda c: asked.append(c) or 5) == (PARQUET_BATCH_ROWS, None)
    assert asked == [ids]  # its page's size alone allowed one 488,890-byte entry: 8-row batches
    small = _chunk(Page(DICTIONARY_PAGE, 20, 2, 0), Page(0, 30, 500, 8))  # "user" / "assistant"
    assert parquet_plan([small], 500, 4 << 20, lambda c: pytest.fail("not needed")) == (500, None)
    numbers = _chunk(Page(DICTIONARY_PAGE, 800, 100, 0), Page(0, 300, 100, 8), byte_array=False)
    assert decoded_bound(numbers.pages, False) == 800 + 100 * 16  # a fixed width: the page over its entries


def test_a_plan_refuses_what_cannot_be_read_within_16_x_the_limit():
    cell = _chunk(Page(0, 17_000, 1, 0))  # one value over the limit in a page over 16 x the limit
    assert parquet_plan([cell], 1, 1000, lambda c: None, 3)[1].startswith(
        "Parquet row group 3 is not read (1 row lost): column 'text' has a page of 17000 bytes holding 1 value(s), "
        "over max_record_bytes=1000 each on average")
    many = _chunk(Page(0, 17_000, 20, 0))  # values under the limit: read, however big the page
    assert parquet_plan([many], 20, 1000, lambda c: None) == (1, None)
    nested = _chunk(Page(DICTIONARY_PAGE, 1004, 1, 0), Page(0, 40, 200, 8))  # one row, 200 x a 1000-byte entry
    assert parquet_plan([nested], 1, 1000, lambda c: 1000) == (
        0, "Parquet row group 0 is not read (1 row lost): column 'text' may decode to 202604 bytes a row (by its "
           "page headers), over 16 x max_record_bytes=1000; rewrite the file with smaller row groups, or raise "
           "ingest.max_record_bytes")
    assert parquet_plan([nested], 20, 1000, lambda c: 1000) == (1, None)  # 20 rows share them: 10 KB a row


def test_a_nested_dictionary_bomb_is_read_in_bounded_batches(tmp_path):
    """Lists of one 8 KiB string repeated: 400 rows x 10 = 32 MiB decoded from a few KB."""
    turn = "z" * (8 << 10)
    table = pa.table({"id": [str(i) for i in range(400)], "turns": [[turn] * 10] * 400})
    pq.write_table(table, tmp_path / "n.parquet")
    old = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(old)
    pa.set_memory_pool(pool)
    try:
        rows = list(iter_records(str(tmp_path / "n.parquet"), max_record_bytes=100_000))
    finally:
        pa.set_memory_pool(old)
    assert [(r.row, r.value, r.error) for r in rows] == [(i + 1, {"id": str(i), "turns": [turn] * 10}, None)
                                                         for i in range(400)]
    assert pool.max_memory() < 1 << 20


@pytest.mark.parametrize("compression", ["none", "snappy"])
def test_a_damaged_dictionary_page_is_reported_by_the_read_not_by_its_probe(compression, tmp_path):
    texts = [f"{i % 500:04d}" + "w" * 1000 for i in range(2000)]  # 500 entries: the probe is asked for
    pq.write_table(pa.table({"text": texts}), tmp_path / "d.parquet", compression=compression, write_page_checksum=True)
    chunk = pq.ParquetFile(tmp_path / "d.parquet").metadata.row_group(0).column(0)
    data = bytearray((tmp_path / "d.parquet").read_bytes())
    middle = chunk.dictionary_page_offset + (chunk.data_page_offset - chunk.dictionary_page_offset) // 2
    data[middle:middle + 8] = b"\xff" * 8
    (tmp_path / "d.parquet").write_bytes(bytes(data))
    rows = list(iter_records(str(tmp_path / "d.parquet"), max_record_bytes=100_000))
    assert len(rows) == 1 and rows[0].error.startswith("Parquet row group 0 cannot be decoded (2000 of its 2000 rows")


@pytest.fixture(scope="module")
def small_parquet() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(_wildchat().slice(0, 40), sink, row_group_size=10)
    return sink.getvalue().to_pybytes()


@given(data=st.data())
@settings(max_examples=150, derandomize=True, database=None, deadline=None)
def test_any_damage_to_a_parquet_file_gives_rows_or_reasons(small_parquet, data, tmp_path_factory):
    """Bytes overwritten anywhere in a real file (page headers included): no exception escapes the reader."""
    damaged = bytearray(small_parquet)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at:at + 4] = data.draw(st.binary(min_size=1, max_size=4))
    path = tmp_path_factory.mktemp("damaged") / "d.parquet"
    path.write_bytes(bytes(damaged))
    rows = list(iter_records(str(path), max_record_bytes=4 << 20))
    assert rows and all((r.value is None) != (r.error is None) for r in rows)


@pytest.mark.parametrize("batch_rows", [1, 7, PARQUET_BATCH_ROWS])
def test_what_is_read_does_not_depend_on_batches_or_row_groups(batch_rows, tmp_path, monkeypatch):
    texts = [b"document %d" % i for i in range(60)]
    texts[10], texts[40] = b"x" * 2000, b"y" * 1500  # over the limit
    texts[20], texts[30] = b"caf\xe9 " * 300, b"caf\xe9"  # not UTF-8: that is the reason, over the limit or not
    offsets = pa.array([sum(len(t) for t in texts[:i]) for i in range(61)], pa.int32())
    column = pa.Array.from_buffers(pa.string(), 60, [None, offsets.buffers()[1], pa.py_buffer(b"".join(texts))])
    table = pa.table({"id": [str(i) for i in range(60)], "text": column})
    monkeypatch.setattr("pipeline.limits.PARQUET_BATCH_ROWS", batch_rows)
    seen = []
    for groups in (None, 13):
        pq.write_table(table, tmp_path / "d.parquet", row_group_size=groups)
        seen.append([(r.row, r.value, r.error, r.raw) for r in iter_records(str(tmp_path / "d.parquet"), 1000)])
    assert seen[0] == seen[1]
    assert [(row, error) for row, _, error, _ in seen[0] if error] == [
        (11, "record is over max_record_bytes=1000; raise ingest.max_record_bytes to keep it"),
        (21, f"column 'text' holds bytes that are not UTF-8 (invalid continuation byte at byte 3): {REWRITE_UTF8}"),
        (31, f"column 'text' holds bytes that are not UTF-8 (unexpected end of data at byte 3): {REWRITE_UTF8}"),
        (41, "record is over max_record_bytes=1000; raise ingest.max_record_bytes to keep it")]
    assert [value["text"] for _, value, error, _ in seen[0] if not error] == [
        t.decode() for i, t in enumerate(texts) if i not in (10, 20, 30, 40)]


# Page headers written by hand (Thrift compact protocol), each with the field types pyarrow does not write,
# which a header from another writer (or a later format version) may hold and which must be skipped exactly.
def _varint(n: int) -> bytes:
    out = b""
    while n > 0x7F:
        out, n = out + bytes([n & 0x7F | 0x80]), n >> 7
    return out + bytes([n])


def _zigzag(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


def _field(field: int, kind: int, last: int) -> bytes:
    """A field's header: its id as a delta from the last field's, or (over 15, or backwards) in full."""
    return bytes([(field - last) << 4 | kind]) if 0 < field - last <= 15 else bytes([kind]) + _zigzag(field)


def _header(kind: int, size: int, stored: int, detail_field: int, detail: bytes) -> bytes:
    return (_field(1, 5, 0) + _zigzag(kind) + _field(2, 5, 1) + _zigzag(size) + _field(3, 5, 2) + _zigzag(stored)
            + _field(4, 4, 3) + _zigzag(-7)  # an i16
            + _field(64, 7, 4) + b"\x00" * 7 + b"\x40"  # a double, its id in full (zigzag 128: 0x80 0x01)
            + _field(65, 9, 64) + b"\xf5" + _varint(20) + b"".join(_zigzag(i) for i in range(20))  # 20 i32s
            + _field(66, 11, 65) + b"\x00"  # an empty map
            + _field(67, 11, 66) + _varint(2) + b"\x58" + (_zigzag(1) + _varint(3) + b"abc") * 2  # i32 -> binary
            + _field(68, 1, 67)  # a boolean
            + _field(69, 9, 68) + b"\x21" + b"\x01\x02"  # a list of two booleans
            + _field(70, 12, 69) + _field(1, 8, 0) + _varint(3) + b"xyz" + _field(2, 11, 1) + b"\x00\x00"  # bytes, {}
            + _field(detail_field, 12, 70) + detail + b"\x00")


def test_hand_written_page_headers_with_every_thrift_type_are_read_exactly():
    v1 = _header(0, 300, 200, 5, _field(1, 5, 0) + _zigzag(50) + _field(2, 5, 1) + _zigzag(2) + b"\x00")
    # a DATA_PAGE_V2: num_values, num_nulls, num_rows, then its encoding (field 4, not 2)
    v2 = _header(3, 90, 60, 8, _field(1, 5, 0) + _zigzag(40) + _field(2, 5, 1) + _zigzag(3) + _field(3, 5, 2)
                 + _zigzag(40) + _field(4, 5, 3) + _zigzag(8) + b"\x00")
    data = v1 + b"\x00" * 200 + v2 + b"\x00" * 60
    assert list(chunk_pages(io.BytesIO(data), 0, len(data))) == [
        Page(0, 300, 50, 2, len(v1), 200), Page(3, 90, 40, 8, len(v1) + 200 + len(v2), 60)]


def test_a_header_must_lie_within_its_chunk_and_give_sizes_that_move_forward():
    header = _header(0, 300, 200, 5, _field(1, 5, 0) + _zigzag(50) + b"\x00")
    data = header + b"\x00" * 200
    with pytest.raises(ValueError, match="cut short"):  # the chunk ends inside the header: not read past its end
        list(chunk_pages(io.BytesIO(data), 0, len(header) - 1))
    backwards = _header(0, 300, -len(header), 5, b"\x00")  # would read the same header again, for ever
    with pytest.raises(ValueError, match="gives no page type or size"):
        list(chunk_pages(io.BytesIO(backwards), 0, len(backwards)))
    negative = _header(0, 300, 200, 5, _field(1, 5, 0) + _zigzag(-5) + b"\x00")  # a value count under 0: none
    assert [p.values for p in chunk_pages(io.BytesIO(negative + b"\x00" * 200), 0, len(negative) + 200)] == [0]


@pytest.mark.parametrize(("data", "why"), [
    (b"\x1c" * 5000, "nests too deep"),  # structs in structs: a ValueError, not a RecursionError
    (b"\x19\x1c" * 2500, "nests too deep"),  # structs in lists
    (b"\x15" + b"\xff" * 20 + b"\x00", "over 64 bits"),
    (b"\x19\xf5" + _varint(1 << 20) + b"\x00" * 64, "list too long"),
])
def test_a_header_that_cannot_be_one_says_why(data, why):
    with pytest.raises(ValueError, match=why):
        list(chunk_pages(io.BytesIO(data), 0, len(data)))


def test_the_longest_entry_of_a_dictionary_that_does_not_compress_or_ends_in_an_empty_one(tmp_path):
    random = [Random(k).randbytes(700) for k in range(40)]  # snappy stores them in more bytes than they are
    for texts in ([b"a" * 700, b""], [*random, b""], random):
        for compression in ("none", "snappy"):
            pq.write_table(pa.table({"t": texts}), tmp_path / "d.parquet", compression=compression)
            meta = pq.ParquetFile(tmp_path / "d.parquet").metadata
            with open(tmp_path / "d.parquet", "rb") as f:
                chunk = next(row_group_chunks(f, meta.row_group(0)))
                assert longest_entry(f, chunk) == max(map(len, texts))


def test_a_dictionary_page_that_holds_more_than_its_entries_has_no_longest_entry():
    body = b"".join(len(t).to_bytes(4, "little") + t for t in (b"abc", b"z" * 700))  # 2 entries, header says 1
    chunk = Chunk("text", [Page(DICTIONARY_PAGE, len(body), 1, 0, 0, len(body))], "UNCOMPRESSED", True)
    assert longest_entry(io.BytesIO(body), chunk) is None  # not 3: the bound is then what the page allows
    whole = Chunk("text", [Page(DICTIONARY_PAGE, len(body), 2, 0, 0, len(body))], "UNCOMPRESSED", True)
    assert longest_entry(io.BytesIO(body), whole) == 700


def test_each_encoding_is_bounded_as_its_values_decode():
    dictionary = Page(DICTIONARY_PAGE, 104, 1, 0)  # one 100-byte entry
    for encoding in (2, 8):  # PLAIN_DICTIONARY (data page v1), RLE_DICTIONARY: each value as the entry
        assert decoded_bound([dictionary, Page(0, 10, 5, encoding)], True, 100) == 104 + 5 * 108
    assert decoded_bound([Page(0, 100, 10, 7)], True) == 10 * 108  # DELTA_BYTE_ARRAY: a value up to its page
    assert decoded_bound([Page(0, 10, 100, 0)], True) == 800  # PLAIN: its size, at least 8 bytes a value
    numbers = [Page(DICTIONARY_PAGE, 800, 100, 0), Page(0, 300, 100, 8)]
    assert decoded_bound(numbers, False, 0) == decoded_bound(numbers, False) == 800 + 100 * 16  # a fixed width


def test_a_plan_at_exactly_16_x_the_limit_reads_and_sums_its_columns():
    exact = _chunk(Page(0, 16_000, 1, 0))  # a page and a row of 16 x the limit: not over it
    assert parquet_plan([exact], 1, 1000, lambda c: None) == (1, None)
    two = [_chunk(Page(0, 40_000, 100, 0)), _chunk(Page(0, 40_000, 100, 0))]  # 400 + 400 bytes a row
    assert parquet_plan(two, 100, 1000, lambda c: None) == (1, None)  # a batch holds every column of its rows


def test_a_plan_reads_the_longest_entry_only_of_the_chunks_it_could_change():
    bomb = _chunk(Page(DICTIONARY_PAGE, 262_148, 1, 0), Page(0, 11, 2000, 8))
    plain = _chunk(Page(0, 4000, 2000, 0))  # no dictionary: nothing to read
    asked = []
    assert parquet_plan([bomb, plain], 2000, 4 << 20, lambda c: asked.append(c) or 262_144)[1] is None
    assert asked == [bomb]


def test_a_row_is_rejected_early_by_its_text_over_the_limit_in_any_column_null_or_dictionary(tmp_path):
    table = pa.table({"note": pa.array([None, "n", None]), "tag": pa.array(["t" * 1500, "u", "v"]).dictionary_encode(),
                      "text": ["a", "b", "c" * 999]})  # row 3: 1000 bytes of text, not over 1000
    pq.write_table(table, tmp_path / "d.parquet")
    rows = list(iter_records(str(tmp_path / "d.parquet"), max_record_bytes=1000))
    assert [(r.row, r.error, bool(r.raw)) for r in rows] == [
        (1, "record is over max_record_bytes=1000; raise ingest.max_record_bytes to keep it", True), (2, None, False), (3, None, False)]
    assert rows[2].value == {"note": None, "tag": "v", "text": "c" * 999}  # its JSON is then for ingest to size


def test_a_chunk_without_a_dictionary_has_no_longest_entry_and_a_refusal_says_bytes_a_row():
    assert longest_entry(io.BytesIO(b""), _chunk(Page(0, 40, 5, 0))) is None
    nested = _chunk(Page(DICTIONARY_PAGE, 1004, 1, 0), Page(0, 40, 200, 8))  # 202,604 bytes over 2 rows
    assert "may decode to 101302 bytes a row" in parquet_plan([nested], 2, 1000, lambda c: 1000)[1]


def test_batch_rows_round_a_rows_bytes_up_and_no_limit_reads_any_row(tmp_path):
    assert parquet_batch_size(1001, 1000, 1000) == 500  # 1.001 bytes a row is 2, not 1: a batch stays under
    pq.write_table(pa.table({"text": ["x" * (3 << 20)]}), tmp_path / "big.parquet")  # 3 MiB in one cell
    assert [r.error for r in iter_records(str(tmp_path / "big.parquet"))] == [None]
