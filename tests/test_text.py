"""Text keys: stable hashes, word n-grams against a direct computation, MinHash/LSH near-duplicates."""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pyarrow as pa
from xxhash import xxh3_64_intdigest

from pipeline.ids import stable_hash64
from pipeline.text import (
    _ENTITY,
    _P,
    INVISIBLE,
    _unescape,
    connected_components,
    is_ascii,
    minhash,
    mix64,
    near_duplicate_groups,
    ngram_hashes,
    normalise,
)


def test_stable_hash_is_xxh3_of_utf8_and_null_is_empty():
    h = stable_hash64(pl.Series(["héllo", None, "", "héllo"]))
    assert h[0] == xxh3_64_intdigest("héllo".encode()) == h[3]  # fixed across runs, machines, versions
    assert h[1] == h[2] == xxh3_64_intdigest(b"")


def test_normalise_folds_case_punctuation_and_spacing():
    assert normalise(pl.Series(["  Hello,   WORLD!! (ok) "])).to_list() == ["hello world ok"]


def test_normalise_decodes_only_whole_html_references():
    """An unknown name that starts like a legacy one stays as written: html.unescape read "&copyright;" as "©right;"."""
    texts = pl.Series(["&copyright; 2024", "&notit; here", "&amp; &not; &notin; &#39;x&#x27;", "&ampfoo;"])
    assert normalise(texts).to_list() == ["copyright 2024", "notit here", "x", "ampfoo"]


def _normalise_everywhere(texts):
    """``normalise`` as one chain over every row (references and NFKC on every row too): what the row-wise fast
    paths must equal."""
    texts = texts.map_elements(lambda t: _ENTITY.sub(_unescape, t), return_dtype=pl.String)
    return (texts.str.normalize("NFKC").str.to_lowercase().str.replace_all(INVISIBLE, "")
            .str.replace_all(r"[^\p{L}\p{M}\p{N}]+", " ").str.strip_chars())


def test_normalise_folds_only_non_ascii_rows_with_the_same_keys():
    rng = random.Random(7)
    alphabet = ("aZ09 ,.!?\t\n-_'" + "\u00adé\u0301\u200b\u200d\ufeff\ufe0f\u034fＡｂ１！ﬁ①²" + "ΣσςİIı" + "मेरीक्षि" + "用写。，")
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(20_000)]
    texts += ["Hello, World!", "ΟΔΥΣΣΕΥΣ ΣΑΣ", "İstanbul", "x\u200bΣ", "What&#39;s &nbsp;new", "&amp;&copyright;", "", None]
    rng.shuffle(texts)
    s = pl.Series(texts, dtype=pl.String)
    want = _normalise_everywhere(s)
    assert normalise(s).equals(want)
    assert pl.DataFrame({"t": s}).select(normalise(pl.col("t")))[:, 0].equals(want)  # the expression form
    chunked = pl.concat([s[:7_000], s[7_000:]], rechunk=False)
    assert normalise(chunked).equals(want)
    assert normalise(pl.Series(["plain ascii", None])).to_list() == ["plain ascii", None]


def test_ngram_hashes_match_a_direct_computation():
    rng = random.Random(1)
    texts = [" ".join(rng.choice("ab cd ef gh ij".split()) for _ in range(rng.randint(0, 20))) for _ in range(200)]
    n = 4
    expected = set()
    for r, t in enumerate(texts):
        words = t.split()
        if not words:
            continue
        wh = stable_hash64(pl.Series(words))
        for i in range(len(words) - n + 1) if len(words) >= n else [0]:
            g = np.uint64(0)
            with np.errstate(over="ignore"):
                for k in range(min(n, len(words) - i)):
                    g = g + wh[i + k] * (_P ** np.uint64(k))
            expected.add((r, int(mix64(np.array([g]))[0])))
    assert set(ngram_hashes(pl.Series(texts), n).rows()) == expected


def test_near_duplicates_are_grouped_and_distinct_texts_are_not():
    base = " ".join(f"w{i}" for i in range(80))
    texts = pl.Series([base, base.replace("w40", "changed"), " ".join(f"v{i}" for i in range(80)), "short one"])
    sig = minhash(ngram_hashes(texts, 5), 4, 128)
    labels = near_duplicate_groups(sig, 32, 0.8)
    assert labels.tolist() == [0, 0, 2, 3]
    assert (sig[0] == sig[1]).mean() > 0.8 and (sig[0] == sig[2]).mean() < 0.1


def test_near_duplicate_groups_chain_through_a_middle_text():
    # A ~ B and B ~ C at 0.85, A ~ C at 0.70: one group (single linkage), labelled by its first row, so a
    # caller that keeps each group's first (PUGC's pre-filter, params.yaml near_duplicate_threshold) drops C
    # although its estimated Jaccard to the kept A is under the threshold.
    a = np.arange(100, dtype=np.uint64)
    b, c = a.copy(), a.copy()
    b[:15] += 1000
    c[:15] += 1000
    c[15:30] += 2000
    assert near_duplicate_groups(np.stack([a, b, c]), 20, 0.8).tolist() == [0, 0, 0]


def test_connected_components_follow_chains():
    labels = connected_components(6, np.array([4, 1, 2]), np.array([5, 2, 3]))
    assert labels.tolist() == [0, 1, 1, 1, 4, 4]


def test_connected_components_of_a_long_shuffled_chain_and_repeated_edges():
    # One chain of near-duplicates linked in random index order (bench/components.py times it); an edge
    # repeated 300 times is still one edge.
    order = np.random.default_rng(0).permutation(50_000)
    a, b = np.r_[order[:-1], np.full(300, 7)], np.r_[order[1:], np.full(300, 9)]
    assert connected_components(50_002, a, b).tolist() == [0] * 50_000 + [50_000, 50_001]


def test_is_ascii_reads_only_the_values_bytes():
    assert is_ascii(pa.chunked_array([["plain", "", None], ["text"]]))
    assert is_ascii(pa.array(["a", "b"], pa.large_string())) and is_ascii(pa.chunked_array([], pa.string()))
    assert not is_ascii(pa.chunked_array([["plain"], ["café"]]))
    assert not is_ascii(pa.array(["ok", "naïve"]))
    tail = pa.array(["naïve", "ok", "fine"]).slice(1)  # the slice's values are ASCII, its buffer is not
    assert is_ascii(tail) and not is_ascii(pa.array(["ok", "fine", "naïve"]).slice(1))
    assert not is_ascii(pa.array([b"ab"], pa.binary()))  # not a string column: the caller's general path
