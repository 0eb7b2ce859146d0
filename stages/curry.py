"""Curry-DPO: several preference pairs per prompt from ranked responses, ordered easy to hard.

Paper: Pattnaik et al., 2024, "Curry-DPO: Enhancing Alignment using Curriculum Learning & Ranked
Preferences" (arXiv 2403.07230). METHODS.md section 4; docs/curry.md. The steps, each a pure
function over polars frames / Arrow tables:

1. ``scored_responses``  keep responses with a finite score and non-blank text (drops counted by reason).
2. ``rank_responses``    R1 > R2 > ... > Rn per prompt by score; ties broken by ``response_id`` so the
                         order is the same on every run.
3. ``make_pairs``        (R1, Rk) for k = 2..n (``pairing: best_vs_rest``, the paper) or every (Ri, Rj),
                         i < j (``pairing: all``, ours); a pair whose score gap is <= ``min_gap`` is a tie
                         and is dropped, never paired.
4. ``assign_levels``     difficulty = gap (larger = easier); ``level`` 0 = easiest, by the rank of the gap
                         within the prompt (``levels: per_prompt``, the paper) or by global quantile bins of
                         the gap (``levels: quantile``, ours).
5. ``order_pairs``       by level, then a seeded shuffle within the level.
6. ``to_pairs_table``    the pairs contract: texts, messages and ids taken from the input tables.

``main`` writes ``data/curry/pairs/level=<k>/`` (one shard set per level, order kept) plus
``data/curry/pairs/_levels.json`` listing every level's files in curriculum order
(``curriculum_files``), so a trainer can read the whole curriculum in order or run one DPO stage per
level folder. The index is deliberately not a ``_manifest.json``: readers that walk the level folders
(stages/export.py) must not also read the files a second time through a top-level manifest.

Example, one prompt with four rated responses (scores 9, 7, 4, 1), paper settings::

    (R1, R4) gap 8 -> level 0 (easy)
    (R1, R3) gap 5 -> level 1 (medium)
    (R1, R2) gap 2 -> level 2 (hard)

Scores: any responses table with ``score`` set works (ingest's rated sources, PUGC, Selfie). Scores
are compared only within one group = (input set, prompt_id, scorer), so two scorers' scales never mix.
Higher is better. OpenAssistant ranks (0 = best among siblings) arrive from the ingest adapter as
``1 - position / (n - 1)`` over the n ranked siblings (best 1.0, worst 0.0; pipeline/adapters.py),
Stack Exchange answers as their vote Score; see docs/curry.md. The whole table is processed at once
(grouping and quantiles need every row, so there is no ``map_batches`` here), vectorised; no Python
loop per prompt or per pair.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import Curry, Execution, Params, fingerprint
from pipeline.io import package_version, read_table, replace_dir, write_json_atomic, write_shards
from pipeline.outputs import begin_outputs, commit_outputs
from pipeline.records import SCHEMAS, check_table

log = logging.getLogger(__name__)

STAGE = "curry"
OUT = Path("data/curry")
LEVELS_INDEX = "_levels.json"


# --- hashing, vectorised ---------------------------------------------------------------------------
# Keys and ids come from polars' hash (Rust; ``hashlib`` per row would take ~4 s for 4M responses).
# It is deterministic for a given polars version on every run and machine; a polars upgrade may
# change pair ids and the shuffle within a level (never which pairs, their levels or counts).
# Group and prompt keys are checked for 64-bit collisions against the strings they stand for.

_MUL = np.uint64(0x9E3779B97F4A7C15)
_HEX16 = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype="<u2")


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: every input bit affects every output bit."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def combine(h: np.ndarray, x: np.ndarray | int) -> np.ndarray:
    """Order-sensitive combination of 64-bit hashes: ``combine(a, b) != combine(b, a)``.

    >>> a, b = np.array([1], np.uint64), np.array([2], np.uint64)
    >>> bool(combine(a, b)[0] != combine(b, a)[0])
    True
    """
    x = np.uint64(x) if np.isscalar(x) else np.asarray(x).astype(np.uint64)
    with np.errstate(over="ignore"):
        return _mix((np.asarray(h).astype(np.uint64) * _MUL) ^ x)


def hex_ids(h: np.ndarray) -> pa.Array:
    """16-character lowercase hex strings, like ``records.stable_id``.

    >>> hex_ids(np.array([255], np.uint64)).to_pylist()
    ['00000000000000ff']
    """
    n = len(h)
    digits = _HEX16[np.ascontiguousarray(h, dtype=">u8").view(np.uint8)]
    offsets = np.arange(0, 16 * n + 1, 16, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(digits.tobytes())])


def _hash(*cols: str, seed: int) -> pl.Expr:
    return pl.struct(*cols).hash(seed) if len(cols) > 1 else pl.col(cols[0]).hash(seed)


# --- steps -----------------------------------------------------------------------------------------
# The steps pass slim frames (keys, scores, ranks, row numbers); texts, ids and messages are gathered
# once, at the end, in ``to_pairs_table``.


def load_inputs(inputs: Sequence[dict[str, str]]) -> tuple[pa.Table, pa.Table]:
    """Read each input set's prompts and responses (contract tables) with ``input`` = the set's position."""
    prompts, responses = [], []
    for i, spec in enumerate(inputs):
        p = read_table(spec["prompts"], "prompts").select(["prompt_id", "messages", "source"])
        r = read_table(spec["responses"], "responses")
        prompts.append(p.append_column("input", pa.array(np.full(p.num_rows, i, np.int32))))
        responses.append(r.append_column("input", pa.array(np.full(r.num_rows, i, np.int32))))
    return pa.concat_tables(prompts), pa.concat_tables(responses)


def index_prompts(prompts: pa.Table) -> pl.DataFrame:
    """One row per (input, prompt_id) (the first; ``prow`` = its row in ``prompts``) with ``pkey``,
    the hash responses look it up by."""
    df = pl.from_arrow(prompts.select(["input", "prompt_id"])).with_columns(prow=pl.int_range(pl.len(), dtype=pl.Int64))
    return df.unique(["input", "prompt_id"], keep="first", maintain_order=True).with_columns(
        pkey=_hash("input", "prompt_id", seed=1))


def scored_responses(responses: pa.Table) -> tuple[pl.DataFrame, dict[str, int]]:
    """Responses that can be ranked, and how many were dropped per reason.

    Reasons: ``missing_score`` (null or NaN: unrated, skipped), ``nonfinite_score`` (+-inf),
    ``blank_text``, ``duplicate`` (a repeated (input, prompt_id, scorer, response_id); the first is
    kept). A group = (input, prompt_id, scorer): the responses ranked together, so two scorers'
    scales never mix. Returns a frame without texts; ``row`` = the response's row in ``responses``.
    """
    text = responses.column("text")
    # Empty, or whitespace only (utf8_is_space is false on ""); no trimmed copy of every text.
    blank = pc.or_(pc.equal(pc.binary_length(text), 0), pc.utf8_is_space(text))
    df = pl.from_arrow(responses.select(["input", "prompt_id", "scorer", "response_id", "score"])).with_columns(
        pl.col("scorer").fill_null(""), pl.col("score").cast(pl.Float64), row=pl.int_range(pl.len(), dtype=pl.Int64),
        _blank=pl.from_arrow(blank))
    df = df.with_columns(group=_hash("input", "prompt_id", "scorer", seed=2), rh=_hash("response_id", seed=3),
                         check=_hash("input", "prompt_id", "scorer", seed=5))
    first = pl.Series(combine(df.get_column("group").to_numpy(), df.get_column("rh").to_numpy())).is_first_distinct()
    reason = (
        pl.when(pl.col("score").is_null() | pl.col("score").is_nan()).then(pl.lit("missing_score"))
        .when(pl.col("score").is_infinite()).then(pl.lit("nonfinite_score"))
        .when(pl.col("_blank")).then(pl.lit("blank_text"))
        .when(~pl.lit(first)).then(pl.lit("duplicate"))
    )
    df = df.with_columns(_drop=reason)
    drops = dict(df.filter(pl.col("_drop").is_not_null()).group_by("_drop").len().iter_rows())
    kept = df.filter(pl.col("_drop").is_null()).select(
        "input", "prompt_id", "scorer", "response_id", "score", "group", "check", "rh", "row")
    return kept, {k: int(v) for k, v in sorted(drops.items())}


def _starts(col: str) -> pl.Expr:
    return (pl.col(col) != pl.col(col).shift(1)).fill_null(True)


def _ends(col: str) -> pl.Expr:
    return (pl.col(col) != pl.col(col).shift(-1)).fill_null(True)


def rank_responses(scored: pl.DataFrame) -> pl.DataFrame:
    """``rank`` 1..n within each group, best first; equal scores ordered by ``response_id``; ``n`` = group size.

    Returns a slim frame (``ridx`` = row in ``scored``) sorted by (group, rank), which the later steps
    rely on: ranks and sizes are read off group boundaries instead of per-group windows.
    """
    df = scored.select("group", "score", "response_id", ridx=pl.int_range(pl.len(), dtype=pl.Int64))
    df = df.sort(["group", "score", "response_id"], descending=[False, True, False]).drop("response_id")
    idx = pl.int_range(pl.len(), dtype=pl.Int64)
    start = pl.when(_starts("group")).then(idx).forward_fill()
    end = pl.when(_ends("group")).then(idx).backward_fill()
    df = df.with_columns(rank=(idx - start + 1).cast(pl.Int32), n=(end - start + 1).cast(pl.Int32))
    # A 64-bit collision would merge two groups: a second, independently seeded hash of the same key
    # must then differ between neighbours of one group (both colliding: ~2^-128 per pair of groups).
    check = scored.get_column("check").gather(df.get_column("ridx"))
    clash = (~df.select(_starts("group")).to_series()) & (check != check.shift(1))
    if clash.any():
        raise RuntimeError("curry: two (prompt_id, scorer) groups hash alike; change the seeds in stages/curry.py")
    return df


def attach_prompts(ranked: pl.DataFrame, scored: pl.DataFrame, prompts: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """``pidx`` = the row of each response's prompt in ``prompts``; responses without one are orphans (dropped, counted)."""
    heads = ranked.filter(pl.col("rank") == 1).select("group", "ridx")
    heads = heads.with_columns(scored.select("input", "prompt_id")[heads.get_column("ridx")])
    heads = heads.with_columns(pkey=_hash("input", "prompt_id", seed=1))
    index = prompts.select("pkey", pidx=pl.int_range(pl.len(), dtype=pl.Int64), _pid="prompt_id", _in="input")
    heads = heads.join(index, on="pkey", how="left")
    found = heads["pidx"].is_not_null()
    if (found & ((heads["_pid"] != heads["prompt_id"]) | (heads["_in"] != heads["input"]))).any():
        raise RuntimeError("curry: two prompt ids hash alike; change the seeds in stages/curry.py")
    df = ranked.join(heads.select("group", "pidx"), on="group", how="left", maintain_order="left")
    kept = df.filter(pl.col("pidx").is_not_null())
    return kept, df.height - kept.height


SIDE = ["ridx", "score", "rank"]


def make_pairs(ranked: pl.DataFrame, pairing: str, min_gap: float) -> tuple[pl.DataFrame, int]:
    """Candidate (chosen, rejected) pairs and their gaps; returns (pairs kept, pairs dropped as ties).

    ``best_vs_rest``: (R1, Rk), k = 2..n. ``all``: every (Ri, Rj) with i < j. ``chosen`` (``*_c``)
    always has the better rank, so the gap is >= 0; gap <= ``min_gap`` is a tie. Output is sorted by
    (group, gap), which ``assign_levels`` relies on.
    """
    if pairing == "best_vs_rest":
        # ``ranked`` is sorted by (group, rank): R1 heads each group, so a forward fill carries it down.
        best = [pl.when(pl.col("rank") == 1).then(pl.col(c)).forward_fill().alias(f"{c}_c") for c in SIDE]
        cand = ranked.with_columns(best).filter(pl.col("rank") > 1).rename({c: f"{c}_r" for c in SIDE})
    elif pairing == "all":
        left = ranked.select("group", "pidx", *SIDE).rename({c: f"{c}_c" for c in SIDE})
        right = ranked.select("group", *SIDE).rename({c: f"{c}_r" for c in SIDE})
        cand = left.join(right, on="group").filter(pl.col("rank_c") < pl.col("rank_r"))
    else:
        raise ValueError(f"curry.pairing: unknown value {pairing!r}; expected 'best_vs_rest' or 'all'")
    cand = cand.with_columns(gap=pl.col("score_c") - pl.col("score_r"))
    kept = cand.filter(pl.col("gap") > min_gap)
    # best_vs_rest is already in (group, rank_r) order, i.e. (group, gap) order: scores fall as ranks grow.
    kept = kept.sort(["group", "gap", "rank_c", "rank_r"]) if pairing == "all" else kept
    return kept.select("group", "pidx", *[f"{c}_{s}" for s in "cr" for c in SIDE], "gap"), cand.height - kept.height


def assign_levels(pairs: pl.DataFrame, scheme: str, n_levels: int) -> pl.DataFrame:
    """``level`` 0 = easiest (largest gap) .. ``n_levels - 1`` = hardest.

    ``per_prompt`` (paper): r = dense rank of the gap within the prompt (0 = largest), m = distinct
    gaps in the prompt; level = r * n_levels // max(m, n_levels). With 4 responses and 3 levels that
    is (R1,R4) 0, (R1,R3) 1, (R1,R2) 2, as in the paper; a prompt with more distinct gaps than
    levels is spread evenly over them, one with fewer keeps r (equal gaps share a level).

    ``quantile`` (ours): r = rank of the gap across the whole dataset (0 = largest, ties take the
    lowest rank), N = pairs; level = r * n_levels // N, i.e. quantile bins of equal size where ties
    allow (equal gaps always share a level, so a level can be empty when many gaps are equal).
    """
    if scheme == "per_prompt":
        # ``pairs`` is sorted by (group, gap): dense ranks are counts of gap changes since the group start.
        new = _starts("group") | (pl.col("gap") != pl.col("gap").shift(1)).fill_null(True)
        pairs = pairs.with_columns(_c=new.cum_sum().cast(pl.Int64))
        pairs = pairs.with_columns(_asc=pl.col("_c") - pl.when(_starts("group")).then(pl.col("_c")).forward_fill())
        m = pl.when(_ends("group")).then(pl.col("_asc")).backward_fill() + 1
        level = (m - 1 - pl.col("_asc")) * n_levels // pl.max_horizontal(m, pl.lit(n_levels, pl.Int64))
        return pairs.with_columns(level=level.cast(pl.Int64)).drop("_c", "_asc")
    if scheme == "quantile":
        r = (pl.col("gap").rank("min", descending=True) - 1).cast(pl.Int64)
        return pairs.with_columns(level=(r * n_levels // pl.len()).cast(pl.Int64))
    raise ValueError(f"curry.levels: unknown value {scheme!r}; expected 'per_prompt' or 'quantile'")


def pair_ids(pairs: pl.DataFrame, scored: pl.DataFrame) -> pl.DataFrame:
    """``_h`` = hash of ((prompt_id, scorer), chosen response_id, rejected response_id): the pair's id.

    The input set's position is left out, so a pair keeps its id whichever input list holds it.
    """
    key = scored.select(_hash("prompt_id", "scorer", seed=4)).to_series().to_numpy()
    rh = scored.get_column("rh").to_numpy()
    c, r = pairs.get_column("ridx_c").to_numpy(), pairs.get_column("ridx_r").to_numpy()
    return pairs.with_columns(_h=pl.Series(combine(combine(key[c], rh[c]), rh[r])))


def order_pairs(pairs: pl.DataFrame, seed: int) -> pl.DataFrame:
    """By level, then a seeded shuffle within the level (a hash of seed and pair id: independent of input order)."""
    shuffle = combine(pairs.get_column("_h").to_numpy(), seed & (2**64 - 1))
    # One sort key: level in the top 8 bits, the shuffle hash below (one-key sorts are ~5x faster).
    level = pairs.get_column("level").to_numpy().astype(np.uint64)
    if len(level) and level.max() >= 256:
        raise ValueError("curry.n_levels: at most 256 levels")
    key = (level << np.uint64(56)) | (shuffle >> np.uint64(8))
    return pairs[np.argsort(key, kind="stable")]


def _needs_escaping(*cols: pa.Array) -> bool:
    """Whether any string holds a byte JSON must escape (quote, backslash, control), by a scan of the
    arrays' data buffers (a regex per value is ~20x slower)."""
    for col in cols:
        width = np.int64 if pa.types.is_large_string(col.type) else np.int32
        offsets = np.frombuffer(col.buffers()[1], dtype=width)[col.offset : col.offset + len(col) + 1]
        if len(col) == 0 or col.buffers()[2] is None:
            continue
        data = np.frombuffer(col.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        if ((data < 0x20) | (data == ord('"')) | (data == ord("\\"))).any():
            return True
    return False


def _repeat(value: str, n: int) -> pa.Array:
    """A string array holding ``value`` n times, built from buffers (no Python list)."""
    data = value.encode()
    offsets = np.arange(0, len(data) * n + 1, len(data), dtype=np.int64)
    return pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data * n)]).cast(pa.string())


def _lineage(cols: dict[str, pa.Array], fp: str, escape: bool) -> pa.Array:
    """``{"stage":"curry","prompt_id":"..","scorer":"..","chosen_id":"..","rejected_id":"..","fingerprint":".."}``.

    Joined with Arrow string kernels; ``json.dumps`` per row only when an id needs escaping.
    """
    names = ["prompt_id", "scorer", "chosen_id", "rejected_id"]
    if escape:
        rows = zip(*(cols[k].to_pylist() for k in names), strict=True)
        return pa.array([json.dumps({"stage": STAGE, **dict(zip(names, r, strict=True)), "fingerprint": fp},
                                    separators=(",", ":"), ensure_ascii=False) for r in rows], pa.string())
    parts: list[Any] = [f'{{"stage":{json.dumps(STAGE)}']
    for k in names:
        parts += [f',"{k}":"', cols[k], '"']
    parts.append(f',"fingerprint":{json.dumps(fp)}}}')
    return pc.binary_join_element_wise(*parts, "")


def _single_turn(role: pa.Array, content: pa.Array) -> pa.Array:
    """``[{role, content}]`` per row as a list<struct> array, from the two string arrays (no copy)."""
    struct = pa.StructArray.from_arrays([role, content], fields=list(SCHEMAS["pairs"].field("chosen").type.value_type))
    return pa.ListArray.from_arrays(pa.array(np.arange(len(content) + 1, dtype=np.int32)), struct)


def to_pairs_table(pairs: pl.DataFrame, scored: pl.DataFrame, prompts_idx: pl.DataFrame,
                   prompts: pa.Table, responses: pa.Table, fp: str) -> pa.Table:
    """The ``pairs`` contract, in the order of ``pairs``: texts, ids, messages and source taken from
    the input tables by row number (Arrow ``take``: one contiguous copy, no per-row Python)."""
    rows = scored.get_column("row").to_numpy()
    rc = pa.array(rows[pairs.get_column("ridx_c").to_numpy()])
    rr = pa.array(rows[pairs.get_column("ridx_r").to_numpy()])
    pr = pa.array(prompts_idx.get_column("prow").to_numpy()[pairs.get_column("pidx").to_numpy()])
    n = pairs.height

    whole: dict[tuple[int, str], pa.Array] = {}

    def take(table: pa.Table, col: str, idx: pa.Array) -> pa.Array:
        # One chunk first (once per column): Arrow's take across many chunks is several times slower.
        key = (id(table), col)
        if key not in whole:
            column = table.column(col)
            whole[key] = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        return whole[key].take(idx)

    num = pairs.select("score_c", "score_r", "gap", "level").to_arrow()
    ids = {"prompt_id": take(responses, "prompt_id", rc), "scorer": pc.fill_null(take(responses, "scorer", rc), ""),
           "chosen_id": take(responses, "response_id", rc), "rejected_id": take(responses, "response_id", rr)}
    escape = _needs_escaping(ids["prompt_id"], ids["scorer"], ids["chosen_id"], ids["rejected_id"])
    assistant = _repeat("assistant", n)
    columns = {
        "pair_id": hex_ids(pairs.get_column("_h").to_numpy()),
        "prompt": take(prompts, "messages", pr),
        "chosen": _single_turn(assistant, take(responses, "text", rc)),
        "rejected": _single_turn(assistant, take(responses, "text", rr)),
        "score_chosen": num.column("score_c"),
        "score_rejected": num.column("score_r"),
        "margin": num.column("gap"),
        "confidence": pa.nulls(n, pa.float64()),
        "label_smoothing": pa.array(np.zeros(n)),
        "noisy": pa.array(np.zeros(n, dtype=bool)),
        "level": num.column("level"),
        "method": _repeat(STAGE, n),
        "source": take(prompts, "source", pr),
        "lineage": _lineage(ids, fp, escape),
    }
    return check_table(pa.table(columns), "pairs")


def build_pairs(prompts: pa.Table, responses: pa.Table, cfg: Curry) -> tuple[pa.Table, dict[str, Any]]:
    """All steps: prompts + scored responses (contract tables with ``input``) -> the ordered pairs
    table (+ the counts for metrics.json)."""
    prompts_idx = index_prompts(prompts)
    scored, response_drops = scored_responses(responses)
    ranked, orphans = attach_prompts(rank_responses(scored), scored, prompts_idx)
    if orphans:
        response_drops = dict(sorted({**response_drops, "orphan": orphans}.items()))
    pairs, ties = make_pairs(ranked, cfg.pairing, cfg.min_gap)
    pairs = order_pairs(pair_ids(assign_levels(pairs, cfg.levels, cfg.n_levels), scored), cfg.seed)
    table = to_pairs_table(pairs, scored, prompts_idx, prompts, responses, fingerprint(cfg))
    return table, metrics(responses.num_rows, ranked, pairs, ties, response_drops, cfg)


# --- metrics ---------------------------------------------------------------------------------------


def gap_histogram(gaps: np.ndarray, bins: int) -> dict[str, list[float] | list[int]]:
    if len(gaps) == 0:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(gaps, bins=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def metrics(n_read: int, ranked: pl.DataFrame, pairs: pl.DataFrame, ties: int,
            response_drops: dict[str, int], cfg: Curry) -> dict[str, Any]:
    groups = ranked.filter(pl.col("rank") == 1).select("n")
    gaps = pairs.get_column("gap").to_numpy()
    per_level = dict(pairs.group_by("level").len().iter_rows())
    level_gaps = pairs.group_by("level").agg(lo=pl.col("gap").min(), hi=pl.col("gap").max()).sort("level")
    paired = pairs.get_column("group").n_unique() if pairs.height else 0
    return {
        "responses": {"read": n_read, "ranked": ranked.height, "dropped": response_drops},
        "prompts": {
            "with_scored_responses": groups.height,
            "paired": paired,
            "dropped": {
                "fewer_than_2_scored": groups.filter(pl.col("n") < 2).height,
                "all_pairs_tied": groups.filter(pl.col("n") >= 2).height - paired,
            },
        },
        "pairs": {
            "candidates": pairs.height + ties,
            "written": pairs.height,
            "dropped": {"gap_le_min_gap": ties},
            "per_level": {str(k): int(per_level.get(k, 0)) for k in range(cfg.n_levels)},
            "per_source": {},  # filled by main once the source column is joined
        },
        "levels": {
            "scheme": cfg.levels,
            "n_levels": cfg.n_levels,
            "gap_range": {str(lv): [lo, hi] for lv, lo, hi in level_gaps.iter_rows()},
        },
        "gap": {
            "min": float(gaps.min()) if len(gaps) else None,
            "max": float(gaps.max()) if len(gaps) else None,
            "mean": float(gaps.mean()) if len(gaps) else None,
            "quantiles": {f"p{q}": float(np.quantile(gaps, q / 100)) for q in (10, 25, 50, 75, 90)} if len(gaps) else {},
            "histogram": gap_histogram(gaps, cfg.histogram_bins),
        },
        "pairing": cfg.pairing,
        "min_gap": cfg.min_gap,
    }


# --- output ----------------------------------------------------------------------------------------


def write_levels(table: pa.Table, out_dir: Path, fp: str, target_shard_bytes: int, row_group_bytes: int) -> dict[str, Any]:
    """One shard set per level (``level=<k>/``, order kept) and ``_levels.json`` listing all files in order.

    Everything is written into a temporary folder and renamed into place, so a reader never sees a
    mix of two runs' levels.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    levels = table.column("level").to_numpy() if table.num_rows else np.zeros(0, np.int64)
    files, summary = [], []
    for lv in np.unique(levels):
        # ``table`` is sorted by level, so each level is one contiguous slice.
        lo, hi = np.searchsorted(levels, lv, "left"), np.searchsorted(levels, lv, "right")
        sub = f"level={int(lv)}"
        m = write_shards(table.slice(lo, hi - lo), tmp / sub, name="pairs", fingerprint=fp, sort=False,
                         target_shard_bytes=target_shard_bytes, row_group_bytes=row_group_bytes,
                         extra={"level": int(lv)})
        files += [{**f, "path": f"{sub}/{f['path']}"} for f in m["files"]]
        summary.append({"level": int(lv), "path": sub, "rows": m["rows"]})
    index = {
        "table": "pairs",
        "rows": table.num_rows,
        "files": files,
        "levels": summary,
        "order": "level, then seeded shuffle within the level",
        "schema": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in SCHEMAS["pairs"]],
        "fingerprint": fp,
        "prefpipe_version": package_version(),
    }
    try:
        write_json_atomic(index, tmp / LEVELS_INDEX)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return index


def curriculum_files(pairs_dir: str | Path) -> list[Path]:
    """The Parquet files of ``data/curry/pairs`` in curriculum order (level 0 first, order within kept).

    >>> from datasets import Dataset  # doctest: +SKIP
    >>> Dataset.from_parquet([str(f) for f in curriculum_files("data/curry/pairs")])  # doctest: +SKIP
    """
    pairs_dir = Path(pairs_dir)
    index = pairs_dir / LEVELS_INDEX
    if not index.exists():
        raise FileNotFoundError(f"{index}: not found; run the curry stage first (`dvc repro curry`)")
    return [pairs_dir / f["path"] for f in json.loads(index.read_text())["files"]]


def main(params: Params) -> None:
    run(params.curry, params.execution, OUT)


def run(cfg: Curry, ex: Execution, out: Path) -> dict[str, Any]:
    """Read the input sets, build the pairs, write ``out/pairs/level=<k>/`` and ``out/metrics.json``."""
    fp = fingerprint(cfg)
    prompts, responses = load_inputs([i.model_dump() for i in cfg.inputs])
    table, m = build_pairs(prompts, responses, cfg)
    per_source = pc.value_counts(table.column("source")).to_pylist() if table.num_rows else []
    m["pairs"]["per_source"] = {d["values"]: int(d["counts"]) for d in sorted(per_source, key=lambda d: d["values"])}
    staged = begin_outputs(out)  # pairs and metrics change together (pipeline/outputs.py)
    write_levels(table, staged / "pairs", fp, ex.target_shard_bytes, ex.row_group_bytes)
    write_json_atomic(m, staged / "metrics.json")
    commit_outputs(out)
    log.info("curry: %d pairs over %d levels", table.num_rows, len(m["levels"]["gap_range"]))
    return m
