"""A user upgrades prefpipe (or its libraries) between a killed model stage and its rerun: the rerun never mixes
rows the old code or libraries computed with rows the new ones compute, and says in one line why it starts over."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re

import pyarrow.parquet as pq
import pytest

from pipeline import execute
from pipeline.execute import RECORD_FILE, Checkpoint, map_batches
from pipeline.io import FORMAT, MANIFEST, SourceError, read_table, write_shards
from pipeline.records import to_table
from stages.export_read import ExportError
from tests.export_fixtures import build, pair, standard_methods
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


@pytest.mark.parametrize(("library", "resumes"), [("polars", True), ("pyarrow", True), ("numpy", True),
                                                    ("torch", False), ("tokenizers", False)])
def test_a_patch_release_of_a_table_library_resumes_one_of_a_model_library_starts_over(tmp_path, monkeypatch,
                                                                                      library, resumes):
    # A job that reinstalls its environment before resuming picked up a polars patch release (they come weekly)
    # and redid every model call of the step; a torch or tokenizers patch release can move scores or token ids.
    monkeypatch.setattr(execute, "_library_versions", execute._library_versions.__wrapped__)
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "7.3.1" if name == library else real(name))
    ck = Checkpoint(tmp_path / "ck", fingerprint="params")
    map_batches(_input(), shout, execution=_execution(), checkpoint=ck)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "7.3.2" if name == library else real(name))
    calls = []
    map_batches(_input(), _counted(calls), execution=_execution(), checkpoint=ck)
    assert (calls == []) is resumes, calls


def test_checkpoints_written_by_other_code_are_dropped_with_one_line_saying_so(tmp_path, monkeypatch, caplog):
    ck = Checkpoint(tmp_path / "ck", fingerprint="params")
    map_batches(_input(), shout, execution=_execution(), checkpoint=ck)
    monkeypatch.setattr(execute, "_code_version", lambda *dirs: "code of the new version")
    calls = []
    with caplog.at_level(logging.WARNING, logger="pipeline.execute"):
        map_batches(_input(), _counted(calls), execution=_execution(), checkpoint=ck)
    said = _started_over(caplog)
    assert sum(calls) == 53 and len(said) == 1 and "the code (an upgrade" in said[0], said


def test_checkpoints_of_a_prefpipe_that_kept_no_record_are_dropped_with_one_line_saying_so(tmp_path, caplog):
    # What an older prefpipe left: chunk files named by its own fingerprint and a model.json (no computed_with.json).
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
    calls = []
    with caplog.at_level(logging.WARNING, logger="pipeline.execute"):
        map_batches(_input(), _counted(calls), execution=_execution(),
                    checkpoint=Checkpoint(tmp_path / "ck", "other params"))
    assert sum(calls) == 53 and _started_over(caplog) == []  # started over, without a word


# --- outputs an older (or newer) prefpipe wrote -------------------------------------------------------------------


def _as_written_by_another(folder, **manifest_edits):
    """``folder``'s manifest edited to what another prefpipe wrote (a value None: the key absent)."""
    manifest = json.loads((folder / MANIFEST).read_text())
    for key, value in manifest_edits.items():
        manifest.pop(key) if value is None else manifest.__setitem__(key, value)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def _pairs_set(folder, **manifest_edits):
    """A method's pairs as a shard set, its manifest then edited (``_as_written_by_another``)."""
    write_shards(to_table([pair(f"p{i}", f"prompt {i}", "pugc") for i in range(3)], "pairs"), folder, name="pairs")
    return _as_written_by_another(folder, **manifest_edits)


def test_a_shard_set_an_older_prefpipe_wrote_is_refused_in_one_line_not_read_as_current(tmp_path):
    # data/curry/pairs built before the pairs' lineage named who wrote each input side (written_by): the new export
    # read it as current, and the card's terms-of-use table silently left curry's writers out.
    folder = _pairs_set(tmp_path / "curry" / "pairs", format=None)
    with pytest.raises(SourceError) as e:
        read_table(folder, "pairs")
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"{folder / MANIFEST}: written by an older prefpipe")
    assert "`dvc repro`" in line and "`prefpipe run` the stage that writes it" in line
    assert read_table(_pairs_set(tmp_path / "now"), "pairs").num_rows == 3  # this version's sets are read


def test_export_refuses_a_method_folder_an_older_prefpipe_wrote_and_keeps_the_old_release(tmp_path):
    standard_methods(tmp_path)
    build(tmp_path)
    before = (tmp_path / "data" / "release" / MANIFEST).read_bytes()
    old = _as_written_by_another(tmp_path / "data" / "curry" / "pairs" / "level=1", format=None)
    with pytest.raises(ExportError, match=f"{re.escape(str(old / MANIFEST))}: written by an older prefpipe") as e:
        build(tmp_path)
    assert "\n" not in str(e.value) and str(e.value).endswith("rerun `dvc repro curry`")
    assert (tmp_path / "data" / "release" / MANIFEST).read_bytes() == before


@pytest.mark.parametrize("got", [FORMAT - 1, True, str(FORMAT), float(FORMAT)], ids=["older", "true", "text", "float"])
def test_a_shard_set_of_any_other_recorded_format_is_refused_as_older(tmp_path, got):
    # Only this version's integer is current: the set of the format before a bump, and a hand-edited manifest whose
    # format merely equals it (true == 1, "1", 1.0), are rebuilt, never read.
    folder = _pairs_set(tmp_path / "pairs", format=got)
    with pytest.raises(SourceError, match="written by an older prefpipe .*" + re.escape(f"format {got!r}")):
        read_table(folder, "pairs")


def test_a_shard_set_a_newer_prefpipe_wrote_is_refused_in_one_line(tmp_path):
    folder = _pairs_set(tmp_path / "pairs", format=FORMAT + 1, prefpipe_version="9.0.0")
    with pytest.raises(SourceError, match=r"written by a newer prefpipe \(9\.0\.0, output format 2.*`git pull`, then `pip install -e \.`"):
        read_table(folder, "pairs")


def test_audit_refuses_a_release_an_older_prefpipe_wrote_in_one_line(tmp_path, capsys):
    from pipeline.cli import main as cli

    release = tmp_path / "release"
    _pairs_set(release / "pugc")
    (release / MANIFEST).write_text(json.dumps({"table": "release", "prefpipe_version": "0.1.0", "files": [
        {"path": "pugc/part-00000-of-00001.parquet", "rows": 3, "sha256": ""}]}))
    assert cli(["audit", str(release)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{release / MANIFEST}: written by an older prefpipe (0.1.0" in err, err


def test_publish_refuses_a_release_an_older_prefpipe_wrote_dry_run_included(tmp_path, capsys):
    """docs/hub.md: publish's manifest check refuses a release of another output format."""
    from pipeline.cli import main as cli

    standard_methods(tmp_path)
    build(tmp_path)
    release = tmp_path / "data" / "release"
    assert cli(["publish", "--repo-id", "my-org/my-prefs", "--dry-run", "--path", str(release)]) == 0
    capsys.readouterr()
    _as_written_by_another(release, format=None)
    assert cli(["publish", "--repo-id", "my-org/my-prefs", "--dry-run", "--path", str(release)]) == 1
    out, err = capsys.readouterr()
    assert not out and err.count("\n") == 1 and f"{release / MANIFEST}: written by an older prefpipe" in err, err
