"""A stage's metrics, in two files beside its outputs.

``metrics.json`` holds a few headline numbers, the ones ``dvc metrics show`` prints (dvc.yaml declares it
under ``metrics:``), named alike across stages so the table stays narrow: ``rows_in`` (what the stage
read), ``pairs`` (what it wrote), ``gates.<role>`` (each judge's probe accuracy), ``gates_withheld`` (judges
whose labels were withheld) and ``gates_lowered`` (gates at or below chance), plus a stage's own one or
two. ``details.json`` holds every figure the stage measured, headline ones included (a cached output:
``dvc metrics show data/pugc/details.json`` or any JSON tool reads it)::

    write_metrics(out, {"rows_in": 30, "pairs": 12, **gate_headline(gates)}, details)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.files import write_json_atomic

log = logging.getLogger(__name__)

METRICS, DETAILS = "metrics.json", "details.json"


# What every model stage says when ``tiny_overrides`` applied to it (one wording for all of them).
OVERRIDES_NOTE = "tiny_overrides applied (every model it uses is the random-weights tiny model)"


def announce_overrides(params: Any, stage: str) -> dict[str, Any]:
    """The ``tiny_overrides`` applied to ``stage`` (for its metrics), said on the console when there are any
    as ``<stage>: tiny_overrides applied (...): {...}`` (``OVERRIDES_NOTE``), the same line for every stage."""
    applied = params.applied_overrides(stage)
    if applied:
        print(f"{stage}: {OVERRIDES_NOTE}: {applied}")
    return applied


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and its noun for a console line, singular for one only (``plural``: when not ``noun + "s"``).

    >>> counted(1, "row"), counted(0, "row"), counted(3, "query", "queries")
    ('1 row', '0 rows', '3 queries')
    """
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def say(message: str, tag: str = "WARNING") -> None:
    """A warning the user must see, on the console once as ``<tag> <message>`` (a WARNING log record too would
    repeat it under the CLI's logging); the log gets it at debug level."""
    log.debug(message)
    print(f"{tag} {message}")


def gate_headline(gates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The judge-gate reports (``pipeline.gates.check_gate``) as headline numbers; the reports themselves
    stay in details.json. A gate that did not run (a report without ``accuracy``, e.g. Selfie's when policy
    and reference are one model) has no headline.

    >>> gate_headline({"judge": {"accuracy": 0.5, "passed": False, "lowered": False},
    ...                "scorer": {"accuracy": 0.5, "passed": True, "lowered": True},
    ...                "reward": {"passed": None, "skipped": "same model"}})
    {'gates': {'judge': 0.5, 'scorer': 0.5}, 'gates_withheld': 1, 'gates_lowered': 1}
    """
    reports = {role: r for role, r in sorted(gates.items()) if isinstance(r, dict) and "accuracy" in r}
    return {
        "gates": {role: r["accuracy"] for role, r in reports.items()},
        "gates_withheld": sum(r["passed"] is False for r in reports.values()),
        "gates_lowered": sum(bool(r["lowered"]) for r in reports.values()),
    }


def write_metrics(out: str | Path, headline: dict[str, Any], details: dict[str, Any], name: str = METRICS) -> None:
    """Write ``details.json``, then the headline file ``name`` (last, as ``pipeline.outputs`` swaps metrics in
    last). Export names its headline ``stats.json``."""
    write_json_atomic(details, Path(out) / DETAILS)
    write_json_atomic(headline, Path(out) / name)


def recorded_beside(folder: str | Path, field: str) -> dict[str, dict[str, Any]]:
    """``{"<stage>.<role>": report}``: what the stage that wrote ``folder`` (e.g. ``data/pugc/responses``) recorded
    under ``field`` (``gates``, ``models``: a role -> report map) in the details.json beside it, ``<stage>`` the
    report's own ``stage`` or the folder's parent's name; ``{}`` when that file or field is not there. A stage that
    re-reads another's outputs (Curry-DPO, DOVE) names the judges and models behind them with it."""
    path = Path(folder).parent / DETAILS
    try:
        found = json.loads(path.read_text()).get(field)
    except (OSError, ValueError, AttributeError):
        found = None
    if not isinstance(found, dict):
        return {}
    return {f"{r.get('stage') or path.parent.name}.{role}": r for role, r in found.items() if isinstance(r, dict)}


def recorded_models(folder: str | Path) -> str | None:
    """The model roles recorded beside ``folder`` (``recorded_beside(folder, "models")``) as compact JSON
    ``{"<stage>.<role>": model}``, keys sorted (what a pair's lineage names under ``models``), or None when
    none is recorded (ingested data: no stage's model)."""
    found = recorded_beside(folder, "models")
    return json.dumps({k: r.get("model") for k, r in sorted(found.items())}, separators=(",", ":")) if found else None
