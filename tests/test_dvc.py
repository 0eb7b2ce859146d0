"""End to end: `dvc repro` on the samples builds everything; a rerun runs nothing; a param change reruns
exactly the stages that depend on it."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import dvc

pytestmark = pytest.mark.e2e


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def test_repro_builds_every_stage_output(built_repo):
    stages = yaml.safe_load((built_repo / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for out in stage.get("outs", []):
            path = next(iter(out)) if isinstance(out, dict) else out
            assert (built_repo / path).exists(), f"stage {name} did not write {path}"


def test_second_repro_runs_nothing(built_repo):
    out = dvc(built_repo, "repro").stdout
    assert _ran(out) == set(), out
    assert "up to date" in dvc(built_repo, "status").stdout.lower()


def _edit_params(repo, edit) -> str:
    params = repo / "params.yaml"
    original = params.read_text()
    data = yaml.safe_load(original)
    edit(data)
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    return original


def test_ingest_param_change_reruns_ingest(built_repo):
    original = _edit_params(built_repo, lambda d: d["ingest"]["sources"][0].update(limit=5))
    try:
        ran = _ran(dvc(built_repo, "repro").stdout)
        assert "ingest" in ran
        # Stages that do not read conversations see byte-identical inputs and stay put.
        assert not ran & {"selfie", "dove", "curry", "pugc"}, ran
    finally:
        (built_repo / "params.yaml").write_text(original)
        dvc(built_repo, "repro")


def test_stage_param_change_reruns_only_that_stage_and_its_dependents(built_repo):
    original = _edit_params(built_repo, lambda d: d["dove"].update(seed=d["dove"]["seed"] + 1))
    try:
        ran = _ran(dvc(built_repo, "repro").stdout)
        assert "dove" in ran and ran <= {"dove", "export"}, ran
    finally:
        (built_repo / "params.yaml").write_text(original)
        dvc(built_repo, "repro")
