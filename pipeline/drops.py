"""Rows that leave a flow say why: a ``drop`` column (null = kept) and its accounting.

A step marks rows instead of filtering them, so metrics can count every row it saw::

    marked = frame.with_columns(drop=first_reason((pl.col("text") == "", "empty"), (too_long, "too_long")))
    metrics["step"] = account(marked)      # {"in": 10, "kept": 7, "dropped": {"empty": 2, "too_long": 1}}
    frame = marked.filter(pl.col("drop").is_null())

``in == kept + sum(dropped)`` always holds.
"""

from __future__ import annotations

import polars as pl


def first_reason(*conditions: tuple[pl.Expr, str]) -> pl.Expr:
    """The reason of the first condition that holds, else null.

    >>> df = pl.DataFrame({"x": [0, 5, 50]})
    >>> df.select(first_reason((pl.col("x") > 10, "big"), (pl.col("x") > 1, "some")))["literal"].to_list()
    [None, 'some', 'big']
    """
    expr = pl.lit(None, dtype=pl.String)
    for cond, reason in reversed(conditions):
        expr = pl.when(cond).then(pl.lit(reason)).otherwise(expr)
    return expr


def drop_counts(frame: pl.DataFrame) -> dict[str, int]:
    """{reason: rows} of the dropped rows, reasons sorted."""
    counts = frame.filter(pl.col("drop").is_not_null())["drop"].value_counts(sort=True)
    return {r: int(n) for r, n in sorted(counts.iter_rows())}


def account(frame: pl.DataFrame) -> dict:
    """{in, kept, dropped: {reason: n}} of a frame carrying a ``drop`` column.

    >>> account(pl.DataFrame({"drop": [None, "empty", "empty"]}, schema={"drop": pl.String}))
    {'in': 3, 'kept': 1, 'dropped': {'empty': 2}}
    """
    dropped = drop_counts(frame)
    return {"in": frame.height, "kept": frame.height - sum(dropped.values()), "dropped": dropped}
