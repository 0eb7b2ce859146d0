"""Export step 6, the split (``stages/export.py`` runs it): a salted hash of each prompt's opening (its first user
turn) puts it in train or test; the openings of pairs trained first, and of every pair sharing a user turn with
one, stay in train; a DOVE row whose prompts straddle the splits goes; and the texts of the test prompts' user turns are kept for the quote check (``pipeline.split_leaks``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from pipeline.config import Export
from pipeline.dedup import removals
from pipeline.ids import stable_hash64

LEAVES = pl.concat_list(pl.col("_config"), pl.lit("all"))  # a conditional pair leaving the release
LEAVES_JOINT = pl.concat_list(pl.col("_config"))


# --- 6. split ------------------------------------------------------------------------------------


def in_test_split(keys: pl.Series, fraction: float, salt: str, pinned: pl.Series | None = None) -> np.ndarray:
    """True where a prompt key falls in the test split: a salted hash mapped to [0, 1) below ``fraction``, unless
    the key is ``pinned`` to train."""
    salted = keys.cast(pl.String).to_frame("k").select(pl.lit(salt + "\x1f") + pl.col("k"))[:, 0]
    u = (stable_hash64(salted) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    test = u < fraction
    return test if pinned is None else test & ~keys.is_in(pinned).to_numpy()


def holding(df: pl.DataFrame, turn_cols: list[str], keys: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``df`` one of whose user-turn keys (``turn_cols``, lists) is a ``_turn`` of ``keys``."""
    rows = df.with_row_index("_r")
    hit = pl.concat([rows.select("_r", pl.col(c).alias("_turn")).explode("_turn") for c in turn_cols])
    return rows.join(hit.join(keys, on="_turn", how="semi").select("_r").unique(), on="_r", how="semi").drop("_r")


def pinned_openings(pairs: pl.DataFrame, joint: pl.DataFrame,
                    quoting: Callable[[pl.Series], pl.Series]) -> tuple[pl.Series, pl.DataFrame]:
    """(the openings pinned to train; the same as a frame with ``_own``: whether a seed pair opens with it).

    The openings (``_open``) of pairs trained first (``_first``), and those of every pair or DOVE row (both of its
    prompts) sharing a user turn with one (``_turns``: turn keys), or whose user turn holds, lies inside or overlaps
    one (``quoting``: the seed's turn keys -> the keys of the turns ``pipeline.split_leaks`` would match with them).
    A train pair goes (``test_prompt_in_train``) only when one of its user turns is, or quotes, a user turn of a test
    row; every row sharing (or quoting, either way) a seed turn now trains, so no test row holds one and a seed pair
    never goes for the split. One hop is enough: pinning only moves rows from test to train, so the test turns only
    shrink and no new test row can appear next to a seed pair; a row pinned this way may itself go when it shares a
    turn with a test row (it is no seed pair: its gold neighbour stays). One opening keeps one split."""
    seed = pairs.filter(pl.col("_first"))
    own = seed.select(pl.col("_turns").alias("_turn")).explode("_turn").drop_nulls().unique()
    keys = pl.concat([own, quoting(own["_turn"].sort()).to_frame("_turn")]).unique()
    near = holding(joint, ["_turns_c", "_turns_r"], keys)
    by_turn = pl.concat([holding(pairs, ["_turns"], keys)["_open"], near["_open_c"], near["_open_r"]])
    opens = pl.concat([seed.select("_open", pl.lit(True).alias("_own")),
                       by_turn.to_frame("_open").with_columns(pl.lit(False).alias("_own"))])
    opens = opens.group_by("_open").agg(pl.col("_own").any()).sort("_open")
    return opens["_open"], opens


def pin_counts(opens: pl.DataFrame, fraction: float, salt: str) -> dict[str, int]:
    """details.json's ``split``: the openings the hash put in test that train because a seed pair opens with them
    (``pinned_seed``) or because a pair opening with them shares a user turn with a seed pair (``pinned_by_seed``)."""
    moved = opens.filter(pl.Series(in_test_split(opens["_open"], fraction, salt) if opens.height else np.zeros(0, bool)))
    return {"pinned_seed": int(moved["_own"].sum()), "pinned_by_seed": int((~moved["_own"]).sum())}


def split_pairs(df: pl.DataFrame, fraction: float, salt: str, pinned: pl.Series) -> pl.DataFrame:
    """Add ``_split`` by the prompt's opening (``_open``; a ``pinned`` one trains): a test prompt never opens a
    train dialogue."""
    test = in_test_split(df["_open"], fraction, salt, pinned) if df.height else np.zeros(0, bool)
    return df.with_columns(pl.Series("_split", np.where(test, "test", "train"), dtype=pl.String))


def split_joint(df: pl.DataFrame, fraction: float, salt: str, pinned: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Add ``_split`` (a ``pinned`` opening trains); rows whose two prompts fall in different splits are dropped
    (``split_straddle``)."""
    a = in_test_split(df["_open_c"], fraction, salt, pinned) if df.height else np.zeros(0, bool)
    b = in_test_split(df["_open_r"], fraction, salt, pinned) if df.height else np.zeros(0, bool)
    tagged = df.with_columns(pl.Series("_split", np.where(a, "test", "train"), dtype=pl.String))
    same = a == b
    return tagged.filter(same), removals(tagged.filter(~same), "split_straddle", LEAVES_JOINT)


def test_candidates(turns: pl.DataFrame, opens: pl.Series, cfg: Export) -> pl.DataFrame:
    """``_turn``, ``_text`` of the user turns (``turns``: ``turn_texts`` of a prompt column) of the prompts whose
    opening (``opens``, per row) the salted hash puts in test: a superset of the test prompts' turns (pinning and
    drops come later), whose texts the quote check of step 6 needs after pass 1 (~``test_fraction`` of the turns'
    text in memory)."""
    test = pl.Series(in_test_split(opens, cfg.test_fraction, cfg.split_salt))
    return turns.filter(test.gather(turns["_r"])).select("_turn", "_text")
