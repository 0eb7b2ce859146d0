"""DOVE's `similar` search beyond the exact size: the HNSW path against the exact search on real
instructions, near-duplicate clusters, determinism; the TF-IDF build independent of its chunking."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stages.dove_similarity import ANN_DIM, ANN_SHARDS, dense_view, nearest_partners, row_cosine, tfidf_matrix


@pytest.fixture(scope="module")
def instructions(real) -> list[str]:
    path = real / "dove" / "data" / "anthropic_helpful" / "val_sft.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    return sorted({r["instruction"] for r in rows})


def test_tfidf_does_not_depend_on_its_chunking(instructions):
    texts = instructions + ["", "   ", "a"]
    whole = tfidf_matrix(texts, 3, 5, 1 << 18)
    chunked = tfidf_matrix(texts, 3, 5, 1 << 18, chunk_rows=7)
    assert (whole != chunked).nnz == 0
    assert np.allclose(np.sqrt(whole.multiply(whole).sum(axis=1)).A1[:-3], 1.0, atol=1e-5)
    assert whole[-3].nnz == 0  # an empty text is a zero row, not NaN


def test_dense_view_keeps_cosines_close(instructions):
    x = tfidf_matrix(instructions, 3, 5, 1 << 18)
    y = dense_view(x)
    assert y.shape == (len(instructions), ANN_DIM) and (dense_view(x) == y).all()  # seeded
    assert np.allclose(dense_view(x[10:20]), y[10:20], atol=1e-6)  # a row's vector depends on that row only
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(instructions), 2000), rng.integers(0, len(instructions), 2000)
    err = np.abs(np.einsum("ij,ij->i", y[a], y[b]) - row_cosine(x, a, b))
    assert err.mean() < 0.05 and err.max() < 0.25, (err.mean(), err.max())


def test_approximate_search_finds_the_exact_neighbours_on_real_instructions(instructions):
    x = tfidf_matrix(instructions, 3, 5, 1 << 18)
    exact, exact_s = nearest_partners(x, k=2, max_similarity=0.95)
    approx, approx_s = nearest_partners(x, k=2, max_similarity=0.95, exact_max=0)  # force the index
    again, _ = nearest_partners(x, k=2, max_similarity=0.95, exact_max=0)
    assert (approx == again).all()  # the same graph and answers on every run
    n = len(instructions)
    assert not (approx == np.arange(n)[:, None]).any() and (approx >= 0).all()
    assert (approx_s < 0.95).all()
    assert np.allclose(approx_s[:, 0], row_cosine(x, np.arange(n), approx[:, 0]), atol=1e-6)  # exact cosines
    # 500 diverse instructions whose nearest neighbour sits at cosine ~0.24: measured recall 0.87 of the
    # exact first partner, and the partners found are 98.9% as similar (bench/dove_similar.py at scale).
    recall = np.mean(approx[:, 0] == exact[:, 0])
    assert recall > 0.8, recall
    assert approx_s[:, 0].sum() / exact_s[:, 0].sum() > 0.97


def test_approximate_search_looks_past_a_cluster_of_near_duplicates():
    # 60 copies of one instruction (the same once case and spacing are normalised) and a few others: the
    # index's first 16 candidates of a copy are all copies, so it must ask for more to find a valid partner.
    base = "how do I bake sourdough bread at home"
    copies = [base[:i] + base[i:].upper() if i % 2 else base.replace(" ", "  ", i) for i in range(60)]
    others = ["how do I bake rye bread at home", "file my taxes online", "walk the dog in the rain"]
    x = tfidf_matrix(copies + others, 3, 5, 1 << 18)
    assert row_cosine(x, np.zeros(60, np.int64), np.arange(60)).min() >= 0.95
    exact, _ = nearest_partners(x, k=1, max_similarity=0.95)
    approx, s = nearest_partners(x, k=1, max_similarity=0.95, exact_max=0)
    assert (approx[:60, 0] == 60).all() and (exact[:60, 0] == 60).all()  # the rye bread, not a copy
    assert (s < 0.95).all()


def test_sharded_search_is_the_same_on_any_number_of_threads(instructions):
    faiss = pytest.importorskip("faiss")
    x = tfidf_matrix(instructions, 3, 5, 1 << 18)  # 500 rows: ANN_SHARDS graphs of 125
    threads = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(1)
        one = nearest_partners(x, k=2, max_similarity=0.95, exact_max=0)
        faiss.omp_set_num_threads(max(2, threads))
        many = nearest_partners(x, k=2, max_similarity=0.95, exact_max=0)
    finally:
        faiss.omp_set_num_threads(threads)
    assert (one[0] == many[0]).all() and np.array_equal(one[1], many[1], equal_nan=True)
    assert faiss.omp_get_max_threads() == threads  # the build leaves the caller's thread count alone


def test_sharded_search_finds_a_partner_in_another_shard(instructions):
    # the only near neighbour of row 0 is the last row, which sits in the last of the ANN_SHARDS shards
    texts = instructions[:255] + [instructions[0].replace(" ", "  ").upper() + " please"]
    x = tfidf_matrix(texts, 3, 5, 1 << 18)
    assert ANN_SHARDS > 1 and row_cosine(x, np.array([0]), np.array([255]))[0] < 0.95
    exact, _ = nearest_partners(x, k=1, max_similarity=0.95)
    approx, _ = nearest_partners(x, k=1, max_similarity=0.95, exact_max=0)
    assert exact[0, 0] == 255 and exact[255, 0] == 0
    assert approx[0, 0] == 255 and approx[255, 0] == 0


@pytest.mark.parametrize("exact_max", [100, 0])  # the exact search, and the approximate one
def test_an_empty_row_never_partners_itself_and_ties_go_to_the_lower_index(exact_max):
    # row 0 is empty (every cosine 0, its own included): only other rows, in row order, may be its partners
    h = np.sqrt(0.5)
    x = np.array([[0, 0], [1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6], [h, h]], dtype=np.float32)
    partners, sims = nearest_partners(x, k=2, max_similarity=1.0, exact_max=exact_max)
    assert partners[0].tolist() == [1, 2] and sims[0].tolist() == [0.0, 0.0]
    assert not (partners == np.arange(len(x))[:, None]).any()


def test_an_embedding_model_that_cannot_be_loaded_is_one_line_naming_its_key(monkeypatch):
    """A missing folder said "set llm.model"; a Hub id not in the offline cache was a transformers traceback."""
    from pipeline.errors import ModelLoadError
    from stages.dove_similarity import embed_texts

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for model in ("./no-such-encoder", "prefpipe-tests/no-such-encoder"):
        with pytest.raises(ModelLoadError, match=rf"^dove\.embedding_model '{model}' could not be loaded \(.+\); set "
                           r"it to a Hugging Face model id .* or null for the hashed TF-IDF space$"):
            embed_texts(["bake bread"], model)
