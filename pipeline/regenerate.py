"""ShareGPT's regenerate counter, found and taken off the start of a user turn, on whole columns (polars).

The ChatGPT page showed "< 2 / 2 >" above a user turn that had been edited, and ShareGPT's scrape glued that
counter to the turn's text: "2 / 2Create 10 marketing punch lines for the new year house hold sale" (13 of
Koala's 180 test prompts; ShareGPT prompts sit in many collections, UltraFeedback's among them). Normalised, the
turn's first word is "2create", so the prompt no longer equals, or holds, its clean text: a short evaluation
prompt then misses a release prompt that copies it, and a training prompt keeps the UI's text.

Only that exact shape is a counter: at the very start of the turn, "<a> / <b>" with 1-3 digit numbers,
1 <= a <= b, and the text glued on. A space, a digit, arithmetic (``= + - * / ^ % . , )``) or an ordinal suffix
after ``b`` is ordinary text, and so is the pattern anywhere but at the start::

    >>> import polars as pl
    >>> df = pl.DataFrame({"t": ["3 / 3Write a poem.", "2 / 2can you list", "1 / 2 cup of sugar", "2 / 2 = 1",
    ...                          "3 / 4th of the cake", "3 / 2Write", "Hi 2 / 2Write", "2 / 2\\nWrite", "1 / 2100 words"]})
    >>> df.select(without_counter(pl.col("t")))["t"].to_list()[:3]
    ['Write a poem.', 'can you list', '1 / 2 cup of sugar']
    >>> df.select(without_counter(pl.col("t")) == pl.col("t"))["t"].to_list()[3:]
    [True, True, True, True, True, True]

A fraction glued to a word at the start of a turn ("1 / 2x + 3 = 5") has the same shape and loses its
fraction: ingest counts every turn it changed per source (``regenerate_counters`` in ``details.json``).
"""

from __future__ import annotations

from collections import Counter

import polars as pl
import pyarrow as pa

_COUNTER = r"^([1-9][0-9]{0,2}) / ([1-9][0-9]{0,2})[^0-9\s=+\-*/^%.,)]"
_ORDINAL = r"^[0-9]+ / [0-9]+(?:st|nd|rd|th)\b"  # "3 / 4th of the cake"
_PREFIX = r"^[0-9]+ / [0-9]+"


def without_counter(texts: pl.Expr) -> pl.Expr:
    """``texts`` with a regenerate counter glued to their start taken off; other texts as they are."""
    parts = texts.str.extract_groups(_COUNTER)
    counter = (parts.struct.field("1").cast(pl.Int32) <= parts.struct.field("2").cast(pl.Int32)) \
        & ~texts.str.contains(_ORDINAL)
    return pl.when(counter.fill_null(False)).then(texts.str.replace(_PREFIX, "")).otherwise(texts)


def _user_turns(messages: pl.Expr, changed: bool = False) -> pl.Expr:
    """A list of {role, content} messages with the counter taken off each user turn; ``changed``: per message,
    whether that changed it."""
    role, content = pl.element().struct.field("role"), pl.element().struct.field("content")
    clean = pl.when(role == "user").then(without_counter(content)).otherwise(content)
    return messages.list.eval(clean != content if changed else pl.struct(role, clean.alias("content")))


def strip_user_turns(table: pa.Table, columns: list[str], by: str) -> tuple[pa.Table, Counter]:
    """``table`` with the counter taken off the user turns of its message ``columns`` (lists of {role, content}),
    and how many turns that changed per value of column ``by`` (values without a change left out). A table
    without a counter comes back as it was."""
    if not columns or table.num_rows == 0:
        return table, Counter()
    df = pl.from_arrow(table.select([*columns, by]))
    turns = pl.sum_horizontal(_user_turns(pl.col(c), changed=True).list.sum() for c in columns)
    counts = df.group_by(by).agg(turns.sum().alias("n")).filter(pl.col("n") > 0)
    if counts.height == 0:
        return table, Counter()
    for c in columns:
        field = table.schema.field(c)
        clean = df.select(_user_turns(pl.col(c))).to_series().to_arrow(compat_level=pl.CompatLevel.oldest())
        table = table.set_column(table.schema.get_field_index(c), field, clean.cast(field.type))
    return table, Counter(dict(counts.iter_rows()))
