"""Selfie / SPA keeps every iteration's pairs: iteration two keeps iteration one, a kept iteration from another
split, a rerun under a new split, the flat layout of earlier versions. The stage end to end:
test_selfie_stage.py."""

from __future__ import annotations

import shutil

import polars as pl
import pytest

from pipeline.io import StageError
from pipeline.records import check_table
from stages import selfie, selfie_split
from tests.selfie_fakes import (
    FakeEngine,
    _metrics,
    _out,
    _pairs,
    _project,
)

# --- every iteration's pairs are kept -----------------------------------------------------------------


def test_iteration_two_keeps_iteration_one_and_the_release_reads_both(tmp_path, monkeypatch):
    engines = {"pol": FakeEngine("pol", scale=1.0), "ref": FakeEngine("ref", scale=2.0)}
    params = _project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref")
    selfie.main(params)
    first = {p.name: p.read_bytes() for p in (tmp_path / "data/selfie/pairs/iteration=1").glob("*.parquet")}
    params = _project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref", iteration=2)
    selfie.main(params)
    root = tmp_path / "data/selfie/pairs"
    assert sorted(d.name for d in root.iterdir()) == ["iteration=1", "iteration=2", "seed"]
    assert {p.name: p.read_bytes() for p in (root / "iteration=1").glob("*.parquet")} == first  # untouched
    pairs = _pairs(tmp_path)
    assert dict(pairs.group_by("source").len().iter_rows()) == {
        "seed": 1,
        "iteration_1": 5,
        "iteration_2": 13,
    }
    assert pairs.get_column("pair_id").n_unique() == pairs.height
    assert _metrics(tmp_path)["iterations"] == {"iteration=1": 5, "iteration=2": 13}
    # the iterations' prompts are disjoint, and none is a seed or test prompt
    keys = {
        s: set(selfie_split.prompt_keys(g.to_arrow().column("prompt")))
        for (s,), g in pairs.group_by("source")
    }
    test = set(selfie_split.prompt_keys(_out(tmp_path, "test", "pairs").column("prompt")))
    assert not keys["iteration_1"] & keys["iteration_2"] and not (
        keys["iteration_1"] | keys["iteration_2"]
    ) & (keys["seed"] | test)


def test_a_kept_iteration_from_another_split_is_an_error(tmp_path, monkeypatch):
    engines = {"pol": FakeEngine("pol", scale=1.0), "ref": FakeEngine("ref", scale=2.0)}
    selfie.main(_project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref"))
    split = {"seed": 2000, "pools": [8000, 20000, 30000], "test": 1000, "shuffle_seed": 7}
    params = _project(
        tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref", iteration=2, split=split
    )
    with pytest.raises(StageError, match=r"iteration=1: \d+ of its 5 pairs have prompts outside pool_1"):
        selfie.main(params)


def test_rerunning_an_iteration_under_a_new_split_replaces_its_folder(tmp_path, monkeypatch):
    engines = {"pol": FakeEngine("pol", scale=1.0), "ref": FakeEngine("ref", scale=2.0)}
    selfie.main(_project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref"))
    split = {"seed": 2000, "pools": [8000, 20000, 30000], "test": 1000, "shuffle_seed": 7}
    selfie.main(_project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref", split=split))
    root = tmp_path / "data/selfie/pairs"
    assert sorted(d.name for d in root.iterdir()) == ["iteration=1", "seed"]
    pairs = _pairs(tmp_path)
    assert pairs.get_column("pair_id").n_unique() == pairs.height  # no stale shard of the first run is kept
    assert _metrics(tmp_path)["iterations"] == {"iteration=1": pairs.filter(pl.col("source") == "iteration_1").height}


def test_the_flat_layout_of_earlier_versions_is_moved_into_iteration_folders(tmp_path, monkeypatch):
    from pipeline.io import write_shards

    engines = {"pol": FakeEngine("pol", scale=1.0), "ref": FakeEngine("ref", scale=2.0)}
    selfie.main(_project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref"))
    root = tmp_path / "data/selfie/pairs"
    flat = _pairs(tmp_path)  # seed + iteration_1, as earlier versions wrote them: shards directly in pairs/
    for d in root.iterdir():
        shutil.rmtree(d)
    write_shards(check_table(flat.to_arrow(), "pairs"), root, name="pairs")
    selfie.main(
        _project(tmp_path, monkeypatch, engines, policy_model="pol", reference_model="ref", iteration=2)
    )
    assert sorted(p.name for p in root.iterdir()) == ["iteration=1", "iteration=2", "seed"]
    assert dict(_pairs(tmp_path).group_by("source").len().iter_rows()) == {
        "seed": 1,
        "iteration_1": 5,
        "iteration_2": 13,
    }
    assert _metrics(tmp_path)["migrated_from_flat_layout"] == [1]
