"""Input boundaries, second adversarial pass (sources): a source folder holding files no reader knows, and bytes
that are not UTF-8 (CSV, UTF-16 files, XML dumps, byte order marks, Parquet strings). Each case crashed, dropped
data silently, or gave a reason a user could not act on, before its fix; the records are in
tests/test_input_boundaries.py."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, load_params
from pipeline.encodings import RE_ENCODE, REWRITE_UTF8
from pipeline.io import SourceError
from stages.ingest import run
from tests.input_cases import _ingest, _lines
from tests.test_ingest import with_ingest

# --- a source folder holding files no reader knows ----------------------------------------------------

@pytest.mark.parametrize("stray", ["README.md", "LICENSE", "part-0.jsonl.zst"])
def test_a_file_no_reader_knows_fails_before_any_work_naming_the_key(params, tmp_path, stray):
    """Was: the stage read every earlier source, then stopped at the stray file (an HF snapshot's README.md). A
    compressed shard is data, not a stray: it says to decompress it, not to leave it out with a glob of the others
    (tests/test_input_tool_exports.py)."""
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
    advice = "decompress the file (`zstd -d`)" if stray.endswith(".zst") else f"e.g. {tmp_path / 'set' / '**' / '*.jsonl'}"
    assert advice in msg and "\n" not in msg
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
