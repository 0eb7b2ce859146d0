"""The pairs a method trains on before the rest (``pipeline.config_export.TRAIN_FIRST``: Selfie/SPA's gold seed,
``source`` "seed"), found in a released file: the audit's ``seed_in_test``. Export pins their openings to train
(``stages.export_split.pinned_openings``), so one in a test split means the release was split, or changed, by
something else, and the method would not train on it first."""

from __future__ import annotations

import polars as pl

from pipeline.config_export import TRAIN_FIRST


def trained_first(method: pl.Expr) -> pl.Expr:
    """True on a row whose ``method`` trains on it first (its ``source`` is the method's ``TRAIN_FIRST``)."""
    return pl.any_horizontal([(method == m) & (pl.col("source") == s) for m, s in TRAIN_FIRST.items()]).fill_null(False)


def trained_first_rows(df: pl.DataFrame, config: str, name: str, first_row: int) -> list[str]:
    """``<name>:row <n> pair_id <id>`` for each row of ``df`` (rows ``first_row``... of file ``name``, counted from 0)
    its method (its ``method`` column, or the config's name) trains on first; none without a ``source`` column."""
    if "source" not in df.columns:
        return []
    method = pl.col("method") if "method" in df.columns else pl.lit(config)
    hits = df.with_row_index("_row", first_row).filter(trained_first(method))
    return [f"{name}:row {r} pair_id {p}" for r, p in hits.select("_row", "pair_id").iter_rows()]
