"""PUGC's judge gates: both uses of the judge answer built-in probes before they label real rows.

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

import polars as pl

from pipeline.gates import load_probes

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
            {"response_id": f"{r['id']}/{kind}", "probe": r["id"], "kind": kind, "query": r["query"],
             "reference": r["document"], "text": text}
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
        correct += [good_wins, not (bad_wins or unscored)]  # an answer the judge failed to score counts as wrong
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
