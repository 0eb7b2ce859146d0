"""The ingest stage: samples end to end, bad input quarantined and counted, threshold failure, determinism."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import cli
from pipeline.config import Params
from pipeline.io import SourceError, read_manifest, read_table, verify_shards
from stages.ingest import TABLES, IngestError, reason_key, run, top_reasons


def with_ingest(params: Params, sources: list[dict], max_reject_fraction: float = 1.0,
                max_record_bytes: int | None = None) -> Params:
    """``params`` reading ``sources``; ``max_record_bytes`` is params' own (the shipped limit) unless given."""
    data = params.model_dump()
    data["ingest"] = {"sources": [{"mapping": {}, "limit": None, **s} for s in sources],
                      "max_reject_fraction": max_reject_fraction,
                      "max_record_bytes": max_record_bytes or params.ingest.max_record_bytes}
    return Params.model_validate(data)


@pytest.fixture
def at_root(root, monkeypatch):
    monkeypatch.chdir(root)  # sample source paths in params.yaml are relative to the project root
    return root


def test_samples_build_every_table(params, at_root, tmp_path):
    metrics = run(params, tmp_path / "ingest")
    totals = metrics["totals"]
    assert {k: totals[k] for k in TABLES} == {"conversations": 44, "documents": 30, "prompts": 40,
                                              "responses": 40, "pairs": 10}
    assert totals["rows_in"] == totals["accepted"] == 124 and totals["rejected"] == 0
    for table in (*TABLES, "rejects"):
        assert verify_shards(tmp_path / "ingest" / table) == []
    assert read_table(tmp_path / "ingest" / "rejects", "rejects").num_rows == 0
    convs = read_table(tmp_path / "ingest" / "conversations", "conversations").to_pylist()
    assert sum("toxic" in c["flags"] for c in convs) == 1 and sum("redacted" in c["flags"] for c in convs) == 1
    assert {c["language"] for c in convs} == {"English", "Spanish", "French"}
    assert sum(len(c["messages"]) >= 6 for c in convs) >= 30  # most have three user turns
    assert json.loads((tmp_path / "ingest" / "details.json").read_text()) == metrics
    t = metrics["totals"]
    assert json.loads((tmp_path / "ingest" / "metrics.json").read_text()) == {"rows_in": t["rows_in"], "rejected": 0}
    # rated: one prompt per rated record, its 4 responses joined on prompt_id, scorer = the source name
    prompts = read_table(tmp_path / "ingest" / "prompts", "prompts").to_pylist()
    responses = read_table(tmp_path / "ingest" / "responses", "responses").to_pylist()
    rated_ids = {p["prompt_id"] for p in prompts if p["source"] == "sample_rated"}
    assert len(rated_ids) == 10 and {r["prompt_id"] for r in responses} == rated_ids
    assert {r["scorer"] for r in responses} == {"sample_rated"}


def test_same_input_gives_byte_identical_output(params, at_root, tmp_path):
    run(params, tmp_path / "a")
    run(params, tmp_path / "b")
    for table in (*TABLES, "rejects"):
        files_a = sorted(p.name for p in (tmp_path / "a" / table).iterdir())
        assert files_a == sorted(p.name for p in (tmp_path / "b" / table).iterdir())
        for name in files_a:
            assert (tmp_path / "a" / table / name).read_bytes() == (tmp_path / "b" / table / name).read_bytes()


def test_spilling_to_disk_changes_no_byte(params, at_root, tmp_path):
    """A tiny spill_bytes forces every table through sorted runs and the k-way merge."""
    run(params, tmp_path / "memory")
    data = params.model_dump()
    data["execution"]["spill_bytes"] = 1
    run(Params.model_validate(data), tmp_path / "spilled")
    for table in (*TABLES, "rejects", "metrics.json", "details.json"):
        a, b = tmp_path / "memory" / table, tmp_path / "spilled" / table
        files = sorted(p.name for p in a.iterdir()) if a.is_dir() else [""]
        for name in files:
            assert (a / name).read_bytes() == (b / name).read_bytes(), (table, name)


def _bad_chats(path: Path) -> dict[int, str]:
    """A file of one good and many bad lines; returns line number -> expected reason fragment."""
    good = {"conversation_id": "ok", "conversation": [{"role": "user", "content": "hi"},
                                                      {"role": "assistant", "content": "hello"}]}
    lines: list[bytes] = [
        json.dumps(good).encode(),
        b'{"conversation_id": "t", "conversation": [{"role": "user", "content": "cut off',
        json.dumps({"conversation_id": "w", "conversation": "not a list"}).encode(),
        json.dumps({"conversation_id": "w2", "conversation": [{"role": "user", "content": 42}]}).encode(),
        json.dumps({"conversation_id": "e", "conversation": []}).encode(),
        json.dumps({"conversation_id": "m"}).encode(),
        json.dumps({"conversation_id": "o", "conversation": [{"role": "assistant", "content": "a"},
                                                            {"role": "user", "content": "q"}]}).encode(),
        b'{"conversation_id": "u", "conversation": [{"role": "user", "content": "caf\xe9"}]}',
        json.dumps({"conversation_id": "big", "conversation": [{"role": "user", "content": "x" * 5000}]}).encode(),
        b"[1, 2, 3]",
        b"",  # blank lines are not records
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return {
        2: "invalid JSON",
        3: "conversation is str, expected a list of messages",
        4: "conversation[0].content is int, expected a string",
        5: "conversation is empty",
        6: "missing field 'messages' or 'conversation'",
        7: "roles out of order at message 0",
        8: "invalid UTF-8",
        9: "over max_record_bytes=2000",
        10: "record is list, expected a JSON object",
    }


def test_bad_input_is_quarantined_and_counted(params, tmp_path):
    expected = _bad_chats(tmp_path / "bad.jsonl")
    p = with_ingest(params, [{"name": "bad_chats", "kind": "conversations", "path": str(tmp_path / "bad.jsonl"),
                              "format": "wildchat"}], max_reject_fraction=1.0, max_record_bytes=2000)
    metrics = run(p, tmp_path / "out")
    m = metrics["sources"]["bad_chats"]
    assert (m["rows_in"], m["accepted"], m["rejected"]) == (10, 1, 9)
    rejects = read_table(tmp_path / "out" / "rejects", "rejects").to_pylist()
    assert [r["row"] for r in rejects] == sorted(expected)
    for r in rejects:
        assert r["source"] == "bad_chats"
        assert r["reason"].startswith(f"bad.jsonl:{r['row']}: ")
        assert expected[r["row"]] in r["reason"], r["reason"]
    assert read_table(tmp_path / "out" / "conversations", "conversations").num_rows == 1
    assert sum(n for _, n in m["top_reasons"]) <= 9 and m["top_reasons"]


def test_a_record_no_rule_foresaw_is_a_reject_naming_the_exception(params, tmp_path, monkeypatch):
    """An adapter that raises something other than BadRecord (a shape no rule foresaw) rejects that record,
    naming the exception, and the stage goes on: the record is counted and listed, never silently skipped."""
    import stages.ingest_read as ingest_read

    chat = [{"role": "user", "content": "Hi there, how are you?"}, {"role": "assistant", "content": "Fine, thanks."}]
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps({"conversation_id": f"c{i}", "conversation": chat}) + "\n"
                                                  for i in range(3)))
    real_adapt = ingest_read.adapt

    def adapt(value, ctx):
        if value["conversation_id"] == "c1":
            raise KeyError("surprise")
        return real_adapt(value, ctx)

    monkeypatch.setattr(ingest_read, "adapt", adapt)
    p = with_ingest(params, [{"name": "chats", "kind": "conversations", "path": str(tmp_path / "chats.jsonl"),
                              "format": "wildchat"}])
    m = run(p, tmp_path / "out")["sources"]["chats"]
    assert (m["rows_in"], m["accepted"], m["rejected"]) == (3, 2, 1)
    rejects = read_table(tmp_path / "out" / "rejects", "rejects").to_pylist()
    assert [(r["row"], r["reason"]) for r in rejects] == [
        (2, "chats.jsonl:2: unexpected record shape (KeyError: 'surprise')")]
    assert read_table(tmp_path / "out" / "conversations", "conversations").num_rows == 2


def test_too_many_rejects_fail_naming_the_source(params, tmp_path):
    _bad_chats(tmp_path / "bad.jsonl")
    p = with_ingest(params, [{"name": "bad_chats", "kind": "conversations", "path": str(tmp_path / "bad.jsonl"),
                              "format": "wildchat"}], max_reject_fraction=0.5, max_record_bytes=2000)
    with pytest.raises(IngestError) as err:
        run(p, tmp_path / "out")
    msg = str(err.value)
    assert "source 'bad_chats': 9 of 10 rows rejected" in msg
    assert "max_reject_fraction=0.5" in msg and "invalid JSON" in msg
    # What went wrong is on disk for inspection, where the message says (it named metrics.json, which holds
    # only the totals, and data/ingest whatever the output folder)
    assert f"(see {tmp_path / 'out' / 'rejects'} and {tmp_path / 'out' / 'details.json'}):" in msg
    assert read_table(tmp_path / "out" / "rejects", "rejects").num_rows == 9
    assert json.loads((tmp_path / "out" / "details.json").read_text())["sources"]["bad_chats"]["rejected"] == 9


def test_missing_source_fails_before_any_work(params, tmp_path):
    p = with_ingest(params, [{"name": "gone", "kind": "prompts", "path": str(tmp_path / "nope.jsonl"),
                              "format": "prompts"}])
    with pytest.raises(SourceError, match="nope.jsonl: no such file"):
        run(p, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_duplicates_and_orphans(params, tmp_path):
    (tmp_path / "answers").mkdir()
    ans = {"uid": "q1", "model": "m1", "messages": [{"role": "user", "content": "Q?"},
                                                    {"role": "assistant", "content": {"answer": "A1"}}]}
    clash = {**ans, "model": "m2", "messages": [{"role": "user", "content": "Another question"},
                                                {"role": "assistant", "content": {"answer": "A2"}}]}
    (tmp_path / "answers" / "m1.jsonl").write_text(json.dumps(ans) + "\n")
    (tmp_path / "answers" / "m2.jsonl").write_text(json.dumps({**ans, "model": "m2"}) + "\n" + json.dumps(clash) + "\n")
    xml = ('<?xml version="1.0" encoding="utf-8"?>\n<posts>\n'
           '  <row Id="1" PostTypeId="1" Score="3" Title="Grind?" Body="&lt;p&gt;How fine?&lt;/p&gt;" />\n'
           '  <row Id="2" PostTypeId="2" ParentId="1" Score="5" Body="&lt;p&gt;Medium.&lt;/p&gt;" />\n'
           '  <row Id="3" PostTypeId="2" ParentId="99" Score="1" Body="&lt;p&gt;Orphan.&lt;/p&gt;" />\n</posts>\n')
    (tmp_path / "Posts.xml").write_text(xml)
    p = with_ingest(params, [
        {"name": "arena", "kind": "rated", "path": str(tmp_path / "answers"), "format": "arena_answers"},
        {"name": "se", "kind": "rated", "path": str(tmp_path / "Posts.xml"), "format": "stackexchange"},
    ])
    metrics = run(p, tmp_path / "out")
    arena, se = metrics["sources"]["arena"], metrics["sources"]["se"]
    assert (arena["rows_in"], arena["accepted"], arena["rejected"]) == (3, 2, 1)
    assert arena["skipped"] == {"prompts row identical to an earlier one": 1}
    assert (se["rows_in"], se["accepted"], se["rejected"]) == (3, 2, 1)
    rejects = {r["source"]: r for r in read_table(tmp_path / "out" / "rejects", "rejects").to_pylist()}
    assert rejects["arena"]["row"] == 3 and "m2.jsonl:2: duplicate: prompts id" in rejects["arena"]["reason"]
    assert rejects["se"]["row"] == 3 and "response to a prompt this source does not accept" in rejects["se"]["reason"]
    responses = read_table(tmp_path / "out" / "responses", "responses").to_pylist()
    assert sorted((r["generator"], r["text"]) for r in responses) == [("human", "Medium."), ("m1", "A1"), ("m2", "A1")]


def test_limit_reads_only_the_first_rows(params, at_root, tmp_path):
    p = with_ingest(params, [{"name": "few", "kind": "prompts", "path": "data/samples/prompts.jsonl",
                              "format": "prompts", "limit": 7}])
    assert run(p, tmp_path / "out")["sources"]["few"]["rows_in"] == 7


def test_reason_key_groups_alike_reasons():
    assert reason_key("a/b.jsonl:7: invalid JSON: Expecting value at column 12") == "invalid JSON: Expecting value at column N"


def test_inspect_an_ingest_output(params, at_root, tmp_path, capsys):
    run(params, tmp_path / "ingest")
    assert cli.main(["inspect", str(tmp_path / "ingest" / "conversations"), "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert "rows:   44" in out and "files:  1" in out
    assert "messages: list<element: struct<role: string not null, content: string not null>> not null" in out
    assert '"table": "conversations"' in out
    assert out.count('"conversation_id"') == 2
    manifest = read_manifest(tmp_path / "ingest" / "conversations")
    assert manifest["rows"] == pq.read_table(tmp_path / "ingest" / "conversations").num_rows == 44


def test_oversized_records_are_caught_in_every_file_type(params, tmp_path):
    (tmp_path / "arr.json").write_text(json.dumps([{"id": "a", "text": "short"}, {"id": "b", "text": "y" * 3000}]))
    p = with_ingest(params, [{"name": "arr", "kind": "documents", "path": str(tmp_path / "arr.json"),
                              "format": "documents"}], max_record_bytes=1000)
    metrics = run(p, tmp_path / "out")
    assert (metrics["sources"]["arr"]["accepted"], metrics["sources"]["arr"]["rejected"]) == (1, 1)
    assert metrics["sources"]["arr"]["top_reasons"] == [["record is over max_record_bytes=N; raise ingest.max_record_bytes to keep it", 1]]


def test_guard_changes_leave_the_tables_byte_identical(params, at_root, tmp_path):
    """max_reject_fraction and max_record_bytes only quarantine or fail: the data tables keep their bytes."""
    run(params, tmp_path / "a")
    data = params.model_dump()
    data["ingest"]["max_record_bytes"] += 1
    data["ingest"]["max_reject_fraction"] = 0.9
    run(Params.model_validate(data), tmp_path / "b")
    for table in TABLES:
        assert read_manifest(tmp_path / "a" / table) == read_manifest(tmp_path / "b" / table)
    data["ingest"]["sources"][1]["limit"] = 5  # a source change is a different fingerprint
    run(Params.model_validate(data), tmp_path / "c")
    assert read_manifest(tmp_path / "c" / "documents")["fingerprint"] != read_manifest(tmp_path / "a" / "documents")["fingerprint"]


def test_cli_reports_a_failing_source_without_a_traceback(params, root, tmp_path, monkeypatch, capsys):
    _bad_chats(tmp_path / "bad.jsonl")
    # the sample sources stay (other stages name them: load_params checks every name), read from the checkout
    samples = [{**s.model_dump(mode="json"), "path": str(root / s.path)} for s in params.ingest.sources]
    p = with_ingest(params, [*samples, {"name": "bad_chats", "kind": "conversations", "path": "bad.jsonl",
                                        "format": "wildchat"}], max_reject_fraction=0.1, max_record_bytes=2000)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p.model_dump(mode="json")))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "ingest"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("prefpipe: ingest: 1 source rejected more than max_reject_fraction=0.1")
    assert "source 'bad_chats': 9 of 10 rows rejected" in err and "Traceback" not in err
    assert (tmp_path / "data" / "ingest" / "rejects" / "_manifest.json").exists()


def test_an_empty_input_file_is_warned_about_and_listed(params, tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jsonl").write_text(json.dumps({"id": "p1", "prompt": "Hi?"}) + "\n")
    (tmp_path / "src" / "b.jsonl").write_text("")
    (tmp_path / "src" / "c.jsonl").write_text("\n  \n")
    (tmp_path / "src" / "d.parquet").write_bytes(b"")  # was a reject, "not a readable Parquet file", of no record
    p = with_ingest(params, [{"name": "some", "kind": "prompts", "path": str(tmp_path / "src"), "format": "prompts"}])
    metrics = run(p, tmp_path / "out")
    assert metrics["sources"]["some"]["empty_files"] == ["b.jsonl", "c.jsonl", "d.parquet"]
    assert metrics["sources"]["some"]["rows_in"] == 1
    # one console line, the stage named once (a log record under the CLI's format read "stages.ingest: ingest: ...")
    assert "WARNING ingest: source 'some': b.jsonl holds no records (an empty file?)\n" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "details.json").read_text())["sources"]["some"]["empty_files"] == [
        "b.jsonl", "c.jsonl", "d.parquet"]


def test_a_missing_source_path_names_the_params_key(params, at_root, tmp_path):
    p = with_ingest(params, [{"name": "ok", "kind": "prompts", "path": "data/samples/prompts.jsonl", "format": "prompts"},
                             {"name": "gone", "kind": "prompts", "path": str(tmp_path / "nope.jsonl"), "format": "prompts"}])
    with pytest.raises(SourceError, match=r"^ingest\.sources\[1\]\.path: .*nope\.jsonl: no such file"):
        run(p, tmp_path / "out")


def test_an_unreachable_hub_source_fails_at_once_in_one_line(root, tmp_path):
    """No network (HF_HUB_OFFLINE unset): one request, one line, no minutes of retries (was 23 warnings in 27 s)."""
    import os
    import subprocess
    import sys

    data = yaml.safe_load((root / "params.yaml").read_text())
    data["ingest"]["sources"][0]["path"] = "hf://prefpipe-tests/no-such-set:train"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", PYTHONPATH=str(root))  # nothing listens on port 9
    code = ("import sys; from pipeline import cli; rc = cli.main(['run', 'ingest']);"
            "from pipeline.readers import iter_records\n"
            "try: list(iter_records('hf://prefpipe-tests/no-such-set:train'))\n"
            "except Exception as e: print(type(e).__name__, e, file=sys.stderr)\n"
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and "Retrying" not in proc.stderr, proc.stderr
    assert lines[0].startswith("prefpipe: ingest.sources[0].path: hf://prefpipe-tests/no-such-set:train: "
                               "the Hugging Face Hub cannot be reached (")
    assert lines[1].startswith("SourceError hf://prefpipe-tests/no-such-set:train: the Hugging Face Hub cannot be reached")


def test_a_hub_set_missing_from_the_offline_cache_names_its_params_key(params, root, tmp_path, monkeypatch):
    """With HF_HUB_OFFLINE=1 the reachability check is skipped and the read itself fails: that line named
    the set but not the key (`ingest.sources[1].path`) the check before any work names."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p = with_ingest(params, [{"name": "ok", "kind": "documents", "path": str(root / "data/samples/posts.jsonl"),
                              "format": "documents"},
                             {"name": "hub", "kind": "documents", "path": "hf://prefpipe-tests/no-such-set:train",
                              "format": "documents"}])
    with pytest.raises(SourceError) as err:
        run(p, tmp_path / "out")
    assert str(err.value).startswith("ingest.sources[1].path: hf://prefpipe-tests/no-such-set:train: could not load")


def test_a_hub_set_that_fails_to_load_names_the_login_command_huggingface_hub_installs(monkeypatch):
    """`huggingface-cli` is gone from huggingface_hub 1.0 on; the error names the `hf` command it installs."""
    import datasets

    from pipeline import hub_source
    from pipeline.readers import iter_records

    def refuse(*args, **kwargs):
        raise PermissionError("gated")

    monkeypatch.setattr(hub_source, "check_hub", lambda dataset_id: None)
    monkeypatch.setattr(datasets, "load_dataset", refuse)
    with pytest.raises(SourceError) as e:
        next(iter_records("hf://org/gated-set:train"))
    assert "hf://org/gated-set:train: could not load" in str(e.value) and "`hf auth login`" in str(e.value)


def test_seen_rows_compare_values_not_objects_or_key_order():
    """Equal rows are duplicates whatever objects hold their strings (pickle's memo would tell a string used twice
    in one row from two equal strings) and in whatever order their fields come; other values are a clash."""
    from collections import Counter

    from pipeline.seen import SeenRows

    seen = SeenRows({"conversations": ("conversation_id",)})
    user = "user"
    first = {"conversation_id": "c1", "messages": [{"role": user, "content": "hi"}, {"role": user, "content": "x"}]}
    u = "us"
    again = {"messages": [{"role": u + "er", "content": "hi"}, {"role": u + "er", "content": "x"}], "conversation_id": "c1"}
    assert seen.admit("a.jsonl:1", {"conversations": [first]}, Counter()) is None
    skipped = Counter()
    assert seen.admit("a.jsonl:2", {"conversations": [again]}, skipped) is None
    assert dict(skipped) == {"conversations row identical to an earlier one": 1}
    other = {"conversation_id": "c1", "messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": 1}]}
    assert "different content" in seen.admit("a.jsonl:3", {"conversations": [other]}, Counter())
    # 1 and 1.0 and True are different values, as they were in the row's JSON
    seen = SeenRows({"p": ("id",)})
    assert seen.admit("f:1", {"p": [{"id": "a", "v": 1}]}, Counter()) is None
    assert "different content" in seen.admit("f:2", {"p": [{"id": "a", "v": 1.0}]}, Counter())
    assert "different content" in seen.admit("f:3", {"p": [{"id": "a", "v": True}]}, Counter())


def test_a_clash_names_the_earlier_row_of_a_file_whose_name_holds_colons():
    """``hf://org/name`` and Windows paths hold ':': the row number is what follows the last one."""
    from collections import Counter

    from pipeline.seen import SeenRows

    seen = SeenRows({"prompts": ("prompt_id",)})
    assert seen.admit("hf://org/set:12", {"prompts": [{"prompt_id": "p1", "text": "hi"}]}, Counter()) is None
    clash = seen.admit("C:/data/b.jsonl:3", {"prompts": [{"prompt_id": "p1", "text": "other"}]}, Counter())
    assert clash.startswith("prompts id ('p1',) already produced by hf://org/set:12 with different content")


@pytest.mark.parametrize(("path", "folder"), [
    ("data/*.jsonl", "data"), ("data/x*/y.jsonl", "data"), ("data/**/*.jsonl", "data"), ("*.jsonl", "."),
    ("a[0-9].csv", "."), ("/abs/dir?/f", "/abs"), ("a//*.jsonl", "a"), ("data/x.jsonl", "data/x.jsonl")])
def test_a_globs_folder_is_its_part_before_the_first_wildcard(path, folder):
    """One helper for ingest (the folder a glob source's file names are reported relative to) and for
    ``prefpipe run`` (the folder a dep must cover): a path with no wildcard is itself."""
    from pipeline.readers import glob_folder

    assert glob_folder(path) == folder


def test_reject_reasons_that_quote_a_value_redact_its_personal_data(params, tmp_path):
    """A reason quotes the value it rejects ("toxic is '...'"): the summary of reasons that details.json keeps
    and the failing stage prints (into CI logs, beside the shared DVC metrics) carries no e-mail or key of it,
    and two values alike but for their PII count as one reason. A long value is cut between words, so the
    cut leaves no start of an address the detectors no longer recognise."""
    email, key = "ann.lee@example.org", "sk-proj-Zq8vN3kL2mX9pR4tY7wB1cD5eF6gH0jA"
    chat = [{"role": "user", "content": "Hi there, how are you?"}, {"role": "assistant", "content": "Fine, thanks."}]
    rows = [{"conversation_id": "c1", "conversation": chat, "toxic": email},
            {"conversation_id": "c2", "conversation": chat, "toxic": "bob@example.net"},
            {"conversation_id": "c3", "conversation": chat, "model": {"key": key}},
            {"conversation_id": "c4", "conversation": chat, "toxic": "yes " * 10 + "mail carol.day@example.org"}]
    (tmp_path / "pii.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = [{"name": "pii", "kind": "conversations", "path": str(tmp_path / "pii.jsonl"), "format": "wildchat"}]
    with pytest.raises(IngestError) as failed:
        run(with_ingest(params, src, max_reject_fraction=0.2), tmp_path / "out")
    details = (tmp_path / "out" / "details.json").read_text()
    for text in (str(failed.value), details):
        assert email not in text and "bob@example.net" not in text and key not in text, text
        assert "carol" not in text, text  # the value is cut at 60 characters: never inside the address
    assert "2 x toxic is '[REDACTED_EMAIL]', expected true or false" in str(failed.value)


def test_top_reasons_merge_across_redaction_batches(monkeypatch):
    """Reasons are redacted ``REASON_BATCH`` at a time (a hostile source's million distinct reasons held ~220 MiB
    at once): reasons alike but for their PII count as one across batches, ties rank by text as before."""
    import stages.ingest as ingest

    reasons = Counter({"toxic is 'a@example.org'": 1, "b": 2, "toxic is 'b@example.net'": 1, "a": 2,
                       "toxic is 'c@example.com'": 1, "z": 1, "toxic is 'd@example.de'": 1})
    monkeypatch.setattr(ingest, "REASON_BATCH", 2)
    assert top_reasons(reasons) == [["toxic is '[REDACTED_EMAIL]'", 4], ["a", 2], ["b", 2], ["z", 1]]
