"""WildFeedback's held-out test set (the paper: k-means over prompt + preference, 70 clusters, 10 nearest each
centre): which pairs are held out, and that the stage moves them from pairs to test."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from pipeline.io import read_table
from stages.wildfeedback_testset import held_out, kmeans, n_clusters, pair_texts
from tests.wildfeedback_fakes import FakeEngine, run_stage

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
