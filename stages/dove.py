"""DOVE: joint preferences over (instruction, response) pairs (Bansal et al., 2024, arXiv 2404.00530).

The steps, as in METHODS.md §5:

1. **Items**: every (instruction, response) we hold: scored responses joined to their prompts, and
   the chosen and rejected sides of ingested pairs (whose labels are the gold relations). One row per
   distinct (instruction, response).
2. **Instruction pairing**: each instruction gets ``pairs_per_instruction`` partners among the
   OTHER instructions, either at random (seeded) or its nearest neighbours in a TF-IDF (or
   embedding) space (ours); one response is drawn for each side. With ``include_conditional``,
   two responses of the same instruction are compared too (the paper's combined setup). A
   draw whose two sides are the same instruction and response once whitespace is normalised, case folded
   and sentence punctuation set aside (``pipeline.checks.same_text``) would set a text against itself: it is
   redrawn, up to ``max_redraws`` seeded attempts, then dropped (counted; stages/dove_draws.py).
3. **Joint judgment** (stages/dove_judge.py): the ``judge`` role first proves it discriminates on
   built-in probes (``dove.gates.judge``), then sees Instruction (a)/Output (a) and Instruction
   (b)/Output (b) and ``choose``s "a" or "b", once in each position order. Both orders agreeing
   gives the label, with confidence = the winner's mean probability over the two orders; a
   disagreement is a tie and dropped; a batch the engine cannot judge is recorded as a failure;
   texts too long for the judge are shortened and flagged. Optionally (ours) the judge's measured
   preference for position a is removed first.
4. **Contradictions**: a label that reverses a gold pair is dropped (gold wins), and two items
   labelled both ways by different comparisons lose both labels (counted).
5. **Rows**: ``chosen_prompt, chosen, rejected_prompt, rejected`` (the joint_pairs contract).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.checks import same_text
from pipeline.config import LLM, Dove, Execution, Params, fingerprint, resolve_role
from pipeline.execute import CHECKPOINT_ROOT, Checkpoint, clear_checkpoints, map_batches, step_checkpoint
from pipeline.io import StageError, shard_sizes, write_shards
from pipeline.llm.identity import model_identities, weights_identity
from pipeline.metrics import announce_overrides, counted, gate_headline, say, write_metrics
from pipeline.outputs import begin_outputs, commit_outputs
from pipeline.prompt import template
from pipeline.records import SCHEMAS, one_message, stable_id, written_by
from stages.dove_draws import conditional_comparisons, drop_same_text, joint_comparisons
from stages.dove_items import (
    index_instructions,
    lineage_models,
    load_items,
    side_key,
    upstream_models,
)
from stages.dove_judge import (
    JUDGE_INPUT,
    JUDGED_SCHEMA,
    calibration_warning,
    check_room,
    judge,
    judgment_metrics,
    position_bias,
    run_gate,
    verdicts,
)
from stages.dove_similarity import embed_texts, nearest_partners, row_cosine, tfidf_matrix

OUT = Path("data/dove")


# --- 1. items: load_items (stages/dove_items.py) ---------------------------------------------------


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
        return embed_texts(texts, cfg.embedding_model, revision=cfg.embedding_revision)
    return tfidf_matrix(texts, cfg.ngram_min, cfg.ngram_max, cfg.hash_features)


def embedding_identity(cfg: Dove) -> dict[str, dict[str, str]]:
    """``{"embedding": {"model", "identity"}}`` for details.json when `similar` pairing searches an embedding
    model's space (its weights choose the pairs, as the judge's choose the labels), else nothing."""
    if cfg.pairing != "similar" or not cfg.embedding_model:
        return {}
    return {"embedding": {"model": cfg.embedding_model, "identity": weights_identity(
        cfg.embedding_model, cfg.embedding_revision, pin="dove.embedding_revision: <40-hex commit>")}}


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


def same_instruction_is_conditional(comps: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """A "joint" comparison whose two instructions are the same text once whitespace is normalised and case
    folded compares two responses to one instruction: it is conditional (judged with the one-instruction
    prompt), since DOVE's joint preferences are over different instructions. Returns (comps, how many)."""
    same = ~pl.col("conditional") & same_text(pl.col("instruction_text_1"), pl.col("instruction_text_2"))
    n = comps.select(same.sum()).item()
    return comps.with_columns(conditional=pl.col("conditional") | same), int(n)


def build_comparisons(items: pl.DataFrame, cfg: Dove) -> tuple[pl.DataFrame, dict[str, Any]]:
    items, instructions = index_instructions(items)
    pairs, pair_counts = pair_instructions(instructions["text"].to_list(), cfg)
    joint, redrawn = joint_comparisons(items, instructions, pairs, cfg.seed, cfg.max_redraws)
    parts = [joint]
    if cfg.include_conditional:
        cond, cond_redrawn = conditional_comparisons(items, instructions, cfg.conditional_pairs_per_instruction,
                                                     cfg.seed, cfg.max_redraws)
        parts, redrawn = [joint, cond], redrawn + cond_redrawn
    comps, same = drop_same_text(pl.concat(parts, how="vertical_relaxed"))
    comps, same_instruction = same_instruction_is_conditional(comps)
    if not cfg.include_conditional:  # joint comparisons only: one over a single instruction is not one
        comps = comps.filter(~pl.col("conditional"))
    metrics = {
        "instructions": instructions.height,
        "instructions_with_several_responses": instructions.filter(pl.col("n_items") >= 2).height,
        "pairing": {**pair_counts, "mean_partner_similarity": pairs["similarity"].mean()},
        "joint_comparisons": int((~comps["conditional"]).sum()),
        "conditional_comparisons": int(comps["conditional"].sum()),
        "redrawn": redrawn,
        "dropped_same_text": same,
        "joint_with_same_instruction": same_instruction,
    }
    return comps, metrics


# --- 3. joint judgment (the judge step: stages/dove_judge.py) ---------------------------------------


def judge_templates() -> dict[str, str]:
    """The judge's two prompts (joint: two instructions; conditional: one), part of the fingerprint."""
    return {"joint_template": template("dove_judge"), "conditional_template": template("dove_judge_conditional")}


def run_judge(table: pa.Table, cfg: Dove, ex: Execution, judge_cfg: LLM, *, checkpoint: Checkpoint | None = None,
              desc: str = "dove judge (judge)") -> pa.Table | None:
    """The ``judge`` engine step over ``table`` (``JUDGE_INPUT`` columns) through ``map_batches``."""
    return map_batches(table, judge, execution=ex, engine=judge_cfg, checkpoint=checkpoint, desc=desc,
                       fn_kwargs={**judge_templates(), "max_prompt_chars": cfg.max_prompt_chars})


def judge_comparisons(comps: pl.DataFrame, cfg: Dove, ex: Execution, judge_cfg: LLM,
                      checkpoints: dict[str, Checkpoint]) -> tuple[pl.DataFrame, dict[str, Any], int]:
    """Step 3: the judge's gate on built-in probes first (a judge at chance costs seconds, not the stage), then
    every comparison in both position orders, less the measured position bias with ``position_calibration:
    median``. Returns (the comparisons with their verdicts, the gate report, comparisons withheld by it).
    ``checkpoints``: the probes' (``gate_judge``) and the comparisons' (``judge``), one fingerprint."""
    ck = checkpoints["gate_judge"]
    gate = run_gate(lambda t: run_judge(t, cfg, ex, judge_cfg, checkpoint=ck, desc="dove judge probes (judge)"), cfg,
                    judge_cfg.model, ex.on_gate_failure, checkpoint=ck)
    withheld = 0 if gate["passed"] else comps.height
    if withheld:
        comps = comps.head(0)
    judged = run_judge(comps.select(JUDGE_INPUT).to_arrow(), cfg, ex, judge_cfg, checkpoint=checkpoints["judge"])
    judged_df = pl.from_arrow(judged) if judged is not None else pl.DataFrame(schema=JUDGED_SCHEMA)
    judged_df = comps.join(judged_df, on="comparison_id", how="left", maintain_order="left")
    bias = position_bias(judged_df) if cfg.position_calibration == "median" else 0.0
    return verdicts(judged_df, bias), gate, withheld


# --- 4. contradictions ---------------------------------------------------------------------------


def resolve_contradictions(decided: pl.DataFrame, gold: pl.DataFrame) -> pl.DataFrame:
    """``dropped`` per comparison: ``contradicts_gold`` when its label reverses a gold pair (gold wins),
    ``judged_both_ways`` when the same two sides (up to whitespace) were labelled both ways by
    different comparisons (both dropped), else null."""
    first = pl.col("outcome") == "first"
    labelled = decided.filter(pl.col("outcome").is_in(["first", "second"])).select(
        "comparison_id",
        win=pl.when(first).then(side_key(pl.col("instruction_text_1"), pl.col("response_1")))
        .otherwise(side_key(pl.col("instruction_text_2"), pl.col("response_2"))),
        lose=pl.when(first).then(side_key(pl.col("instruction_text_2"), pl.col("response_2")))
        .otherwise(side_key(pl.col("instruction_text_1"), pl.col("response_1"))))
    reversed_gold = gold.select(win="lose", lose="win")
    against = labelled.join(reversed_gold, on=["win", "lose"], how="semi")["comparison_id"]
    rest = labelled.filter(~pl.col("comparison_id").is_in(against.implode()))
    rest = rest.with_columns(lo=pl.min_horizontal("win", "lose"), hi=pl.max_horizontal("win", "lose"))
    both = rest.filter(pl.col("win").n_unique().over("lo", "hi") > 1)["comparison_id"]
    return decided.with_columns(dropped=pl.when(pl.col("comparison_id").is_in(against.implode()))
                                .then(pl.lit("contradicts_gold"))
                                .when(pl.col("comparison_id").is_in(both.implode())).then(pl.lit("judged_both_ways"))
                                .otherwise(pl.lit(None, pl.String)))


def contradiction_metrics(decided: pl.DataFrame, gold: pl.DataFrame) -> dict[str, Any]:
    by = decided["dropped"].drop_nulls().value_counts()
    counts = {r["dropped"]: r["count"] for r in by.to_dicts()}
    keys = decided.filter(pl.col("outcome").is_in(["first", "second"])).select(
        a=side_key(pl.col("instruction_text_1"), pl.col("response_1")),
        b=side_key(pl.col("instruction_text_2"), pl.col("response_2")))
    on_gold = keys.join(gold, left_on=["a", "b"], right_on=["win", "lose"], how="semi").height + keys.join(
        gold, left_on=["b", "a"], right_on=["win", "lose"], how="semi").height
    return {"contradicts_gold": counts.get("contradicts_gold", 0), "judged_both_ways": counts.get("judged_both_ways", 0),
            "gold_relations": gold.height, "labels_on_gold_pairs": on_gold}


# --- 5. rows -------------------------------------------------------------------------------------


def joint_pairs(decided: pl.DataFrame, *, pairing: str, judge_model: str, fp: str) -> pa.Table:
    """joint_pairs rows for comparisons with a `first`/`second` outcome that were not dropped (winner = chosen)."""
    kept = pl.col("dropped").is_null() if "dropped" in decided.columns else pl.lit(True)
    won = decided.filter(pl.col("outcome").is_in(["first", "second"]) & kept)
    first = pl.col("outcome") == "first"

    def side(win: bool, col: str) -> pl.Expr:
        a, b = (f"{col}_1", f"{col}_2") if win else (f"{col}_2", f"{col}_1")
        return pl.when(first).then(pl.col(a)).otherwise(pl.col(b))

    truncated = pl.col("truncated").fill_null(False) if "truncated" in won.columns else pl.lit(False)
    df = won.select(
        side(True, "item_id").alias("chosen_item"),
        side(False, "item_id").alias("rejected_item"),
        side(True, "instruction").alias("chosen_prompt"),
        one_message("assistant", side(True, "response")).alias("chosen"),
        side(False, "instruction").alias("rejected_prompt"),
        one_message("assistant", side(False, "response")).alias("rejected"),
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
            truncated.alias("judge_truncated"),
            pl.lit(judge_model).alias("judge"),
            pl.lit(fp).alias("fingerprint"),
        ).struct.json_encode().str.strip_suffix("}"),  # + the models behind its sides' responses (dove_items)
        models=lineage_models(won.select(side(True, "models")).to_series(), won.select(side(False, "models")).to_series()),
        written_by=written_by(side(True, "written_by"), side(False, "written_by")),  # sides from input datasets
    ).with_columns(lineage=pl.concat_str("lineage", "models", "written_by", pl.lit("}")))
    pair_ids = [stable_id("dove", c, r) for c, r in zip(df["chosen_item"].to_list(), df["rejected_item"].to_list(), strict=True)]
    df = df.with_columns(pair_id=pl.Series(pair_ids, dtype=pl.String), method=pl.lit("dove")).drop("chosen_item", "rejected_item")
    return df.select(SCHEMAS["joint_pairs"].names).to_arrow()


def failure_rejects(decided: pl.DataFrame) -> pl.DataFrame:
    return decided.with_row_index("row").filter(pl.col("outcome") == "failure").select(
        pl.lit("dove/judge").alias("source"),
        pl.col("row").cast(pl.Int64),
        pl.col("failure").alias("reason"),
        pl.struct("comparison_id", "conditional", "item_id_1", "item_id_2").struct.json_encode().alias("raw"),
    )


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


def check_failures(item_rejects: pl.DataFrame, rows_in: int, judgment: dict[str, Any], max_fraction: float) -> None:
    """Raise ``DoveError`` when the input items rejected, or the judgments failed, exceed ``max_fraction``."""
    item_reasons = {r["reason"]: r["count"] for r in item_rejects["reason"].value_counts().to_dicts()}
    check_fraction("input items", item_rejects.height, rows_in, item_reasons, max_fraction)
    check_fraction("judgments", judgment["failures"], judgment["comparisons"], judgment["failures_by_reason"],
                   max_fraction)


def main(params: Params) -> None:
    """The five steps in order; then pairs, rejects and metrics swapped in together (``pipeline.outputs``),
    and the stage fails if too much of its input was rejected or failed to judge."""
    cfg, ex = params.dove, params.execution
    judge_cfg = resolve_role(params.llm, cfg.roles.judge)
    fp = fingerprint(cfg, judge_cfg, judge_templates())
    check_room(judge_templates(), cfg.max_prompt_chars)
    overrides = announce_overrides(params, "dove")

    items, item_rejects, gold, item_metrics = load_items(cfg)
    comps, pair_metrics = build_comparisons(items, cfg)
    checkpoints = {step: step_checkpoint(CHECKPOINT_ROOT / "dove", step, cfg, judge_cfg, judge_templates())
                   for step in ("gate_judge", "judge")}
    decided, gate, withheld = judge_comparisons(comps, cfg, ex, judge_cfg, checkpoints)
    decided = resolve_contradictions(decided, gold)
    table = joint_pairs(decided, pairing=cfg.pairing, judge_model=judge_cfg.model, fp=fp)

    out = begin_outputs(OUT)  # pairs, rejects and metrics change together (pipeline/outputs.py)
    write_shards(table, out / "pairs", name="joint_pairs", **shard_sizes(ex, fingerprint=fp))
    rejects = pl.concat([item_rejects, failure_rejects(decided)], how="vertical_relaxed")
    write_shards(rejects.to_arrow(), out / "rejects", name="rejects", fingerprint=fp)
    judgment = judgment_metrics(decided)
    warning = calibration_warning(judgment, cfg.position_calibration)
    if warning:
        say(warning)
    written = decided.filter(pl.col("outcome").is_in(["first", "second"]) & pl.col("dropped").is_null())
    details = {
        "items": item_metrics,
        **pair_metrics,
        **judgment,
        "contradictions": contradiction_metrics(decided, gold),
        "labels_withheld": withheld,
        "pairs_written": table.num_rows,
        "conditional_pairs_written": written.filter(pl.col("conditional")).height,
        "position_calibration": cfg.position_calibration,
        "calibration_warning": warning,
        "gates": {"judge": gate},
        "tiny_overrides": overrides,
        "judge": judge_cfg.model,
        "models": {**model_identities({"judge": judge_cfg}), **embedding_identity(cfg),
                   **upstream_models(cfg, pl.from_arrow(table.column("lineage")))},  # pugc.policy, ...
        "fingerprint": fp,
    }
    write_metrics(out, {"rows_in": item_metrics["rows_in"], "comparisons": judgment["comparisons"],
                        "pairs": table.num_rows, **gate_headline({"judge": gate})}, details)
    commit_outputs(OUT)
    clear_checkpoints("dove")
    print(f"dove: {counted(details['instructions'], 'instruction')} -> {counted(judgment['comparisons'], 'comparison')} "
          f"-> {counted(table.num_rows, 'pair')} ({counted(judgment['ties'], 'tie')}, {judgment['failures']} failed, "
          f"{counted(withheld, 'label')} withheld); details in "
          f"{OUT / 'details.json'}")
    check_failures(item_rejects, item_metrics["rows_in"], judgment, ex.max_reject_fraction)
