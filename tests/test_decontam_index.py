"""The evaluation index (``pipeline.decontam.eval_index``) is built once and serves every batch: the eval side's
quotation patterns are not rebuilt per call, and verdicts do not depend on how the prompts are batched."""

from __future__ import annotations

import polars as pl
import pytest

import pipeline.decontam as decontam
from pipeline.decontam import contamination, eval_index
from pipeline.text import normalise

EVALS = pl.DataFrame({
    "eval_set": ["mt", "mt", "mt", "arena", "arena"],
    "eval_id": ["long", "short", "tiny", "story", "pyth"],
    "text": ["Write a persuasive essay about why cities should plant more trees along every busy street",
             "Summarise the French revolution",
             "Hi there",
             "Tell me a bedtime story about a dragon who is afraid of the dark and a brave little mouse",
             "Please prove the Pythagorean theorem"],
})
PROMPTS = [
    "write a persuasive essay about why cities should plant more trees along every busy street please",  # n-grams
    "Could you summarise the French revolution for a ten year old?",  # a short eval prompt inside
    "prove the pythagorean theorem",  # a short prompt inside an eval prompt
    "hi there",  # shorter than min_words: only an equal text
    "Hi there, how are you today my friend?",
    "Tell me a bedtime story about a dragon who is afraid of the dark",  # most of an eval prompt's n-grams
    "What is the capital of Australia and why was it chosen over Sydney?",
    "summarise the french revolutionary wars",  # near miss: not whole words
] * 8


def _prompts(texts: list[str], start: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"_key": range(start + 1, start + len(texts) + 1), "_text": texts},
                        schema={"_key": pl.UInt64, "_text": pl.String}).with_columns(normalise(pl.col("_text")))


def _in_batches(size: int, eg) -> pl.DataFrame:
    return pl.concat([contamination(_prompts(PROMPTS[i:i + size], i), EVALS, 5, 0.5, eg, 4)
                      for i in range(0, len(PROMPTS), size)]).sort("_key")


def test_the_eval_side_patterns_are_built_once_for_many_batches(monkeypatch):
    """main built the eval prompts' quotation patterns (and padded texts) again in every batch call."""
    built = []
    real = decontam._quotes
    monkeypatch.setattr(decontam, "_quotes", lambda short, *a: built.append(short.len()) or real(short, *a))
    eg = eval_index(EVALS, 5, 4)
    hits = _in_batches(1, eg)
    assert built.count(EVALS.height) == 1  # the index's; every other build is a one-prompt batch's
    assert len(built) == 1 + len(PROMPTS)
    assert hits.height > 0


def test_verdicts_are_the_same_for_batches_of_1_and_4096():
    eg = eval_index(EVALS, 5, 4)
    one, whole = _in_batches(1, eg), _in_batches(4096, eg)
    assert one.equals(whole)
    assert whole.equals(_in_batches(4096, None))  # an index built inside the call
    found = dict(zip(whole["_key"].to_list()[:6], whole["eval_id"].to_list()[:6], strict=True))
    assert found == {1: "long", 2: "short", 3: "pyth", 4: "tiny", 6: "story", 9: "long"}


def test_an_index_built_for_other_parameters_is_refused():
    """A mismatched index gave verdicts for its own n-grams and min_words without a word."""
    eg = eval_index(EVALS, 13, 4)
    with pytest.raises(ValueError, match="built for 13-grams and min_words 4, called with 5 and 4"):
        contamination(_prompts(PROMPTS[:2]), EVALS, 5, 0.5, eg, 4)
