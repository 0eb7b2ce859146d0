"""WildFeedback's held-out test set (METHODS.md §1 step 4; Shi et al. 2024, section 4).

The paper holds out a test set of its pairs for the checklist-guided evaluation: it embeds each pair's
prompt with its preference, clusters the embeddings into 70 clusters and takes the 10 pairs nearest each
centre (700 of 20,281 pairs). Here the prompt is represented by its request (its last user message, ours) and
the embedding is the hashed character-n-gram TF-IDF space DOVE's `similar` pairing uses (offline, no model),
through its seeded random projection (``stages.dove_similarity``), and the clustering is k-means (k-means++
start, Lloyd iterations) in numpy, seeded, so the same pairs and params give the same test set. The held-out
pairs leave ``data/wildfeedback/pairs`` for ``data/wildfeedback/test``.

Bounded memory (ours): the space (TF-IDF idf) and the centres are fitted on a seeded sample of at most
``fit_rows`` pairs (the paper's whole set was 20,281; below ``fit_rows`` every pair is used), then every pair is
assigned to its nearest centre ``BLOCK_ROWS`` rows at a time, keeping per cluster only the ``per_cluster``
nearest so far (ties by row). The sample is the pairs of smallest seeded hash of their id and the blocks sit at
fixed row offsets, so the test set does not depend on how the pairs are batched.

``max_fraction`` (ours) caps the share held out, the clusters shrinking to fit, so a small run keeps its pairs:
``k = min(clusters, floor(max_fraction * n / per_cluster))``; k = 0 holds nothing out.

>>> n_clusters(20_281, clusters=70, per_cluster=10, max_fraction=0.05), n_clusters(11, 70, 10, 0.05)
(70, 0)
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import WildfeedbackTestSet
from pipeline.dedup import last_user_turn
from pipeline.ids import hash64
from pipeline.io import ShardWriter, iter_batches, shard_files
from stages.dove_similarity import ANN_DIM, dense_view, tfidf_idf, tfidf_matrix

NGRAMS = (3, 5)  # character n-gram sizes of the TF-IDF space (DOVE's defaults)
FEATURES = 1 << 18  # hashed TF-IDF dimensions
ITERATIONS = 50  # Lloyd iterations at most (it stops earlier when the assignment no longer changes)
BLOCK_ROWS = 8_192  # pairs per assignment block, at fixed row offsets (bounds the vectors in memory)

# A re-readable source of pairs: each call yields (sampling keys, request + preference texts) batch by batch.
Batches = Callable[[], Iterable[tuple[np.ndarray, list[str]]]]


def n_clusters(n: int, clusters: int, per_cluster: int, max_fraction: float) -> int:
    """Clusters to use for ``n`` pairs: the configured number, fewer when they would hold out more than
    ``max_fraction`` of the pairs."""
    return max(0, min(clusters, math.floor(max_fraction * n / per_cluster + 1e-9)))


def pair_texts(pairs: pl.DataFrame) -> list[str]:
    """What is clustered: the pair's request, its prompt's last user message (ours: the paper embeds the whole
    prompt, docs/wildfeedback.md "Test set"), and its preference (lineage)."""
    requests = pairs.select(last_user_turn("prompt").fill_null("")).to_series().to_list()
    prefs = [json.loads(x).get("preference") or "" for x in pairs.get_column("lineage").to_list()]
    return [f"{r}\n{p}" for r, p in zip(requests, prefs, strict=True)]


def kmeans(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(centres, assignment) of rows ``x`` into ``k`` clusters: k-means++ seeding, then Lloyd iterations.
    float64 sums in row order: the result depends only on ``x``, ``k`` and ``seed``."""
    rng = np.random.default_rng([seed, 7])
    x = x.astype(np.float64)
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        pick = rng.choice(len(x), p=d2 / total) if total > 0 else rng.integers(len(x))
        centres.append(x[pick])
        d2 = np.minimum(d2, ((x - x[pick]) ** 2).sum(1))
    c = np.stack(centres)
    assign = np.full(len(x), -1)
    xx = (x * x).sum(1)
    for _ in range(ITERATIONS):
        dist = xx[:, None] - 2 * x @ c.T + (c * c).sum(1)[None, :]
        new = dist.argmin(1)
        if (new == assign).all():
            break
        assign = new
        # each centre = the mean of its members, summed in row order (one gather, not a pass per cluster);
        # an emptied cluster keeps its centre
        counts = np.bincount(assign, minlength=k)
        filled = np.flatnonzero(counts)
        starts = (np.cumsum(counts) - counts)[filled]
        c[filled] = np.add.reduceat(x[np.argsort(assign, kind="stable")], starts, axis=0) / counts[filled, None]
    return c, assign


def sample_keys(ids: pl.Series, seed: int) -> np.ndarray:
    """Seeded xxh3 of each pair's id: the fitting sample is the pairs of smallest key (a bottom-k sample, the
    same whatever the batches)."""
    return ids.to_frame("id").select(hash64("id", seed=seed)).to_series().to_numpy()


def fit_sample(batches: Batches, fit_rows: int) -> tuple[int, list[str]]:
    """(pairs seen, texts of the fitting sample in row order): every pair when there are at most ``fit_rows``,
    else the ``fit_rows`` of smallest key (ties by row). Holds at most ``fit_rows`` texts plus a batch."""
    n, keys, rows, texts = 0, np.zeros(0, np.uint64), np.zeros(0, np.int64), []
    for key, batch in batches():
        keys = np.concatenate([keys, np.asarray(key, np.uint64)])
        rows = np.concatenate([rows, np.arange(n, n + len(batch))])
        texts, n = texts + list(batch), n + len(batch)
        if len(texts) > fit_rows:
            keep = np.lexsort((rows, keys))[:fit_rows]
            keys, rows, texts = keys[keep], rows[keep], [texts[i] for i in keep]
    order = np.argsort(rows, kind="stable")
    return n, [texts[i] for i in order]


def vectors(texts: list[str], idf: np.ndarray, seed: int) -> np.ndarray:
    """Unit float32 rows of ``texts`` in the space fitted on the sample (``idf``), ``BLOCK_ROWS`` at a time: a
    row depends on its own text alone."""
    out = np.empty((len(texts), ANN_DIM), np.float32)
    for lo in range(0, len(texts), BLOCK_ROWS):
        out[lo : lo + BLOCK_ROWS] = dense_view(tfidf_matrix(texts[lo : lo + BLOCK_ROWS], *NGRAMS, FEATURES, idf=idf), seed)
    return out


def assign(texts: list[str], idf: np.ndarray, centres: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(nearest centre, squared distance to it) of each text, in the space fitted on the sample (``idf``)."""
    x = vectors(texts, idf, seed).astype(np.float64)
    dist = (x * x).sum(1)[:, None] - 2 * x @ centres.T + (centres * centres).sum(1)[None, :]
    nearest = dist.argmin(1)
    return nearest, ((x - centres[nearest]) ** 2).sum(1)


def nearest_rows(batches: Batches, idf: np.ndarray, centres: np.ndarray, per_cluster: int, seed: int) -> np.ndarray:
    """Rows (sorted) of the ``per_cluster`` pairs nearest each centre (ties by row), reading the pairs in blocks
    of ``BLOCK_ROWS`` at fixed row offsets and keeping per cluster only the nearest so far."""
    best = (np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64))  # cluster, distance, row
    pending: list[str] = []
    start = 0

    def merge(block: list[str], lo: int) -> None:
        nonlocal best
        cluster, dist = assign(block, idf, centres, seed)
        c, d, r = (np.concatenate(p) for p in zip(best, (cluster, dist, np.arange(lo, lo + len(block))), strict=True))
        order = np.lexsort((r, d, c))
        c, d, r = c[order], d[order], r[order]
        rank = np.arange(c.size) - np.searchsorted(c, c)  # position within its cluster
        keep = rank < per_cluster
        best = (c[keep], d[keep], r[keep])

    for _, batch in batches():
        pending += batch
        while len(pending) >= BLOCK_ROWS:
            merge(pending[:BLOCK_ROWS], start)
            pending, start = pending[BLOCK_ROWS:], start + BLOCK_ROWS
    if pending:
        merge(pending, start)
    return np.sort(best[2])


def held_out_rows(batches: Batches, *, clusters: int, per_cluster: int, max_fraction: float, seed: int,
                  fit_rows: int) -> tuple[int, int, np.ndarray]:
    """(pairs, clusters used, sorted rows held out): k-means fitted on the sample, then every pair assigned."""
    n, sample = fit_sample(batches, fit_rows)
    k = min(n_clusters(n, clusters, per_cluster, max_fraction), len(sample))
    if k == 0:
        return n, 0, np.zeros(0, np.int64)
    idf = tfidf_idf(sample, *NGRAMS, FEATURES, chunk_rows=BLOCK_ROWS)
    centres, _ = kmeans(vectors(sample, idf, seed), k, seed)
    del sample
    return n, k, nearest_rows(batches, idf, centres, per_cluster, seed)


def held_out(texts: list[str], *, clusters: int, per_cluster: int, max_fraction: float, seed: int,
             fit_rows: int = 20_000, batch_rows: int = 65_536) -> np.ndarray:
    """Boolean mask of the rows of ``texts`` held out (``held_out_rows`` over batches of ``batch_rows``; a
    row's sampling key is its number)."""
    def batches():
        for lo in range(0, len(texts), batch_rows):
            ids = pl.Series([str(i) for i in range(lo, min(lo + batch_rows, len(texts)))], dtype=pl.String)
            yield sample_keys(ids, seed), texts[lo : lo + batch_rows]

    _, _, rows = held_out_rows(batches, clusters=clusters, per_cluster=per_cluster, max_fraction=max_fraction,
                               seed=seed, fit_rows=fit_rows)
    mask = np.zeros(len(texts), dtype=bool)
    mask[rows] = True
    return mask


def split_test_set(stream: Path, out: Path, cfg: WildfeedbackTestSet, sizes: dict) -> dict:
    """Read the pairs the partitions streamed to ``stream`` batch by batch (their ids and request + preference
    texts: twice, to fit on the sample and to assign every pair; then the rows), write the held-out ones to
    ``out/test`` and the rest to ``out/pairs``, remove ``stream``; returns the figures for details.json."""
    def batches():
        for batch in iter_batches(stream, columns=["pair_id", "prompt", "lineage"]) if shard_files(stream) else []:
            df = pl.from_arrow(batch)
            yield sample_keys(df.get_column("pair_id"), cfg.seed), pair_texts(df)

    n, k, rows = held_out_rows(batches, clusters=cfg.clusters, per_cluster=cfg.per_cluster,
                               max_fraction=cfg.max_fraction, seed=cfg.seed, fit_rows=cfg.fit_rows)
    kinds: Counter[str] = Counter()
    start = 0
    with (ShardWriter(out / "pairs", name="pairs", **sizes) as kept,
          ShardWriter(out / "test", name="pairs", **sizes) as test):
        for batch in iter_batches(stream) if shard_files(stream) else []:
            table = pa.Table.from_batches([batch])
            held = pa.array(np.isin(np.arange(start, start + table.num_rows), rows))
            start += table.num_rows
            test.write(table.filter(held))
            kept.write(table.filter(pc.invert(held)))
            kinds.update(json.loads(x)["kind"] for x in table.filter(held).column("lineage").to_pylist())
    shutil.rmtree(stream)
    return {"pairs": n, "held_out": int(rows.size), "pairs_kept": n - int(rows.size), "clusters": k,
            "held_out_by_kind": dict(sorted(kinds.items()))}
