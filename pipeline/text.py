"""Vectorised text keys: normalisation, CJK characters as words, word n-grams, MinHash near-duplicates.

Everything works on whole columns (numpy arrays, polars expressions), with no Python-level step per
string. Hashes are xxh3-64 (``pipeline.ids.stable_hash64``, polars-hash), not polars' ``hash`` (which may
change between polars versions), so a train/test assignment or a duplicate decision is the same on
every machine and release::

    >>> import polars as pl
    >>> s = pl.Series(["Hello,  World!", "hello world"])
    >>> keys = stable_hash64(normalise(s))
    >>> bool(keys[0] == keys[1])
    True
"""

from __future__ import annotations

import html
import html.entities
import re

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.ids import stable_hash64

_P = np.uint64(0x100000001B3)  # FNV-64 prime: odd, so multiplication is a bijection mod 2^64
_P_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))


def normalise(texts: pl.Series | pl.Expr) -> pl.Series | pl.Expr:
    """HTML character references decoded, NFKC, lower case, invisible characters dropped, every run of characters
    that are not letters, marks or digits becomes one space, trimmed.

    Marks (``\\p{M}``) are part of words: Devanagari, Thai and vowelled Arabic write vowels as combining marks,
    and dropping them made "मेरी" and "मारा" one key ("म र"). NFKC makes full-width "ｐｙｔｈｏｎ" and a decomposed
    "résumé" (e + U+0301) the keys of their plain forms; a zero-width space or joiner (``\\p{Cf}``), a soft hyphen, a
    variation selector or a combining grapheme joiner (Unicode's default-ignorable code points, which nothing
    displays) no longer splits a word or adds one. A character reference (``&#39;``, ``&#x27;``, ``&amp;``,
    ``&nbsp;``: text copied from a web page or an HTML export) is the character it stands for, so "What&#39;s
    ..." is the key of "What's ..." ("what 39 s" before: a short evaluation or test prompt written so was missed).

    >>> normalise(pl.Series(["मेरी", "मारा", "ｐｙｔｈｏｎ!", "re\u0301sume\u0301", "zero\u200bwidth"])).to_list()
    ['मेरी', 'मारा', 'python', 'résumé', 'zerowidth']
    >>> normalise(pl.Series(["What&#39;s new?", "I &hearts; cats\ufe0f", "R&amp;D", "a &b; c"])).to_list()
    ['what s new', 'i cats', 'r d', 'a b c']
    """
    if isinstance(texts, pl.Expr):
        return texts.map_batches(_normalised, return_dtype=pl.String, is_elementwise=True)
    return _normalised(texts)


def _normalised(texts: pl.Series) -> pl.Series:
    """``normalise`` on a column. Character references are decoded only in rows holding one (one regex scan);
    NFKC and the invisible characters touch only rows with a non-ASCII character (ASCII is NFKC-stable and holds
    no ``\\p{Cf}``): NFKC over every row made the key 2.2x slower on English prompts
    (bench/README.md, "After the language changes"); polars' when/then would run it on every row too."""
    coded = texts.str.contains(ENTITY).fill_null(False)
    if coded.any():
        at = coded.arg_true()
        texts = texts.clone().scatter(at, pl.Series([_ENTITY.sub(_unescape, t) for t in texts.gather(at)],
                                                     dtype=pl.String))
    wide = non_ascii(texts)
    if wide.any():
        folded = texts.filter(wide).str.normalize("NFKC").str.replace_all(INVISIBLE, "")
        texts = texts.clone().scatter(wide.arg_true(), folded)
    return texts.str.to_lowercase().str.replace_all(r"[^\p{L}\p{M}\p{N}]+", " ").str.strip_chars()


# An HTML character reference, with its semicolon (``&amp;``, ``&#39;``, ``&#x27;``, ``&nbsp;``); ``_unescape``
# decodes it (an unknown name stays as written).
ENTITY = r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"
_ENTITY = re.compile(ENTITY)
# What nothing displays: format characters (zero-width space and joiners, bidi marks) and the other
# default-ignorable code points (soft hyphen, variation selectors, combining grapheme joiner, Hangul fillers).
INVISIBLE = r"[\p{Cf}\p{Default_Ignorable_Code_Point}]+"


def _unescape(m: re.Match) -> str:
    """The character a reference stands for: a number as ``html.unescape`` reads it, a name only when HTML5 has it
    whole (``html.unescape`` reads the start of an unknown name that begins with a legacy one: "&copyright;" was
    "©right;", so the key lost "copyright")."""
    ref = m.group()
    return html.unescape(ref) if ref[1] == "#" else html.entities.html5.get(ref[1:], ref)


def non_ascii(texts: pl.Series) -> pl.Series:
    """True for each text holding a non-ASCII character (false for a null): the rows that need Unicode-aware
    handling, when the cheap ASCII path is right for the others.

    >>> non_ascii(pl.Series(["plain", "café", None])).to_list()
    [False, True, False]
    """
    return (texts.str.len_bytes() != texts.str.len_chars()).fill_null(False)


CJK = r"[\p{Han}\p{Hiragana}\p{Katakana}]"  # not Hangul: Korean separates its words with spaces


def cjk_words(texts: pl.Series | pl.Expr) -> pl.Series | pl.Expr:
    """Normalised texts with each Han, Hiragana and Katakana character as a word of its own (between
    single spaces): Chinese and Japanese write no spaces between words, so "请写一首关于猫的诗" was one word to
    decontamination's word counts and n-grams. One character as one word is the usual unit for CJK overlap
    (character n-grams); other text is unchanged. Not part of ``normalise``: prompt keys and splits keep theirs.

    >>> cjk_words(pl.Series(["用python写 快速排序", "hello world"])).to_list()
    ['用 python 写 快 速 排 序', 'hello world']
    """
    return texts.str.replace_all(CJK, " ${0} ").str.replace_all(" {2,}", " ").str.strip_chars(" ")


def word_counts(texts: pl.Series | pl.Expr) -> pl.Series | pl.Expr:
    """Words per normalised text as ``cjk_words`` splits it (a CJK character is one), in one regex pass.

    >>> word_counts(pl.Series(["谢谢", "用python写 排序", "thanks a lot"])).to_list()
    [2, 5, 3]
    """
    return texts.str.count_matches(rf"{CJK}|[^ {CJK[1:-1]}]+")


# A word of raw (not normalised) text: a CJK character, or a run of other characters but white space and CJK
# punctuation ("。", "，", "！", "「"); on text without CJK, the whitespace-separated tokens.
WORD = rf"{CJK}|[^\s{CJK[1:-1]}\u3000-\u303f\uff01-\uff0f\uff1a-\uff20]+"


def raw_word_counts(texts: pl.Series | pl.Expr) -> pl.Series | pl.Expr:
    """Words per raw text (``WORD``): whitespace tokens, a Han, Hiragana or Katakana character one word each.

    >>> raw_word_counts(pl.Series(["请写一首诗。", "Don't panic — it's fine.", "用Python写"])).to_list()
    [5, 5, 3]
    """
    return texts.str.count_matches(WORD)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the output (uint64 in, uint64 out)."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64, copy=True)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def is_ascii(column: pa.Array | pa.ChunkedArray) -> bool:
    """Whether every value of an Arrow ``string`` / ``large_string`` column is ASCII, by one scan of its data
    buffers (~10x faster than a per-value check). Other types, and bytes under a null, answer False (so a
    caller takes its general path)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    for chunk in chunks:
        if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
            return False
        if len(chunk) == 0 or chunk.buffers()[2] is None:
            continue
        width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
        offsets = np.frombuffer(chunk.buffers()[1], dtype=width)[chunk.offset : chunk.offset + len(chunk) + 1]
        data = np.frombuffer(chunk.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        if len(data) and data.max() >= 0x80:
            return False
    return True


def ngram_hashes(texts: pl.Series, n: int) -> pl.DataFrame:
    """Distinct word n-gram hashes per text: columns ``row`` (position in ``texts``) and ``h`` (uint64).

    ``texts`` should already be normalised (words separated by single spaces). A text with fewer than
    ``n`` words yields one n-gram made of all its words, so short texts still match each other exactly.
    Empty texts yield nothing.

    >>> ngram_hashes(pl.Series(["a b c", "a b c d"]), 3).group_by("row").len().sort("row")["len"].to_list()
    [1, 2]
    """
    words = (
        pl.DataFrame({"t": texts})
        .with_row_index("row")
        .select("row", pl.col("t").str.split(" ").alias("w"))
        .explode("w")
        .filter(pl.col("w").is_not_null() & (pl.col("w") != ""))
    )
    if words.height == 0:
        return pl.DataFrame({"row": [], "h": []}, schema={"row": pl.UInt32, "h": pl.UInt64})
    row = words["row"].to_numpy()
    wh = stable_hash64(words["w"])
    size = len(row)
    starts_of_row = np.r_[0, np.flatnonzero(np.diff(row)) + 1]
    ends_of_row = np.r_[starts_of_row[1:], size]
    lengths = ends_of_row - starts_of_row
    end = np.repeat(ends_of_row, lengths)  # exclusive end of each word's row
    first = np.zeros(size, dtype=bool)
    first[starts_of_row] = True
    idx = np.arange(size)
    # gram(i) = sum_k wh[i+k] * P^k over the words of i's row, from prefix sums H[j] = sum_{m<j} wh[m] * P^m:
    # gram(i) = (H[stop] - H[i]) * P^-i (mod 2^64; P is odd, so it has an inverse). O(words), not O(words * n).
    with np.errstate(over="ignore"):
        pw = np.cumprod(np.r_[np.uint64(1), np.full(size - 1, _P, dtype=np.uint64)], dtype=np.uint64)
        ipw = np.cumprod(np.r_[np.uint64(1), np.full(size - 1, _P_INV, dtype=np.uint64)], dtype=np.uint64)
        prefix = np.zeros(size + 1, dtype=np.uint64)
        prefix[1:] = np.cumsum(wh * pw, dtype=np.uint64)
        stop = np.minimum(idx + n, end)
        g = (prefix[stop] - prefix[idx]) * ipw
    full = idx + n <= end
    short = first & (np.repeat(lengths, lengths) < n)
    keep = full | short
    out = pl.DataFrame({"row": row[keep], "h": mix64(g[keep])})
    return out.unique(maintain_order=True)


def minhash(grams: pl.DataFrame, n_rows: int, num_perm: int, seed: int = 0) -> np.ndarray:
    """MinHash signatures (``n_rows`` x ``num_perm`` uint64) from ``ngram_hashes`` output.

    The signatures come from ``rensa`` (Rust, one pass over the flat n-gram hash buffer): on the 100k-prompt
    bench (``bench/minhash.py``) it was ~2.6x faster than our former numpy multiply-shift MinHash, with
    higher recall at the same threshold, and both beat ``datasketch``'s per-shingle Python by ~10x.
    Rows without any n-gram get all-max signatures (they never collide with a real text).
    """
    import rensa

    sig = np.full((n_rows, num_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
    if grams.height == 0:
        return sig
    g = grams.sort("row")
    counts = np.bincount(g["row"].to_numpy(), minlength=n_rows)
    offsets = np.r_[0, np.cumsum(counts)].astype(np.uint64)
    digests = rensa.RMinHash.digest_matrix_from_flat_token_hashes(g["h"].to_numpy(), offsets, num_perm, seed)
    filled = counts > 0
    sig[filled] = np.asarray(digests.to_rows(), dtype=np.uint64)[filled]
    return sig


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component label (the smallest member index) of each of ``n`` nodes given edges ``a[i]-b[i]``.

    scipy's linear-time search; the former numpy min-label propagation took a round per few links of a
    chain: 498 s for one shuffled 200k-node chain, 0.02 s here (``bench/components.py``)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as components

    if len(a) == 0:
        return np.arange(n)
    graph = coo_matrix((np.ones(len(a), dtype=bool), (a, b)), shape=(n, n))  # repeats: still one edge
    count, component = components(graph, directed=False)
    smallest = np.full(count, n)
    np.minimum.at(smallest, component, np.arange(n))
    return smallest[component]


def near_duplicate_groups(sig: np.ndarray, bands: int, threshold: float) -> np.ndarray:
    """Group rows whose estimated Jaccard similarity reaches ``threshold`` (LSH banding, then verified).

    Returns a group label per row (the smallest row index in its group); unique rows label themselves.
    """
    n, num_perm = sig.shape
    r = num_perm // bands
    if n < 2:
        return np.arange(n)
    empty = np.iinfo(np.uint64).max
    live = np.flatnonzero(sig[:, 0] != empty)
    # Candidate edges per bucket: each member to the bucket's first member and to its predecessor.
    # That is 2(m-1) edges for m members instead of m(m-1)/2, so a template shared by 100k prompts
    # cannot blow up memory; a genuine cluster is still connected through its verified edges. One
    # band at a time, in numpy: memory is a few arrays of n, not n x bands rows.
    found = []
    for band in range(bands):
        key = np.zeros(len(live), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for c in range(band * r, (band + 1) * r):
                key = mix64(key * _P + sig[live, c])
        order = np.lexsort((live, key))
        k, row = key[order], live[order]
        member = np.r_[False, k[1:] == k[:-1]]  # not the first of its bucket
        if not member.any():
            continue
        first = row[np.maximum.accumulate(np.where(member, 0, np.arange(len(k))))]
        at = np.flatnonzero(member)
        found += [first[at] * n + row[at], row[at - 1] * n + row[at]]
    if not found:
        return np.arange(n)
    cand = np.unique(np.concatenate(found).astype(np.int64))
    a, b = cand // n, cand % n
    # Verified in chunks: a crowded bucket can yield millions of candidates, and gathering both
    # signatures of all of them at once would take candidates x num_perm x 16 bytes.
    step = max(1, (32 << 20) // (16 * num_perm))
    similar = np.concatenate([(sig[a[i:i + step]] == sig[b[i:i + step]]).mean(axis=1) >= threshold
                              for i in range(0, len(a), step)])
    return connected_components(n, a[similar], b[similar])
