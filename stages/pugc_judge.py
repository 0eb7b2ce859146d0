"""PUGC's judge: its two uses, step 3 ("does the document answer the query?", p(True)) and step 5
(reference-guided 1-5 scores), and the gates both pass, on built-in probes, before they label real rows.

- **query filter** (``pipeline/probes/pugc_query_filter.jsonl``): six user-written documents, each with two
  queries it answers, one unrelated query and the template's placeholder ``<the query>``; 12 True, 12 False.
  A probe is right when the filter's decision (p(True) >= ``query_filter_threshold``) matches. A judge
  that keeps (or drops) everything scores 0.5.
- **scorer** (``pipeline/probes/pugc_scorer.jsonl``): for each document and query, a good answer (what
  the document says), a partial one, one that contradicts the document and an off-topic one (the
  contradicting answer is longer than the good one in half the items, so a length-biased judge gains
  little). Each (good, bad) pair is asked in both directions: "does good outscore bad by at least
  ``min_margin``?" (yes) and "does bad outscore good by at least ``min_margin``?" (no). So a pair counts
  fully when good wins by the margin, half when the two are within the margin (the judge cannot tell
  them apart), not at all when bad wins; a judge that gives every answer the same score scores 0.5.

The stage runs the probes through the same step functions (templates, engine calls) as its real rows.
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import BaseModel

from pipeline.config import LLM, Params, Sampling
from pipeline.gates import check_gate, load_probes
from pipeline.llm.base import GenerationFailure
from pipeline.prompt import fill, template
from stages.pugc_io import run_step

SCORES = ["1", "2", "3", "4", "5"]


def chat(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


ANSWER_FORMAT = {
    "expected": "Answer with a single digit from 1 to 5.",
    "sampled": 'Answer in JSON: {"score": <a digit from 1 to 5>}',
}


def filter_prompt(query: str, document: str) -> list[dict[str, str]]:
    return chat(fill(template("pugc_query_filter"), query=query, document=document))


def judge_prompt(query: str, document: str, response: str, scoring: str) -> list[dict[str, str]]:
    return chat(
        fill(
            template("pugc_judge"),
            literal={"answer_format": ANSWER_FORMAT[scoring]},
            query=query,
            document=document,
            response=response,
        )
    )


# --- 3. query filter -----------------------------------------------------------------------------


def judge_answerable(batch: pa.Table, engine) -> pa.Table:
    """Engine step: ``p_true`` = the judge's probability that the document answers the query."""
    prompts = [
        filter_prompt(q, d)
        for q, d in zip(batch["query"].to_pylist(), batch["reference"].to_pylist(), strict=True)
    ]
    probs = np.asarray(engine.choose(prompts, ["True", "False"]), dtype=np.float64).reshape(len(prompts), 2)
    return batch.append_column("p_true", pa.array(probs[:, 0] / probs.sum(axis=1)))


def query_filter(queries: pl.DataFrame, threshold: float) -> pl.DataFrame:
    return queries.with_columns(
        drop=pl.when(pl.col("p_true") >= threshold)
        .then(pl.lit(None, pl.String))
        .otherwise(pl.lit("not_answerable"))
    )


# --- 5. reference-guided scoring -----------------------------------------------------------------


class Vote(BaseModel):
    score: Literal[1, 2, 3, 4, 5]


def expected_score(probs: np.ndarray) -> np.ndarray:
    """E[score] under each row's probabilities for "1".."5" (renormalised).

    >>> expected_score(np.array([[0.1, 0.2, 0.3, 0.2, 0.2]])).round(6).tolist()
    [3.2]
    """
    probs = np.asarray(probs, dtype=np.float64)
    return probs @ np.arange(1, 6) / probs.sum(axis=1)


def score_responses(
    batch: pa.Table, engine, *, scoring: str, n_judgments: int, sampling: Sampling
) -> pa.Table:
    """Engine step: ``score`` (null when every sampled vote failed) and ``detail`` JSON per response."""
    prompts = [
        judge_prompt(q, d, r, scoring)
        for q, d, r in zip(
            batch["query"].to_pylist(), batch["reference"].to_pylist(), batch["text"].to_pylist(), strict=True
        )
    ]
    scores: list[float | None] = []
    details: list[str] = []
    if scoring == "expected":
        probs = np.asarray(engine.choose(prompts, SCORES), dtype=np.float64).reshape(len(prompts), 5)
        probs = probs / probs.sum(axis=1, keepdims=True)
        for p, s in zip(probs, expected_score(probs), strict=True):
            scores.append(float(s))
            dist = dict(zip(SCORES, p.round(6).tolist(), strict=True))
            details.append(json.dumps({"scoring": "expected", "distribution": dist}))
    else:
        for samples in engine.generate(prompts, n=n_judgments, sampling=sampling, schema=Vote):
            votes = [v.score for v in samples if not isinstance(v, GenerationFailure)]
            hist = {s: (votes.count(int(s)) / len(votes) if votes else 0.0) for s in SCORES}
            scores.append(float(np.mean(votes)) if votes else None)
            failures = len(samples) - len(votes)
            details.append(
                json.dumps({"scoring": "sampled", "votes": votes, "failures": failures, "distribution": hist})
            )
    return pa.table(
        {
            "response_id": batch["response_id"],
            "score": pa.array(scores, pa.float64()),
            "detail": pa.array(details, pa.string()),
        }
    )


# --- probes --------------------------------------------------------------------------------------


QUERY_FILTER = "pugc_query_filter"
SCORER = "pugc_scorer"
BAD_KINDS = ("partial", "contradicting", "off_topic")


def query_filter_probes() -> pl.DataFrame:
    """prompt_id, query, reference (the document), kind, answerable."""
    rows = load_probes(QUERY_FILTER)
    return pl.DataFrame(
        {
            "prompt_id": [r["id"] for r in rows],
            "query": [r["query"] for r in rows],
            "reference": [r["document"] for r in rows],
            "kind": [r["kind"] for r in rows],
            "answerable": [bool(r["answerable"]) for r in rows],
        }
    )


def grade_query_filter(judged: pl.DataFrame, threshold: float) -> tuple[list[bool], dict]:
    """Per probe: did the filter decide as expected; and the mean p(True) per kind of query."""
    judged = judged.with_columns(kept=pl.col("p_true") >= threshold)
    correct = (judged["kept"] == judged["answerable"]).to_list()
    by_kind = judged.group_by("kind").agg(pl.col("p_true").mean().round(4), pl.col("kept").sum()).sort("kind")
    detail = {
        "threshold": threshold,
        "p_true_mean": dict(by_kind.select("kind", "p_true").iter_rows()),
        "kept": {k: int(n) for k, n in by_kind.select("kind", "kept").iter_rows()},
    }
    return correct, detail


def scorer_probes() -> pl.DataFrame:
    """One row per answer to score: response_id (``<probe id>/<kind>``), probe, kind, query, reference, text."""
    rows = []
    for r in load_probes(SCORER):
        answers = {"good": r["good"], **{k: r["bad"][k] for k in BAD_KINDS}}
        rows += [
            {
                "response_id": f"{r['id']}/{kind}",
                "probe": r["id"],
                "kind": kind,
                "query": r["query"],
                "reference": r["document"],
                "text": text,
            }
            for kind, text in answers.items()
        ]
    return pl.DataFrame(rows)


def grade_scorer(scored: pl.DataFrame, min_margin: float) -> tuple[list[bool], dict]:
    """Both directions of every (good, bad) pair (see the module doc), and the mean score per kind.

    >>> s = pl.DataFrame({"probe": ["a"] * 4, "kind": ["good", *BAD_KINDS], "score": [4.0, 2.0, 3.8, None]})
    >>> grade_scorer(s, 0.5)[0]   # contradicting: within the margin; off-topic: unscored; partial: good wins
    [False, True, False, False, True, True]
    """
    good = scored.filter(pl.col("kind") == "good").select("probe", good="score")
    pairs = scored.filter(pl.col("kind") != "good").join(good, on="probe").sort("probe", "kind")
    scored_pair = pl.col("good").is_not_null() & pl.col("score").is_not_null()
    pairs = pairs.with_columns(
        good_wins=scored_pair & (pl.col("good") - pl.col("score") >= min_margin),
        bad_wins=scored_pair & (pl.col("score") - pl.col("good") >= min_margin),
        unscored=~scored_pair,
    )
    correct = []
    for good_wins, bad_wins, unscored in pairs.select("good_wins", "bad_wins", "unscored").iter_rows():
        correct += [
            good_wins,
            not (bad_wins or unscored),
        ]  # an answer the judge failed to score counts as wrong
    means = scored.group_by("kind").agg(pl.col("score").mean().round(4)).sort("kind")
    detail = {
        "min_margin": min_margin,
        "pairs": pairs.height,
        "good_wins": int(pairs["good_wins"].sum()),
        "bad_wins": int(pairs["bad_wins"].sum()),
        "unscored": int(pairs["unscored"].sum()),
        "score_mean": dict(means.iter_rows()),
    }
    return correct, detail


# --- judge gates ---------------------------------------------------------------------------------


def judge_gates(params: Params, judge: LLM) -> dict[str, dict]:
    """Run both judge uses on their probes (same steps as the real rows) and check them against
    ``pugc.gates``; a failing gate raises ``JudgeGateError`` (or, with on_gate_failure: withhold,
    reports ``passed: false`` and the stage emits none of that use's labels)."""
    cfg = params.pugc
    gate = {"on_failure": params.execution.on_gate_failure}
    probes = query_filter_probes()
    judged = run_step(
        probes.select("prompt_id", "query", "reference"),
        judge_answerable,
        params,
        "gate_query_filter",
        engine=judge,
    )
    correct, detail = grade_query_filter(
        probes.join(judged.select("prompt_id", "p_true"), on="prompt_id"), cfg.query_filter_threshold
    )
    reports = {
        "query_filter": check_gate(
            "pugc",
            "query_filter",
            judge.model,
            correct,
            detail=detail,
            min_accuracy=cfg.gates.query_filter,
            key="pugc.gates.query_filter",
            **gate,
        )
    }
    probes = scorer_probes()
    scored = run_step(
        probes.select("response_id", "query", "reference", "text"),
        score_responses,
        params,
        "gate_scorer",
        engine=judge,
        scoring=cfg.scoring,
        n_judgments=cfg.n_judgments,
        sampling=judge.sampling,
    )
    correct, detail = grade_scorer(
        probes.join(scored.select("response_id", "score"), on="response_id"), cfg.min_margin
    )
    reports["scorer"] = check_gate(
        "pugc",
        "scorer",
        judge.model,
        correct,
        detail=detail,
        min_accuracy=cfg.gates.scorer,
        key="pugc.gates.scorer",
        **gate,
    )
    return reports
