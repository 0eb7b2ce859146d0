"""DOVE step 1, items (stages/dove.py): every (instruction, response) the stage can compare.

Scored responses joined to their prompts, and both sides of labelled pairs (whose labels are the gold
relations ``gold_relations`` keeps, so the judge is never allowed to publish their reverse), read by
``load_items``. One item per distinct (instruction text, response); ``side_key`` identifies one up to whitespace.
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import pyarrow as pa

from pipeline import ids
from pipeline.checks import shows_nothing, squash
from pipeline.config import Dove
from pipeline.io import SourceError, read_table
from pipeline.metrics import recorded_beside, recorded_models
from pipeline.records import UNKNOWN_WRITER

ITEM_COLUMNS = ["item_id", "instruction", "instruction_text", "response", "origin", "models", "written_by"]


# --- 1. items ------------------------------------------------------------------------------------


def render_instruction(messages: pl.Expr) -> pl.Expr:
    """The instruction as the judge reads it: a lone user turn as is, a dialogue as 'Role: text' blocks."""
    transcript = messages.list.eval(
        pl.element().struct.field("role").str.to_titlecase() + ": " + pl.element().struct.field("content")
    ).list.join("\n\n")
    lone = messages.list.first().struct.field("content")
    return pl.when(messages.list.len() == 1).then(lone).otherwise(transcript)


def items_from_scored(prompts: pa.Table, responses: pa.Table, where: str = "responses",
                      models: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(items, rejects): responses joined to their prompts on prompt_id; unmatched responses are rejects
    (source = ``where``, the responses folder; row = the response's row there). ``models``: the JSON
    ``{"<stage>.<role>": model}`` of the stage that wrote them (``pipeline.metrics.recorded_models``: PUGC's
    generator, judge and policy; Selfie's policy and reference), on every item; without them (an input dataset's
    responses) ``written_by`` is each response's ``generator``, the model its source names (``records.written_by``)."""
    p = pl.from_arrow(prompts).select("prompt_id", pl.col("messages").alias("instruction"), pl.col("source").alias("origin"))
    writer = pl.col("generator") if models is None else pl.lit(None, pl.String)
    r = pl.from_arrow(responses).with_row_index("row").select("row", "prompt_id", "response_id", pl.col("text").alias("response"),
                                                              writer.alias("written_by"))
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
    return items.select("item_id", "instruction", "response", "origin", pl.lit(models, pl.String).alias("models"),
                        "written_by"), rejects


def items_from_pairs(pairs: pa.Table) -> pl.DataFrame:
    """Two items per labelled pair: prompt + chosen and prompt + rejected (assistant turns joined); an ingested
    pair's source names no writer (``written_by`` unknown)."""
    df = pl.from_arrow(pairs)
    text = lambda col: pl.col(col).list.eval(pl.element().struct.field("content")).list.join("\n\n")  # noqa: E731
    sides = [
        df.select(
            (pl.col("pair_id") + f":{side}").alias("item_id"),
            pl.col("prompt").alias("instruction"),
            text(side).alias("response"),
            pl.col("source").alias("origin"),
            pl.lit(None, pl.String).alias("models"),  # ingested pairs: a dataset's, no stage's model
            pl.lit(UNKNOWN_WRITER).alias("written_by"),
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
    empty = df.filter(shows_nothing(pl.col("response")))
    df = df.filter(~shows_nothing(pl.col("response")))
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
    return {"item_id": pl.String, "instruction": messages, "response": pl.String, "origin": pl.String, "models": pl.String,
            "written_by": pl.String}


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


def side_key(instruction_text: pl.Expr, response: pl.Expr) -> pl.Expr:
    """One (instruction, response) up to whitespace: the key gold relations and labels are compared by."""
    return ids.hash64(squash(instruction_text), squash(response))


def gold_relations(pair_items: pl.DataFrame) -> pl.DataFrame:
    """``(win, lose)`` side keys of the labelled pairs read as items (``items_from_pairs``' output)."""
    df = pair_items.with_columns(instruction_text=render_instruction(pl.col("instruction")).str.strip_chars())
    df = df.select(pl.col("item_id").str.replace(r":(chosen|rejected)$", "").alias("pair"),
                   pl.col("item_id").str.ends_with(":chosen").alias("won"),
                   side_key(pl.col("instruction_text"), pl.col("response")).alias("key"))
    won, lost = df.filter(pl.col("won")), df.filter(~pl.col("won"))
    return won.join(lost, on="pair", suffix="_l").select(win="key", lose="key_l").unique(maintain_order=True)


def tied(pairs: pl.DataFrame) -> pl.Series:
    """True on a labelled pair whose own scores are equal (margin 0, or score_chosen == score_rejected): a tie
    states no preference, so it is no gold relation (25 of the 200 UltraFeedback-binarized pairs
    in ../shared/data/real are ties); its two sides are still items."""
    cols = set(pairs.columns)
    tie = pl.lit(False)
    if "margin" in cols:
        tie = tie | (pl.col("margin") == 0).fill_null(False)
    if {"score_chosen", "score_rejected"} <= cols:
        tie = tie | (pl.col("score_chosen") == pl.col("score_rejected")).fill_null(False)
    return pairs.select(tie.alias("tie")).to_series()


def lineage_models(models_1: pl.Series, models_2: pl.Series) -> pl.Series:
    """Per pair: its lineage's ``,"models":{..}`` member, the roles behind either side's item
    (``pipeline.metrics.recorded_models``) merged, or ``""`` when neither side came from a stage's model (one
    merge per distinct couple)."""
    couples = pl.DataFrame({"a": models_1, "b": models_2}, schema={"a": pl.String, "b": pl.String})
    merged = {(a, b): {**json.loads(a or "{}"), **json.loads(b or "{}")} for a, b in couples.unique().iter_rows()}
    text = {k: ',"models":' + json.dumps(dict(sorted(v.items())), separators=(",", ":")) if v else "" for k, v in merged.items()}
    return pl.Series([text[k] for k in couples.iter_rows()], dtype=pl.String)


def upstream_models(cfg: Dove, lineage: pl.Series) -> dict[str, dict[str, Any]]:
    """details.json's ``models`` beyond DOVE's own: the roles of the stages whose responses are in at least one
    written pair, ``{"<stage>.<role>": {"model", "identity", "from": responses folder, "pairs": pairs naming it}}``."""
    named = lineage.str.json_path_match("$.models").drop_nulls().value_counts()
    pairs: dict[str, int] = {}
    for text, n in named.iter_rows():
        for key in json.loads(text):
            pairs[key] = pairs.get(key, 0) + n
    out: dict[str, dict[str, Any]] = {}
    for spec in cfg.inputs:
        for key, r in recorded_beside(spec.responses, "models").items():
            if key in pairs:
                out.setdefault(key, {**r, "from": spec.responses, "pairs": pairs[key]})
    return dict(sorted(out.items()))


def load_items(cfg: Dove) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """(items, rejects, gold relations, counts) from the input sets and the selected labelled pairs."""
    frames, rejects, per_input = [], [], {}
    gold = pl.DataFrame(schema={"win": pl.UInt64, "lose": pl.UInt64})
    for i, spec in enumerate(cfg.inputs):
        prompts = read_table(spec.prompts, "prompts", key=f"dove.inputs[{i}].prompts")
        responses = read_table(spec.responses, "responses", key=f"dove.inputs[{i}].responses")
        items, orphans = items_from_scored(prompts, responses, spec.responses, recorded_models(spec.responses))
        frames.append(items)
        rejects.append(orphans)
        per_input[spec.responses] = {"items": items.height, "responses_without_prompt": orphans.height}
    if cfg.pair_sources:
        pairs = pl.from_arrow(read_table(cfg.pairs, "pairs", key="dove.pairs"))
        missing = sorted(set(cfg.pair_sources) - set(pairs["source"].unique().to_list()))
        if missing:
            raise SourceError(
                f"dove.pair_sources: no pairs with source {missing} in {cfg.pairs}; sources there: "
                f"{sorted(pairs['source'].unique().to_list())}. Fix the names in params.yaml."
            )
        picked = pairs.filter(pl.col("source").is_in(cfg.pair_sources))
        frames.append(items_from_pairs(picked.to_arrow()))
        tie = tied(picked)
        gold = gold_relations(items_from_pairs(picked.filter(~tie).to_arrow()))
        per_input[cfg.pairs] = {"pairs": picked.height, "items": 2 * picked.height, "tied_not_gold": int(tie.sum())}
    items, empty, counts = normalise_items(frames)
    orphans = sum(r.height for r in rejects)
    counts = {"rows_in": counts["items_in"] + orphans, "responses_without_prompt": orphans, **counts}
    return items, pl.concat([*rejects, empty]), gold, {"inputs": per_input, **counts}
