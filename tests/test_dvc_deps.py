"""dvc.yaml names every file a stage's code reads, so `dvc repro` reruns a stage when any of them changes,
and every ``llm`` / ``execution`` key that can change a model stage's outputs (and no other).

A stage's code is ``stages/<stage>.py`` and every project module it imports, at module level or inside a
function (found by reading the source, transitively), plus its prompt templates and probe sets
(``pipeline/prompts/<stage>_*.txt``, ``pipeline/probes/<stage>_*.jsonl``). A module missing from a stage's
``deps`` is a stale-output bug: edit it and `dvc repro` reports the stage up to date while it would now
write something else (before this test, ``stages/wildfeedback_cues_intl.py`` -- half of the detector's
other-language cues -- was such a module).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from pipeline.config import EXECUTION_PLACEMENT_KEYS, MODEL_SECTIONS, PLACEMENT_KEYS, Params, load_params
from tests.conftest import dvc
from tests.params_edits import parent_of
from tests.project_imports import ROOT, imported_names, module_file

# Package markers that hold only a docstring (checked below): importing them runs no code.
DOCSTRING_ONLY = {"pipeline/__init__.py", "stages/__init__.py"}
# Stages without a model (no `llm` params) reach pipeline/llm only through `resolve_params`, which imports
# `pipeline.llm.tiny.tiny_seed` to tell the built-in model's names apart: an engine change must not rebuild
# them (see the comment on curry's params in dvc.yaml).
MODEL_FREE_EXEMPT = "pipeline/llm/"


def _imported(path: Path) -> set[Path]:
    """Project modules ``path`` imports anywhere in its source, with the packages that hold them."""
    out = set()
    for name in imported_names(path):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            if (found := module_file(".".join(parts[:i]))) is not None:
                out.add(found)
    return out


def code_closure(stage: str) -> set[str]:
    todo, seen = [ROOT / "stages" / f"{stage}.py"], set()
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(_imported(path))
    data = [*ROOT.glob(f"pipeline/prompts/{stage}_*.txt"), *ROOT.glob(f"pipeline/probes/{stage}_*.jsonl")]
    return {p.relative_to(ROOT).as_posix() for p in seen | set(data)}


def _dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("name", list(_dvc_stages()))
def test_every_module_and_template_a_stage_reads_is_a_dvc_dependency(name):
    spec = _dvc_stages()[name]
    stage = spec["cmd"].split()[-1]
    assert spec["cmd"] == f"python -m pipeline.cli run {stage}"
    deps = [str(d) for d in spec["deps"]]
    model_free = not any(str(k).split(".")[0] == "llm" for k in spec.get("params", []))
    missing = sorted(
        p for p in code_closure(stage) - DOCSTRING_ONLY
        if not _covered(p, deps) and not (model_free and p.startswith(MODEL_FREE_EXEMPT))
    )
    assert not missing, f"dvc.yaml: stage {name!r} reads {missing} but does not list them under deps; add them"


def test_the_closure_follows_imports_inside_functions_and_from_package_imports():
    # config.py imports pipeline.llm.tiny inside resolve_params; ingest imports write_metrics from pipeline.metrics
    closure = code_closure("ingest")
    assert {"pipeline/llm/tiny.py", "pipeline/llm/__init__.py", "pipeline/metrics.py", "pipeline/config.py"} <= closure
    assert "stages/wildfeedback_cues_intl.py" in code_closure("wildfeedback")
    assert "pipeline/prompts/dove_judge_conditional.txt" in code_closure("dove")


def test_the_exempt_package_markers_run_no_code():
    for path in DOCSTRING_ONLY:
        body = ast.parse((ROOT / path).read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), path


# --- llm and execution params of the model stages -------------------------------------------------

# The keys that change no output byte, the only ones a model stage's params may leave out (their comments in
# pipeline/config.py say why); a new knob is a dep until it is added there with its reason.
NOT_OUTPUT_KEYS = {"llm": PLACEMENT_KEYS, "execution": EXECUTION_PLACEMENT_KEYS}
# Keys only some model stages read: the others leave them out (a change would rerun them for nothing).
# execution.max_reject_fraction fails DOVE when too many of its items or judgments fail; a user who raises it
# after such a failure used to rerun WildFeedback, PUGC and Selfie too, whose code never reads it.
READ_BY = {"execution.max_reject_fraction": {"dove"}}


def _leaf_keys(model: type[BaseModel], prefix: str) -> list[str]:
    """Every key of a params model as a dotted path, nested sections walked (``llm.sampling.seed``)."""
    out = []
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out += _leaf_keys(sub, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def _listed(key: str, params: list[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in params)


SHARED_KEYS = {section: _leaf_keys(Params.model_fields[section].annotation, f"{section}.") for section in NOT_OUTPUT_KEYS}


def test_the_walk_finds_nested_keys():
    assert {"llm.model", "llm.sampling.seed", "llm.replicas", "llm.option_scoring"} <= set(SHARED_KEYS["llm"])
    assert {"execution.backend", "execution.on_gate_failure"} <= set(SHARED_KEYS["execution"])
    assert _listed("llm.sampling.seed", ["llm.sampling"]) and not _listed("llm.sampling_x", ["llm.sampling"])


@pytest.mark.parametrize("stage", MODEL_SECTIONS)
def test_a_model_stage_lists_every_llm_and_execution_key_that_can_change_its_outputs(stage):
    params = [str(p) for p in _dvc_stages()[stage]["params"]]
    assert stage in params, f"dvc.yaml: stage {stage!r} must list its own section (its roles' llm overrides)"
    for section, left_out in NOT_OUTPUT_KEYS.items():
        for key in SHARED_KEYS[section]:
            top = key.split(".")[1]
            if stage not in READ_BY.get(key, {stage}):
                code = "".join(f.read_text() for f in (ROOT / "stages").glob(f"{stage}*.py"))
                assert top not in code, f"stages/{stage}*.py read {key}: take {stage!r} out of READ_BY[{key!r}]"
                assert not _listed(key, params), f"dvc.yaml: stage {stage!r} lists {key}, which it never reads"
            elif top in left_out:
                assert not _listed(key, params), (
                    f"dvc.yaml: stage {stage!r} lists {key}, which changes no output (pipeline/config.py); a change "
                    "of it would rerun the stage for nothing")
            else:
                assert _listed(key, params), (
                    f"dvc.yaml: stage {stage!r} does not list {key}: a change of it would not rerun the stage; add "
                    f"it to its params, or, if it provably changes no output byte, to {section}'s set in "
                    "pipeline/config.py with the reason")
    shared = [p for p in params if p.split(".")[0] in NOT_OUTPUT_KEYS]
    for p in shared:  # a misspelt key would be a param DVC tracks and the stage never reads
        assert any(k == p or k.startswith(p + ".") for k in SHARED_KEYS[p.split(".")[0]]), f"{stage}: {p} is no params key"


@pytest.mark.parametrize("stage", MODEL_SECTIONS)
def test_a_model_stage_lists_its_own_tiny_overrides_and_no_others(stage):
    # resolve_params merges tiny_overrides[<section>] into that section alone, and a stage reads its own section:
    # listing all of tiny_overrides reran WildFeedback, Selfie and DOVE when PUGC's samples margin changed.
    listed = [str(p) for p in _dvc_stages()[stage]["params"] if str(p).split(".")[0] == "tiny_overrides"]
    assert listed == [f"tiny_overrides.{stage}"], (
        f"dvc.yaml: stage {stage!r} lists {listed} of tiny_overrides; list tiny_overrides.{stage} alone")
    assert stage in load_params(ROOT / "params.yaml").tiny_overrides, (
        f"params.yaml: tiny_overrides.{stage} is missing, and dvc.yaml's {stage} stage lists it; add it ({{}} for none)")


def test_the_left_out_keys_are_params_keys():
    for section, left_out in NOT_OUTPUT_KEYS.items():
        assert left_out <= set(Params.model_fields[section].annotation.model_fields), section


def _params_only_project(root: Path) -> None:
    """``root``: a DVC project with the model stages' params, each stage's command a no-op."""
    stages = {name: {"cmd": "python -c pass", "params": _dvc_stages()[name]["params"]} for name in MODEL_SECTIONS}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    dvc(root, "init", "--no-scm", "-q")
    dvc(root, "repro", "-q")


def _set(root: Path, edits: dict[str, object]) -> None:
    data = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in edits.items():
        node, last = parent_of(data, key)
        node[last] = value
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def _changed(root: Path) -> set[str]:
    out = dvc(root, "status", "--json").stdout
    return set(json.loads(out or "{}"))


def test_moving_the_dag_onto_a_ray_cluster_reruns_no_model_stage_but_a_batch_size_does(tmp_path):
    _params_only_project(tmp_path)
    assert _changed(tmp_path) == set()
    _set(tmp_path, {"execution.backend": "ray", "execution.ray_address": "10.0.0.1:6379",
                    "execution.num_cpus_per_task": 4, "execution.batch_size": 100, "execution.checkpoint_rows": 512,
                    "execution.spill_bytes": 1 << 20, "llm.replicas": 8, "llm.gpus_per_replica": 1})
    assert _changed(tmp_path) == set()
    load_params(tmp_path / "params.yaml")  # the edit is a valid params file
    _set(tmp_path, {"execution.max_reject_fraction": 0.9})  # raised after a DOVE failure: DOVE alone reruns
    assert _changed(tmp_path) == {"dove"}
    _set(tmp_path, {"llm.batch_size": 7})  # moves scores in their last bits (docs/reliability.md "Deterministic outputs")
    assert _changed(tmp_path) == set(MODEL_SECTIONS)


def test_editing_one_stages_tiny_overrides_reruns_that_model_stage_alone(tmp_path):
    _params_only_project(tmp_path)
    _set(tmp_path, {"tiny_overrides.pugc.min_margin": 0.001})  # the samples' PUGC margin
    assert _changed(tmp_path) == {"pugc"}  # DOVE and Curry-DPO rerun only if PUGC's outputs change


def test_curry_lists_each_params_key_an_inputs_min_gap_names_and_its_tiny_override():
    # resolve_params replaces such a min_gap by the key's number after tiny_overrides: a key curry's params leave
    # out would change the pairs without `dvc repro` rerunning Curry-DPO.
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = [str(p) for p in _dvc_stages()["curry"]["params"]]
    named = [s["min_gap"] for s in data["curry"]["inputs"] if isinstance(s.get("min_gap"), str)]
    assert named, "params.yaml: no curry input names its min_gap by a key (this test checks such keys)"
    for key in named:
        assert _listed(key, params), f"dvc.yaml: stage 'curry' does not list {key}, which curry.inputs' min_gap names"
        node = data["tiny_overrides"]
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            assert _listed(f"tiny_overrides.{key}", params), f"dvc.yaml: stage 'curry' does not list tiny_overrides.{key}"
