"""Personal data in structured values: JSON documents (``lineage``) and chat message lists.

Both reuse ``pipeline.pii.redact`` on one flat column of strings, so the detectors, their order and the
counts are the same as for plain text columns.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.ids import HEX_ID
from pipeline.pii import PHONE_REGIONS, find, redact

# Our ids (``pipeline.ids.hex_id``: 16 hex digits; DOVE's items join two) under an id key of a lineage document.
# They are hashes, not personal data, but about one in 17,000 is 16 decimal digits passing a card checksum or
# starts with a valid phone number: redacted, the lineage lost its link to the rows it came from.
OWN_ID = re.compile(f"{HEX_ID}(?::{HEX_ID})*")


def is_id_key(key: str) -> bool:
    return key == "fingerprint" or key.endswith(("_id", "_item"))


def _redact_value(value, texts: list[str], id_key: bool = False):
    """``value`` with every string leaf replaced by a placeholder index into ``texts`` (collected); a leaf under
    an id key that is one of our ids is kept as it is."""
    if isinstance(value, str):
        if id_key and OWN_ID.fullmatch(value):
            return value
        texts.append(value)
        return _Leaf(len(texts) - 1)
    if isinstance(value, list):
        return [_redact_value(v, texts, id_key) for v in value]
    if isinstance(value, dict):
        return {k: _redact_value(v, texts, is_id_key(k)) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class _Leaf:
    i: int


def _fill(value, texts: list[str]):
    if isinstance(value, _Leaf):
        return texts[value.i]
    if isinstance(value, list):
        return [_fill(v, texts) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, texts) for k, v in value.items()}
    return value


def redact_json(docs: pl.Series, kinds: list[str], phone_regions: tuple[str, ...] = PHONE_REGIONS
                ) -> tuple[pl.Series, dict[str, int]]:
    """JSON documents (e.g. lineage) with every string value redacted; keys and structure are kept.

    A pattern run over the raw JSON text would miss what JSON escapes hide (``m\\u00fcller@...``) and
    could cut an escape in half, so a document is decoded, its strings redacted as one column and
    re-encoded (``ensure_ascii=False``) whenever it holds an escape or a candidate; the others stay
    byte for byte. A document that is not JSON is redacted as text."""
    out, counts, _ = _redact_json(docs, kinds, phone_regions)
    return out, counts


def find_json(docs: pl.Series, kinds: list[str], phone_regions: tuple[str, ...] = PHONE_REGIONS) -> pl.Series:
    """Per JSON document, whether any string value holds an enabled kind (what ``redact_json`` would replace)."""
    return _redact_json(docs, kinds, phone_regions)[2]


def _redact_json(docs: pl.Series, kinds: list[str], phone_regions: tuple[str, ...]
                 ) -> tuple[pl.Series, dict[str, int], pl.Series]:
    s = docs.cast(pl.String)
    changed = pl.Series([False] * s.len(), dtype=pl.Boolean)
    found, _ = find(s, kinds, phone_regions)
    todo = (found | s.str.contains("\\", literal=True)).fill_null(False)
    if not todo.any():
        return s, dict.fromkeys(kinds, 0), changed
    idx = np.flatnonzero(todo.to_numpy())
    texts: list[str] = []
    trees, owner = [], []
    for i, doc in zip(idx, s.gather(idx).to_list(), strict=True):
        start = len(texts)
        try:
            trees.append(_redact_value(json.loads(doc), texts))
        except ValueError:
            trees.append(_Leaf(len(texts)))
            texts.append(doc)
        owner += [i] * (len(texts) - start)
    before = pl.Series(texts, dtype=pl.String)
    red, counts = redact(before, kinds, phone_regions)
    hit = np.unique(np.asarray(owner, dtype=np.int64)[(red != before).fill_null(False).to_numpy()])
    red = red.to_list()
    # re-encoded where a value was redacted or an escape may hide one; a candidate that was only one of our ids
    # (or a match across two values) leaves its document byte for byte
    keep = set(idx[~s.gather(idx).str.contains("\\", literal=True).to_numpy()]) - set(hit.tolist())
    out = [doc if i in keep else red[t.i] if isinstance(t, _Leaf) else json.dumps(_fill(t, red), ensure_ascii=False)
           for i, doc, t in zip(idx, s.gather(idx).to_list(), trees, strict=True)]
    changed = changed.scatter(pl.Series(hit, dtype=pl.Int64), True) if len(hit) else changed
    return s.scatter(pl.Series(idx), pl.Series(out, dtype=pl.String)), counts, changed


# Lineage keys whose value names a model (``stages/export_card.py`` lists the card's models from them): a Hub id, a
# built-in name, or a local folder, possibly after a ``method:`` prefix (Curry-DPO's ``scorer``).
MODEL_KEYS = ("model", "generator", "policy", "reference", "judge", "expert", "detector")
# ``written_by``: an input dataset's writers (``records.written_by``), which a source may name by a local folder too.
_MODEL_VALUE_KEYS = (*MODEL_KEYS, "models", "scorer", "similarity", "written_by")
_LOCAL_PATH = re.compile(r"(?P<prefix>[\w.-]+:(?!//))?(?P<path>(?:/|~|\.{1,2}[\\/]|[A-Za-z]:[\\/]|\\\\)\S*)")


def model_label(name):
    """``name`` as a release may show it: a local folder by its last component only (``local:sft-v3`` for
    ``/home/alice/ckpt/sft-v3``), since its parents name the machine's user and layout; a Hub id or a
    built-in name (``tiny``, ``Qwen/Qwen2.5-7B-Instruct``), or anything not a string, unchanged.

    >>> model_label("/home/alice/ckpt/sft-v3/"), model_label("pugc:~/rm"), model_label("org/m")
    ('local:sft-v3', 'pugc:local:rm', 'org/m')
    """
    m = _LOCAL_PATH.fullmatch(name) if isinstance(name, str) else None
    if m is None:
        return name
    last = [p for p in re.split(r"[\\/]+", m["path"]) if p not in ("", ".", "..", "~")]
    return f"{m['prefix'] or ''}local:{last[-1] if last else 'folder'}"


_PATH_IN_TEXT = re.compile(r"(?<![\w:/.~\\])(?:/|~/|[A-Za-z]:\\)[^\s'\",;:()\[\]]*")


def without_local_paths(text: str) -> str:
    """``text`` (an error message bound for a release) with every absolute local path cut to its last
    component: the parents name the user and the machine's layout. URLs and Hub ids are left as they are.

    >>> without_local_paths("/home/alice/evals/mt.jsonl: no such file; hf://org/set and https://x/y stay")
    'mt.jsonl: no such file; hf://org/set and https://x/y stay'
    """
    return _PATH_IN_TEXT.sub(lambda m: re.split(r"[\\/]+", m[0].rstrip("/\\"))[-1] or m[0], text)


def _label_models(value, model_key: bool = False):
    if isinstance(value, dict):
        return {k: _label_models(v, model_key or k in _MODEL_VALUE_KEYS) for k, v in value.items()}
    if isinstance(value, list):
        return [_label_models(v, model_key) for v in value]
    return model_label(value) if model_key else value


def local_model_paths(docs: pl.Series) -> pl.Series:
    """JSON documents (lineage) with every model named by a local folder shown as ``model_label`` shows it;
    a document naming none (nearly all: they hold no path separator after a model key) stays byte for byte."""
    s = docs.cast(pl.String)
    todo = s.str.contains(r'"(?:' + "|".join(_MODEL_VALUE_KEYS) + r')"\s*:\s*[\[{]?[^\]}]*"(?:[\w.-]+:)?(?:/|~|\.\.?[\\/]|[A-Za-z]:[\\/]|\\\\)').fill_null(False)
    if not todo.any():
        return s
    idx = np.flatnonzero(todo.to_numpy())
    out = []
    for doc in s.gather(idx).to_list():
        try:
            tree = json.loads(doc)
        except ValueError:
            out.append(doc)
            continue
        labelled = _label_models(tree)
        out.append(doc if labelled == tree else json.dumps(labelled, ensure_ascii=False))
    return s.scatter(pl.Series(idx), pl.Series(out, dtype=pl.String))


def redact_messages(df: pl.DataFrame, columns: list[str], kinds: list[str],
                    regions: tuple[str, ...] = PHONE_REGIONS) -> tuple[pl.DataFrame, dict[str, int]]:
    """Redact the ``content`` of every message in the message-list ``columns`` in one vectorised pass."""
    if df.height == 0 or not kinds:
        return df, dict.fromkeys(kinds, 0)
    lists = [df[c].rechunk().to_arrow() for c in columns]
    flats = [arr.flatten() for arr in lists]
    contents = pl.Series(pa.chunked_array([f.field("content") for f in flats], type=pa.large_string()))
    redacted_, counts = redact(contents, kinds, regions)
    redacted_ = redacted_.to_arrow()
    start, out = 0, {}
    for c, arr, flat in zip(columns, lists, flats, strict=True):
        n = len(flat)
        content = redacted_.slice(start, n)
        content = content.combine_chunks() if isinstance(content, pa.ChunkedArray) else content
        start += n
        offsets = pc.subtract(arr.offsets, arr.offsets[0])
        values = pa.StructArray.from_arrays([flat.field("role"), content], names=["role", "content"])
        out[c] = pl.Series(c, pa.LargeListArray.from_arrays(offsets, values))
    return df.with_columns(**out), counts
