"""Input boundaries, fourth pass (files and sets): each case below lost records without a word, failed a source for
a reason that was not its fault, or rejected rows with a reason that did not say what to do, before its fix. The
files are what careless exports write (Excel, pandas, Spark, `cat`, a pretty-printer); the record fields are in
tests/test_input_boundaries_fields.py."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.input_cases import _ingest, _jsonl


def test_an_eval_prompt_turn_that_cannot_be_read_counts_its_record_as_unread(tmp_path):
    """A null or numeric turn was left out without a word (the record counted as read), white space counted as a
    prompt, and content given as text parts was not read."""
    from pipeline.config import EvalSet
    from pipeline.decontam import ReleaseInputError, load_eval_sets

    _jsonl(tmp_path / "q.jsonl", [
        {"question_id": 1, "turns": ["Name three primes.", None]},
        {"question_id": 2, "turns": [{"content": "Explain DNS."}, {"content": 5}]},
        {"question_id": 3, "turns": [{"role": "user", "content": [{"type": "text", "text": "Define entropy."}]}]},
        {"question_id": 4, "turns": "   "},
    ])
    sets = [EvalSet(name="mt", path=str(tmp_path / "q.jsonl"), text_field="turns", id_field="question_id",
                    optional=True)]
    evals, status = load_eval_sets(sets)
    assert evals["text"].to_list() == ["Name three primes.", "Explain DNS.", "Define entropy."]
    assert status["mt"]["status"] == ("ok; 3 record(s) without a prompt (first: q.jsonl:1: no text in field "
                                      "'turns[1]' (it is NoneType))")
    with pytest.raises(ReleaseInputError, match="3 record"):
        load_eval_sets([sets[0].model_copy(update={"optional": False})])


def test_text_that_is_not_utf8_says_to_re_encode_the_file(tmp_path):
    """A Latin-1 export was one "invalid UTF-8 at byte 19" per line: what was wrong, not what to do."""
    text = "café crème"
    (tmp_path / "l.jsonl").write_bytes(f'{{"id": 1, "text": "{text}"}}\n'.encode("latin-1"))
    (tmp_path / "l.csv").write_bytes(f"id,text\n1,{text}\n".encode("latin-1"))
    (tmp_path / "l.json").write_bytes(f'[{{"id": 1, "text": "{text}"}}]'.encode("latin-1"))
    for name in ("l.jsonl", "l.csv", "l.json"):
        (reason,) = [r["reason"] for r in _ingest(tmp_path / name).rejects]
        assert reason.startswith(f"{name}:1: invalid UTF-8 ") and reason.endswith(
            ": re-encode the file as UTF-8 (Latin-1 or Windows-1252 text: `iconv -f WINDOWS-1252 -t UTF-8`)"), reason


def test_a_gzip_file_named_in_capitals_is_read(tmp_path):
    """``x.JSONL.GZ`` failed the source: "unknown file type '.gz'; expected ... (optionally .gz ...)"."""
    import gzip

    (tmp_path / "x.JSONL.GZ").write_bytes(gzip.compress(b'{"id": 1, "text": "hi"}\n'))
    assert [r["messages"][0]["content"] for r in _ingest(tmp_path / "x.JSONL.GZ").rows["prompts"]] == ["hi"]


def test_a_csv_separated_by_semicolons_or_tabs_is_one_reject_saying_so(tmp_path):
    """Excel in many locales writes ';': each row was a "missing field 'text'" reject, none saying why."""
    for name, sep in (("semi.csv", ";"), ("tab.csv", "\t"), ("pipe.csv", "|")):
        (tmp_path / name).write_text(f"id{sep}text\n1{sep}hello\n2{sep}world\n")
        assert [r["reason"] for r in _ingest(tmp_path / name).rejects] == [
            f"{name}:1: the header row is one column holding {sep!r}: the file is separated by {sep!r}, not by commas; "
            "none of it is read: save it as comma-separated CSV" + (", or name it .tsv (tab-separated)" if sep == "\t"
                                                                    else "")]


def test_pretty_printed_json_named_jsonl_says_so(tmp_path):
    """Each line was an "invalid JSON: ..." reject, none saying why: the bracket lines now say what the file is."""
    (tmp_path / "p.jsonl").write_text(json.dumps([{"id": 1, "text": "hi"}, {"id": 2, "text": "yo"}], indent=2) + "\n")
    res = _ingest(tmp_path / "p.jsonl")
    assert res.metrics["rows_in"] == res.metrics["rejected"] == 10  # every line, each a reject
    hint = ("is JSON written over several lines (pretty-printed), not JSON lines: write one record per line (`jq -c "
            "'.[]'` for an array, `jq -c .` for objects one after another), or name the file .json if it holds one array")
    hinted = [r["reason"] for r in res.rejects if r["reason"].endswith(hint)]
    assert [int(r.split(":")[1]) for r in hinted] == [1, 2, 5, 6, 9, 10]  # the lines that are only a bracket
    assert hinted[0] == f"p.jsonl:1: invalid JSON: Expecting value at column 2; a line that is only '[' {hint}"
    (tmp_path / "ok.jsonl").write_text('{\n{"id": 1, "text": "hi"}\n')  # a stray '{' is one reject, the record read
    assert [r["messages"][0]["content"] for r in _ingest(tmp_path / "ok.jsonl").rows["prompts"]] == ["hi"]


def test_parquet_maps_and_uuids_are_read_as_the_objects_and_ids_they_hold(tmp_path):
    """A map column (Spark, DuckDB) was a list of (key, value) pairs, so ``metadata.score_chosen`` was not found and
    the scores were None; a UUID id was a reject ("id is UUID('...'), expected a string or a number")."""
    import uuid

    scores = pa.array([[("score_chosen", 8.0), ("score_rejected", 2.0)]], pa.map_(pa.string(), pa.float64()))
    pq.write_table(pa.table({"id": pa.array([uuid.UUID(int=1).bytes], pa.uuid()), "prompt": ["Q?"], "chosen": ["good"],
                             "rejected": ["bad"], "metadata": scores}), tmp_path / "uf.parquet")
    (pair,) = _ingest(tmp_path / "uf.parquet", "ultrafeedback", "pairs").rows["pairs"]
    assert (pair["score_chosen"], pair["score_rejected"]) == (8.0, 2.0)
    assert json.loads(pair["lineage"])["origin_id"] == "00000000-0000-0000-0000-000000000001"
    twice = pa.array([[("score_chosen", 8.0), ("score_chosen", 1.0)]], pa.map_(pa.string(), pa.float64()))
    pq.write_table(pa.table({"prompt": ["Q?"], "chosen": ["good"], "rejected": ["bad"], "metadata": twice}),
                   tmp_path / "twice.parquet")
    assert [r["reason"] for r in _ingest(tmp_path / "twice.parquet", "ultrafeedback", "pairs").rejects] == [
        "twice.parquet:1: column 'metadata' holds a map that names the key 'score_chosen' twice (a record would keep "
        "one of them): give each key once"]


def test_a_map_nested_in_a_list_of_structs_is_a_dict_and_a_batch_without_maps_reads_the_same():
    """``maps_as_pydicts`` is passed only to batches that hold a map (pyarrow's path with it is 7x slower for every
    column: bench/stage_ab.py --parquet): a map at any depth is still the object it holds."""
    from pipeline.encodings import batch_rows

    nested = pa.array([[{"role": "user", "meta": [("k", "v")]}]],
                      pa.list_(pa.struct([("role", pa.string()), ("meta", pa.map_(pa.string(), pa.string()))])))
    batch = pa.record_batch({"id": [1], "messages": nested})
    assert list(batch_rows(batch)) == [({"id": 1, "messages": [{"role": "user", "meta": {"k": "v"}}]}, None)]
    plain = pa.record_batch({"id": [1], "messages": pa.array([[{"role": "user"}]])})
    assert list(batch_rows(plain)) == [({"id": 1, "messages": [{"role": "user"}]}, None)]


def test_a_null_required_field_says_it_is_null_not_missing(tmp_path):
    pq.write_table(pa.table({"id": ["a", "b"], "text": pa.array(["x", None])}), tmp_path / "d.parquet")
    assert [r["reason"] for r in _ingest(tmp_path / "d.parquet", "documents", "documents").rejects] == [
        "d.parquet:2: field 'text' is null: the record has no 'text' or 'body' or 'content' or 'selftext'"]


def test_a_held_out_set_whose_prompt_is_not_messages_is_one_line_not_a_traceback(tmp_path):
    """A prompt column of plain strings was a polars InvalidOperationError and its traceback."""
    from pipeline.decontam import ReleaseInputError, load_held_out

    (tmp_path / "set").mkdir()
    pq.write_table(pa.table({"prompt": ["What is up?"]}), tmp_path / "set" / "part-00000-of-00001.parquet")
    with pytest.raises(ReleaseInputError) as err:
        load_held_out(["set"], tmp_path)
    assert str(err.value) == ("set: column 'prompt' is string, expected a list of {role, content} messages; "
                              "export.held_out takes pairs, joint pairs or prompts shard sets")
    messages = pa.array([[{"role": "user", "content": "What is up?"}]], pa.large_list(pa.struct(
        [("role", pa.large_string()), ("content", pa.large_string())])))
    pq.write_table(pa.table({"prompt": messages}), tmp_path / "set" / "part-00000-of-00001.parquet")
    assert load_held_out(["set"], tmp_path)[1] == {"set": {"rows": 1, "prompts": 1}}


def test_a_json_file_holding_one_record_with_a_data_list_is_that_record(tmp_path):
    """The record's ``data`` list was taken for the file's records: two "record is int" rejects, the record lost."""
    (tmp_path / "one.json").write_text(json.dumps({"id": 1, "text": "hello", "data": [1, 2]}))
    (tmp_path / "wrapped.json").write_text(json.dumps({"version": "1", "data": [{"id": 1, "text": "hello"}]}))
    for name in ("one.json", "wrapped.json"):
        res = _ingest(tmp_path / name)
        assert res.rejects == [] and [r["messages"][0]["content"] for r in res.rows["prompts"]] == ["hello"], name


def test_a_data_wrapper_with_a_null_among_its_records_keeps_the_records(tmp_path):
    """``{"data": [rec, rec, null]}`` was taken for one record (its list is not all records): both records lost
    under one "missing field 'text'" reject, where the null alone is a reject."""
    (tmp_path / "w.json").write_text(json.dumps({"data": [{"id": 1, "text": "hello"}, {"id": 2, "text": "world"}, None]}))
    res = _ingest(tmp_path / "w.json")
    assert [r["messages"][0]["content"] for r in res.rows["prompts"]] == ["hello", "world"]
    assert [r["reason"] for r in res.rejects] == ["w.json:3: record is NoneType, expected a JSON object"]


def test_a_glob_that_matches_a_folder_but_not_its_files_fails_naming_the_file(tmp_path):
    """``logs/*`` matched ``logs/2024/`` and read none of its files, without a word."""
    from pipeline.io import SourceError
    from pipeline.readers import expand_paths

    (tmp_path / "logs" / "2024").mkdir(parents=True)
    for name in ("logs/a.jsonl", "logs/2024/b.jsonl", "logs/2024/_card.json"):
        (tmp_path / name).write_text('{"id": 1, "text": "a"}\n')
    (tmp_path / "logs" / "2024" / "README.md").write_text("not data")
    with pytest.raises(SourceError) as err:
        expand_paths(str(tmp_path / "logs" / "*"))
    assert str(err.value) == (f"{tmp_path}/logs/*: the glob matches the folder {tmp_path}/logs/2024 but not "
                              f"{tmp_path}/logs/2024/b.jsonl in it, which would be left out; match the files below it "
                              f"too (e.g. {tmp_path}/logs/**/*.jsonl) or point the path at the folder")
    assert expand_paths(str(tmp_path / "logs" / "**" / "*.jsonl")) == [tmp_path / "logs/2024/b.jsonl",
                                                                         tmp_path / "logs/a.jsonl"]
    assert expand_paths(str(tmp_path / "logs" / "*.jsonl")) == [tmp_path / "logs/a.jsonl"]


def test_messages_held_as_text_in_a_csv_cell_say_how_to_write_them(tmp_path):
    """Was "conversation is str, expected a list of messages": true, but not what to do."""
    (tmp_path / "c.csv").write_text('id,conversation\n1,"[{""role"": ""user"", ""content"": ""hi""}]"\n')
    assert [r["reason"] for r in _ingest(tmp_path / "c.csv", "wildchat", "conversations").rejects] == [
        "c.csv:1: conversation is str, expected a list of messages; it holds a list as text (a CSV cell, or JSON "
        "written into a string): write the file as JSON lines or Parquet, with the messages as a list"]


def test_an_eval_prompt_without_an_id_is_named_by_its_row_not_none(tmp_path):
    from pipeline.config import EvalSet
    from pipeline.decontam import load_eval_sets

    _jsonl(tmp_path / "q.jsonl", [{"question_id": None, "turns": ["One."]}, {"question_id": 81.0, "turns": ["Two."]},
                                  {"turns": ["Three."]}])
    evals, _ = load_eval_sets([EvalSet(name="mt", path=str(tmp_path / "q.jsonl"), text_field="turns",
                                       id_field="question_id", optional=False)])
    assert evals["eval_id"].to_list() == ["row1", "81", "row3"]


def test_a_csv_with_empty_trailing_columns_is_read(tmp_path):
    """Excel writes "id,text,," when cells right of the data were touched: the whole file was one reject ("the header
    names column(s) [''] twice")."""
    (tmp_path / "x.csv").write_text("id,text,,\n1,hello,,\n2,world,,x\n")
    res = _ingest(tmp_path / "x.csv")
    assert res.rejects == [] and [r["messages"][0]["content"] for r in res.rows["prompts"]] == ["hello", "world"]


def test_a_csv_row_with_a_trailing_field_that_is_not_empty_is_a_reject(tmp_path):
    """Empty fields past the header's columns (a trailing comma) are dropped; one holding text is not: the row is a
    reject, not a record that lost "x" without a word."""
    (tmp_path / "x.csv").write_text("id,text\n1,hello,\n2,world,,x\n")
    res = _ingest(tmp_path / "x.csv")
    assert [r["messages"][0]["content"] for r in res.rows["prompts"]] == ["hello"]
    assert [r["reason"] for r in res.rejects] == [
        "x.csv:2: the row has 4 field(s), the header names 2 column(s): quote fields that hold a comma, and give "
        "every row one field per column"]


def test_an_empty_csv_column_is_named_by_its_place_in_a_reason(tmp_path):
    """Excel's empty header names become "unnamed column N", N counted from 1 as a spreadsheet counts columns."""
    (tmp_path / "x.csv").write_bytes(b"id,text,,\n1,hello,,\n2,world,,\xff\n")
    res = _ingest(tmp_path / "x.csv")
    assert [r["reason"] for r in res.rejects] == [
        "x.csv:2: invalid UTF-8 in field 'unnamed column 4': re-encode the file as UTF-8 (Latin-1 or Windows-1252 "
        "text: `iconv -f WINDOWS-1252 -t UTF-8`)"]


def test_a_csv_header_repeated_inside_the_file_is_a_reject_not_a_record(tmp_path):
    """Two CSV files joined with ``cat``: the second header was a record, its text the word "text"."""
    (tmp_path / "j.csv").write_bytes(b"id,text\n1,hello\n\xef\xbb\xbfid,text\n2,world\n")
    res = _ingest(tmp_path / "j.csv")
    assert [r["messages"][0]["content"] for r in res.rows["prompts"]] == ["hello", "world"]
    assert [r["reason"] for r in res.rejects] == [
        "j.csv:2: the row repeats the header row (CSV files joined with `cat`?): not a record; join them without "
        "their headers (`tail -n +2`)"]


def test_a_repeated_header_with_empty_column_names_is_a_reject_too(tmp_path):
    """Excel's "id,text,," header, its file joined to another with ``cat``: the empty names were given names
    ("unnamed column 3"), so the second header no longer matched them and became a record whose text is "text"."""
    (tmp_path / "j.csv").write_text("id,text,,\n1,hello,,\nid,text,,\n2,world,,\n")
    res = _ingest(tmp_path / "j.csv")
    assert [r["messages"][0]["content"] for r in res.rows["prompts"]] == ["hello", "world"]
    assert [r["reason"].split(" (")[0] for r in res.rejects] == ["j.csv:2: the row repeats the header row"]


def test_two_json_records_on_one_line_say_so(tmp_path):
    """A JSON lines file without a final line break joined to another with ``cat``: "invalid JSON: Extra data at
    column 23", not saying why."""
    (tmp_path / "j.jsonl").write_text('{"id": 1, "text": "a"}{"id": 2, "text": "b"}\n')
    assert [r["reason"] for r in _ingest(tmp_path / "j.jsonl").rejects] == [
        "j.jsonl:1: invalid JSON: Extra data at column 23; the line holds two records (a file that did not end in a "
        "line break, joined to another with `cat`?): put each record on a line of its own"]


def test_a_parquet_decimal_id_is_the_number_it_holds(tmp_path):
    """Spark and BigQuery write big integer ids as decimal(20, 0): each row was a reject ("id is Decimal('1'),
    expected a string or a number")."""
    ids = pa.array([1, 2], pa.decimal128(20, 0))
    pq.write_table(pa.table({"id": ids, "text": ["one", "two"]}), tmp_path / "d.parquet")
    res = _ingest(tmp_path / "d.parquet")
    assert res.rejects == [] and [r["origin_id"] for r in res.rows["prompts"]] == ["1", "2"]
