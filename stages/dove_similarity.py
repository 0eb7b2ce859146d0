"""Vector spaces over instructions for DOVE's `similar` pairing, and nearest different neighbours.

Two spaces, both giving L2-normalised rows so a dot product is a cosine:

* ``tfidf_matrix``: hashed character n-gram TF-IDF (scipy sparse), built with numpy only. It needs
  no download, so it is the default and what runs offline.
* ``embed_texts``: mean-pooled last hidden states of a Hugging Face encoder (e.g.
  ``sentence-transformers/all-MiniLM-L6-v2``), used when ``dove.embedding_model`` names one.

>>> X = tfidf_matrix(["how do I bake bread", "how do I bake a cake", "tax deadline"], 3, 5, 1 << 12)
>>> nearest_partners(X, k=1, max_similarity=1.0)[0].tolist()
[[1], [0], [0]]
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constants: multiplicative hashing
_BASE = np.uint64(0x100000001B3)


def _normalise(texts: list[str]) -> pl.Series:
    """Lower-case, collapse whitespace, pad with one space so word edges form their own n-grams."""
    s = pl.Series("t", texts, dtype=pl.String)
    return " " + s.str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars() + " "


def tfidf_matrix(texts: list[str], ngram_min: int, ngram_max: int, n_features: int) -> sp.csr_matrix:
    """Rows = texts, columns = hashed character n-grams; sublinear tf, smoothed idf, unit L2 rows.

    Vectorised: all texts become one array of code points; an n-gram is a rolling polynomial hash
    at every position, masked where it would cross into the next text.
    """
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
    tf.sum_duplicates()
    tf.data = 1.0 + np.log(tf.data)
    df = np.bincount(tf.indices, minlength=n_features)
    idf = (np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0).astype(np.float32)
    tf.data *= idf[tf.indices]
    return _l2_rows(tf)


def _l2_rows(x: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ x, dtype=np.float32)


def embed_texts(texts: list[str], model_id: str, batch_size: int = 32, max_length: int = 512) -> np.ndarray:
    """Unit-norm mean-pooled embeddings from a Hugging Face model: a hub id (downloaded unless cached),
    a local folder, or ``tiny`` (the built-in offline model, meaningless vectors, for wiring checks)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from pipeline.llm import resolve_model

    model_id = resolve_model(model_id)
    tok = AutoTokenizer.from_pretrained(model_id)
    if tok.pad_token is None:  # decoder-only models have none; padding is masked out anyway
        tok.pad_token = tok.eos_token
    model = AutoModel.from_pretrained(model_id).eval()
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
    x: sp.csr_matrix | np.ndarray, k: int, max_similarity: float, block_cells: int = 1 << 24
) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the ``k`` most similar OTHER rows with cosine < ``max_similarity``.

    Returns ``(partners, similarity)``, both ``(n, k)``; a slot without a valid partner holds -1 and
    NaN. Among the chosen, equal scores sort by row index; the result is deterministic. Exact search: the
    similarity matrix is computed in row blocks of at most ``block_cells`` cells (O(n^2) time).
    """
    n = x.shape[0]
    partners = np.full((n, k), -1, dtype=np.int64)
    sims = np.full((n, k), np.nan, dtype=np.float32)
    if n < 2:
        return partners, sims
    kk = min(k, n - 1)
    step = max(1, block_cells // n)
    xt = x.T.tocsc() if sp.issparse(x) else x.T
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        block = x[lo:hi] @ xt
        s = (block.toarray() if sp.issparse(block) else np.asarray(block)).astype(np.float32)
        s[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf  # never the row itself
        # Near-duplicates count as the same instruction; the epsilon makes 1.0 exclude exact
        # duplicates despite float rounding.
        s[s >= max_similarity - 1e-6] = -np.inf
        # The kk best per row, then ordered by (-similarity, index) so equal scores sort the same way.
        cand = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < n else np.argsort(-s, axis=1)
        cand_s = np.take_along_axis(s, cand, axis=1)
        rank = np.lexsort((cand, -cand_s), axis=1)
        order = np.take_along_axis(cand, rank, axis=1)
        top = np.take_along_axis(cand_s, rank, axis=1)
        valid = np.isfinite(top)
        partners[lo:hi, :kk] = np.where(valid, order, -1)
        sims[lo:hi, :kk] = np.where(valid, top, np.nan)
    return partners, sims


def row_cosine(x: sp.csr_matrix | np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine between rows ``a[i]`` and ``b[i]`` of a unit-row matrix, for every i."""
    if sp.issparse(x):
        return np.asarray(x[a].multiply(x[b]).sum(axis=1)).ravel().astype(np.float32)
    return np.einsum("ij,ij->i", x[a], x[b]).astype(np.float32)
