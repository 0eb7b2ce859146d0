"""The models and judges behind Curry-DPO's pairs (stages/curry.py): Curry-DPO ranks responses other stages
generated and scored (PUGC's judge-scored answers, Selfie's reward-scored ones), so the pairs of a ``scores: model``
input carry that stage's model roles in their lineage (``lineage_models``), and details.json lists its judge gates
(``scorer_gates``) and weights (``upstream_models``), read from the ``details.json`` beside its responses; a rated
input (human ratings) names none.
"""

from __future__ import annotations

from typing import Any

from pipeline.metrics import recorded_beside, recorded_models


def _stage_reports(spec: dict[str, Any], field: str) -> dict[str, dict[str, Any]]:
    """``{"<stage>.<role>": report}``: what the stage whose responses a ``scores: model`` input reads recorded under
    ``field`` (``gates``, ``models``) beside them (``pipeline.metrics.recorded_beside``); ``{}`` for a rated input
    (human ratings: no judge, no model)."""
    return recorded_beside(spec["responses"], field) if spec["scores"] == "model" else {}


def scorer_gates(inputs: list[dict[str, Any]], pairs: list[int], field: str = "gates") -> dict[str, Any]:
    """The judge gates behind the scores Curry-DPO ranks: for each ``scores: model`` input that gave at
    least one pair (``pairs``: pairs written per input, in input order), the ``gates`` its stage recorded in
    the ``details.json`` beside its responses (``data/pugc/details.json``: PUGC's query filter and scorer;
    Selfie's reward), as ``{"<stage>.<role>": report + {"from": responses folder, "pairs_ranked": pairs}}``.
    A pair ranked from a chance-level judge's scores carries that judge's gate on the release card, not "no
    gate recorded"; an input that gave no pair (e.g. its judge failed its gate and its scores were withheld)
    is not listed, so the card never names a judge behind none of Curry-DPO's pairs. ``from`` marks the
    report as another stage's, so the release counts each judge once. Inputs that read one judge's scores
    share its entry: ``pairs_ranked`` is their sum and ``from`` names every responses folder behind it (one
    folder: its path; several: their paths, sorted). Rated inputs (human ratings) have no judge.
    ``field="models"``: likewise the weights behind those pairs (``upstream_models``)."""
    out: dict[str, Any] = {}
    sources: dict[str, set[str]] = {}
    for spec, n in zip(inputs, pairs, strict=True):
        if n == 0:
            continue
        for key, report in _stage_reports(spec, field).items():
            ranked = n + out.get(key, {}).get("pairs_ranked", 0)  # two inputs read from one judge's scores
            sources.setdefault(key, set()).add(str(spec["responses"]))
            named = sorted(sources[key])
            out[key] = {**report, "from": named[0] if len(named) == 1 else named, "pairs_ranked": ranked}
    return dict(sorted(out.items()))


def upstream_models(inputs: list[dict[str, Any]], pairs: list[int]) -> dict[str, Any]:
    """The ``models`` of details.json: the model roles of the stages whose model-scored responses gave at least
    one pair (PUGC's generator, policy and judge: the queries, the answers, their scores; Selfie's policy and
    reference: its answers and their implicit reward), ``{"<stage>.<role>": {"model", "identity", "from",
    "pairs_ranked"}}``; a run on rated inputs only (human ratings) names none."""
    return scorer_gates(inputs, pairs, "models")


def lineage_models(inputs: list[dict[str, Any]]) -> list[str]:
    """Per input (in order): the ``"models"`` member its pairs' lineage carries, ``,"models":{"<stage>.<role>":
    model}`` from the stage behind a ``scores: model`` input (e.g. ``{"pugc.judge":"tiny",..}``), or ``""``
    (a rated input: no model named)."""
    return [',"models":' + m if spec["scores"] == "model" and (m := recorded_models(spec["responses"])) else ""
            for spec in inputs]
