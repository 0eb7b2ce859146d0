"""The baseline of ``bench/wildfeedback_testset.py``: WildFeedback's held-out test set as ``stages/wildfeedback_testset.py``
computed it at commit 8e7f5b2, before the bounded test set (every text, the sparse TF-IDF of all pairs and their dense
vectors in memory, Lloyd over all rows). Kept here, word for word, so the bench runs in a copy without that commit
(a shallow clone); not a bench itself (the leading underscore keeps tests/test_bench.py from running it).
"""

from __future__ import annotations

import math

import numpy as np

from stages.dove_similarity import dense_view, tfidf_matrix

NGRAMS = (3, 5)  # character n-gram sizes of the TF-IDF space (DOVE's defaults)
FEATURES = 1 << 18  # hashed TF-IDF dimensions
ITERATIONS = 50  # Lloyd iterations at most (it stops earlier when the assignment no longer changes)


def n_clusters(n: int, clusters: int, per_cluster: int, max_fraction: float) -> int:
    """Clusters to use for ``n`` pairs: the configured number, fewer when they would hold out more than
    ``max_fraction`` of the pairs."""
    return max(0, min(clusters, math.floor(max_fraction * n / per_cluster + 1e-9)))


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
