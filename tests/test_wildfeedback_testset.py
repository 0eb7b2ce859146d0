"""WildFeedback's held-out test set (the paper: k-means over prompt + preference, 70 clusters, 10 nearest each
centre): which pairs are held out, and that the stage moves them from pairs to test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

import stages.wildfeedback_testset as ts
from pipeline.io import read_table
from stages.dove_similarity import dense_view, tfidf_matrix
from stages.wildfeedback_testset import fit_sample, held_out, kmeans, n_clusters, pair_texts, sample_keys
from tests.wildfeedback_fakes import FakeEngine, run_stage

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "wildchat_sample" / "conversations.jsonl"
TOPICS = ["Write a haiku about {} rain.\nKeep it to three lines.",
          "Fix my Python function that sorts {} lists.\nUse Python 3 and no classes.",
          "Plan a {} day trip to Lisbon.\nInclude the prices in euros."]


def test_cluster_count_follows_the_paper_and_the_cap():
    assert n_clusters(20_281, 70, 10, 0.05) == 70  # the paper's 700 of 20,281
    assert n_clusters(1_000, 70, 10, 0.05) == 5  # at most 50 of 1,000 held out
    assert n_clusters(11, 70, 10, 0.05) == 0  # the samples: nothing held out
    assert n_clusters(11, 70, 10, 1.0) == 1 and n_clusters(11, 0, 10, 1.0) == 0


def test_kmeans_separates_clear_clusters_and_is_seeded():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.05, size=(20, 2)) for c in ((0, 0), (5, 5), (0, 5))])
    centres, assign = kmeans(x, 3, seed=0)
    assert sorted(np.bincount(assign).tolist()) == [20, 20, 20]
    assert all(len(set(assign[i:i + 20])) == 1 for i in (0, 20, 40))
    again = kmeans(x, 3, seed=0)
    assert np.array_equal(assign, again[1]) and np.array_equal(centres, again[0])


def test_held_out_takes_the_nearest_pairs_of_every_topic():
    """Three topics, 20 pairs each: with 3 clusters of 2, each topic gives two pairs to the test set."""
    texts = [t.format(w) for t in TOPICS for w in [f"word{i}" for i in range(20)]]
    mask = held_out(texts, clusters=3, per_cluster=2, max_fraction=0.5, seed=0)
    assert mask.sum() == 6 and [int(mask[i:i + 20].sum()) for i in (0, 20, 40)] == [2, 2, 2]
    assert np.array_equal(mask, held_out(texts, clusters=3, per_cluster=2, max_fraction=0.5, seed=0))
    assert not held_out(texts, clusters=70, per_cluster=10, max_fraction=0.05, seed=0).any()  # 60 pairs: cap 3


def real_texts() -> list[str]:
    """Request + follow-up of the real WildChat conversations with two user turns or more (a pair's request +
    preference stand-in)."""
    out = []
    for line in REAL.read_text(encoding="utf-8").splitlines():
        users = [m["content"] for m in json.loads(line)["messages"] if m["role"] == "user"]
        if len(users) >= 2:
            out.append(f"{users[0]}\n{users[1]}")
    return out


def all_rows_held_out(texts: list[str], clusters: int, per_cluster: int, max_fraction: float, seed: int) -> np.ndarray:
    """The test set as it was computed before ``fit_rows``: every text vectorised and clustered at once."""
    k = n_clusters(len(texts), clusters, per_cluster, max_fraction)
    x = dense_view(tfidf_matrix(texts, *ts.NGRAMS, ts.FEATURES), seed=seed)
    centres, assign = kmeans(x, k, seed)
    dist = ((x.astype(np.float64) - centres[assign]) ** 2).sum(1)
    mask = np.zeros(len(texts), dtype=bool)
    for j in range(k):
        members = np.flatnonzero(assign == j)
        mask[members[np.lexsort((members, dist[members]))][:per_cluster]] = True
    return mask


def test_below_fit_rows_every_pair_is_clustered_as_before(monkeypatch):
    """Real WildChat requests, fewer than fit_rows: the same test set as clustering every pair at once, in one
    block or in blocks of 64 rows."""
    texts = real_texts()
    assert len(texts) > 300
    before = all_rows_held_out(texts, clusters=8, per_cluster=3, max_fraction=0.5, seed=0)
    assert before.sum() == 24
    assert np.array_equal(held_out(texts, clusters=8, per_cluster=3, max_fraction=0.5, seed=0), before)
    monkeypatch.setattr(ts, "BLOCK_ROWS", 64)
    assert np.array_equal(held_out(texts, clusters=8, per_cluster=3, max_fraction=0.5, seed=0, batch_rows=50), before)


def test_the_test_set_does_not_depend_on_batch_sizes(monkeypatch):
    """Fitted on a sample (fit_rows below the pairs), assigned in blocks of 32: batches of 7 or 500 pairs hold out
    the same rows, which are those of one block of every row."""
    texts = real_texts()
    args = {"clusters": 6, "per_cluster": 4, "max_fraction": 0.5, "seed": 3, "fit_rows": 120}
    whole = held_out(texts, **args)
    monkeypatch.setattr(ts, "BLOCK_ROWS", 32)
    small, large = held_out(texts, batch_rows=7, **args), held_out(texts, batch_rows=500, **args)
    assert whole.sum() == 24 and np.array_equal(small, large) and np.array_equal(small, whole)


def test_equally_near_pairs_are_taken_in_row_order(monkeypatch):
    """Identical pairs are equally near their centre: the first rows win, across blocks and batches."""
    texts = [t.format("same") for t in TOPICS for _ in range(20)]
    monkeypatch.setattr(ts, "BLOCK_ROWS", 8)
    mask = held_out(texts, clusters=3, per_cluster=2, max_fraction=0.5, seed=0, fit_rows=30, batch_rows=7)
    assert np.flatnonzero(mask).tolist() == [0, 1, 20, 21, 40, 41]


def test_kmeans_is_fitted_on_at_most_fit_rows_pairs(monkeypatch):
    """The sample: fit_rows pairs of smallest seeded id hash, in row order, whatever the batches; k-means sees only
    them, and every pair is still assigned (held-out rows come from the whole set)."""
    texts = [t.format(f"word{i}") for t in TOPICS for i in range(40)]
    keys = sample_keys(pl.Series([str(i) for i in range(len(texts))]), 0)

    def batches(size):
        return lambda: ((keys[lo:lo + size], texts[lo:lo + size]) for lo in range(0, len(texts), size))

    n, sample = fit_sample(batches(9), fit_rows=30)
    smallest = sorted(np.argsort(keys, kind="stable")[:30].tolist())
    assert n == 120 and sample == [texts[i] for i in smallest] and fit_sample(batches(120), 30) == (n, sample)
    assert fit_sample(batches(9), fit_rows=500) == (120, texts)  # below fit_rows: every pair, in order
    seen = []
    real_kmeans = ts.kmeans
    monkeypatch.setattr(ts, "kmeans", lambda x, k, seed: seen.append(len(x)) or real_kmeans(x, k, seed))
    mask = held_out(texts, clusters=3, per_cluster=5, max_fraction=0.5, seed=0, fit_rows=30)
    assert seen == [30] and mask.sum() == 15
    assert not set(np.flatnonzero(mask).tolist()) <= set(smallest)  # pairs outside the sample are held out too


def test_pair_texts_are_the_request_and_the_preference():
    pairs = pl.DataFrame({"prompt": [[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"},
                                      {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Explain DNS."}]],
                          "lineage": [json.dumps({"preference": "Keep it short."})]})
    assert pair_texts(pairs) == ["Explain DNS.\nKeep it short."]


def test_the_stage_moves_held_out_pairs_from_pairs_to_test(tmp_path, monkeypatch):
    """With the cap lifted and one pair per cluster, the stage's one natural-revision pair is a cluster of its
    own: it is held out, in data/wildfeedback/test and no longer in pairs; with the defaults (5% cap) nothing is."""
    test_set = {"clusters": 70, "per_cluster": 1, "max_fraction": 1.0, "fit_rows": 20_000, "seed": 0}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, pairs, _, m = run_stage(tmp_path / "a", monkeypatch, FakeEngine(), detector="rules", summarize=[],
                               test_set=test_set)
    test = read_table(tmp_path / "a" / "data/wildfeedback/test", "pairs")
    assert pairs.num_rows == 0 and test.num_rows == 1
    assert m["details"]["test_set"]["held_out"] == 1 and m["pairs"] == 0
    _, pairs, _, m = run_stage(tmp_path / "b", monkeypatch, FakeEngine(), detector="rules", summarize=[])
    assert pairs.num_rows == 1 and read_table(tmp_path / "b" / "data/wildfeedback/test", "pairs").num_rows == 0
    assert m["details"]["test_set"] == {"pairs": 1, "held_out": 0, "pairs_kept": 1, "clusters": 0,
                                        "held_out_by_kind": {}}


def test_the_pairs_held_out_do_not_depend_on_the_batches_the_stream_is_read_in(tmp_path, monkeypatch):
    """The stage reads the streamed pairs batch by batch: a held-out row number counts across batches, so the
    same pairs go to test (and none of them stays in pairs) whether the stream is read in one batch or in
    many."""
    from pipeline.config import WildfeedbackTestSet
    from pipeline.io import iter_batches, write_shards
    from pipeline.records import to_table
    from tests.export_fixtures import pair

    texts = [t.format(w) for t in TOPICS for w in [f"word{i}" for i in range(10)]]
    rows = [pair(f"p{i:02d}", text, "wildfeedback") for i, text in enumerate(texts)]
    for r in rows:
        r["lineage"] = json.dumps({"kind": "natural_revision", "preference": ""})
    cfg = WildfeedbackTestSet(clusters=3, per_cluster=2, max_fraction=0.5, fit_rows=20_000, seed=0)

    def split(out: Path) -> tuple[list[str], list[str]]:
        write_shards(to_table(rows, "pairs"), out / "stream", name="pairs")
        ts.split_test_set(out / "stream", out, cfg, {})
        return tuple(sorted(read_table(out / part, "pairs").column("pair_id").to_pylist()) for part in ("test", "pairs"))

    test, kept = split(tmp_path / "one")
    monkeypatch.setattr(ts, "iter_batches", lambda path, batch_size=65_536, columns=None: iter_batches(path, 4, columns))
    assert split(tmp_path / "many") == (test, kept)
    assert len(test) == 6 and sorted(test + kept) == [r["pair_id"] for r in rows]
