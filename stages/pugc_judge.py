"""PUGC's two model judgments, step 3 ("does the document answer the query?", p(True)) and step 5
(reference-guided 1-5 scores), and the gates both pass, on built-in probes, before they label real rows.
As in the paper, step 3 is asked of the model that wrote the query (the ``generator`` role: the paper's LLM
both writes the reader query and filters it) and step 5 of the ``judge`` (the paper's reward model).

- **query filter** (``pipeline/probes/pugc_query_filter.jsonl``): six user-written documents, each with two
  queries it answers, one unrelated query and the template's placeholder ``<the query>``; 12 True, 12 False.
  A probe is right when the filter's decision (p(True) >= ``query_filter_threshold``) matches. The gate
  reads the weaker of two distinctions, relevant vs unrelated and relevant vs placeholder (balanced accuracy
  each): a judge that keeps (or drops) everything scores 0.5, and so does one that drops only the
  placeholder (18 of 24 probes right, which passed a 0.75 gate without telling any unrelated query apart).
- **scorer** (``pipeline/probes/pugc_scorer.jsonl``): for each document and query, a good answer (what
  the document says), a partial one, one that contradicts the document and an off-topic one (each kind of
  bad answer is longer than the good one in half the items, so a judge that scores by length alone scores
  exactly chance). Each (good, bad) pair is asked in both directions: "does good outscore bad by at least
  ``min_margin``?" (yes) and "does bad outscore good by at least ``min_margin``?" (no). So a pair counts
  fully when good wins by the margin, half when the two are within the margin (the judge cannot tell
  them apart), not at all when bad wins; a judge that gives every answer the same score scores 0.5. The
  gate reads the weakest kind of bad answer: a scorer that cannot tell a contradicting answer from the good
  one while marking partial and off-topic answers down scored 30 of 36 (0.83) overall.

The stage runs the probes through the same step functions (templates, engine calls) as its real rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import BaseModel

from pipeline.config import LLM, Params, Sampling
from pipeline.gates import check_gate, load_probes
from pipeline.llm.base import GenerationFailure, first_error
from pipeline.prompt import fill_rows, template
from stages.pugc_io import checkpoint_of, run_step

SCORES = ["1", "2", "3", "4", "5"]


def chat(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


ANSWER_FORMAT = {
    "expected": "Answer with a single digit from 1 to 5.",
    "sampled": 'Answer in JSON: {"score": <a digit from 1 to 5>}',
}


def filter_prompts(queries: Sequence[str], documents: Sequence[str]) -> list[list[dict[str, str]]]:
    """One chat prompt per (query, document) row."""
    return [chat(t) for t in fill_rows(template("pugc_query_filter"), query=queries, document=documents)]


def judge_prompts(
    queries: Sequence[str], documents: Sequence[str], responses: Sequence[str], scoring: str
) -> list[list[dict[str, str]]]:
    """One chat prompt per (query, document, response) row."""
    literal = {"answer_format": ANSWER_FORMAT[scoring]}
    filled = fill_rows(
        template("pugc_judge"), literal=literal, query=queries, document=documents, response=responses
    )
    return [chat(t) for t in filled]


# --- 3. query filter -----------------------------------------------------------------------------


def judge_answerable(batch: pa.Table, engine) -> pa.Table:
    """Engine step: ``p_true`` = the judge's probability that the document answers the query; ``error``: why
    the engine could not answer (a request the server refused), else null."""
    prompts = filter_prompts(batch["query"].to_pylist(), batch["reference"].to_pylist())
    answers = engine.choose(prompts, ["True", "False"])
    probs = np.asarray(answers, dtype=np.float64).reshape(len(prompts), 2)
    return batch.append_column("p_true", pa.array(probs[:, 0] / probs.sum(axis=1))).append_column(
        "error", pa.array([first_error(a) for a in answers], pa.string()))


def query_filter(queries: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """Drop a query the judge finds unanswerable (``not_answerable``) or could not judge (``judge_failed``:
    NaN, e.g. a request the server refused; NaN must never pass as answerable)."""
    return queries.with_columns(
        drop=pl.when(pl.col("p_true").is_nan())
        .then(pl.lit("judge_failed"))
        .when(pl.col("p_true") >= threshold)
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
    """Engine step: the judge's answer for each response, as it came: ``probs`` (p("1".."5")) when
    expected; ``votes`` (the valid ones) and ``failures`` when sampled. ``to_scores`` turns them into
    scores over the whole column: this step runs once per engine batch, so it does only what needs the
    engine. ``error``: why the engine gave no score (every vote failed, or a request the server refused), else
    null."""
    prompts = judge_prompts(
        batch["query"].to_pylist(), batch["reference"].to_pylist(), batch["text"].to_pylist(), scoring
    )
    if scoring == "expected":
        answers = engine.choose(prompts, SCORES)
        probs = np.asarray(answers, dtype=np.float64).reshape(len(prompts), 5)
        return pa.table(
            {
                "response_id": batch["response_id"],
                "probs": pa.FixedSizeListArray.from_arrays(pa.array(probs.ravel()), 5),
                "error": pa.array([first_error(a) for a in answers], pa.string()),
            }
        )
    outs = engine.generate(prompts, n=n_judgments, sampling=sampling, schema=Vote)
    votes = [[v.score for v in samples if not isinstance(v, GenerationFailure)] for samples in outs]
    return pa.table(
        {
            "response_id": batch["response_id"],
            "votes": pa.array(votes, pa.list_(pa.int64())),
            "failures": pa.array([len(s) - len(v) for s, v in zip(outs, votes, strict=True)], pa.int64()),
            "error": pa.array([None if v else first_error(s) for s, v in zip(outs, votes, strict=True)], pa.string()),
        }
    )


def to_scores(judged: pl.DataFrame, scoring: str) -> pl.DataFrame:
    """``response_id``, ``score`` and ``detail`` (JSON) from ``score_responses``' answers:

    - expected: score = E[score] under p("1".."5") renormalised (null when they are not a distribution:
      negative, not finite, or summing to 0); detail ``{"scoring": "expected", "distribution": {"1": p, ...,
      "5": p}}`` (6 decimals);
    - sampled: score = mean of the valid votes, null when none is; detail ``{"scoring": "sampled",
      "votes": [...], "failures": n, "distribution": {"1": share of the votes, ...}}`` (0.0 without votes).

    >>> import json
    >>> one = pl.DataFrame({"response_id": ["r"], "votes": [[2, 2, 3]], "failures": [1]})
    >>> score, detail = to_scores(one, "sampled").row(0)[1:]
    >>> score, json.loads(detail)["distribution"]
    (2.3333333333333335, {'1': 0.0, '2': 0.6666666666666666, '3': 0.3333333333333333, '4': 0.0, '5': 0.0})
    """
    if scoring == "expected":
        probs = judged["probs"].cast(pl.Array(pl.Float64, 5)).to_numpy().reshape(judged.height, 5)
        total = probs.sum(axis=1, keepdims=True)
        valid = np.isfinite(total[:, 0]) & (total[:, 0] > 0) & (probs >= 0).all(axis=1)
        probs = np.divide(probs, total, out=np.full_like(probs, np.nan), where=valid[:, None])
        dist = pl.Series(probs.round(6), dtype=pl.Array(pl.Float64, 5))
        shares = {s: dist.arr.get(i) for i, s in enumerate(SCORES)}
        detail = pl.struct(scoring=pl.lit("expected"), distribution=pl.struct(**shares))
        return judged.select(
            "response_id",
            score=pl.Series(expected_score(probs), dtype=pl.Float64).fill_nan(None),
            detail=detail.struct.json_encode(),
        )
    votes, n = pl.col("votes"), pl.col("votes").list.len()
    shares = {s: pl.when(n > 0).then(votes.list.count_matches(int(s)) / n).otherwise(0.0) for s in SCORES}
    detail = pl.struct(
        scoring=pl.lit("sampled"), votes=votes, failures="failures", distribution=pl.struct(**shares)
    )
    return judged.select("response_id", score=votes.list.mean(), detail=detail.struct.json_encode())


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


def grade_query_filter(judged: pl.DataFrame, threshold: float) -> tuple[list[bool], dict, dict[str, float]]:
    """Per probe: did the filter decide as expected; the mean p(True) per kind of query; and the balanced
    accuracy of each distinction the gate reads (relevant vs each kind of query the document does not answer).
    A probe the filter could not judge (p(True) NaN: a refused request) is neither kept nor right, as
    ``query_filter`` drops such a row (polars orders NaN above every number: compared alone, it was kept)."""
    answered = pl.col("p_true").is_not_nan()
    judged = judged.with_columns(kept=answered & (pl.col("p_true") >= threshold))
    judged = judged.with_columns(right=answered & (pl.col("kept") == pl.col("answerable")))
    correct = judged["right"].to_list()
    by_kind = judged.group_by("kind").agg(pl.col("p_true").fill_nan(None).mean().round(4), pl.col("kept").sum()).sort("kind")
    detail = {
        "threshold": threshold,
        "p_true_mean": dict(by_kind.select("kind", "p_true").iter_rows()),
        "kept": {k: int(n) for k, n in by_kind.select("kind", "kept").iter_rows()},
    }
    right = dict(judged.group_by("kind").agg(pl.col("right").mean()).iter_rows())
    contrasts = {f"relevant_vs_{k}": (right["relevant"] + right[k]) / 2 for k in sorted(right) if k != "relevant"}
    return correct, detail, contrasts


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


def grade_scorer(scored: pl.DataFrame, min_margin: float) -> tuple[list[bool], dict, dict[str, float]]:
    """Both directions of every (good, bad) pair (see the module doc), the mean score per kind, and the share
    right per kind of bad answer (the distinctions the gate reads: good vs partial, contradicting, off-topic).

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
    correct, by_kind = [], {}
    for kind, good_wins, bad_wins, unscored in pairs.select("kind", "good_wins", "bad_wins", "unscored").iter_rows():
        right = [good_wins, not (bad_wins or unscored)]  # an answer the judge failed to score counts as wrong
        correct += right
        by_kind.setdefault(f"good_vs_{kind}", []).extend(right)
    means = scored.group_by("kind").agg(pl.col("score").mean().round(4)).sort("kind")
    detail = {
        "min_margin": min_margin,
        "pairs": pairs.height,
        "good_wins": int(pairs["good_wins"].sum()),
        "bad_wins": int(pairs["bad_wins"].sum()),
        "unscored": int(pairs["unscored"].sum()),
        "score_mean": dict(means.iter_rows()),
    }
    return correct, detail, {k: sum(v) / len(v) for k, v in by_kind.items()}


# --- the judge's two engine steps, as the stage and its gates both run them --------------------------


def run_answerable(queries: pl.DataFrame, params: Params, step: str, model: LLM) -> pl.DataFrame | None:
    """``judge_answerable`` over ``queries`` (prompt_id, query, reference) as the engine step ``step``, asked
    of ``model`` (the generator role, which wrote the queries)."""
    return run_step(queries.select("prompt_id", "query", "reference"), judge_answerable, params, step, engine=model)


def run_scorer(responses: pl.DataFrame, params: Params, step: str, judge: LLM) -> pl.DataFrame | None:
    """``score_responses`` over ``responses`` (response_id, query, reference, text) as the engine step ``step``,
    with ``pugc.scoring`` and ``pugc.n_judgments``: one call, so a gate checks the scorer the rows get."""
    cfg = params.pugc
    return run_step(responses.select("response_id", "query", "reference", "text"), score_responses, params, step,
                    engine=judge, scoring=cfg.scoring, n_judgments=cfg.n_judgments, sampling=judge.sampling)


# --- judge gates ---------------------------------------------------------------------------------


def judge_gates(params: Params, generator: LLM, judge: LLM) -> dict[str, dict]:
    """Run both judgments on their probes (same steps and roles as the real rows: the query filter on the
    ``generator``, the scorer on the ``judge``) and check them against ``pugc.gates``; a failing gate raises
    ``JudgeGateError`` (or, with on_gate_failure: withhold, reports ``passed: false`` and the stage emits
    none of that use's labels)."""
    cfg = params.pugc

    def gate(role: str, model: LLM, judged: pl.DataFrame, graded: tuple) -> dict:
        """``check_gate`` of the judge use ``role`` (its probes ran as the step ``gate_<role>`` on ``model``)."""
        correct, detail, contrasts = graded
        return check_gate("pugc", role, model.model, correct, detail=detail, contrasts=contrasts,
                          min_accuracy=getattr(cfg.gates, role), key=f"pugc.gates.{role}",
                          on_failure=params.execution.on_gate_failure, errors=judged["error"].to_list(),
                          checkpoints=[checkpoint_of(params, f"gate_{role}", model)])

    probes = query_filter_probes()
    judged = run_answerable(probes, params, "gate_query_filter", generator)
    graded = grade_query_filter(probes.join(judged.select("prompt_id", "p_true"), on="prompt_id"),
                                cfg.query_filter_threshold)
    reports = {"query_filter": gate("query_filter", generator, judged, graded)}
    probes = scorer_probes()
    scored = run_scorer(probes, params, "gate_scorer", judge)
    graded = grade_scorer(probes.join(to_scores(scored, cfg.scoring).select("response_id", "score"), on="response_id"),
                          cfg.min_margin)
    reports["scorer"] = gate("scorer", judge, scored, graded)
    return reports
