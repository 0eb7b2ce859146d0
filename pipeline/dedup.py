"""Exact and near-duplicate detection over a text column, vectorised (polars + numpy, no per-row Python).

Exact duplicates share a normalised text (lower case, punctuation and runs of whitespace folded).
Near-duplicates share most word n-grams: MinHash signatures estimate the Jaccard similarity of the
documents' shingle sets, LSH banding proposes candidates, and candidates whose estimate reaches the
threshold are joined into groups (connected components); the first member of a group is kept.

    >>> texts = pl.Series(["The cat sat on the mat today.", "the cat sat on the mat, today!", "Dogs bark."])
    >>> pl.select(normalise(pl.lit(texts)).is_first_distinct()).to_series().to_list()
    [True, False, True]

Why our own ~100 lines instead of `datasketch`: it updates one shingle at a time from Python, which is
a loop per row and per shingle; here the hashing is a polars expression and the permutations are
numpy array operations over all shingles of a batch at once. Word hashes come from polars'
seeded ``hash``, which is stable within a polars version, so outputs are reproducible for a
given environment.
"""

from __future__ import annotations

import numpy as np
import polars as pl

_SHIFT = np.uint64(32)
_ROLL = np.uint64(1_000_003)  # multiplier combining word hashes into a shingle hash (wraps mod 2**64)
_EMPTY = np.iinfo(np.uint64).max  # signature value of a document with no shingle
_CHUNK = 1 << 16  # shingles permuted at once (x minhash_perms x 8 bytes of memory)


def normalise(expr: pl.Expr) -> pl.Expr:
    """Lower case, non-word characters to spaces, whitespace folded: 'Hi,  there!' -> 'hi there'."""
    return expr.str.to_lowercase().str.replace_all(r"[^\w]+", " ").str.strip_chars()


def _shingle_hashes(texts: pl.Series, shingle_words: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(doc index, shingle hash) of every word ``shingle_words``-gram, grouped by document in order."""
    words = (
        pl.DataFrame({"text": texts})
        .with_row_index("doc")
        .select("doc", normalise(pl.col("text")).str.split(" ").alias("w"))
        .explode("w")
        .filter(pl.col("w").is_not_null() & (pl.col("w") != ""))
    )
    doc = words["doc"].to_numpy().astype(np.int64)
    h = words["w"].hash(seed=seed).to_numpy()
    n = len(h) - shingle_words + 1
    if n <= 0:
        return np.empty(0, np.int64), np.empty(0, np.uint64)
    acc = np.zeros(n, np.uint64)
    for j in range(shingle_words):  # rolling combination of k consecutive word hashes
        acc = acc * _ROLL + h[j : j + n]
    same_doc = doc[:n] == doc[shingle_words - 1 :]  # the n-gram does not straddle two documents
    return doc[:n][same_doc], acc[same_doc]


def minhash_signatures(texts: pl.Series, *, shingle_words: int, num_perm: int, seed: int = 0) -> np.ndarray:
    """A (len(texts), num_perm) uint64 MinHash signature per text.

    Texts with fewer than ``shingle_words`` words have no shingle: their row is all ``2**64-1`` and
    ``near_duplicate_groups`` never matches them (exact duplicates still catch identical short texts).
    """
    rng = np.random.default_rng(seed)
    # Multiply-shift hashing ((a*x + b) mod 2**64) >> 32 with odd a: a universal family, no modulo.
    a = rng.integers(0, np.iinfo(np.uint64).max, num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1)
    b = rng.integers(0, np.iinfo(np.uint64).max, num_perm, dtype=np.uint64, endpoint=True)
    sig = np.full((len(texts), num_perm), _EMPTY, np.uint64)
    doc, sh = _shingle_hashes(texts, shingle_words, seed)
    for start in range(0, len(sh), _CHUNK):
        d, v = doc[start : start + _CHUNK], sh[start : start + _CHUNK]
        perm = (v[:, None] * a[None, :] + b[None, :]) >> _SHIFT
        starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])  # segment starts: rows are grouped by doc
        mins = np.minimum.reduceat(perm, starts, axis=0)
        docs = d[starts]  # unique within a chunk; a document spanning chunks is folded in by minimum
        sig[docs] = np.minimum(sig[docs], mins)
    return sig


def _components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smallest member index of each node's connected component (label propagation over edge arrays)."""
    labels = np.arange(n)
    while len(u):
        m = np.minimum(labels[u], labels[v])
        before = labels.copy()
        np.minimum.at(labels, u, m)
        np.minimum.at(labels, v, m)
        labels = labels[labels]  # pointer jumping speeds up long chains
        if np.array_equal(labels, before):
            break
    return labels


def near_duplicate_groups(sig: np.ndarray, *, bands: int, threshold: float) -> np.ndarray:
    """For each row, the index of the first row of its near-duplicate group (itself when unique).

    Rows landing in the same bucket of any band are compared in bucket order (each with the next),
    and joined when their signatures agree on at least ``threshold`` of the permutations.

    >>> sig = np.array([[1, 2, 3, 4], [1, 2, 3, 5], [9, 9, 9, 9]], dtype=np.uint64)
    >>> near_duplicate_groups(sig, bands=4, threshold=0.75).tolist()
    [0, 0, 2]
    """
    n, num_perm = sig.shape
    if n < 2:
        return np.arange(n)
    rows = num_perm // bands
    has_shingles = (sig != _EMPTY).any(axis=1)
    us, vs = [], []
    for band in range(bands):
        block = np.ascontiguousarray(sig[:, band * rows : (band + 1) * rows])
        keys = block.view(np.dtype((np.void, block.dtype.itemsize * rows))).ravel()
        order = np.lexsort((np.arange(n), keys))  # bucket members adjacent, in row order
        same = (keys[order][1:] == keys[order][:-1]) & has_shingles[order][1:]
        us.append(order[:-1][same])
        vs.append(order[1:][same])
    u, v = np.concatenate(us), np.concatenate(vs)
    agree = (sig[u] == sig[v]).mean(axis=1) >= threshold
    return _components(n, u[agree], v[agree])
