"""Export step 6, the split (``stages/export.py`` runs it): a salted hash of each prompt's opening (its first user
turn) puts it in train or test; the openings of pairs trained first stay in train; a DOVE row whose prompts straddle
the splits goes; and the texts of the test prompts' user turns are kept for the quote check (``pipeline.split_leaks``).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.config import Export
from pipeline.dedup import opening_key, removals, turn_texts
from pipeline.text import stable_hash64

LEAVES = pl.concat_list(pl.col("_config"), pl.lit("all"))  # a conditional pair leaving the release
LEAVES_JOINT = pl.concat_list(pl.col("_config"))


# --- 6. split ------------------------------------------------------------------------------------


TRAIN_FIRST = {"selfie": "seed"}  # method -> `source` of the pairs its paper trains on before the rest (SPA's gold seed)


def trained_first() -> pl.Expr:
    """True on a pair its method trains on before any other (``TRAIN_FIRST``: Selfie/SPA's gold seed pairs), whose
    opening the split pins to train: the release's test split is no place for them (Selfie holds out its own)."""
    return pl.any_horizontal([(pl.col("_config") == m) & (pl.col("source") == s) for m, s in TRAIN_FIRST.items()])


def in_test_split(keys: pl.Series, fraction: float, salt: str, pinned: pl.Series | None = None) -> np.ndarray:
    """True where a prompt key falls in the test split: a salted hash mapped to [0, 1) below ``fraction``, unless
    the key is ``pinned`` to train."""
    salted = keys.cast(pl.String).to_frame("k").select(pl.lit(salt + "\x1f") + pl.col("k"))[:, 0]
    u = (stable_hash64(salted) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    test = u < fraction
    return test if pinned is None else test & ~keys.is_in(pinned).to_numpy()


def pinned_openings(df: pl.DataFrame) -> pl.Series:
    """The openings (``_open``) of pairs trained first (``_first``): every pair or DOVE prompt sharing one stays in
    train, so one opening keeps one split and the rest split as before."""
    return df.filter(pl.col("_first"))["_open"].unique()


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


def test_candidates(df: pl.DataFrame, col: str, cfg: Export) -> pl.DataFrame:
    """``_turn``, ``_text`` of the user turns (``turn_texts``) of the prompts of ``col`` whose opening the salted hash
    puts in test: a superset of the test prompts' turns (pinning and drops come later), whose texts the quote check
    of step 6 needs after pass 1 (~``test_fraction`` of the turns' text in memory)."""
    turns = turn_texts(df, col, cfg.decontamination.min_words)
    test = pl.Series(in_test_split(df.select(opening_key(col))[:, 0], cfg.test_fraction, cfg.split_salt))
    return turns.filter(test.gather(turns["_r"])).select("_turn", "_text")
