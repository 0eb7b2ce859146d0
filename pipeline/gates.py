"""Judge gates: a model used as a judge proves it discriminates before its labels are used.

A stage that lets a model label data (a feedback detector, a query filter, a scorer, a comparator)
first runs that judge, with the same engine call and template it uses for real rows, on a small
built-in probe set whose answers are known: a relevant vs an unrelated query for a document, a good vs
a contradicting answer, a clear SAT vs a clear DSAT turn, each comparison in both position orders so a
judge that always answers "a" scores exactly chance. The stage turns every probe into right or wrong
(and, where the probes test several distinctions its labels depend on, gives each one's balanced accuracy
as ``contrasts``: the gate then reads the weakest) and calls::

    report = check_gate("dove", "judge", engine.name, correct, min_accuracy=cfg.gates.judge,
                        key="dove.gates.judge", on_failure=params.execution.on_gate_failure, detail={...})
    if not report["passed"]:    # only with on_gate_failure: withhold (else JudgeGateError was raised)
        ...                     # emit none of this judge's labels, counted

``report`` goes into the stage's metrics (and from there into the release card). Run the probes before
the judge labels real rows, so a failing judge costs seconds, not the stage. Probe sets are
balanced, so chance is 0.5; a gate at or below 0.5 no longer keeps a chance-level judge out and is
reported as ``lowered`` (the samples run does this for the random-weights ``tiny`` model, through
``tiny_overrides``). Probe files live in ``pipeline/probes/<stage>_<role>.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.io import StageError
from pipeline.metrics import say

PROBES = Path(__file__).parent / "probes"
CHANCE = 0.5


class JudgeGateError(StageError):
    """A judge failed its probe set; its labels are not used."""


@cache
def load_probes(name: str) -> tuple[dict[str, Any], ...]:
    """The probe items of ``pipeline/probes/<name>.jsonl`` (one JSON object per line)."""
    lines = (PROBES / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return tuple(json.loads(line) for line in lines if line.strip())


def check_gate(stage: str, role: str, model: str, correct: Sequence[bool], *, min_accuracy: float, key: str,
               on_failure: str = "error", detail: dict[str, Any] | None = None,
               errors: Sequence[str | None] | None = None,
               contrasts: Mapping[str, float] | None = None, checkpoints: Sequence[Any] = ()) -> dict[str, Any]:
    """The gate's figures (for the stage's metrics and the card), after acting on them.

    ``errors``: per probe call, the engine's error (None: it answered). A judge whose every call failed
    (e.g. its server refused every probe) is reported as that, with the first error, not as a judge at chance.
    (A server that is down fails the engine call itself: the stage stops, and no gate is decided.)

    ``contrasts``: the judge's balanced accuracy on each distinction its probe set tests (chance 0.5 each).
    Given, the gate's accuracy is the weakest of them, not the share of probes right: a judge must make every
    distinction, as one that makes only the easy one (a query filter that drops the placeholder query and
    keeps every unrelated one: 18 of 24 probes right) would otherwise pass a 0.75 gate.

    ``checkpoints``: the probes' step checkpoints (``pipeline.execute.Checkpoint``; None: none). A stage checkpoints its probe
    calls like its other model steps, under the fingerprint of the step the judge labels (params, engine, weights,
    code): a resumed run decides the gate from the answers the first run got, without asking (or loading) the
    model again, and so as the first run decided it. A gate that stops the stage clears them, so the rerun that
    follows a fix that changes no setting (a server that refused every probe, now serving) asks the probes again.

    Below the gate: ``on_failure="error"`` raises ``JudgeGateError``; ``"withhold"`` returns the report
    with ``passed`` false and the stage must then emit none of this judge's labels (it says so on the
    console). A lowered gate (at or below chance) is announced on the console every run.

    >>> r = check_gate("dove", "judge", "m", [True, False] * 8, min_accuracy=0.75, key="dove.gates.judge",
    ...                on_failure="withhold")  # doctest: +ELLIPSIS
    GATE FAILED dove: the judge (m) does not discriminate on its probe set: 8 of 16 probes right ...
    >>> r["accuracy"], r["passed"], r["lowered"], r["labels"]
    (0.5, False, False, 'withheld')
    """
    n = len(correct)
    right = sum(bool(c) for c in correct)
    accuracy = right / n if n else 0.0
    weakest = min(contrasts, key=lambda k: (contrasts[k], k)) if contrasts else None
    if weakest is not None:
        accuracy = contrasts[weakest]
    passed = accuracy >= min_accuracy
    lowered = min_accuracy <= CHANCE
    report = {
        "stage": stage, "role": role, "model": model, "key": key, "probes": n, "correct": right,
        "accuracy": round(accuracy, 4), "min_accuracy": min_accuracy, "passed": passed, "lowered": lowered,
        "labels": "withheld" if not passed else "used, gate lowered" if lowered else "used",
        **({"detail": detail} if detail else {}),
        **({"contrasts": {k: round(v, 4) for k, v in sorted(contrasts.items())}, "weakest": weakest} if weakest else {}),
    }
    failed = [e for e in errors or () if e]
    if errors is not None:
        report["failed_calls"] = len(failed)
    figures = f"{right} of {n} probes right (accuracy {accuracy:.2f}, chance {CHANCE})"
    if weakest is not None:
        figures = f"{right} of {n} probes right (weakest distinction {weakest}: accuracy {accuracy:.2f}, chance {CHANCE})"
    if failed:
        figures += f"; {len(failed)} of {len(errors)} probe calls failed (first: {' '.join(failed[0].split())[:200]})"
    judge = "the judge" if role == "judge" else f"the {role} judge"  # not "the judge judge"
    if not passed and errors and len(failed) == len(errors):
        message = (f"{stage}: {judge} ({model}) answered none of its probes: all {len(errors)} calls failed "
                   f"(first: {' '.join(failed[0].split())[:200]})")
        fix = ("check that the role's engine runs (backend openai: the server at its base_url is up and serves "
               "its model); no label of this judge is used until its probes pass")
    elif not passed:
        message = (f"{stage}: {judge} ({model}) does not discriminate on its probe set: {figures}, "
                   f"below the gate {key}={min_accuracy}")
        fix = (f"use a stronger model for this role, or lower the gate explicitly ({key}: 0.0) to keep its labels "
               "anyway")
    if not passed:
        if on_failure == "error":
            for ck in checkpoints:
                if ck is not None:  # a stage run without checkpoints
                    ck.clear()
            raise JudgeGateError(f"{message}; its labels are not used. Fix: {fix}")
        say(f"{message}; its labels are withheld (execution.on_gate_failure=withhold). Fix: {fix}", "GATE FAILED")
    elif lowered:
        say(f"{stage}: gate lowered for {judge} ({model}): {figures}; {key}={min_accuracy} lets a "
             "chance-level judge label data")
    return report
