"""Keep a release's own test prompts out of its train split (export's ``test_prompt_in_train``, the audit's
``prompt_in_both_splits``), on the user turns of the prompts (``pipeline.dedup.turn_texts``: normalised, at least
``decontamination.min_words`` words, so "hi", "continue" and "thanks a lot" join nothing).

- ``test_turns`` / ``drop_test_turns``: a train prompt one of whose user turns *is* a user turn of a test prompt
  goes, on 8-byte turn keys (``[hi, a1, write a poem about cats]`` in train holds the test prompt ``[write a poem
  about cats]``).
- ``test_quotes`` / ``quoted_test_turns``: a train user turn that *holds* a test prompt's user turn inside a longer
  text ("Here is what my friend asked: write a poem about cats in the style of Emily Dickinson. Can you do
  better?") has another key; it is found as ``pipeline.decontam.contamination`` finds an evaluation prompt (the
  test turns are the eval set: word n-grams, ``ngram`` / ``threshold``, and whole-word containment from
  ``min_words`` words), and its key joins the test turns, so ``drop_test_turns`` drops its prompt too.
  Assistant turns are not compared: a story in which a character says "why are you here" quotes no test prompt.
- ``turns_overlapping``: the same match seen from the other side, so export can keep the turns a pair it must not
  drop would quote (or be quoted by) out of the test split.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import polars as pl
import pyarrow.parquet as pq

from pipeline.decontam import EvalIndex, contamination, eval_index
from pipeline.dedup import no_removals, removals, turn_texts

TEST_SCHEMA = {"_turn": pl.UInt64, "test": pl.String}


def test_turns(frames: list[tuple[pl.DataFrame, list[str]]]) -> pl.DataFrame:
    """``_turn``, ``test``: each user-turn key (``pipeline.dedup.turn_keys``) of a ``test`` row (``_split``) of the
    (frame, turn-key columns) given, with the smallest (method, pair_id) holding it as JSON."""
    parts = [df.filter(pl.col("_split") == "test").select(pl.col(c).alias("_turn"), "_config", "pair_id")
             for df, cols in frames for c in cols]
    test = pl.concat(parts).explode("_turn").drop_nulls("_turn").sort("_config", "pair_id")
    who = pl.struct(test_method=pl.col("_config"), test_pair_id=pl.col("pair_id")).struct.json_encode()
    return test.group_by("_turn", maintain_order=True).agg(who.first().alias("test")).sort("_turn")


class TestQuotes(NamedTuple):
    """The test prompts' user turns as ``contamination``'s eval set (``eval_set`` "test", ``eval_id``: the test pair
    as ``test_turns`` names it, ``text``), their index, their keys (an equal turn is matched by key already) and
    the ``ngram``, ``threshold`` and ``min_words`` they are compared with."""

    evals: pl.DataFrame
    index: EvalIndex
    keys: pl.Series
    n: int
    threshold: float
    min_words: int


def test_quotes(tests: pl.DataFrame, texts: pl.DataFrame, n: int, threshold: float, min_words: int) -> TestQuotes:
    """``TestQuotes`` of the test turns ``tests`` (``test_turns``), whose texts are in ``texts`` (``_turn``,
    ``_text``: ``turn_texts`` of a superset of the test prompts); built once for every batch of train turns."""
    evals = tests.join(texts.unique("_turn", keep="first"), on="_turn").sort("_turn").select(
        pl.lit("test").alias("eval_set"), pl.col("test").alias("eval_id"), pl.col("_text").alias("text"))
    return TestQuotes(evals, eval_index(evals, n, min_words), tests["_turn"], n, threshold, min_words)


def quoting_turns(turns: pl.DataFrame, tq: TestQuotes) -> pl.DataFrame:
    """``_turn``, ``test`` of the user turns (``_turn``, ``_text``: ``turn_texts``) that hold a test prompt's user turn
    (or overlap it) as ``contamination`` measures it, naming the test pair of the best match; an equal turn
    (``tq.keys``) is left to the key match."""
    prompts = (turns.filter(~pl.col("_turn").is_in(tq.keys.implode())).select(pl.col("_turn").alias("_key"), "_text")
               .unique("_key", keep="first").sort("_key"))
    hits = contamination(prompts, tq.evals, tq.n, tq.threshold, tq.index, tq.min_words)
    return hits.select(pl.col("_key").alias("_turn"), pl.col("eval_id").alias("test"))


def quoted_test_turns(turn_batches: Iterable[pl.DataFrame], tests: pl.DataFrame, texts: pl.DataFrame, n: int,
                      threshold: float, min_words: int) -> pl.DataFrame:
    """``quoting_turns`` of every batch of user turns (``_turn``, ``_text``) against the test turns ``tests``
    (``test_turns``; texts in ``texts``): the keys ``drop_test_turns`` adds to the test turns' own."""
    if tests.height == 0:
        return pl.DataFrame(schema=TEST_SCHEMA)
    tq = test_quotes(tests, texts, n, threshold, min_words)
    found = [quoting_turns(t, tq) for t in turn_batches]
    return pl.concat([pl.DataFrame(schema=TEST_SCHEMA), *found]).unique("_turn", keep="first").sort("_turn")


def turns_overlapping(turns: pl.DataFrame, others: pl.DataFrame, n: int, threshold: float,
                      min_words: int) -> pl.Series:
    """The keys (``_turn``) of the user turns ``turns`` (``_turn``, ``_text``: ``turn_texts``) that hold, lie inside
    or overlap a turn of ``others`` (the same columns) as ``quoting_turns`` matches a train turn with a test turn:
    ``contamination``'s overlap is symmetric (shared n-grams over those of the shorter text; a short text found
    whole in either), so a turn of ``others`` that would be dropped for quoting one of ``turns`` is found from this
    side, every such turn of ``turns`` at once (``contamination`` names one best match per turn of ``turns``)."""
    evals = others.unique("_turn", keep="first").sort("_turn").select(
        pl.lit("other").alias("eval_set"), pl.col("_turn").cast(pl.String).alias("eval_id"), pl.col("_text").alias("text"))
    prompts = turns.select(pl.col("_turn").alias("_key"), "_text").unique("_key", keep="first").sort("_key")
    return contamination(prompts, evals, n, threshold, None, min_words)["_key"].alias("_turn")


def drop_test_turns(df: pl.DataFrame, turn_cols: list[str], tests: pl.DataFrame,
                    configs: pl.Expr) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Drop ``train`` rows one of whose user turns (``turn_cols``, DOVE: either prompt) is a turn of a test row
    (``test_turns``), or holds one (``quoted_test_turns``' keys added to ``tests``): ``[hi, a1, write a poem about
    cats]`` in train holds the test prompt ``[write a poem about cats]`` (their openings, the split's key, differ).
    The record names the test pair; ``turn_cols`` are dropped."""
    if df.height == 0 or tests.height == 0:
        return df.drop(turn_cols), no_removals()
    rows = df.with_row_index("_r")
    turns = [rows.filter(pl.col("_split") == "train").select("_r", pl.col(c).alias("_turn")) for c in turn_cols]
    hit = (pl.concat(turns).explode("_turn").join(tests, on="_turn")
           .sort("_r", "test").group_by("_r").agg(pl.col("test").first()))
    tagged = rows.join(hit, on="_r", how="left", maintain_order="left").drop("_r", *turn_cols)
    bad = tagged.filter(pl.col("test").is_not_null())
    return tagged.filter(pl.col("test").is_null()).drop("test"), removals(bad, "test_prompt_in_train", configs, pl.col("test"))


# --- the audit: the same rule on a written release -----------------------------------------------


def release_test_quotes(test_files: list[tuple[str, Path]], cols_of, batch_rows: int, n: int, threshold: float,
                        min_words: int) -> TestQuotes:
    """``TestQuotes`` of a written release's test split (``test_files``: (config, shard) pairs; ``cols_of``: a
    Parquet schema's names -> its prompt columns), naming the test pair as ``{"test_config", "test_pair_id"}``."""
    parts = []
    for config, path in test_files:
        pf = pq.ParquetFile(path)
        cols = cols_of(pf.schema_arrow.names)
        for batch in pf.iter_batches(batch_size=batch_rows, columns=["pair_id", *cols]):
            df = pl.from_arrow(batch)
            who = pl.struct(test_config=pl.lit(config), test_pair_id=pl.col("pair_id")).struct.json_encode()
            ids = df.select(who.alias("test"), pl.col("pair_id"), pl.lit(config).alias("_config")).with_row_index("_r")
            parts += [turn_texts(df, c, min_words).join(ids, on="_r") for c in cols]
    turns = pl.concat(parts) if parts else pl.DataFrame(schema={"_turn": pl.UInt64, "_text": pl.String,
                                                                "test": pl.String, "_config": pl.String,
                                                                "pair_id": pl.String})
    tests = turns.sort("_config", "pair_id").group_by("_turn", maintain_order=True).agg(pl.col("test").first())
    return test_quotes(tests.sort("_turn"), turns.select("_turn", "_text"), n, threshold, min_words)


def quoting_rows(pair_ids: pl.Series, turns: list[pl.DataFrame], tq: TestQuotes) -> pl.Series:
    """The ``pair_ids`` of the rows one of whose user turns (``turns``: ``turn_texts`` of each prompt column, at
    ``tq.min_words``) holds a test turn (``quoting_turns``)."""
    if tq.evals.height == 0:
        return pl.Series("pair_id", [], dtype=pl.String)
    rows = [t.join(quoting_turns(t, tq), on="_turn", how="semi")["_r"] for t in turns]
    return pair_ids.gather(pl.concat(rows).unique().sort())
