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


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_metrics_show_prints_a_few_headline_numbers_per_stage(built_repo):
    import json

    shown = json.loads(dvc(built_repo, "metrics", "show", "--json").stdout)[""]["data"]
    files = {path: _flat(v["data"]) for path, v in shown.items()}
    stages = ["ingest", "wildfeedback", "pugc", "selfie", "dove", "curry"]
    assert sorted(files) == sorted([f"data/{s}/metrics.json" for s in stages] + ["data/release/stats.json"])
    for path, numbers in files.items():
        assert "rows_in" in numbers and len(numbers) <= 10, (path, numbers)
    assert len(set().union(*files.values())) <= 25  # one narrow table, not ~300 columns
    # the model stages' gates as headline numbers; every figure, the full gate reports included, in details.json
    pairs_in_details = {"wildfeedback": lambda d: d["pairs"], "pugc": lambda d: d["pairs"]["kept"],
                        "selfie": lambda d: d["pairs"]["written"], "dove": lambda d: d["pairs_written"]}
    for stage, roles in {"wildfeedback": ["judge"], "pugc": ["query_filter", "scorer"], "selfie": ["reward"],
                         "dove": ["judge"]}.items():
        numbers = files[f"data/{stage}/metrics.json"]
        details = json.loads((built_repo / "data" / stage / "details.json").read_text())
        gates = details["gates"]
        assert sorted(k for k in numbers if k.startswith("gates.")) == [f"gates.{r}" for r in roles], (stage, numbers)
        assert all(numbers[f"gates.{r}"] == gates[r]["accuracy"] and gates[r]["lowered"] for r in roles)
        assert numbers["gates_withheld"] == 0 and numbers["gates_lowered"] == len(roles)  # tiny: gates lowered
        assert numbers["pairs"] == pairs_in_details[stage](details), stage
    release = json.loads((built_repo / "data/release/details.json").read_text())
    assert files["data/release/stats.json"]["pairs"] == release["total"] and "pii" in release
    assert files["data/release/stats.json"]["gates_lowered"] == 5  # the four model stages' gates, copied
