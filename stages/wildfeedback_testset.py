"""WildFeedback's held-out test set (METHODS.md §1 step 4; Shi et al. 2024, section 4).

The paper holds out a test set of its pairs for the checklist-guided evaluation: it embeds each pair's
prompt with its preference, clusters the embeddings into 70 clusters and takes the 10 pairs nearest each
centre (700 of 20,281 pairs). Here the embedding is the hashed character-n-gram TF-IDF space DOVE's `similar`
pairing uses (offline, no model), through its seeded random projection (``stages.dove_similarity``), and the
clustering is k-means (k-means++ start, Lloyd iterations) in numpy, seeded, so the same pairs and params give
the same test set. The held-out pairs leave ``data/wildfeedback/pairs`` for ``data/wildfeedback/test``.

``max_fraction`` (ours) caps the share held out, the clusters shrinking to fit, so a small run keeps its pairs:
``k = min(clusters, floor(max_fraction * n / per_cluster))``; k = 0 holds nothing out.

>>> n_clusters(20_281, clusters=70, per_cluster=10, max_fraction=0.05), n_clusters(11, 70, 10, 0.05)
(70, 0)
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import WildfeedbackTestSet
from pipeline.io import ShardWriter, iter_batches, shard_files
from pipeline.records import SCHEMAS
from stages.dove_similarity import dense_view, tfidf_matrix

NGRAMS = (3, 5)  # character n-gram sizes of the TF-IDF space (DOVE's defaults)
FEATURES = 1 << 18  # hashed TF-IDF dimensions
ITERATIONS = 50  # Lloyd iterations at most (it stops earlier when the assignment no longer changes)


def n_clusters(n: int, clusters: int, per_cluster: int, max_fraction: float) -> int:
    """Clusters to use for ``n`` pairs: the configured number, fewer when they would hold out more than
    ``max_fraction`` of the pairs."""
    return max(0, min(clusters, math.floor(max_fraction * n / per_cluster + 1e-9)))


def pair_texts(pairs: pl.DataFrame) -> list[str]:
    """What the paper clusters: the pair's last user message (its request) and its preference (lineage)."""
    last_user = pl.col("prompt").list.eval(
        pl.element().filter(pl.element().struct.field("role") == "user").struct.field("content")).list.last()
    requests = pairs.select(last_user.fill_null("")).to_series().to_list()
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
    for _ in range(ITERATIONS):
        dist = (x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None, :]
        new = dist.argmin(1)
        if (new == assign).all():
            break
        assign = new
        for j in range(k):  # an emptied cluster keeps its centre
            members = x[assign == j]
            if len(members):
                c[j] = members.mean(0)
    return c, assign


def held_out(texts: list[str], *, clusters: int, per_cluster: int, max_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the rows held out: the ``per_cluster`` members nearest each k-means centre (ties by
    row), over the TF-IDF rows of ``texts``."""
    n = len(texts)
    k = n_clusters(n, clusters, per_cluster, max_fraction)
    mask = np.zeros(n, dtype=bool)
    if k == 0:
        return mask
    x = dense_view(tfidf_matrix(texts, *NGRAMS, FEATURES), seed=seed)
    centres, assign = kmeans(x, k, seed)
    dist = ((x.astype(np.float64) - centres[assign]) ** 2).sum(1)
    for j in range(k):
        members = np.flatnonzero(assign == j)
        nearest = members[np.lexsort((members, dist[members]))][:per_cluster]
        mask[nearest] = True
    return mask


def split_test_set(stream: Path, out: Path, cfg: WildfeedbackTestSet, sizes: dict) -> dict:
    """Read the pairs the partitions streamed to ``stream`` batch by batch (first their ids, lineage and
    request + preference texts, then the rows), write the held-out ones to ``out/test`` and the rest to ``out/pairs``, remove ``stream``; returns
    the figures for details.json."""
    parts = [pl.from_arrow(SCHEMAS["pairs"].empty_table().select(["pair_id", "lineage"]))]
    texts: list[str] = []  # the request + preference of each pair: whole prompts are never all in memory
    for batch in iter_batches(stream, columns=["pair_id", "prompt", "lineage"]) if shard_files(stream) else []:
        df = pl.from_arrow(batch)
        texts += pair_texts(df)
        parts.append(df.select("pair_id", "lineage"))
    keys = pl.concat(parts)
    mask = held_out(texts, clusters=cfg.clusters, per_cluster=cfg.per_cluster, max_fraction=cfg.max_fraction,
                    seed=cfg.seed)
    test_ids = pa.array(keys.get_column("pair_id").filter(pl.Series(mask)).to_list(), pa.string())
    with (ShardWriter(out / "pairs", name="pairs", **sizes) as kept,
          ShardWriter(out / "test", name="pairs", **sizes) as test):
        for batch in iter_batches(stream) if shard_files(stream) else []:
            table = pa.Table.from_batches([batch])
            held = pc.is_in(table.column("pair_id"), value_set=test_ids)
            test.write(table.filter(held))
            kept.write(table.filter(pc.invert(held)))
    shutil.rmtree(stream)
    kinds = [json.loads(x)["kind"] for x in keys.get_column("lineage").filter(pl.Series(mask)).to_list()]
    return {"pairs": keys.height, "held_out": int(mask.sum()), "pairs_kept": keys.height - int(mask.sum()),
            "clusters": n_clusters(keys.height, cfg.clusters, cfg.per_cluster, cfg.max_fraction),
            "held_out_by_kind": {k: kinds.count(k) for k in sorted(set(kinds))}}
