"""Vector spaces over instructions for DOVE's `similar` pairing, and nearest different neighbours.

Two spaces, both giving L2-normalised rows so a dot product is a cosine:

* ``tfidf_matrix``: hashed character n-gram TF-IDF (scipy sparse), built with numpy only. It needs
  no download, so it is the default and what runs offline.
* ``embed_texts``: mean-pooled last hidden states of a Hugging Face encoder (e.g.
  ``sentence-transformers/all-MiniLM-L6-v2``), used when ``dove.embedding_model`` names one.

``nearest_partners`` searches exactly up to ``EXACT_MAX`` instructions (O(n^2), seconds). Beyond, it
searches ``ANN_SHARDS`` HNSW indexes (``faiss``), one per contiguous block of rows, over a dense view of
the space, a seeded sparse random projection of the TF-IDF rows to ``ANN_DIM`` dimensions that keeps
cosines close. Each shard's graph is built single-threaded, so it is the same on every run, and shards
are built side by side on two threads; every row queries every shard, and the union of candidates is
re-ranked by exact cosine in the original space. Smaller graphs keep recall up as n grows; the result
depends on neither thread counts nor batch sizes. Time and recall against the exact search are measured
by ``bench/dove_similar.py`` (its README has the figures and what they were run with).

>>> X = tfidf_matrix(["how do I bake bread", "how do I bake a cake", "tax deadline"], 3, 5, 1 << 12)
>>> nearest_partners(X, k=1, max_similarity=1.0)[0].tolist()
[[1], [0], [0]]
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl
import scipy.sparse as sp

_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constants: multiplicative hashing
_BASE = np.uint64(0x100000001B3)


def _normalise(texts: list[str]) -> pl.Series:
    """Lower-case, collapse whitespace, pad with one space so word edges form their own n-grams."""
    s = pl.Series("t", texts, dtype=pl.String)
    return " " + s.str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars() + " "


EXACT_MAX = 5_000  # up to this many rows the search is exact
ANN_DIM = 512  # dimensions of the dense view the index searches (fewer cost recall on diverse sets)
ANN_NONZEROS = 4  # nonzeros per input feature in the random projection (a sparse JL transform)
ANN_M = 16  # HNSW links per node (faiss ``M``)
ANN_EF_CONSTRUCTION = 100  # HNSW build beam (M 32 / 40 builds 2.2x faster but recall fell: bench/README.md)
ANN_EF_SEARCH = 64  # HNSW query beam (at least the number of candidates asked for)
ANN_SHARDS = 4  # HNSW graphs, each over n / 4 consecutive rows (recall falls with graph size; bench/README.md)
ANN_RERANK = 15  # candidates scored by exact cosine at a time: k + ANN_RERANK per row
ANN_CANDIDATES = 8  # candidates fetched per row from each shard; rows left short (near-duplicates) fetch 4x more
ANN_MAX_CANDIDATES = 1024  # ... up to this many per shard; a row still short after that is searched exactly
CHUNK_ROWS = 100_000  # texts per chunk of the TF-IDF build and the projection (bounds temporaries)


def tfidf_matrix(
    texts: list[str], ngram_min: int, ngram_max: int, n_features: int, chunk_rows: int = CHUNK_ROWS,
    idf: np.ndarray | None = None,
) -> sp.csr_matrix:
    """Rows = texts, columns = hashed character n-grams; sublinear tf, smoothed idf, unit L2 rows.

    Vectorised: all texts become one array of code points; an n-gram is a rolling polynomial hash
    at every position, masked where it would cross into the next text. Built ``chunk_rows`` texts at a
    time (the result does not depend on it), so temporaries stay bounded at a million texts. ``idf``:
    weights counted on another corpus (``tfidf_idf``); then each row depends on its own text alone.
    """
    n = len(texts)
    parts = [_term_counts(texts[lo : lo + chunk_rows], ngram_min, ngram_max, n_features) for lo in range(0, n, chunk_rows)]
    tf = sp.vstack(parts, format="csr") if len(parts) > 1 else parts[0] if parts else sp.csr_matrix((0, n_features), dtype=np.float32)
    del parts
    if idf is None:
        idf = _idf(np.bincount(tf.indices, minlength=n_features), n)
    for lo in range(0, n, chunk_rows):  # in place, a chunk of rows at a time
        a, b = tf.indptr[lo], tf.indptr[min(n, lo + chunk_rows)]
        data = tf.data[a:b]
        np.log(data, out=data)
        data += np.float32(1.0)
        data *= idf[tf.indices[a:b]]
        _l2_rows(tf, lo, min(n, lo + chunk_rows))
    return tf


def tfidf_idf(texts: list[str], ngram_min: int, ngram_max: int, n_features: int, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """The idf weights ``tfidf_matrix`` gives ``texts``, counted ``chunk_rows`` texts at a time (no matrix kept),
    to apply to other texts (``tfidf_matrix(..., idf=...)``)."""
    df = np.zeros(n_features, np.int64)
    for lo in range(0, len(texts), chunk_rows):
        df += np.bincount(_term_counts(texts[lo : lo + chunk_rows], ngram_min, ngram_max, n_features).indices,
                          minlength=n_features)
    return _idf(df, len(texts))


def _idf(df: np.ndarray, n: int) -> np.ndarray:
    """Smoothed idf of document frequencies ``df`` over ``n`` texts."""
    return (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)


def _term_counts(texts: list[str], ngram_min: int, ngram_max: int, n_features: int) -> sp.csr_matrix:
    """Raw n-gram counts of ``texts`` (rows) over hashed features, indices sorted within each row."""
    norm = _normalise(texts)
    lengths = norm.str.len_chars().to_numpy().astype(np.int64)
    codes = np.frombuffer("".join(norm.to_list()).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    doc_of = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
    ends = np.cumsum(lengths)  # first position after each text
    rows, cols = [], []
    with np.errstate(over="ignore"):  # uint64 wrap-around is the hash
        for n in range(ngram_min, ngram_max + 1):
            m = codes.size - n + 1
            if m <= 0:
                continue
            h = np.full(m, np.uint64(n), dtype=np.uint64) * _MIX
            for k in range(n):
                h = h * _BASE + codes[k : k + m]
            h ^= h >> np.uint64(29)
            h *= _MIX
            h ^= h >> np.uint64(32)
            start_doc = doc_of[:m]
            keep = np.arange(m) + n <= ends[start_doc]  # the n-gram ends inside its own text
            rows.append(start_doc[keep])
            cols.append((h[keep] % np.uint64(n_features)).astype(np.int64))
    row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    tf = sp.csr_matrix((np.ones(row.size, np.float32), (row, col)), shape=(len(texts), n_features))
    tf.sum_duplicates()  # also sorts each row's indices
    return tf


def _l2_rows(x: sp.csr_matrix, lo: int, hi: int) -> None:
    """Scale rows [lo, hi) of ``x`` to unit L2 norm, in place (float32, as a float32 diagonal product)."""
    lengths = np.diff(x.indptr[lo : hi + 1])
    data = x.data[x.indptr[lo] : x.indptr[hi]]
    starts = (x.indptr[lo:hi] - x.indptr[lo])[lengths > 0]
    norms = np.zeros(hi - lo, np.float32)
    if starts.size:
        norms[lengths > 0] = np.sqrt(np.add.reduceat(data * data, starts))
    norms[norms == 0] = 1.0
    data *= np.repeat(np.float32(1.0) / norms, lengths)


def embed_texts(texts: list[str], model_id: str, batch_size: int = 32, max_length: int = 512,
                revision: str | None = None) -> np.ndarray:
    """Unit-norm mean-pooled embeddings from a Hugging Face model: a hub id (downloaded unless cached) at
    ``revision`` (None: main), loaded at the commit its weights identity names (``weights_revision``, as the model
    roles' engines do, and its branch recorded in the cache for offline runs), a local folder, or ``tiny``
    (the built-in offline model, meaningless vectors, for wiring checks)."""
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModel, AutoTokenizer

    from pipeline.errors import ModelLoadError
    from pipeline.llm import resolve_model
    from pipeline.llm.identity import record_ref, weights_revision
    from pipeline.llm.tiny import model_path_problem

    try:  # a wrong dove.embedding_model is one line naming that key, not a transformers traceback
        rev = weights_revision(model_id, revision)
        path = resolve_model(model_id, hub=rev == revision, revision=rev)  # resolved: the Hub has it
        if why := model_path_problem(path):
            raise ModelLoadError(why)
        tok = AutoTokenizer.from_pretrained(path, revision=rev)
        model = AutoModel.from_pretrained(path, revision=rev).eval()
        record_ref(model_id, revision)
    except (OSError, ValueError, SafetensorError, ModelLoadError) as e:  # SafetensorError: weights cut short
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelLoadError(f"dove.embedding_model {model_id!r} could not be loaded ({why}); set it to a Hugging "
                             "Face model id (offline: one in the local cache), a local folder holding a model, or "
                             "null for the hashed TF-IDF space") from None
    if tok.pad_token is None:  # decoder-only models have none; padding is masked out anyway
        tok.pad_token = tok.eos_token
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tok(texts[start : start + batch_size], padding=True, truncation=True,
                      max_length=max_length, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def nearest_partners(
    x: sp.csr_matrix | np.ndarray, k: int, max_similarity: float, block_cells: int = 1 << 24,
    exact_max: int = EXACT_MAX,
) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the ``k`` most similar OTHER rows with cosine < ``max_similarity``.

    Returns ``(partners, similarity)``, both ``(n, k)``; a slot without a valid partner holds -1 and
    NaN. Among the chosen, equal scores sort by row index; the result is deterministic. Up to
    ``exact_max`` rows the search is exact (the similarity matrix in row blocks of at most
    ``block_cells`` cells, O(n^2)); beyond, candidates come from an HNSW index (``_approximate``).
    """
    n = x.shape[0]
    if n > exact_max and n > k + 1:
        return _approximate(x, k, max_similarity, block_cells)
    partners = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), np.nan, dtype=np.float32)
    if n >= 2:
        _exact(x, np.arange(n), k, max_similarity, block_cells, partners, sims)
    return partners, sims


def _exact(x, rows: np.ndarray, k: int, max_similarity: float, block_cells: int, partners, sims) -> None:
    """Exact search for ``rows`` against every row, written into ``partners`` / ``sims`` in place."""
    n = x.shape[0]
    kk = min(k, n - 1)
    step = max(1, block_cells // n)
    xt = x.T.tocsr() if sp.issparse(x) else x.T  # CSR once: scipy would convert a CSC operand per block
    for lo in range(0, rows.size, step):
        block_rows = rows[lo : lo + step]
        block = x[block_rows] @ xt
        s = (block.toarray() if sp.issparse(block) else np.asarray(block)).astype(np.float32)
        s[np.arange(block_rows.size), block_rows] = -np.inf  # never the row itself
        cand = np.broadcast_to(np.arange(n), s.shape)
        partners[block_rows, :kk], sims[block_rows, :kk] = _best(cand, s, kk, max_similarity)


def _best(cand: np.ndarray, s: np.ndarray, k: int, max_similarity: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` candidates of highest similarity below ``max_similarity``, ordered by
    (-similarity, index); -1 / NaN where fewer are valid. ``-inf`` marks a candidate to ignore."""
    s = s.copy()
    # Near-duplicates count as the same instruction; the epsilon makes 1.0 exclude exact duplicates
    # despite float rounding.
    s[s >= max_similarity - 1e-6] = -np.inf
    top = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < s.shape[1] else np.argsort(-s, axis=1)
    top_s = np.take_along_axis(s, top, axis=1)
    top_c = np.take_along_axis(cand, top, axis=1)
    rank = np.lexsort((top_c, -top_s), axis=1)
    order = np.take_along_axis(top_c, rank, axis=1)
    best = np.take_along_axis(top_s, rank, axis=1)
    valid = np.isfinite(best)
    return np.where(valid, order, -1), np.where(valid, best, np.nan).astype(np.float32)


def dense_view(x: sp.csr_matrix | np.ndarray, seed: int = 0) -> np.ndarray:
    """Unit rows of ``x`` as dense float32: sparse rows through a seeded sparse random projection to
    ``ANN_DIM`` dimensions (each input feature adds to ``ANN_NONZEROS`` of them with random signs, a
    sparse Johnson-Lindenstrauss transform that keeps cosines close), dense rows (embeddings) as they are.
    A row's vector does not depend on the other rows, so any subset of rows can be projected alone."""
    if not sp.issparse(x):
        y = np.array(x, dtype=np.float32)
    else:
        rng = np.random.default_rng([seed, 5])
        bucket = rng.integers(0, ANN_DIM, size=(ANN_NONZEROS, x.shape[1]))
        sign = (rng.integers(0, 2, size=(ANN_NONZEROS, x.shape[1])) * 2 - 1).astype(np.float32)
        part = x.tocoo()
        y = np.zeros(part.shape[0] * ANN_DIM, np.float64)
        for j in range(ANN_NONZEROS):
            flat = part.row.astype(np.int64) * ANN_DIM + bucket[j, part.col]
            y += np.bincount(flat, weights=part.data * sign[j, part.col], minlength=y.size)
        y = y.reshape(part.shape[0], ANN_DIM).astype(np.float32)
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return y / norms


def _approximate(x, k: int, max_similarity: float, block_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest partners through HNSW indexes over ``dense_view(x)``, re-ranked by exact cosine.

    The rows are cut into ``ANN_SHARDS`` contiguous shards (bounds from n alone, each of at least 64
    rows); each shard's index (faiss ``IndexHNSWFlat``, inner product on unit rows) is built on one
    thread in row order, so it is the same graph on every run, and two shards are built at a time.
    Queries run on every core (each query's answer does not depend on the others). Per row each shard's
    ``ANN_CANDIDATES`` best (by projected cosine, itself excluded), merged by (projected cosine, row), are
    scored exactly, ``k + ANN_RERANK`` at a time, until ``k`` of them are below ``max_similarity``; a row
    whose candidates run out (a cluster of near-duplicates) asks every shard for four times more, and a
    row the indexes cannot serve (a shard returns fewer rows than asked, or ``ANN_MAX_CANDIDATES`` per
    shard were not enough) is searched exactly.
    """
    n = x.shape[0]
    y = np.empty((n, ANN_DIM if sp.issparse(x) else x.shape[1]), np.float32)
    for lo in range(0, n, CHUNK_ROWS // 4):  # a chunk at a time: the projection's temporaries stay small
        y[lo : lo + CHUNK_ROWS // 4] = dense_view(x[lo : lo + CHUNK_ROWS // 4])
    bounds = np.linspace(0, n, max(1, min(ANN_SHARDS, n // 64)) + 1).astype(np.int64)
    indexes = _build_shards(y, bounds)
    del y  # each index holds a copy of its shard: queries read those
    y = _Stored(indexes, bounds)
    partners = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), np.nan, dtype=np.float32)
    rows, m, r, smallest = np.arange(n), ANN_CANDIDATES, k + ANN_RERANK, int(np.diff(bounds).min())
    while rows.size:
        m = min(max(m, -(-(r + 1) // len(indexes))), smallest)
        cand = np.empty((rows.size, m * len(indexes)), np.int64)
        for lo in range(0, rows.size, CHUNK_ROWS):
            cand[lo : lo + CHUNK_ROWS] = _search(indexes, bounds, y[rows[lo : lo + CHUNK_ROWS]], m)
        exhausted = (cand < 0).any(axis=1)
        cand[cand == rows[:, None]] = -1  # never the row itself
        s = np.full(cand.shape, -np.inf, np.float32)
        todo = np.ones(rows.size, bool)
        for lo in range(0, cand.shape[1], r):  # score candidates a window at a time, only for rows still short
            idx = np.flatnonzero(todo)
            window = cand[idx, lo : lo + r]
            ok = window >= 0
            scored = np.full(window.shape, -np.inf, np.float32)
            scored[ok] = row_cosine(x, np.broadcast_to(rows[idx, None], window.shape)[ok], window[ok])
            s[idx, lo : lo + r] = scored
            found = s[idx]
            todo[idx] = (np.isfinite(found) & (found < max_similarity - 1e-6)).sum(axis=1) < k
            if not todo.any():
                break
        partners[rows], sims[rows] = _best(np.where(cand >= 0, cand, 0), s, k, max_similarity)
        more = todo & ~exhausted & (m < min(smallest, ANN_MAX_CANDIDATES))
        if (todo & ~more).any():
            _exact(x, rows[todo & ~more], k, max_similarity, block_cells, partners, sims)
        rows, m = rows[more], m * 4
    return partners, sims


def _build_shards(y: np.ndarray, bounds: np.ndarray) -> list:
    """One HNSW index per shard ``y[bounds[i]:bounds[i + 1]]``, each built on a single OpenMP thread
    (faiss's threaded add depends on thread timing), two shards at a time (faiss releases the GIL)."""
    import faiss

    def build(lo_hi):
        faiss.omp_set_num_threads(1)  # the OpenMP thread count is per calling thread (libgomp)
        index = faiss.IndexHNSWFlat(y.shape[1], ANN_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ANN_EF_CONSTRUCTION
        index.add(y[lo_hi[0] : lo_hi[1]])
        return index

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # also here, should a runtime keep one count for the whole process
    try:
        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(build, zip(bounds[:-1], bounds[1:], strict=True)))
    finally:
        faiss.omp_set_num_threads(threads)


class _Stored:
    """Rows of the projected matrix, read from the shards' indexes (``stored[rows]``)."""

    def __init__(self, indexes: list, bounds: np.ndarray):
        import faiss

        self.bounds, self.parts = bounds, [
            faiss.rev_swig_ptr(faiss.downcast_index(ix.storage).get_xb(), ix.ntotal * ix.d).reshape(ix.ntotal, ix.d)
            for ix in indexes]

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        shard = np.searchsorted(self.bounds, rows, side="right") - 1
        out = np.empty((rows.size, self.parts[0].shape[1]), np.float32)
        for j, part in enumerate(self.parts):
            out[shard == j] = part[rows[shard == j] - self.bounds[j]]
        return out


def _search(indexes: list, bounds: np.ndarray, q: np.ndarray, m: int) -> np.ndarray:
    """Each shard's ``m`` best rows for each query (as row numbers of the whole matrix; -1 where a shard
    returned fewer), merged per query by (-projected cosine, row): the order depends on the data only."""
    scores, found = [], []
    for index, lo in zip(indexes, bounds[:-1], strict=True):
        index.hnsw.efSearch = max(ANN_EF_SEARCH, m)
        d, i = index.search(q, m)
        scores.append(np.where(i >= 0, d, -np.inf))
        found.append(np.where(i >= 0, i + lo, -1))
    d, i = np.concatenate(scores, axis=1), np.concatenate(found, axis=1)
    return np.take_along_axis(i, np.lexsort((i, -d), axis=1), axis=1)


def row_cosine(x: sp.csr_matrix | np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Cosine between rows ``a[i]`` and ``b[i]`` of a unit-row matrix, for every i (``chunk`` pairs at a
    time, so the gathered rows stay small)."""
    out = np.empty(len(a), np.float32)
    for lo in range(0, len(a), chunk):
        xa, xb = x[a[lo : lo + chunk]], x[b[lo : lo + chunk]]
        dot = xa.multiply(xb).sum(axis=1) if sp.issparse(x) else np.einsum("ij,ij->i", xa, xb)
        out[lo : lo + chunk] = np.asarray(dot).ravel()
    return out
