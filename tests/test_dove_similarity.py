"""DOVE's `similar` search beyond the exact size: the HNSW path against the exact search on real
instructions, near-duplicate clusters, determinism; the TF-IDF build independent of its chunking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.config import fingerprint, load_params
from stages.dove_similarity import ANN_DIM, ANN_SHARDS, dense_view, nearest_partners, row_cosine, tfidf_matrix
from tests.test_dove import tiny_encoder  # noqa: F401 - fixture
from tests.test_model_revision import A, FakeApi, S, cache_model, hub  # noqa: F401 - hub: fixture


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


# --- dove.embedding_revision: the embedding model's weights, loaded and recorded as the model roles' are -----


def _recording(monkeypatch, seen: list, snapshots):
    """transformers' loaders recording (path, revision), loading the fake snapshot of that commit (a tiny encoder)."""
    from transformers import AutoModel, AutoTokenizer

    def recording(original):
        def load(path, **kw):
            seen.append((path, kw.get("revision")))
            return original(str(snapshots / kw["revision"]), **{k: v for k, v in kw.items() if k != "revision"})
        return load

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", recording(AutoTokenizer.from_pretrained))
    monkeypatch.setattr(AutoModel, "from_pretrained", recording(AutoModel.from_pretrained))


@pytest.mark.usefixtures("hub")
def test_the_embedding_model_loads_the_commit_its_identity_names_and_offline_runs_find_it(request, monkeypatch):
    from huggingface_hub import constants

    from pipeline.llm import identity
    from stages.dove import embedding_identity
    from stages.dove_similarity import embed_texts
    from tests.dove_fakes import dove_cfg

    cache, encoder = Path(constants.HF_HUB_CACHE), request.getfixturevalue("tiny_encoder")
    cache_model(cache, "org/enc", S, ref=None, files=encoder)  # what loading commit S downloads: no refs/main
    seen: list = []
    _recording(monkeypatch, seen, cache / "models--org--enc" / "snapshots")
    cfg = dove_cfg(pairing="similar", embedding_model="org/enc")
    assert embed_texts(["bake bread", "file taxes"], "org/enc", revision=cfg.embedding_revision).shape == (2, 16)
    assert seen == [("org/enc", S)] * 2 and FakeApi.calls == [("org/enc", None)]  # main asked of the Hub once
    assert embedding_identity(cfg) == {"embedding": {"model": "org/enc", "identity": f"hub:{S}"}}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a new process, offline: main found in the cache
    monkeypatch.setattr(identity, "_HUB", {})
    assert embedding_identity(cfg)["embedding"]["identity"] == f"hub:{S}"
    seen.clear()
    tagged = dove_cfg(pairing="similar", embedding_model="org/enc", embedding_revision=A)
    cache_model(cache, "org/enc", A, ref=None, files=encoder)
    embed_texts(["bake bread"], "org/enc", revision=tagged.embedding_revision)
    assert seen == [("org/enc", A)] * 2 and embedding_identity(tagged)["embedding"]["identity"] == f"hub:{A}"
    assert embedding_identity(dove_cfg(pairing="random", embedding_model="org/enc")) == {}  # not loaded
    assert embedding_identity(dove_cfg(pairing="similar")) == {}  # the TF-IDF space


@pytest.mark.parametrize(("model", "why"), [(None, "is null"), ("tiny", "'tiny' is built in"),
                                              ("./encoder", "'./encoder' is a local folder")])
def test_an_embedding_revision_where_it_means_nothing_is_a_one_line_params_error(tmp_path, model, why):
    from pipeline.config import ParamsError
    from tests.test_model_revision import _params

    path = _params(tmp_path, {})
    data = yaml.safe_load(path.read_text())
    data["dove"].update(embedding_model=model, embedding_revision="v1")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ParamsError, match=rf"dove.*embedding_revision 'v1'.*embedding_model {why}") as e:
        load_params(path)
    assert len(str(e.value).strip().splitlines()) <= 2


def test_an_embedding_revision_is_fingerprinted_only_when_set():
    from tests.dove_fakes import dove_cfg

    cfg = dove_cfg(embedding_model="org/enc")
    before = cfg.model_dump(mode="json")
    del before["embedding_revision"]  # outputs made before the key existed keep their fingerprints
    assert fingerprint(cfg) == fingerprint(before)
    assert fingerprint(dove_cfg(embedding_model="org/enc", embedding_revision=A)) != fingerprint(cfg)
