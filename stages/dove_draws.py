"""DOVE step 2, the response draws (stages/dove.py): one response for each side of a comparison.

A joint comparison draws one response of each of its two instructions; a conditional one draws two
different responses of one instruction. A draw whose two sides are the same text (instruction and
response, ``pipeline.checks.same_text``) would set a text against itself, and a conditional draw that
repeats an earlier one of its instruction would be judged twice: such a draw is redrawn (ours), up to
``max_redraws`` times, each time from a generator seeded by (``seed``, step, attempt), so the result is
the same on every run; one still the same text after that is dropped (counted). The paper's released
data never compares a response with itself (DOVE repo ``val_conditional_pref.jsonl``: 0 of 363 rows
have ``r_chosen == r_reject``); its code takes pre-built pairs and does not say how they were drawn.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline import ids
from pipeline.checks import answer_key, same_text

JOINT_STREAM, CONDITIONAL_STREAM = 2, 3


def side_hashes(items: pl.DataFrame) -> np.ndarray:
    """Per item, a 64-bit hash of (instruction, response) as ``same_text`` compares them: two items with
    equal hashes are the same text on both sides (a collision, ~2^-64 a pair, is caught by ``drop_same_text``)."""
    return items.select(ids.hash64(answer_key(pl.col("instruction_text")), answer_key(pl.col("response"))))\
        .to_series().to_numpy()


def _pick(instructions: pl.DataFrame, inst: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly drawn item row of each instruction in ``inst``."""
    first = instructions["first_row"].to_numpy()[inst]
    count = instructions["n_items"].to_numpy()[inst]
    return first + np.floor(rng.random(inst.size) * count).astype(np.int64)


def _two_of(first: np.ndarray, count: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two different item rows of each instruction (``count`` >= 2), the lower first."""
    x = np.floor(rng.random(first.size) * count).astype(np.int64)
    y = (x + 1 + np.floor(rng.random(first.size) * (count - 1)).astype(np.int64)) % count  # y != x
    return first + np.minimum(x, y), first + np.maximum(x, y)


def _repeats(owner: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """True on a draw (a, b) of ``owner`` that an earlier row of the same owner already made."""
    df = pl.DataFrame({"o": owner, "a": a, "b": b})
    return ~df.select(pl.struct("o", "a", "b").is_first_distinct()).to_series().to_numpy()


def _redraw(draw, bad_of, seed: int, stream: int, max_redraws: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Item rows (a, b) from ``draw(rows, rng)`` over all rows (``slice(None)``), then, up to ``max_redraws``
    times, drawn again on the rows ``bad_of(a, b)`` marks, from a generator seeded by (``seed``, ``stream``,
    attempt). Returns (a, b, how many draws a redraw replaced)."""
    a, b = draw(slice(None), np.random.default_rng([seed, stream]))
    bad = bad_of(a, b)
    first_bad = bad.copy()
    for attempt in range(1, max_redraws + 1):
        if not bad.any():
            break
        a[bad], b[bad] = draw(bad, np.random.default_rng([seed, stream, attempt]))
        bad = bad_of(a, b)
    return a, b, int((first_bad & ~bad).sum())


def joint_draws(instructions: pl.DataFrame, inst_a: np.ndarray, inst_b: np.ndarray, side: np.ndarray, seed: int,
                max_redraws: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Item rows (a, b) for each instruction pair, redrawing a pair whose sides are the same text.
    Returns (a, b, how many draws a redraw replaced)."""
    def draw(rows: np.ndarray | slice, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return _pick(instructions, inst_a[rows], rng), _pick(instructions, inst_b[rows], rng)

    return _redraw(draw, lambda a, b: side[a] == side[b], seed, JOINT_STREAM, max_redraws)


def conditional_draws(instructions: pl.DataFrame, k: int, side: np.ndarray, seed: int,
                      max_redraws: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Up to ``k`` response pairs (a, b) per instruction with two or more responses, redrawing a pair of two
    same-text responses or one the instruction already drew. Repeats left after ``max_redraws`` are dropped
    here (``k`` more than the pairs there are); same-text pairs are left for ``drop_same_text`` to count.
    Returns (a, b, how many draws a redraw replaced)."""
    multi = instructions.filter(pl.col("n_items") >= 2)
    first = np.repeat(multi["first_row"].to_numpy(), k)
    count = np.repeat(multi["n_items"].to_numpy(), k)
    a, b, redrawn = _redraw(lambda rows, rng: _two_of(first[rows], count[rows], rng),
                            lambda a, b: (side[a] == side[b]) | _repeats(first, a, b), seed, CONDITIONAL_STREAM,
                            max_redraws)
    keep = ~_repeats(first, a, b)
    return a[keep], b[keep], redrawn


def comparisons(items: pl.DataFrame, a: np.ndarray, b: np.ndarray, *, conditional: bool,
                similarity: pl.Series) -> pl.DataFrame:
    """Comparison rows: item rows ``a`` (side 1) and ``b`` (side 2), with ``comparison_id``."""
    cols = ["item_id", "instruction", "instruction_text", "response", "origin", "models", "written_by"]
    left = items[a].select(cols).rename({c: f"{c}_1" for c in cols})
    right = items[b].select(cols).rename({c: f"{c}_2" for c in cols})
    df = pl.concat([left, right], how="horizontal").with_columns(
        conditional=pl.lit(conditional), similarity=similarity.cast(pl.Float64).alias("similarity")
    )
    return df.with_columns(comparison_id=pl.concat_str("item_id_1", pl.lit("|"), "item_id_2"))


def joint_comparisons(items: pl.DataFrame, instructions: pl.DataFrame, pairs: pl.DataFrame, seed: int,
                      max_redraws: int = 0) -> tuple[pl.DataFrame, int]:
    """For each instruction pair, one random response of each side (seeded); returns (comparisons, redrawn)."""
    a, b, redrawn = joint_draws(instructions, pairs["inst_a"].to_numpy(), pairs["inst_b"].to_numpy(),
                                side_hashes(items), seed, max_redraws)
    return comparisons(items, a, b, conditional=False, similarity=pairs["similarity"]), redrawn


def conditional_comparisons(items: pl.DataFrame, instructions: pl.DataFrame, k: int, seed: int,
                            max_redraws: int = 0) -> tuple[pl.DataFrame, int]:
    """Up to ``k`` distinct response pairs per instruction with two or more responses (seeded); returns
    (comparisons, redrawn)."""
    a, b, redrawn = conditional_draws(instructions, k, side_hashes(items), seed, max_redraws)
    return comparisons(items, a, b, conditional=True,
                       similarity=pl.repeat(None, a.size, dtype=pl.Float64, eager=True)), redrawn


def drop_same_text(comps: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Comparisons whose two sides differ (instruction or response, ``pipeline.checks.same_text``)."""
    same = same_text(pl.col("instruction_text_1"), pl.col("instruction_text_2")) & same_text(
        pl.col("response_1"), pl.col("response_2"))
    kept = comps.filter(~same)
    return kept, comps.height - kept.height
