"""A swap killed halfway whose swapped-in outputs something else replaced before the stage ran again (``dvc checkout``,
or ``dvc repro`` restoring the stage from DVC's run cache: "Stage 'pugc' is cached - skipping run, checking out
outputs", which leaves the stage's hidden ``.commit.json`` and ``.staging/`` where they were). Found by
bench/killfuzz.py on the samples DAG: PUGC killed under `dvc repro -f -s pugc` after its `pairs` was swapped in,
then `dvc repro`: the run cache put the whole old version back, and the journal stayed."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from pipeline import outputs as po
from pipeline.outputs import pending_commits, recover, stage_outputs
from tests.output_sets import Killed, snapshot, write_set

OLD = {"metrics.json": b'{"run": "old"}', "pairs/_manifest.json": b'{"sha256": "pairs old"}',
       "pairs/part-0.parquet": b"pairs old", "rejects/_manifest.json": b'{"sha256": "rejects old"}',
       "rejects/part-0.parquet": b"rejects old"}


def write_sets(out: Path, tag: str) -> None:
    """A stage's two shard sets (each with its ``_manifest.json``, which holds its shards' sha256) and metrics."""
    write_set(out, tag)
    for name in ("pairs", "rejects"):
        (out / name / "_manifest.json").write_text(json.dumps({"sha256": f"{name} {tag}"}))


def swap_killed_after(out: Path, renames: int, monkeypatch) -> None:
    """Write version old into ``out``, then version new, killed before the swap's rename number ``renames + 1``."""
    with stage_outputs(out) as staged:
        write_sets(staged, "old")
    real, done = os.rename, []

    def dies(src, dst):
        if len(done) == renames:
            raise Killed
        done.append(dst)
        real(src, dst)

    monkeypatch.setattr(po.os, "rename", dies)
    with pytest.raises(Killed):
        with stage_outputs(out) as staged:
            write_sets(staged, "new")
    monkeypatch.setattr(po.os, "rename", real)


@pytest.fixture
def killed_mid_swap(tmp_path, monkeypatch) -> Path:
    """data/pugc with version old, then a run of version new killed after its `pairs` was swapped in (the journal
    written, `rejects` and the metrics still staged), then every output put back as DVC checks one out: a copy."""
    out, kept = tmp_path / "data" / "pugc", tmp_path / "cache"
    swap_killed_after(out, 2, monkeypatch)  # pairs -> .backup/pairs, .staging/pairs -> pairs: then killed
    write_sets(kept, "old")  # what DVC's cache holds
    assert (out / po.JOURNAL).exists() and snapshot(out / "pairs")["part-0.parquet"] == b"pairs new"
    for name in ("pairs", "rejects", "metrics.json"):  # `dvc checkout`: the old version, whole, in new files
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink(missing_ok=True)
        (shutil.copytree if (kept / name).is_dir() else shutil.copy2)(kept / name, out / name)
    return out


def visible(folder: Path) -> dict[str, bytes]:
    return {k: v for k, v in snapshot(folder).items() if not k.startswith(".")}


def test_a_journal_whose_swapped_in_outputs_were_put_back_is_not_rolled_forward_over_them(killed_mid_swap, caplog):
    out = killed_mid_swap
    assert visible(out) == OLD  # what DVC put back: whole
    with caplog.at_level(logging.WARNING):
        recover(out)  # the stage's next start: it used to swap the killed run's `rejects` and metrics in over them
    assert visible(out) == OLD, "the old pairs with the killed run's rejects and metrics: a mix, and no journal left"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "pairs", "rejects"]
    assert "pairs has been replaced or removed since" in caplog.text


def test_other_stages_are_not_refused_for_a_journal_whose_outputs_were_put_back(killed_mid_swap):
    # `dvc repro` restored pugc from its run cache and does not run it, so "run that stage again first (`prefpipe
    # run pugc` or `dvc repro`)" sent the user round in a circle
    assert pending_commits(killed_mid_swap.parent / "dove") == []


def test_a_swap_killed_between_the_renames_of_an_entry_still_gets_that_entry_back(tmp_path, monkeypatch):
    out = tmp_path / "stage"
    swap_killed_after(out, 3, monkeypatch)  # pairs swapped; rejects moved to the backup, its new one not yet in place
    shutil.rmtree(out / "pairs")  # `dvc repro` removes a stage's outputs before it runs the command
    recover(out)
    assert snapshot(out) == {k: v for k, v in OLD.items() if not k.startswith("pairs")}


def test_other_stages_are_not_refused_once_the_run_cache_put_back_the_version_the_swap_was_making(tmp_path, monkeypatch):
    """`dvc repro` after PUGC was killed mid-swap restored that same run (same params, deterministic) from its run
    cache: every output is the new version, whole, but the journal stayed and curry was refused, its message
    sending the user to `dvc repro`, which skips PUGC again (seen in the samples DAG)."""
    out = tmp_path / "data" / "pugc"
    swap_killed_after(out, 2, monkeypatch)
    for name in ("rejects", "metrics.json"):  # DVC checks the new version out: the entries not yet swapped in too
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
        (shutil.copytree if (out / po.STAGING / name).is_dir() else shutil.copy2)(out / po.STAGING / name, out / name)
    assert pending_commits(tmp_path / "data" / "curry") == []
    recover(out)
    assert visible(out) == {k: v.replace(b"old", b"new") for k, v in OLD.items()}
