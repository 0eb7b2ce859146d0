"""WildFeedback's pairs as contract rows: ids and lineage per pair, the texts kept as columns.

Each pair kind's frame (prompt messages, chosen and rejected text, the turns it came from) becomes the
``pairs`` contract: ``pair_id`` (stable over conversation, kind and judged turn), one-message ``chosen`` and
``rejected``, and the lineage JSON. The texts stay in Arrow; only the small lineage fields go through
Python. A row that a cheap columnar test cannot vouch for (a missing text, roles out of order) is
validated by ``Pair`` itself, as every row once was, so a bad one is rejected with pydantic's reason.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import polars as pl
import pyarrow as pa
from pydantic import ValidationError

from pipeline.records import UNKNOWN_WRITER, Pair, check_table, empty_table, stable_id, to_table
from stages.wildfeedback_common import METHOD

# The model the conversation's source names as its assistant's (``Conversation.model``), carried to the pairs:
# a side no model of this pipeline wrote is that assistant's turn (lineage ``written_by``).
CONVERSATION_MODEL = "conversation_model"

# A prompt a Pair accepts: an optional system message, then user / assistant turns ending with a user turn.
_PROMPT_ROLES = r"^(system,)?user(,assistant,user)*$"


def pair_frame(df: pl.DataFrame, kind: str, models: dict, fp: str) -> pl.DataFrame:
    """One kind's rows as pairs: pair_id, prompt, chosen, rejected, confidence, method, source, lineage (and
    ``_kind``, which ``pairs_table`` counts and drops). A side with no finish reason is the conversation's own
    assistant turn: lineage ``written_by`` names its writer as the source does (``CONVERSATION_MODEL``)."""
    optional = [c for c in ("sat_turn", "chosen_finish_reason", "rejected_finish_reason") if c in df.columns]
    ids, lineages = [], []
    for r in df.select("conversation_id", "target_turn", "user_turn", "preference", CONVERSATION_MODEL,
                       *optional).iter_rows(named=True):
        lineage = {"stage": METHOD, "kind": kind, "conversation_id": r["conversation_id"],
                   "judged_turn": r["target_turn"], "feedback_turn": r["user_turn"],
                   "preference": r["preference"], "models": models, "fingerprint": fp}
        if r.get("sat_turn") is not None:
            lineage.update(revision_turn=r["target_turn"] + 2, sat_turn=r["sat_turn"])
        writers = {}
        for side in ("chosen", "rejected"):  # only text a model of this pipeline wrote has a finish reason
            if r.get(f"{side}_finish_reason") is not None:
                lineage[f"{side}_finish_reason"] = r[f"{side}_finish_reason"]
                writers[side] = None
            else:
                writers[side] = r[CONVERSATION_MODEL] or UNKNOWN_WRITER
        if any(writers.values()):
            lineage["written_by"] = writers
        ids.append(stable_id(METHOD, kind, r["conversation_id"], r["target_turn"]))
        lineages.append(json.dumps(lineage, sort_keys=True, ensure_ascii=False))

    def answer(col: str) -> pl.Expr:
        return pl.concat_list(pl.struct(pl.lit("assistant").alias("role"), pl.col(col).alias("content"))).alias(col)

    confidence = pl.col("confidence") if "confidence" in df.columns else pl.lit(None)
    return df.select(pl.Series("pair_id", ids, pl.String), "prompt", answer("chosen"), answer("rejected"),
                     confidence.cast(pl.Float64).alias("confidence"), pl.lit(METHOD).alias("method"),
                     "source", pl.Series("lineage", lineages, pl.String), pl.lit(kind).alias("_kind"))


def _surely_valid(pairs: pl.DataFrame) -> pl.Series:
    """True where a row passes ``Pair`` for certain: texts, source and prompt roles all present, roles in order.
    False rows are not necessarily invalid; ``Pair`` decides them."""
    roles = pl.col("prompt").list.eval(pl.element().struct.field("role").fill_null("?")).list.join(",")
    no_null_content = ~pl.col("prompt").list.eval(pl.element().struct.field("content").is_null()).list.any()
    return pairs.select(
        (pl.col("prompt").is_not_null() & roles.str.contains(_PROMPT_ROLES) & no_null_content
         & pl.col("chosen").list.first().struct.field("content").is_not_null()
         & pl.col("rejected").list.first().struct.field("content").is_not_null()
         & pl.col("source").is_not_null()).fill_null(False)
    ).to_series()


def pairs_table(frames: list[pl.DataFrame], invalid: Any) -> tuple[pa.Table, Counter]:
    """The ``pairs`` table of every kind's ``pair_frame``, and its rows by kind; ``invalid(row, error)`` is
    called for each row ``Pair`` refuses (it is left out)."""
    frames = [f for f in frames if f.height]
    if not frames:
        return empty_table("pairs"), Counter()
    pairs = pl.concat(frames)
    sure = _surely_valid(pairs)
    checked, kinds = [], Counter()
    for row in pairs.filter(~sure).to_dicts():
        kind = row.pop("_kind")
        try:
            Pair.model_validate(row)
            checked.append(row)
        except ValidationError as e:
            invalid(row, e)
            continue
        kinds[kind] += 1
    kept = pairs.filter(sure)
    kinds.update(dict(kept["_kind"].value_counts().iter_rows()))
    tables = [check_table(kept.drop("_kind").with_columns(label_smoothing=pl.lit(0.0), noisy=pl.lit(False))
                          .to_arrow(), "pairs")]
    if checked:
        tables.append(to_table(checked, "pairs"))
    return pa.concat_tables(tables).combine_chunks(), kinds
