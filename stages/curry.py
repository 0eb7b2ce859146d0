"""Curry-DPO: several preference pairs per prompt from ranked responses, ordered easy to hard.

Paper: Pattnaik et al., 2024, "Curry-DPO: Enhancing Alignment using Curriculum Learning & Ranked
Preferences" (arXiv 2403.07230). METHODS.md section 4; docs/curry.md. The steps, each a pure
function over polars frames / Arrow tables:

1. ``scored_responses``  keep responses with a finite score and non-blank text (drops counted by reason).
2. ``rank_responses``    R1 > R2 > ... > Rn per prompt by score; ties broken by ``response_id`` so the
                         order is the same on every run.
3. ``distinct_texts``    one response per answer: responses of a prompt whose texts are the same answer
                         (``pipeline.checks.answer_key``: whitespace normalised, case folded, loose sentence
                         punctuation and quotes dropped, as export's ``same_text``) are one; the best-ranked
                         is kept, so chosen and rejected are never the same answer.
4. ``make_pairs``        (R1, Rk) for k = 2..n (``pairing: best_vs_rest``, the paper) or every (Ri, Rj),
                         i < j (``pairing: all``, ours); a pair whose score gap is within its input's
                         threshold (``gap_thresholds``) is a tie and is dropped, never paired.
5. ``assign_levels``     difficulty = gap (larger = easier); ``level`` 0 = easiest, by the rank of the gap
                         within the prompt (``levels: per_prompt``, the paper) or by quantile bins of the gap
                         over all prompts, per (input set, scorer) (``levels: quantile``, ours).
6. ``order_pairs``       pair ids, then curriculum order: by level, then a seeded shuffle within the level.

``main`` writes ``data/curry/pairs/level=<k>/`` (one shard set per level, order kept) plus
``data/curry/pairs/_levels.json`` listing every level's files in curriculum order
(``curriculum_files``); stages/curry_output.py builds the rows, the metrics and the files.

Example, one prompt with four rated responses (scores 9, 7, 4, 1), paper settings::

    (R1, R4) gap 8 -> level 0 (easy)
    (R1, R3) gap 5 -> level 1 (medium)
    (R1, R2) gap 2 -> level 2 (hard)

Scores are compared only within one group = (input set, prompt_id, scorer), so two scorers' scales
never mix. Higher is better. An input set says what its scores are (``scores: rated | model``): rated
scores (ratings, OpenAssistant ranks, votes) pair on any gap above ``min_gap`` as in the paper; a
model's continuous scores also need a gap above ``relative_min_gap`` x the scorer's score spread. The
whole table is processed at once (grouping and quantiles need every row), vectorised: no Python loop
per prompt or per pair. Ids and the shuffle come from ``pipeline.ids`` (xxh3), stable across machines
and library versions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import ids
from pipeline.checks import folded_answer_key, shows_nothing
from pipeline.config import Curry, Execution, Params, fingerprint
from pipeline.io import read_table
from pipeline.metrics import counted, write_metrics
from pipeline.outputs import begin_outputs, commit_outputs
from pipeline.text import is_ascii
from stages.curry_output import curriculum_files, metrics, to_pairs_table, write_levels
from stages.curry_upstream import lineage_models, scorer_gates, upstream_models

__all__ = ["build_pairs", "curriculum_files", "main", "run"]

log = logging.getLogger(__name__)

STAGE = "curry"
OUT = Path("data/curry")

# --- steps -----------------------------------------------------------------------------------------
# The steps pass slim frames (keys, scores, ranks, row numbers); texts, ids and messages are gathered
# once, at the end, in ``to_pairs_table`` (stages/curry_output.py), in curriculum order.


def load_inputs(inputs: Sequence[dict[str, str]]) -> tuple[pa.Table, pa.Table]:
    """Read each input set's prompts and responses (contract tables) with ``input`` = the set's position."""
    prompts, responses = [], []
    for i, spec in enumerate(inputs):
        p = read_table(spec["prompts"], "prompts", key=f"curry.inputs[{i}].prompts").select(
            ["prompt_id", "messages", "source"])
        r = read_table(spec["responses"], "responses", key=f"curry.inputs[{i}].responses")
        prompts.append(p.append_column("input", pa.array(np.full(p.num_rows, i, np.int32))))
        responses.append(r.append_column("input", pa.array(np.full(r.num_rows, i, np.int32))))
    return pa.concat_tables(prompts), pa.concat_tables(responses)


def scored_responses(responses: pa.Table) -> tuple[pl.DataFrame, dict[str, int]]:
    """Responses that can be ranked, and how many were dropped per reason.

    Reasons: ``missing_score`` (null or NaN: unrated, skipped), ``nonfinite_score`` (+-inf),
    ``blank_text``, ``duplicate`` (a repeated (input, prompt_id, scorer, response_id); the first is
    kept). A group = (input, prompt_id, scorer): the responses ranked together, so two scorers'
    scales never mix. Returns a frame without texts, with hashes: ``ps`` = ``ids.hash64(prompt_id,
    scorer)``, ``rid`` = ``ids.hash64(response_id)``, ``group``/``check`` = two independent hashes of the
    group, ``text_key`` = hash of the text's ``pipeline.checks.answer_key`` (the export's "same answer"); ``row`` = the response's row in ``responses``.
    """
    text = responses.column("text")
    # Texts all ASCII (the usual case): lower-cased by Arrow before the frame is built, ~8x faster than
    # polars' Unicode lower-casing and the same bytes; on ASCII, case and whitespace steps commute.
    ascii_only = is_ascii(text)
    cols = responses.select(["input", "prompt_id", "scorer", "response_id", "score"])
    df = pl.from_arrow(cols.append_column("text", pc.ascii_lower(text) if ascii_only else text)).with_columns(
        pl.col("scorer").fill_null(""), pl.col("score").cast(pl.Float64), row=pl.int_range(pl.len(), dtype=pl.Int64),
        _blank=shows_nothing(pl.col("text")), rid=ids.hash64("response_id"))
    df = pl.concat([df, _group_hashes(df)], how="horizontal")
    if df.get_column("input").n_unique() > 1:  # several input sets: the set is part of the group
        df = df.with_columns(group=ids.combine("input", "ps"), check=ids.combine("input", "_ps1"))
    else:
        df = df.with_columns(group=pl.col("ps"), check=pl.col("_ps1"))
    first = _first_distinct(df, "group", "rid", exact=["input", "prompt_id", "scorer", "response_id"])
    reason = (
        pl.when(pl.col("score").is_null() | pl.col("score").is_nan()).then(pl.lit("missing_score"))
        .when(pl.col("score").is_infinite()).then(pl.lit("nonfinite_score"))
        .when(pl.col("_blank")).then(pl.lit("blank_text"))
        .when(~pl.lit(first)).then(pl.lit("duplicate"))
    )
    df = df.with_columns(_drop=reason)
    drops = dict(df.filter(pl.col("_drop").is_not_null()).group_by("_drop").len().iter_rows())
    folded = pl.col("text") if ascii_only else pl.col("text").str.to_lowercase()
    kept = df.filter(pl.col("_drop").is_null()).select(
        "input", "prompt_id", "scorer", "response_id", "score", "row", "group", "check", "ps", "rid",
        text_key=folded_answer_key(folded).nchash.xxh3_64())
    return kept, {k: int(v) for k, v in sorted(drops.items())}


def _group_hashes(df: pl.DataFrame) -> pl.DataFrame:
    """``ps`` = ``ids.hash64(prompt_id, scorer)`` and ``_ps1`` (the same key, seed 1) per row of ``df``.

    Responses of one prompt usually sit together: the key is built and hashed once per run of rows with
    equal (prompt_id, scorer), then repeated over the run (~1.6x faster than once per row).
    """
    starts = (pl.col("prompt_id") != pl.col("prompt_id").shift(1)) | (pl.col("scorer") != pl.col("scorer").shift(1))
    starts = df.select(starts.fill_null(True)).to_series()  # a null id starts a run of its own: never merged
    heads = df.filter(starts).select(_key=ids.key("prompt_id", "scorer")).select(
        ps=pl.col("_key").nchash.xxh3_64(seed=0), _ps1=pl.col("_key").nchash.xxh3_64(seed=1))
    return heads[starts.cum_sum() - 1]


def _first_distinct(df: pl.DataFrame, a: str, b: str, exact: list[str]) -> pl.Series:
    """True on the first row of each distinct ``exact`` key, given two 64-bit hashes ``a``, ``b`` of it.

    Fast path: when the combined hashes are all distinct, so are the keys (no exact comparison needed);
    otherwise (a duplicate, or a hash collision) the ``exact`` columns decide.
    """
    mixed = df.select((pl.col(a) * pl.lit(0x9E3779B97F4A7C15, pl.UInt64)) ^ pl.col(b)).to_series()
    if mixed.n_unique() == df.height:
        return pl.Series(np.ones(df.height, dtype=bool))
    return df.select(pl.struct(exact).is_first_distinct()).to_series()


def _starts(col: str) -> pl.Expr:
    return (pl.col(col) != pl.col(col).shift(1)).fill_null(True)


def _ends(col: str) -> pl.Expr:
    return (pl.col(col) != pl.col(col).shift(-1)).fill_null(True)


def _ranks(df: pl.DataFrame) -> pl.DataFrame:
    """``rank`` 1..n and group size ``n`` of a frame sorted by (group, rank order), from the group starts."""
    group = df.get_column("group").to_numpy()
    starts = np.flatnonzero(np.concatenate([[True], group[1:] != group[:-1]])) if len(group) else np.zeros(0, np.int64)
    sizes = np.diff(np.append(starts, len(group)))
    rank = np.arange(len(group)) - np.repeat(starts, sizes) + 1
    return df.with_columns(rank=pl.Series(rank, dtype=pl.Int32), n=pl.Series(np.repeat(sizes, sizes), dtype=pl.Int32))


def _rank_order(df: pl.DataFrame, response_id: pl.Series) -> pl.DataFrame:
    """``df`` (``group``, ``score``, ``ridx`` = row of ``response_id``) sorted by (group, score descending,
    response_id).

    A stable numeric sort by (group, score), then only the runs of equal (group, score) put in
    response_id order, when they are not already (a string in the sort key makes the whole sort ~1.5x
    slower; ties are a fraction of the rows, and their ids are often in input order already).
    """
    df = df.sort(["group", "score"], descending=[False, True], maintain_order=True)
    same = (pl.col("group") == pl.col("group").shift(1)) & (pl.col("score") == pl.col("score").shift(1))
    tied = np.flatnonzero(df.select(same.fill_null(False) | same.shift(-1).fill_null(False)).to_series().to_numpy())
    ties = df[tied].with_columns(response_id=response_id.gather(df.get_column("ridx").gather(tied)))
    if not ties.select(same & (pl.col("response_id") < pl.col("response_id").shift(1))).to_series().any():
        return df
    # The runs keep their places: sorting the tied rows by (group, score, response_id) only reorders each run.
    by_id = ties.select(pl.arg_sort_by(["group", "score", "response_id"], descending=[False, True, False]))
    order = np.arange(df.height)
    order[tied] = tied[by_id.to_series().to_numpy()]
    return df[order]


def rank_responses(scored: pl.DataFrame) -> pl.DataFrame:
    """``rank`` 1..n within each group, best first; equal scores ordered by ``response_id``; ``n`` = group size.

    Returns a slim frame (``ridx`` = row in ``scored``) sorted by (group, rank), which the later steps
    rely on: ranks and sizes are read off group boundaries instead of per-group windows.
    """
    df = scored.select("group", "score", ridx=pl.int_range(pl.len(), dtype=pl.Int64))
    df = _ranks(_rank_order(df, scored.get_column("response_id")))
    # A 64-bit collision would merge two groups: a second, independently seeded hash of the same key
    # must then differ between neighbours of one group (both colliding: ~2^-128 per pair of groups).
    check = scored.get_column("check").gather(df.get_column("ridx"))
    clash = (~df.select(_starts("group")).to_series()) & (check != check.shift(1))
    if clash.any():
        raise RuntimeError("curry: two (prompt_id, scorer) groups hash alike (xxh3-64); please report this input")
    return df


def distinct_texts(ranked: pl.DataFrame, scored: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Drop every response whose answer (``answer_key``) an earlier-ranked response of its group
    already gives: the best-scored copy stays, so no pair can set a text against itself. Ranks are
    recomputed; returns (ranked, dropped). Texts are compared by a 64-bit hash of their answer key."""
    df = ranked.select("group", _text=scored.get_column("text_key").gather(ranked.get_column("ridx")))
    first = _first_distinct(df, "group", "_text", exact=["group", "_text"])
    if first.all():
        return ranked, 0
    return _ranks(ranked.filter(first)), int((~first).sum())


def attach_prompts(ranked: pl.DataFrame, scored: pl.DataFrame, prompts: pa.Table) -> tuple[pl.DataFrame, int]:
    """``pidx`` = the row of each response's prompt in ``prompts`` (the first row of its (input,
    prompt_id)); responses without one are orphans (dropped, counted)."""
    index = pl.from_arrow(prompts.select(["input", "prompt_id"])).with_columns(pidx=pl.int_range(pl.len(), dtype=pl.Int64))
    if index.get_column("prompt_id").n_unique() < index.height:  # a repeated id: keep its first row per set
        index = index.unique(["input", "prompt_id"], keep="first", maintain_order=True)
    # One input set on both sides (the usual case): the id alone is the key (a one-column join is ~1.3x faster).
    sets = pl.concat([index.get_column("input"), scored.get_column("input")], rechunk=False)
    on = ["prompt_id"] if sets.min() == sets.max() else ["input", "prompt_id"]
    head = (ranked.get_column("rank") == 1).to_numpy()
    at = np.flatnonzero(head)  # ``ranked`` is sorted by (group, rank): each group starts with its head
    heads = scored.select(on)[ranked.get_column("ridx").gather(at)]
    pidx = heads.join(index.select(*on, "pidx"), on=on, how="left", maintain_order="left").get_column("pidx")
    # Every row takes its group head's prompt row (a forward fill over head positions, no join of all rows).
    owner = np.maximum.accumulate(np.where(head, np.arange(len(head)), 0))
    per_head = np.full(len(head), -1, dtype=np.int64)
    per_head[at] = pidx.fill_null(-1).to_numpy()
    df = ranked.with_columns(pidx=pl.Series(per_head[owner]))
    kept = df.filter(pl.col("pidx") >= 0)
    return kept, df.height - kept.height


def gap_thresholds(scored: pl.DataFrame, inputs: Sequence[Any], cfg: Curry) -> pl.DataFrame:
    """Per (input, scorer): the largest gap that is still a tie.

    ``scores: rated`` inputs: ``min_gap`` (the paper: any positive gap is a preference). ``scores: model``
    inputs: ``max(min_gap, relative_min_gap * spread)``, spread = the scorer's 95th minus 5th
    percentile score over the input set, so a gap inside the scorer's noise is not a preference. An
    input's own ``min_gap`` (when set) raises its tie gap to at least that value.
    """
    model = [i for i, spec in enumerate(inputs) if spec.scores == "model"]
    own = pl.DataFrame({"input": list(range(len(inputs))),
                        "_own": [getattr(spec, "min_gap", None) for spec in inputs]},
                       schema={"input": pl.Int64, "_own": pl.Float64})
    stats = scored.group_by("input", "scorer").agg(
        responses=pl.len(), lo=pl.col("score").quantile(0.05, "linear"), hi=pl.col("score").quantile(0.95, "linear"))
    relative = (pl.col("hi") - pl.col("lo")) * cfg.relative_min_gap
    return stats.with_columns(
        scores=pl.when(pl.col("input").is_in(model)).then(pl.lit("model")).otherwise(pl.lit("rated")),
        tie_gap=pl.when(pl.col("input").is_in(model)).then(pl.max_horizontal(relative, pl.lit(cfg.min_gap)))
        .otherwise(pl.lit(cfg.min_gap)).cast(pl.Float64),
    ).join(own.with_columns(pl.col("input").cast(stats.schema["input"])), on="input", how="left").with_columns(
        tie_gap=pl.max_horizontal("tie_gap", pl.col("_own").fill_null(0.0)),
    ).drop("_own").sort("input", "scorer")


SIDE = ["ridx", "score", "rank"]


def make_pairs(ranked: pl.DataFrame, pairing: str, tie_gap: pl.Series | float) -> tuple[pl.DataFrame, int]:
    """Candidate (chosen, rejected) pairs and their gaps; returns (pairs kept, pairs dropped as ties).

    ``best_vs_rest``: (R1, Rk), k = 2..n. ``all``: every (Ri, Rj) with i < j. ``chosen`` (``*_c``)
    always has the better rank, so the gap is >= 0; gap <= ``tie_gap`` (a number, or one per row of
    ``ranked``) is a tie. Output is sorted by (group, gap), which ``assign_levels`` relies on.
    """
    ranked = ranked.with_columns(_tie=tie_gap if isinstance(tie_gap, pl.Series) else pl.lit(float(tie_gap)))
    if pairing == "best_vs_rest":
        # ``ranked`` is sorted by (group, rank): R1 heads each group, so a forward fill carries it down.
        best = [pl.when(pl.col("rank") == 1).then(pl.col(c)).forward_fill().alias(f"{c}_c") for c in SIDE]
        cand = ranked.with_columns(best).filter(pl.col("rank") > 1).rename({c: f"{c}_r" for c in SIDE})
    elif pairing == "all":
        left = ranked.select("group", "pidx", "_tie", *SIDE).rename({c: f"{c}_c" for c in SIDE})
        right = ranked.select("group", *SIDE).rename({c: f"{c}_r" for c in SIDE})
        cand = left.join(right, on="group").filter(pl.col("rank_c") < pl.col("rank_r"))
    else:
        raise ValueError(f"curry.pairing: unknown value {pairing!r}; expected 'best_vs_rest' or 'all'")
    cand = cand.with_columns(gap=pl.col("score_c") - pl.col("score_r"))
    kept = cand.filter(pl.col("gap") > pl.col("_tie"))
    # best_vs_rest is already in (group, rank_r) order, i.e. (group, gap) order: scores fall as ranks grow.
    kept = kept.sort(["group", "gap", "rank_c", "rank_r"]) if pairing == "all" else kept
    return kept.select("group", "pidx", *[f"{c}_{s}" for s in "cr" for c in SIDE], "gap"), cand.height - kept.height


def assign_levels(pairs: pl.DataFrame, scheme: str, n_levels: int) -> pl.DataFrame:
    """``level`` 0 = easiest (largest gap) .. ``n_levels - 1`` = hardest.

    ``per_prompt`` (paper): r = dense rank of the gap within the prompt (0 = largest), m = distinct
    gaps in the prompt; level = r * n_levels // max(m, n_levels). With 4 responses and 3 levels that
    is (R1,R4) 0, (R1,R3) 1, (R1,R2) 2, as in the paper; a prompt with more distinct gaps than
    levels is spread evenly over them, one with fewer keeps r (equal gaps share a level).

    ``quantile`` (ours): r = rank of the gap among the pairs of its (input set, scorer) (``scale``; 0 = largest,
    ties take the lowest rank), N = those pairs; level = r * n_levels // N: quantile bins of equal size where ties
    allow (equal gaps share a level, so a level can be empty). Two scorers' gaps are never ranked together.
    """
    if scheme == "per_prompt":
        # ``pairs`` is sorted by (group, gap): dense ranks are counts of gap changes since the group start.
        new = _starts("group") | (pl.col("gap") != pl.col("gap").shift(1)).fill_null(True)
        pairs = pairs.with_columns(_c=new.cum_sum().cast(pl.Int64))
        pairs = pairs.with_columns(_asc=pl.col("_c") - pl.when(_starts("group")).then(pl.col("_c")).forward_fill())
        m = pl.when(_ends("group")).then(pl.col("_asc")).backward_fill() + 1
        level = (m - 1 - pl.col("_asc")) * n_levels // pl.max_horizontal(m, pl.lit(n_levels, pl.Int64))
        return pairs.with_columns(level=level.cast(pl.Int64)).drop("_c", "_asc")
    if scheme == "quantile":
        r = (pl.col("gap").rank("min", descending=True).over("scale") - 1).cast(pl.Int64)
        return pairs.with_columns(level=(r * n_levels // pl.len().over("scale")).cast(pl.Int64))
    raise ValueError(f"curry.levels: unknown value {scheme!r}; expected 'per_prompt' or 'quantile'")


def curriculum_order(level: np.ndarray, shuffle: np.ndarray, pair_hash: np.ndarray) -> np.ndarray:
    """Row order by (``level``, ``shuffle``, ``pair_hash``), all ascending."""
    # Levels are few small integers: a stable radix sort by level, then one single-key sort of the shuffle
    # hashes per level (a multi-key sort is ~5x slower); equal shuffle hashes (~2^-64 a pair) need the hash.
    small = level.astype(np.uint16) if len(level) and 0 <= level.min() and level.max() < 2**16 else level
    by_level = np.argsort(small, kind="stable")
    bounds = np.flatnonzero(np.diff(level[by_level])) + 1
    parts = []
    for at in np.split(by_level, bounds) if len(level) else []:
        keys = shuffle[at]
        order = np.argsort(keys)
        if (np.diff(keys[order]) == 0).any():
            order = np.lexsort((pair_hash[at], keys))
        parts.append(at[order])
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def order_pairs(pairs: pl.DataFrame, scored: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Pair hashes and curriculum order, from the responses' hashes (no strings are built here).

    ``pair_hash`` = ``combine(hash64(prompt_id, scorer), hash64(chosen response_id), hash64(rejected
    response_id))`` (``pipeline.ids``; the input set's position is left out, so a pair keeps its id
    whichever input list holds it); ``pair_id`` is its ``hex16``. Order: ``level`` ascending, then
    ``combine(pair_hash, seed=curry.seed)`` ascending (a seeded shuffle that depends only on the pair and
    the seed, never on the input's row order), then ``pair_hash``. Returns the pairs in that order, with
    ``pair_hash``.
    """
    c, r = pairs.get_column("ridx_c"), pairs.get_column("ridx_r")
    h = pl.DataFrame({"ps": scored.get_column("ps").gather(c), "c": scored.get_column("rid").gather(c),
                      "r": scored.get_column("rid").gather(r)}).select(ids.combine("ps", "c", "r")).to_series()
    shuffle = h.to_frame("h").select(ids.combine("h", seed=seed)).to_series().to_numpy()
    order = curriculum_order(pairs.get_column("level").to_numpy(), shuffle, h.to_numpy())
    return pairs.drop("rank_c", "rank_r").with_columns(pair_hash=h)[order]  # ranks are no longer needed


def build_pairs(prompts: pa.Table, responses: pa.Table, cfg: Curry, models: list[str] | None = None) -> tuple[pa.Table, dict[str, Any]]:
    """All steps: prompts + scored responses (contract tables with ``input``) -> the ordered pairs
    table (+ the counts for details.json); ``models``: per input, the models its pairs' lineage names."""
    scored, response_drops = scored_responses(responses)
    ranked, same_text = distinct_texts(rank_responses(scored), scored)
    ranked, orphans = attach_prompts(ranked, scored, prompts)
    response_drops = {**response_drops, **({"same_text": same_text} if same_text else {}),
                      **({"orphan": orphans} if orphans else {})}
    thresholds = gap_thresholds(scored, cfg.inputs, cfg)
    tie_gap: pl.Series | float = cfg.min_gap
    if (thresholds.get_column("tie_gap") != cfg.min_gap).any():
        tie_gap = scored.select("input", "scorer").join(thresholds, on=["input", "scorer"], how="left",
                                                        maintain_order="left").get_column("tie_gap").gather(ranked.get_column("ridx"))
    pairs, ties = make_pairs(ranked, cfg.pairing, tie_gap)
    scale = scored.select("input", "scorer")[pairs.get_column("ridx_c")].to_struct("scale")  # the pair's (input, scorer)
    pairs = order_pairs(assign_levels(pairs.with_columns(scale), cfg.levels, cfg.n_levels).drop("scale"), scored, cfg.seed)
    per_input = np.bincount(scored.get_column("input").gather(pairs.get_column("ridx_c")).to_numpy(),
                            minlength=len(cfg.inputs))
    m = metrics(responses.num_rows, ranked, pairs, ties, dict(sorted(response_drops.items())), thresholds, per_input, cfg)
    del ranked, tie_gap  # the table is the largest thing built: nothing it does not need stays alive
    rated = [i for i, spec in enumerate(cfg.inputs) if spec.scores == "rated"]  # an input dataset's responses
    return to_pairs_table(pairs, scored, prompts, responses, fingerprint(cfg), models, rated), m


def run(cfg: Curry, ex: Execution, out: Path) -> dict[str, Any]:
    """Read the input sets, build the pairs, write ``out/pairs/level=<k>/``, ``out/metrics.json`` (headline) and
    ``out/details.json`` (``m``, returned)."""
    fp = fingerprint(cfg)
    specs = [i.model_dump() for i in cfg.inputs]
    prompts, responses = load_inputs(specs)
    table, m = build_pairs(prompts, responses, cfg, lineage_models(specs))  # the models behind each input's scores
    ranked = [d["pairs"] for d in m["pairs"]["per_input"]]
    m["gates"], m["models"] = scorer_gates(specs, ranked), upstream_models(specs, ranked)  # judges, weights behind pairs
    per_source = pc.value_counts(table.column("source")).to_pylist() if table.num_rows else []
    m["pairs"]["per_source"] = {d["values"]: int(d["counts"]) for d in sorted(per_source, key=lambda d: d["values"])}
    staged = begin_outputs(out)  # pairs and metrics change together (pipeline/outputs.py)
    write_levels(table, staged / "pairs", fp, ex.target_shard_bytes, ex.row_group_bytes)
    write_metrics(staged, {"rows_in": m["responses"]["read"], "pairs": m["pairs"]["written"]}, m)
    commit_outputs(out)
    log.info("%s over %s", counted(table.num_rows, "pair"), counted(len(m["levels"]["gap_range"]), "level"))
    levels = ", ".join(f"{k} {n}" for k, n in m["pairs"]["per_level"].items())
    drops = ", ".join(f"{k} {n}" for k, n in {**m["responses"]["dropped"], **m["pairs"]["dropped"]}.items() if n)
    print(f"curry: {counted(m['responses']['read'], 'response')} -> {counted(m['pairs']['written'], 'pair')} "
          f"(per level: {levels}"
          f"{f'; dropped: {drops}' if drops else ''}); details in {out / 'details.json'}")
    return m


def main(params: Params) -> None:
    run(params.curry, params.execution, OUT)
