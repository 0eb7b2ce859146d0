"""PUGC step 1, the document pre-filter: length, language (py3langid, ``pipeline.langid``), exact and near
duplicates.

Every document gets a ``drop`` reason or none; the first document by ``doc_id`` of each duplicate group is
kept. Near-duplicates: MinHash over word shingles of title + text with LSH banding (``pipeline.text``).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.config import Params, Pugc
from pipeline.drops import account, first_reason
from pipeline.langid import detect_languages
from pipeline.text import cjk_words, minhash, near_duplicate_groups, ngram_hashes, normalise, raw_word_counts
from stages.pugc_io import run_step

MINHASH_SEED = 0


def document_view() -> pl.Expr:
    """What the models read: the title (when there is one), a blank line, the text."""
    title = pl.col("title").fill_null("").str.strip_chars()
    return (
        pl.when(title != "")
        .then(pl.concat_str([title, pl.lit("\n\n"), pl.col("text")]))
        .otherwise(pl.col("text"))
    )


def quality_filter(docs: pl.DataFrame, cfg: Pugc) -> pl.DataFrame:
    """Mark too_short / too_long / other_language / exact_duplicate (first by doc_id is kept); adds
    ``language`` (ISO 639-1 code of the text, ``und`` without letters). Words are whitespace tokens, a Han,
    Hiragana or Katakana character one each (``pipeline.text.raw_word_counts``): a Chinese post of 300
    characters was a few "words" and too short."""
    docs = docs.sort("doc_id")
    stats = docs.with_columns(n_words=raw_word_counts(pl.col("text")), language=detect_languages(docs["text"]))
    marked = stats.with_columns(
        drop=first_reason(
            (pl.col("n_words") < cfg.min_words, "too_short"),
            (pl.col("n_words") > cfg.max_words, "too_long"),
            (~pl.col("language").is_in(cfg.languages), "other_language"),
        )
    )
    # Exact duplicates are judged among the documents that passed, so a dropped one cannot shadow a kept one.
    live = pl.col("drop").is_null()
    repeat = live & ~normalise(document_view()).is_first_distinct().over(live)
    return marked.with_columns(
        drop=pl.when(repeat).then(pl.lit("exact_duplicate")).otherwise(pl.col("drop"))
    ).drop("n_words")


def minhash_step(batch: pa.Table, *, shingle_words: int, num_perm: int) -> pa.Table:
    """CPU step: a ``signature`` column (MinHash of word shingles of title + text; a CJK character is a word,
    ``pipeline.text.cjk_words``, so a Chinese post edited in one character still shares most shingles).

    ``pipeline.text`` hashes whole columns at once (xxh3, stable across machines and versions); a library
    such as ``datasketch`` would update one shingle at a time from Python.
    """
    frame = pl.from_arrow(batch)
    views = cjk_words(normalise(frame.select(document_view()).to_series()))
    sig = minhash(ngram_hashes(views, shingle_words), len(views), num_perm, seed=MINHASH_SEED)
    return batch.append_column(
        "signature", pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), num_perm)
    )


def near_duplicate_filter(docs: pl.DataFrame, cfg: Pugc) -> pl.DataFrame:
    """Mark near_duplicate among rows with no drop yet: all but the first (by doc_id) of each group."""
    docs = docs.sort("doc_id").with_row_index("_row")
    live = docs.filter(pl.col("drop").is_null())
    if live.height == 0:
        return docs.drop("signature", "_row")
    sig = live["signature"].to_numpy().astype(np.uint64).reshape(live.height, cfg.minhash_perms)
    group = near_duplicate_groups(sig, bands=cfg.minhash_bands, threshold=cfg.near_duplicate_threshold)
    repeats = live["_row"].filter(pl.Series(group != np.arange(live.height)))
    return docs.with_columns(
        drop=pl.when(pl.col("_row").is_in(repeats.implode()))
        .then(pl.lit("near_duplicate"))
        .otherwise(pl.col("drop"))
    ).drop("signature", "_row")


def prefilter(docs: pl.DataFrame, params: Params) -> tuple[pl.DataFrame, dict]:
    """The kept documents with ``reference`` (title + text), and the step's accounting."""
    cfg = params.pugc
    docs = quality_filter(docs, cfg)
    live = docs.filter(pl.col("drop").is_null())
    signed = run_step(
        live, minhash_step, params, "minhash", shingle_words=cfg.shingle_words, num_perm=cfg.minhash_perms
    )
    if signed is not None:
        docs = pl.concat(
            [docs.filter(pl.col("drop").is_not_null()).with_columns(signature=pl.lit(None)), signed],
            how="diagonal_relaxed",
        )
        docs = near_duplicate_filter(docs, cfg)
    kept = docs.filter(pl.col("drop").is_null()).with_columns(reference=document_view()).drop("language")
    languages = dict(sorted(docs.group_by("language").len().iter_rows()))
    return kept, {**account(docs), "languages": languages}
