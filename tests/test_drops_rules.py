"""pipeline/drops.py: a rule a hand mutant showed untested."""

import polars as pl

from pipeline.drops import account


def test_dropped_reasons_are_listed_in_name_order_not_by_count():
    """Mutant R2 (reasons in value_counts order, most frequent first): metrics listed the reasons in a different
    order from the docstring (by count; equal counts in no fixed order)."""
    frame = pl.DataFrame({"drop": ["too_long", "too_long", None, "empty", "judge_failed", "too_long"]})
    assert list(account(frame)["dropped"].items()) == [("empty", 1), ("judge_failed", 1), ("too_long", 3)]
