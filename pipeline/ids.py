"""Stable 64-bit hashes and hex ids as polars expressions.

Every hash here is xxh3-64 (through polars-hash, a maintained Rust plugin) of one well-defined byte
string, so an id is the same on every machine, polars version and platform, and anyone can recompute
it in any language with an xxh3 library. The string is the columns' values, each written as
``<UTF-8 byte length>:<value>`` (numbers in decimal, a null as ``-:``), concatenated in order: the
length prefix keeps ``("ab", "c")`` and ``("a", "bc")`` apart.

    >>> import polars as pl, xxhash
    >>> df = pl.DataFrame({"a": ["p1"], "b": ["x"]})
    >>> df.select(hex_id("a", "b")).item() == f"{xxhash.xxh3_64_intdigest(b'2:p11:x'):016x}"
    True

``hash64`` gives the number (u64; for keys, joins and shuffles), ``hex_id`` its 16 lowercase hex digits
(for ids written to files), ``hex16`` the hex digits of any u64 expression (``hex_array``: of a numpy
array, as an Arrow array), and ``combine`` one hash of several hashes (xxh3-64 of their 8-byte
big-endian values, concatenated), which lets a table hash (column, column) pairs from per-row hashes
without building strings again::

    >>> h = xxhash.xxh3_64_intdigest
    >>> pl.DataFrame({"a": [1], "b": [2]}).select(combine("a", "b", seed=3)).item() == h(
    ...     (1).to_bytes(8, "big") + (2).to_bytes(8, "big"), seed=3)
    True

``stable_hash64`` hashes one string column outside an expression (xxh3-64 of each value's UTF-8, no
length prefix; a numpy uint64 array): the text keys of de-duplication, MinHash's word hashes and the
export split.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import polars_hash  # noqa: F401  (registers the ``nchash`` expression namespace)
import pyarrow as pa

_HEX = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype="<u2")


def _col(c: str | pl.Expr) -> pl.Expr:
    return pl.col(c) if isinstance(c, str) else c


def _length_prefix(n: pl.Series) -> pl.Series:
    """``"<n>:"`` per byte length, gathered from a table of the lengths up to the largest one (writing
    every number as a string is ~2x slower); for a very long value, each number is written instead."""
    top = n.max()
    if top is None or top >= 1 << 12:
        return n.cast(pl.String) + ":"
    return pl.Series(n.name, [f"{i}:" for i in range(top + 1)]).gather(n)


def key(*cols: str | pl.Expr) -> pl.Expr:
    """The string the hashes are of: ``<byte length>:<value>`` per column, a null as ``-:``."""
    if not cols:
        raise ValueError("ids.key: at least one column is needed")
    parts: list[pl.Expr] = []
    for c in cols:
        text = _col(c).cast(pl.String)
        prefix = text.str.len_bytes().map_batches(_length_prefix, return_dtype=pl.String, is_elementwise=True)
        parts += [prefix.fill_null("-:"), text.fill_null("")]
    return pl.concat_str(parts)


def hash64(*cols: str | pl.Expr, seed: int = 0) -> pl.Expr:
    """xxh3-64 of ``key(*cols)`` with ``seed``, as u64."""
    return key(*cols).nchash.xxh3_64(seed=seed)


def hex_array(h: np.ndarray) -> pa.Array:
    """``hex16`` of a u64 numpy array, as an Arrow ``string`` array built from buffers (no Python strings)."""
    n = len(h)
    digits = _HEX[np.ascontiguousarray(h, dtype=">u8").view(np.uint8)]
    small = 16 * n < 2**31
    offsets = np.arange(0, 16 * n + 1, 16, dtype=np.int32 if small else np.int64)
    type_ = pa.string() if small else pa.large_string()
    return pa.Array.from_buffers(type_, n, [None, pa.py_buffer(offsets), pa.py_buffer(digits.tobytes())])


def _hex(s: pl.Series) -> pl.Series:
    return pl.Series(s.name, hex_array(s.cast(pl.UInt64).to_numpy()), dtype=pl.String)


def hex16(h: str | pl.Expr) -> pl.Expr:
    """The 16 lowercase hex digits of a (non-null) u64 expression, most significant first."""
    return _col(h).map_batches(_hex, return_dtype=pl.String)


HEX_ID = r"[0-9a-f]{16}"  # the shape of an id from hex_id (a regex), for code that must recognise our ids


def hex_id(*cols: str | pl.Expr, seed: int = 0) -> pl.Expr:
    """``hex16(hash64(*cols, seed=seed))``: a 16-character id."""
    return hex16(hash64(*cols, seed=seed))


def _combine(s: pl.Series, seed: int) -> pl.Series:
    cols = [s.struct.field(f).cast(pl.UInt64).to_numpy() for f in s.struct.fields]
    n, width = len(s), 8 * len(cols)
    if n == 0:
        return pl.Series(s.name, [], dtype=pl.UInt64)
    data = np.empty((n, len(cols)), dtype=">u8")
    for i, c in enumerate(cols):
        data[:, i] = c
    arr = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(data)])  # no copy
    return pl.from_arrow(arr).to_frame("b").select(pl.col("b").nchash.xxh3_64(seed=seed)).to_series().alias(s.name)


def combine(*hashes: str | pl.Expr, seed: int = 0) -> pl.Expr:
    """xxh3-64 (``seed``) of the (non-null, u64) ``hashes``' 8-byte big-endian values, concatenated."""
    if not hashes:
        raise ValueError("ids.combine: at least one column is needed")
    fields = [_col(h).cast(pl.UInt64).alias(f"h{i}") for i, h in enumerate(hashes)]
    return pl.struct(fields).map_batches(lambda s: _combine(s, seed), return_dtype=pl.UInt64)


def stable_hash64(texts: pl.Series | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A uint64 per string (xxh3-64 of its UTF-8), identical across runs, machines and versions; null = "".

    polars-hash hashes the column in Rust: on 2M words (200k distinct) ~0.03 s, where one xxhash call per
    distinct string plus a join back took ~0.9 s (the same values; ``tests/test_text.py`` pins them).

    >>> h = stable_hash64(pl.Series(["a", "b", "a"]))
    >>> bool(h[0] == h[2]) and bool(h[0] != h[1])
    True
    """
    s = texts if isinstance(texts, pl.Series) else pl.Series(pa.chunked_array([texts]) if isinstance(texts, pa.Array) else texts)
    s = s.cast(pl.String).fill_null("").rename("t")
    if s.len() == 0:
        return np.zeros(0, dtype=np.uint64)
    return s.to_frame().select(pl.col("t").nchash.xxh3_64())["t"].to_numpy()
