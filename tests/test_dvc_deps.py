"""dvc.yaml names every file a stage's code reads, so `dvc repro` reruns a stage when any of them changes.

A stage's code is ``stages/<stage>.py`` and every project module it imports, at module level or inside a
function (found by reading the source, transitively), plus its prompt templates and probe sets
(``pipeline/prompts/<stage>_*.txt``, ``pipeline/probes/<stage>_*.jsonl``). A module missing from a stage's
``deps`` is a stale-output bug: edit it and `dvc repro` reports the stage up to date while it would now
write something else (before this test, ``stages/wildfeedback_cues_intl.py`` -- half of the detector's
other-language cues -- was such a module).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

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
    model_free = "llm" not in spec.get("params", [])
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
