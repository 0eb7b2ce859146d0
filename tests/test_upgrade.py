"""A user upgrades prefpipe (or its libraries) between a killed model stage and its rerun: the rerun never mixes
rows the old code or libraries computed with rows the new ones compute, and says in one line why it starts over."""

from __future__ import annotations

import importlib.metadata
import json
import logging

import pyarrow.parquet as pq

from pipeline import execute
from pipeline.execute import RECORD_FILE, Checkpoint, map_batches
from tests.test_execute import _counted, _execution, _input, shout


def _started_over(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "starting the step over" in r.getMessage()]


def test_checkpoints_written_before_a_library_upgrade_are_not_reused(tmp_path, monkeypatch, caplog):
    # pip install -U moved torch between the killed run and its resume: rows scored by the old torch used to be
    # reused beside rows scored by the new one (the fingerprint held the code, not the libraries).
    ck = Checkpoint(tmp_path / "ck", fingerprint="params")
    map_batches(_input(), shout, execution=_execution(), checkpoint=ck)
    assert json.loads((tmp_path / "ck" / RECORD_FILE).read_text())["libraries"]["torch"] == importlib.metadata.version("torch")

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "99.0" if name == "torch" else real(name))
    # A new process after the upgrade (the uncached function: the cached one keeps the real versions).
    monkeypatch.setattr(execute, "_library_versions", execute._library_versions.__wrapped__)
    calls = []
    with caplog.at_level(logging.WARNING, logger="pipeline.execute"):
        out = map_batches(_input(), _counted(calls), execution=_execution(), checkpoint=ck)
    assert sum(calls) == 53 and out.equals(map_batches(_input(), shout, execution=_execution()))
    said = _started_over(caplog)
    assert len(said) == 1 and f"torch {real('torch')} -> 99.0" in said[0] and str(tmp_path / "ck") in said[0], said

    calls.clear()  # the same libraries again: resumed
    map_batches(_input(), _counted(calls), execution=_execution(), checkpoint=ck)
    assert calls == []


def test_checkpoints_written_by_other_code_are_dropped_with_one_line_saying_so(tmp_path, monkeypatch, caplog):
    ck = Checkpoint(tmp_path / "ck", fingerprint="params")
    map_batches(_input(), shout, execution=_execution(), checkpoint=ck)
    monkeypatch.setattr(execute, "_code_version", lambda *dirs: "code of the new version")
    calls = []
    with caplog.at_level(logging.WARNING, logger="pipeline.execute"):
        map_batches(_input(), _counted(calls), execution=_execution(), checkpoint=ck)
    said = _started_over(caplog)
    assert sum(calls) == 53 and len(said) == 1 and "the code (prefpipe upgraded" in said[0], said


def test_checkpoints_of_a_prefpipe_that_kept_no_record_are_dropped_with_one_line_saying_so(tmp_path, caplog):
    # What an older prefpipe left: chunk files named by its own fingerprint and a model.json (no written_by.json).
    # They were dropped without a word, so a user who upgraded mid-run saw hours of model calls redone unexplained.
    folder = tmp_path / "ck"
    folder.mkdir()
    for start, end in ((0, 21), (21, 42)):
        pq.write_table(shout(_input().slice(start, end - start)), folder / f"chunk-{start:012d}-{end:012d}-0123456789abcdef.parquet")
    (folder / "model.json").write_text(json.dumps({"model": "tiny", "identity": "tiny:0"}))
    calls = []
    with caplog.at_level(logging.WARNING, logger="pipeline.execute"):
        out = map_batches(_input(), _counted(calls), execution=_execution(), checkpoint=Checkpoint(folder, "params"))
    assert sum(calls) == 53 and out.equals(map_batches(_input(), shout, execution=_execution()))
    said = _started_over(caplog)
    assert len(said) == 1 and "written by an older prefpipe" in said[0] and str(folder) in said[0], said
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("chunk-")) == [RECORD_FILE]


def test_a_params_change_alone_starts_over_without_a_warning(tmp_path, caplog):
    map_batches(_input(), shout, execution=_execution(), checkpoint=Checkpoint(tmp_path / "ck", "params"))
    with caplog.at_level(logging.WARNING, logger="pipeline.execute"):
        map_batches(_input(), shout, execution=_execution(), checkpoint=Checkpoint(tmp_path / "ck", "other params"))
    assert _started_over(caplog) == []
