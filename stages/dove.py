"""DOVE: joint preferences over (instruction, response) pairs (Bansal et al., 2024, arXiv 2404.00530).

The steps, as in METHODS.md §5:

1. **Items**: every (instruction, response) we hold: scored responses joined to their prompts, and
   the chosen and rejected sides of ingested pairs. One row per distinct (instruction, response).
2. **Instruction pairing**: each instruction gets ``pairs_per_instruction`` partners among the
   OTHER instructions, either at random (seeded) or its nearest neighbours in a TF-IDF (or
   embedding) space (ours); one response is drawn for each side. With ``include_conditional``,
   two responses of the same instruction are compared too (the paper's combined setup).
3. **Joint judgment**: the ``judge`` role sees Instruction (a)/Output (a) and Instruction
   (b)/Output (b) and ``choose``s "a" or "b", once in each position order. Both orders agreeing
   gives the label, with confidence = the winner's mean probability over the two orders; a
   disagreement is a tie and dropped; a batch the engine cannot judge is recorded as a failure.
   Optionally (ours) the judge's measured preference for position a is removed first.
4. **Rows**: ``chosen_prompt, chosen, rejected_prompt, rejected`` (the joint_pairs contract).

>>> verdicts(pl.DataFrame({"comparison_id": ["x", "y", "z"], "p_first_ab": [0.9, 0.8, 0.7],
...                        "p_first_ba": [0.7, 0.3, None], "failure": [None, None, "engine error"]}))["outcome"].to_list()
['first', 'tie', 'failure']
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.config import Dove, Params, fingerprint, resolve_role
from pipeline.execute import CHECKPOINT_ROOT, Checkpoint, map_batches
from pipeline.io import SourceError, StageError, read_table, write_json_atomic, write_shards
from pipeline.outputs import begin_outputs, commit_outputs
from pipeline.records import SCHEMAS, stable_id
from stages.dove_similarity import embed_texts, nearest_partners, row_cosine, tfidf_matrix

OUT = Path("data/dove")
PROMPTS = Path(__file__).resolve().parents[1] / "pipeline" / "prompts"
OPTIONS = ["a", "b"]
DIST_TOLERANCE = 1e-3  # how far from 1 a `choose` distribution may sum before it counts as invalid

ITEM_COLUMNS = ["item_id", "instruction", "instruction_text", "response", "origin"]
JUDGE_INPUT = ["comparison_id", "conditional", "instruction_text_1", "response_1", "instruction_text_2", "response_2"]
JUDGED_SCHEMA = {"comparison_id": pl.String, "p_first_ab": pl.Float64, "p_first_ba": pl.Float64, "failure": pl.String}


# --- 1. items ------------------------------------------------------------------------------------


def render_instruction(messages: pl.Expr) -> pl.Expr:
    """The instruction as the judge reads it: a lone user turn as is, a dialogue as 'Role: text' blocks."""
    transcript = messages.list.eval(
        pl.element().struct.field("role").str.to_titlecase() + ": " + pl.element().struct.field("content")
    ).list.join("\n\n")
    lone = messages.list.first().struct.field("content")
    return pl.when(messages.list.len() == 1).then(lone).otherwise(transcript)


def items_from_scored(prompts: pa.Table, responses: pa.Table, where: str = "responses") -> tuple[pl.DataFrame, pl.DataFrame]:
    """(items, rejects): responses joined to their prompts on prompt_id; unmatched responses are rejects
    (source = ``where``, the responses folder; row = the response's row there)."""
    p = pl.from_arrow(prompts).select("prompt_id", pl.col("messages").alias("instruction"), pl.col("source").alias("origin"))
    r = pl.from_arrow(responses).with_row_index("row").select("row", "prompt_id", "response_id", pl.col("text").alias("response"))
    joined = r.join(p, on="prompt_id", how="left")
    orphans = joined.filter(pl.col("instruction").is_null())
    items = joined.filter(pl.col("instruction").is_not_null()).with_columns(
        item_id=pl.col("prompt_id") + ":" + pl.col("response_id")
    )
    rejects = orphans.select(
        pl.lit(where).alias("source"),
        pl.col("row").cast(pl.Int64),
        pl.lit("response without a prompt (prompt_id not in the prompts folder)").alias("reason"),
        pl.struct("prompt_id", "response_id").struct.json_encode().alias("raw"),
    )
    return items.select("item_id", "instruction", "response", "origin"), rejects


def items_from_pairs(pairs: pa.Table) -> pl.DataFrame:
    """Two items per labelled pair: prompt + chosen and prompt + rejected (assistant turns joined)."""
    df = pl.from_arrow(pairs)
    text = lambda col: pl.col(col).list.eval(pl.element().struct.field("content")).list.join("\n\n")  # noqa: E731
    sides = [
        df.select(
            (pl.col("pair_id") + f":{side}").alias("item_id"),
            pl.col("prompt").alias("instruction"),
            text(side).alias("response"),
            pl.col("source").alias("origin"),
        )
        for side in ("chosen", "rejected")
    ]
    return pl.concat(sides)


def normalise_items(frames: list[pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """One items table: instruction text rendered, empty responses rejected, duplicate (instruction, response) merged.

    Returns (items sorted by instruction_text then item_id, rejects, counts).
    """
    df = pl.concat(frames, how="vertical_relaxed") if frames else pl.DataFrame(schema=_item_schema())
    df = df.with_columns(instruction_text=render_instruction(pl.col("instruction")).str.strip_chars())
    df = df.with_row_index("row")  # position in the concatenated inputs, for the rejects table
    empty = df.filter(pl.col("response").str.strip_chars().str.len_chars() == 0)
    df = df.filter(pl.col("response").str.strip_chars().str.len_chars() > 0)
    # Identical (instruction, response) from two sources is one item; the lowest item_id is kept.
    deduped = df.sort("item_id").unique(["instruction_text", "response"], keep="first", maintain_order=True)
    deduped = deduped.sort("instruction_text", "item_id").select(ITEM_COLUMNS)
    rejects = empty.select(
        pl.lit("dove/items").alias("source"),
        pl.col("row").cast(pl.Int64),
        pl.lit("empty response").alias("reason"),
        pl.struct("item_id", "origin").struct.json_encode().alias("raw"),
    )
    counts = {"items_in": df.height + empty.height, "empty_response": empty.height,
              "duplicate_items": df.height - deduped.height, "items": deduped.height}
    return deduped, rejects, counts


def _item_schema() -> dict[str, Any]:
    messages = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
    return {"item_id": pl.String, "instruction": messages, "response": pl.String, "origin": pl.String}


def index_instructions(items: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(items with `inst`, instructions): `inst` numbers the distinct instruction texts in sorted order;
    instructions holds per `inst` its text, first item row and item count (items are sorted by text)."""
    items = items.with_columns(inst=pl.col("instruction_text").rank("dense").cast(pl.Int64) - 1)
    items = items.with_row_index("item_row").with_columns(pl.col("item_row").cast(pl.Int64))
    instructions = items.group_by("inst", maintain_order=True).agg(
        pl.col("instruction_text").first().alias("text"),
        pl.col("item_row").first().alias("first_row"),
        pl.len().cast(pl.Int64).alias("n_items"),
    )
    return items, instructions


# --- 2. pairing ----------------------------------------------------------------------------------


def random_partners(n: int, k: int, seed: int) -> np.ndarray:
    """``(n, min(k, n-1))`` partner indices: distinct per row, never the row itself, seeded.

    Offsets in [1, n-1] are drawn, sorted and spread (+0, +1, ...) so each row's are distinct.
    """
    kk = min(k, n - 1)
    if kk <= 0:
        return np.zeros((n, 0), dtype=np.int64)
    rng = np.random.default_rng([seed, 1])
    draws = np.sort(rng.integers(0, n - kk, size=(n, kk)), axis=1)
    offsets = draws + np.arange(kk) + 1
    return (np.arange(n)[:, None] + offsets) % n


def instruction_space(texts: list[str], cfg: Dove):
    """The vector space `similar` searches: an embedding model when configured, else hashed TF-IDF."""
    if cfg.embedding_model:
        return embed_texts(texts, cfg.embedding_model)
    return tfidf_matrix(texts, cfg.ngram_min, cfg.ngram_max, cfg.hash_features)


def pair_instructions(texts: list[str], cfg: Dove, space=None) -> tuple[pl.DataFrame, dict[str, int]]:
    """Instruction pairs ``(inst_a, inst_b, similarity)``, a != b, each unordered pair once.

    ``random``: ``pairs_per_instruction`` uniform partners per instruction. ``similar``: the nearest
    ones below ``max_partner_similarity``. ``similarity`` is the cosine in ``space`` (computed when
    not given, except for `random` with an embedding model, where it stays null to spare the model run).
    """
    n = len(texts)
    if space is None and n >= 2 and (cfg.pairing == "similar" or not cfg.embedding_model):
        space = instruction_space(texts, cfg)
    if n < 2:
        partners = np.zeros((n, 0), dtype=np.int64)
    elif cfg.pairing == "similar":
        partners, _ = nearest_partners(space, cfg.pairs_per_instruction, cfg.max_partner_similarity)
    else:
        partners = random_partners(n, cfg.pairs_per_instruction, cfg.seed)
    a = np.repeat(np.arange(n), partners.shape[1])
    b = partners.reshape(-1)
    wanted = n * cfg.pairs_per_instruction
    a, b = a[b >= 0], b[b >= 0]
    sim = row_cosine(space, a, b) if space is not None and a.size else np.full(a.size, np.nan, np.float32)
    df = pl.DataFrame({"inst_a": a, "inst_b": b, "similarity": sim}, schema_overrides={"similarity": pl.Float64})
    df = df.with_columns(similarity=pl.col("similarity").fill_nan(None))
    # b's own list may name a too: judge the unordered pair once.
    pairs = df.with_columns(lo=pl.min_horizontal("inst_a", "inst_b"), hi=pl.max_horizontal("inst_a", "inst_b"))
    pairs = pairs.unique(["lo", "hi"], keep="first", maintain_order=True).drop("lo", "hi")
    counts = {"partner_slots": wanted, "no_partner": wanted - df.height, "mutual_duplicates": df.height - pairs.height,
              "instruction_pairs": pairs.height}
    return pairs, counts


def _pick(instructions: pl.DataFrame, inst: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly drawn item row of each instruction in ``inst``."""
    first = instructions["first_row"].to_numpy()[inst]
    count = instructions["n_items"].to_numpy()[inst]
    return first + np.floor(rng.random(inst.size) * count).astype(np.int64)


def joint_comparisons(items: pl.DataFrame, instructions: pl.DataFrame, pairs: pl.DataFrame, seed: int) -> pl.DataFrame:
    """For each instruction pair, one random response of each side (seeded)."""
    rng = np.random.default_rng([seed, 2])
    a = _pick(instructions, pairs["inst_a"].to_numpy(), rng)
    b = _pick(instructions, pairs["inst_b"].to_numpy(), rng)
    return _comparisons(items, a, b, conditional=False, similarity=pairs["similarity"])


def conditional_comparisons(items: pl.DataFrame, instructions: pl.DataFrame, k: int, seed: int) -> pl.DataFrame:
    """Up to ``k`` distinct response pairs per instruction with two or more responses (seeded)."""
    multi = instructions.filter(pl.col("n_items") >= 2)
    rng = np.random.default_rng([seed, 3])
    first = np.repeat(multi["first_row"].to_numpy(), k)
    count = np.repeat(multi["n_items"].to_numpy(), k)
    x = np.floor(rng.random(first.size) * count).astype(np.int64)
    y = (x + 1 + np.floor(rng.random(first.size) * (count - 1)).astype(np.int64)) % count  # y != x
    a, b = first + np.minimum(x, y), first + np.maximum(x, y)
    keep = pl.DataFrame({"a": a, "b": b}).unique(["a", "b"], keep="first", maintain_order=True)  # k > pairs left
    a, b = keep["a"].to_numpy(), keep["b"].to_numpy()
    return _comparisons(items, a, b, conditional=True, similarity=pl.Series([None] * a.size, dtype=pl.Float64))


def _comparisons(items: pl.DataFrame, a: np.ndarray, b: np.ndarray, *, conditional: bool, similarity: pl.Series) -> pl.DataFrame:
    cols = ["item_id", "instruction", "instruction_text", "response", "origin"]
    left = items[a].select(cols).rename({c: f"{c}_1" for c in cols})
    right = items[b].select(cols).rename({c: f"{c}_2" for c in cols})
    df = pl.concat([left, right], how="horizontal").with_columns(
        conditional=pl.lit(conditional), similarity=similarity.cast(pl.Float64).alias("similarity")
    )
    return df.with_columns(comparison_id=pl.concat_str("item_id_1", pl.lit("|"), "item_id_2"))


# --- 3. joint judgment ---------------------------------------------------------------------------


def fence(text: str) -> str:
    """User text cannot close or open a fence: a run of three angle brackets is broken up."""
    return text.replace("<<<", "<< <").replace(">>>", "> >>")


def judge_prompt(template: str, instruction_a: str, output_a: str, instruction_b: str, output_b: str) -> str:
    return template.format(instruction_a=fence(instruction_a), output_a=fence(output_a),
                           instruction_b=fence(instruction_b), output_b=fence(output_b))


def _check_distribution(probs: Any) -> str | None:
    """Why a `choose` result is not a distribution over ["a", "b"], or None when it is."""
    try:
        values = [float(p) for p in probs]
    except (TypeError, ValueError):
        return f"invalid judge distribution: not a list of numbers ({str(probs)[:80]})"
    if len(values) != len(OPTIONS):
        return f"invalid judge distribution: {len(values)} probabilities for {len(OPTIONS)} options"
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
        return f"invalid judge distribution: {values} (NaN, infinite or outside [0, 1])"
    if abs(sum(values) - 1.0) > DIST_TOLERANCE:
        return f"invalid judge distribution: sums to {sum(values):.4f}, not 1"
    return None


def _choose(engine, prompts: list[list[dict[str, str]]]) -> tuple[list | None, str | None]:
    try:
        out = engine.choose(prompts, OPTIONS)
    except Exception as e:  # a model error must not sink the stage: it becomes a failure row
        return None, f"engine error: {type(e).__name__}: {str(e)[:200]}"
    if len(out) != len(prompts):
        return None, f"engine error: {len(out)} results for {len(prompts)} prompts"
    return out, None


def judge(batch: pa.Table, engine, *, joint_template: str, conditional_template: str, max_prompt_chars: int) -> pa.Table:
    """Engine step: P(first item wins) in order AB (first at position a) and BA (first at position b).

    Output: comparison_id, p_first_ab, p_first_ba, failure (reason; the p's are null then). Both
    orders of a whole batch go to the engine in one ``choose`` call; if that call raises, each
    comparison is retried alone so one bad row does not fail its neighbours.
    """
    rows = batch.select(JUDGE_INPUT).to_pylist()
    failure: list[str | None] = [None] * len(rows)
    prompts_ab, prompts_ba = [], []
    for i, r in enumerate(rows):
        template = conditional_template if r["conditional"] else joint_template
        one = (r["instruction_text_1"], r["response_1"])
        two = (r["instruction_text_2"], r["response_2"])
        ab, ba = judge_prompt(template, *one, *two), judge_prompt(template, *two, *one)
        if max(len(ab), len(ba)) > max_prompt_chars:
            failure[i] = f"prompt too long: judge prompt is {max(len(ab), len(ba))} characters, over max_prompt_chars={max_prompt_chars}"
        prompts_ab.append([{"role": "user", "content": ab}])
        prompts_ba.append([{"role": "user", "content": ba}])
    todo = [i for i in range(len(rows)) if failure[i] is None]
    results: dict[int, tuple[Any, Any]] = {}
    out, err = _choose(engine, [prompts_ab[i] for i in todo] + [prompts_ba[i] for i in todo]) if todo else ([], None)
    if out is not None:
        results = {i: (out[j], out[len(todo) + j]) for j, i in enumerate(todo)}
    else:
        for i in todo:
            one, err_one = _choose(engine, [prompts_ab[i], prompts_ba[i]])
            if one is None:
                failure[i] = err_one
            else:
                results[i] = (one[0], one[1])
    p_ab: list[float | None] = [None] * len(rows)
    p_ba: list[float | None] = [None] * len(rows)
    for i, (d_ab, d_ba) in results.items():
        problem = _check_distribution(d_ab) or _check_distribution(d_ba)
        if problem:
            failure[i] = problem
        else:
            p_ab[i], p_ba[i] = float(d_ab[0]), float(d_ba[1])  # the first item sits at a, then at b
    return pa.table({
        "comparison_id": pa.array([r["comparison_id"] for r in rows], pa.string()),
        "p_first_ab": pa.array(p_ab, pa.float64()),
        "p_first_ba": pa.array(p_ba, pa.float64()),
        "failure": pa.array(failure, pa.string()),
    })


def _logit(p: pl.Expr) -> pl.Expr:
    p = p.clip(1e-9, 1 - 1e-9)
    return (p / (1 - p)).log()


def position_bias(judged: pl.DataFrame) -> float:
    """The judge's log-odds for position a over b, median over judged comparisons (0: unbiased).

    Order AB puts item 1 at a, order BA puts item 2 at a; the mean of the two orders' log-odds for a
    cancels the items' own merit and leaves the judge's preference for the position.
    """
    ok = judged.filter(pl.col("failure").is_null() & pl.col("p_first_ab").is_not_null())
    if ok.height == 0:
        return 0.0
    return float(ok.select(((_logit(pl.col("p_first_ab")) - _logit(pl.col("p_first_ba"))) / 2).median()).item())


def verdicts(judged: pl.DataFrame, bias: float = 0.0) -> pl.DataFrame:
    """outcome per comparison: `first`/`second` when both orders prefer that item, `tie` when they
    disagree (or either is exactly 0.5), `failure` when judging failed; confidence = the winner's
    mean probability over both orders.

    ``bias`` (log-odds, see ``position_bias``) is removed from both orders first (`q_first_*`):
    with ``dove.position_calibration: median`` (ours); 0 applies the paper's rule to the raw
    probabilities.
    """
    sigmoid = lambda x: 1 / (1 + (-x).exp())  # noqa: E731
    q = judged.with_columns(
        q_first_ab=sigmoid(_logit(pl.col("p_first_ab")) - bias) if bias else pl.col("p_first_ab"),
        q_first_ba=sigmoid(_logit(pl.col("p_first_ba")) + bias) if bias else pl.col("p_first_ba"),
    )
    ab, ba = pl.col("q_first_ab"), pl.col("q_first_ba")
    outcome = (
        pl.when(pl.col("failure").is_not_null()).then(pl.lit("failure"))
        .when((ab > 0.5) & (ba > 0.5)).then(pl.lit("first"))
        .when((ab < 0.5) & (ba < 0.5)).then(pl.lit("second"))
        .otherwise(pl.lit("tie"))
    )
    mean_first = (ab + ba) / 2
    return q.with_columns(outcome=outcome).with_columns(
        confidence=pl.when(pl.col("outcome") == "first").then(mean_first)
        .when(pl.col("outcome") == "second").then(1 - mean_first)
        .otherwise(None)
    )


# --- 4. rows -------------------------------------------------------------------------------------


def joint_pairs(decided: pl.DataFrame, *, pairing: str, judge_model: str, fp: str) -> pa.Table:
    """joint_pairs rows for comparisons with a `first`/`second` outcome (winner = chosen)."""
    won = decided.filter(pl.col("outcome").is_in(["first", "second"]))
    first = pl.col("outcome") == "first"

    def side(win: bool, col: str) -> pl.Expr:
        a, b = (f"{col}_1", f"{col}_2") if win else (f"{col}_2", f"{col}_1")
        return pl.when(first).then(pl.col(a)).otherwise(pl.col(b))

    assistant = lambda e: pl.concat_list(pl.struct(pl.lit("assistant").alias("role"), e.alias("content")))  # noqa: E731
    df = won.select(
        side(True, "item_id").alias("chosen_item"),
        side(False, "item_id").alias("rejected_item"),
        side(True, "instruction").alias("chosen_prompt"),
        assistant(side(True, "response")).alias("chosen"),
        side(False, "instruction").alias("rejected_prompt"),
        assistant(side(False, "response")).alias("rejected"),
        "confidence",
        lineage=pl.struct(
            pl.lit("dove").alias("stage"),
            pl.col("conditional"),
            pl.when(pl.col("conditional")).then(pl.lit("conditional")).otherwise(pl.lit(pairing)).alias("pairing"),
            pl.col("similarity"),
            side(True, "item_id").alias("chosen_item"),
            side(False, "item_id").alias("rejected_item"),
            side(True, "origin").alias("chosen_source"),
            side(False, "origin").alias("rejected_source"),
            pl.col("p_first_ab"),
            pl.col("p_first_ba"),
            pl.col("q_first_ab"),
            pl.col("q_first_ba"),
            pl.lit(judge_model).alias("judge"),
            pl.lit(fp).alias("fingerprint"),
        ).struct.json_encode(),
    )
    ids = [stable_id("dove", c, r) for c, r in zip(df["chosen_item"].to_list(), df["rejected_item"].to_list(), strict=True)]
    df = df.with_columns(pair_id=pl.Series(ids, dtype=pl.String), method=pl.lit("dove")).drop("chosen_item", "rejected_item")
    return df.select(SCHEMAS["joint_pairs"].names).to_arrow()


def failure_rejects(decided: pl.DataFrame) -> pl.DataFrame:
    return decided.with_row_index("row").filter(pl.col("outcome") == "failure").select(
        pl.lit("dove/judge").alias("source"),
        pl.col("row").cast(pl.Int64),
        pl.col("failure").alias("reason"),
        pl.struct("comparison_id", "conditional", "item_id_1", "item_id_2").struct.json_encode().alias("raw"),
    )


def judgment_metrics(decided: pl.DataFrame) -> dict[str, Any]:
    """Counts by outcome, failure kinds, and the judge's position behaviour (raw and as applied)."""
    by = {r["outcome"]: r["count"] for r in decided["outcome"].value_counts().to_dicts()}
    decided_n = by.get("first", 0) + by.get("second", 0)
    judged = decided_n + by.get("tie", 0)
    raw = verdicts(decided.select("comparison_id", "p_first_ab", "p_first_ba", "failure"))
    raw_n = raw.filter(pl.col("outcome").is_in(["first", "second"])).height
    ok = decided.filter(pl.col("failure").is_null())
    # Share of single-order verdicts (raw) that picked position a: 0.5 is an unbiased judge.
    a_votes = ((ok["p_first_ab"] > 0.5).sum() + (ok["p_first_ba"] < 0.5).sum()) if ok.height else 0
    # A reason reads "<kind>: <detail>"; metrics count kinds, the rejects table keeps the details.
    reasons = decided.filter(pl.col("outcome") == "failure")["failure"].cast(pl.String).str.replace(r"(?s):.*", "").value_counts()
    return {
        "comparisons": decided.height,
        "judged": judged,
        "consistent": decided_n,
        "ties": by.get("tie", 0),
        "failures": by.get("failure", 0),
        "failures_by_reason": {r["failure"]: r["count"] for r in reasons.sort("failure").to_dicts()},
        "position_consistency_rate": decided_n / judged if judged else None,
        "raw_position_consistency_rate": raw_n / judged if judged else None,
        "position_a_rate": a_votes / (2 * ok.height) if ok.height else None,
        "position_bias_logit": position_bias(decided),
        "mean_confidence": decided.filter(pl.col("confidence").is_not_null())["confidence"].mean(),
    }


# --- main ----------------------------------------------------------------------------------------


class DoveError(StageError):
    """Too much of the stage's input was rejected or failed to judge."""


def check_fraction(what: str, failed: int, total: int, reasons: dict[str, int], max_fraction: float) -> None:
    """Raise when ``failed / total`` exceeds ``max_fraction``, naming the top reasons."""
    if total and failed / total > max_fraction:
        top = ", ".join(f"{k} ({v})" for k, v in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:3])
        raise DoveError(
            f"dove: {failed} of {total} {what} failed ({failed / total:.0%} > execution.max_reject_fraction="
            f"{max_fraction}); top reasons: {top}. Details per row in {OUT / 'rejects'}; fix the inputs or the "
            "judge model (roles.judge / llm), or raise max_reject_fraction."
        )


def load_items(cfg: Dove) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    frames, rejects, per_input = [], [], {}
    for spec in cfg.inputs:
        items, orphans = items_from_scored(
            read_table(spec.prompts, "prompts"), read_table(spec.responses, "responses"), spec.responses)
        frames.append(items)
        rejects.append(orphans)
        per_input[spec.responses] = {"items": items.height, "responses_without_prompt": orphans.height}
    if cfg.pair_sources:
        pairs = pl.from_arrow(read_table(cfg.pairs, "pairs"))
        missing = sorted(set(cfg.pair_sources) - set(pairs["source"].unique().to_list()))
        if missing:
            raise SourceError(
                f"dove.pair_sources: no pairs with source {missing} in {cfg.pairs}; sources there: "
                f"{sorted(pairs['source'].unique().to_list())}. Fix the names in params.yaml."
            )
        picked = pairs.filter(pl.col("source").is_in(cfg.pair_sources))
        frames.append(items_from_pairs(picked.to_arrow()))
        per_input[cfg.pairs] = {"pairs": picked.height, "items": 2 * picked.height}
    items, empty, counts = normalise_items(frames)
    orphans = sum(r.height for r in rejects)
    counts = {"rows_in": counts["items_in"] + orphans, "responses_without_prompt": orphans, **counts}
    return items, pl.concat([*rejects, empty]), {"inputs": per_input, **counts}


def build_comparisons(items: pl.DataFrame, cfg: Dove) -> tuple[pl.DataFrame, dict[str, Any]]:
    items, instructions = index_instructions(items)
    pairs, pair_counts = pair_instructions(instructions["text"].to_list(), cfg)
    parts = [joint_comparisons(items, instructions, pairs, cfg.seed)]
    if cfg.include_conditional:
        parts.append(conditional_comparisons(items, instructions, cfg.conditional_pairs_per_instruction, cfg.seed))
    comps = pl.concat(parts, how="vertical_relaxed")
    metrics = {
        "instructions": instructions.height,
        "instructions_with_several_responses": instructions.filter(pl.col("n_items") >= 2).height,
        "pairing": {**pair_counts, "mean_partner_similarity": pairs["similarity"].mean()},
        "joint_comparisons": parts[0].height,
        "conditional_comparisons": parts[1].height if cfg.include_conditional else 0,
    }
    return comps, metrics


def main(params: Params) -> None:
    cfg, ex = params.dove, params.execution
    judge_cfg = resolve_role(params.llm, cfg.roles.judge)
    templates = {"joint_template": (PROMPTS / "dove_judge.txt").read_text(encoding="utf-8"),
                 "conditional_template": (PROMPTS / "dove_judge_conditional.txt").read_text(encoding="utf-8")}
    fp = fingerprint(cfg, judge_cfg, templates)

    items, item_rejects, item_metrics = load_items(cfg)
    comps, pair_metrics = build_comparisons(items, cfg)
    checkpoint = Checkpoint(CHECKPOINT_ROOT / "dove" / "judge", fp)
    judged = map_batches(
        comps.select(JUDGE_INPUT).to_arrow(), judge, execution=ex, engine=judge_cfg, checkpoint=checkpoint,
        desc="dove judge", fn_kwargs={**templates, "max_prompt_chars": cfg.max_prompt_chars},
    )
    judged_df = pl.from_arrow(judged) if judged is not None else pl.DataFrame(schema=JUDGED_SCHEMA)
    judged_df = comps.join(judged_df, on="comparison_id", how="left", maintain_order="left")
    bias = position_bias(judged_df) if cfg.position_calibration == "median" else 0.0
    decided = verdicts(judged_df, bias)
    table = joint_pairs(decided, pairing=cfg.pairing, judge_model=judge_cfg.model, fp=fp)

    out = begin_outputs(OUT)  # pairs, rejects and metrics change together (pipeline/outputs.py)
    write_shards(table, out / "pairs", name="joint_pairs", fingerprint=fp,
                 target_shard_bytes=ex.target_shard_bytes, row_group_bytes=ex.row_group_bytes)
    rejects = pl.concat([item_rejects, failure_rejects(decided)], how="vertical_relaxed")
    write_shards(rejects.to_arrow(), out / "rejects", name="rejects", fingerprint=fp)
    judgment = judgment_metrics(decided)
    written = decided.filter(pl.col("outcome").is_in(["first", "second"]))
    write_json_atomic({
        "items": item_metrics,
        **pair_metrics,
        **judgment,
        "pairs_written": table.num_rows,
        "conditional_pairs_written": written.filter(pl.col("conditional")).height,
        "position_calibration": cfg.position_calibration,
        "judge": judge_cfg.model,
        "fingerprint": fp,
    }, out / "metrics.json")
    commit_outputs(OUT)
    checkpoint.clear()
    item_reasons = {r["reason"]: r["count"] for r in item_rejects["reason"].value_counts().to_dicts()}
    check_fraction("input items", item_rejects.height, item_metrics["rows_in"], item_reasons, ex.max_reject_fraction)
    check_fraction("judgments", judgment["failures"], judgment["comparisons"], judgment["failures_by_reason"],
                   ex.max_reject_fraction)
