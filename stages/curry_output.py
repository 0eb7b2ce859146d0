"""Curry-DPO output: the pairs rows, the metrics and the level folders (stages/curry.py's last steps).

``write_levels`` writes ``data/curry/pairs/level=<k>/`` (one shard set per level, rows in curriculum
order) and ``_levels.json`` listing every file in order (``curriculum_files``), so a trainer can read
the whole curriculum in order or run one DPO stage per level folder. The index is deliberately not a
``_manifest.json``: readers that walk the level folders (stages/export_read.py) must not also read the files
a second time through a top-level manifest.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.config import Curry
from pipeline.files import package_version, replace_dir, write_json_atomic
from pipeline.ids import hex_array
from pipeline.io import write_shards
from pipeline.records import SCHEMAS, check_table, written_by

STAGE = "curry"
LEVELS_INDEX = "_levels.json"
QUANTILES = (10, 25, 50, 75, 90)
ORDER = "level, then ids.combine(pair hash, seed=curry.seed), then pair_id (docs/curry.md)"


def _repeat(value: str, n: int) -> pa.Array:
    """A string array holding ``value`` n times, built from buffers (no Python list)."""
    data = value.encode()
    offsets = np.arange(0, len(data) * n + 1, len(data), dtype=np.int64)
    return pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data * n)]).cast(pa.string())


def _single_turn(role: pa.Array, content: pa.Array) -> pa.Array:
    """``[{role, content}]`` per row as a list<struct> array, from the two string arrays (no copy)."""
    struct = pa.StructArray.from_arrays([role, content], fields=list(SCHEMAS["pairs"].field("chosen").type.value_type))
    return pa.ListArray.from_arrays(pa.array(np.arange(len(content) + 1, dtype=np.int32)), struct)


def _arrow(s: pl.Series, type_: pa.DataType) -> pa.Array:
    arr = s.to_arrow()
    return (arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr).cast(type_)


LINEAGE_IDS = ["prompt_id", "scorer", "chosen_id", "rejected_id"]


def _needs_escaping(column: pa.ChunkedArray) -> bool:
    """Whether any string holds a byte JSON must escape (quote, backslash, control), by a scan of the
    column's data buffers (a regex per value is ~10x slower)."""
    for chunk in column.chunks:
        if len(chunk) == 0 or chunk.buffers()[2] is None:
            continue
        width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
        offsets = np.frombuffer(chunk.buffers()[1], dtype=width)[chunk.offset : chunk.offset + len(chunk) + 1]
        data = np.frombuffer(chunk.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        if len(data) and (data.min() < 0x20 or (data == ord('"')).any() or (data == ord("\\")).any()):
            return True
    return False


def _lineage(scored: pl.DataFrame, c: np.ndarray, r: np.ndarray, fp: str, plain: bool, models: list[str],
             writers: pl.Series | None = None) -> pa.Array:
    """``{"stage":"curry","prompt_id":..,"scorer":..,"chosen_id":..,"rejected_id":..[,"models":{..}]
    [,"written_by":{..}],"fingerprint":..}`` per pair (chosen row ``c``, rejected row ``r`` of ``scored``), in the
    order of ``c`` and ``r``; ``models``: per input set, the ``"models"`` member (``lineage_models``) its pairs carry,
    or ``""``; ``writers``: per row of ``scored``, the model a rated input's source names as the response's writer
    (null for a stage's responses; ``records.written_by``), None when no input is rated.

    Built in the order of the chosen rows, where reading the ids is sequential, then put in the pairs'
    order (~2x faster than reading four ids at random rows). ``plain`` (no id in the input needs JSON
    escaping, the usual case): joined as strings, else encoded by polars' JSON writer.
    """
    local = np.argsort(c.astype(np.uint32) if scored.height < 2**32 else c)  # 32-bit keys sort ~1.4x faster
    chosen, rejected = c[local], r[local]
    ids = pl.DataFrame({"prompt_id": scored.get_column("prompt_id").gather(chosen),
                        "scorer": scored.get_column("scorer").gather(chosen),
                        "chosen_id": scored.get_column("response_id").gather(chosen),
                        "rejected_id": scored.get_column("response_id").gather(rejected),
                        "input": scored.get_column("input").gather(chosen)})
    named = pl.col("input").replace_strict(list(range(len(models))), models, default="", return_dtype=pl.String)
    by = pl.lit("")
    if writers is not None:
        ids = ids.with_columns(chosen_by=writers.gather(chosen), rejected_by=writers.gather(rejected))
        by = written_by(pl.col("chosen_by"), pl.col("rejected_by"))
    tail = [named if any(models) else pl.lit(""), by, pl.lit(f',"fingerprint":{json.dumps(fp)}}}')]
    if not plain:
        fields = [pl.lit(STAGE).alias("stage"), *LINEAGE_IDS]
        text = ids.select(pl.concat_str([pl.struct(fields).struct.json_encode().str.strip_suffix("}"), *tail])).to_series()
    else:  # one literal between two ids (each piece costs a pass over the rows)
        glue = [f'{{"stage":{json.dumps(STAGE)},"{LINEAGE_IDS[0]}":"', *(f'","{k}":"' for k in LINEAGE_IDS[1:]), '"']
        parts = [e for k, lit in zip(LINEAGE_IDS, glue, strict=False) for e in (pl.lit(lit), pl.col(k))]
        text = ids.select(pl.concat_str([*parts, pl.lit(glue[-1]), *tail])).to_series()
    back = np.empty_like(local)
    back[local] = np.arange(len(local))
    return _arrow(text.gather(back), pa.string())


def to_pairs_table(pairs: pl.DataFrame, scored: pl.DataFrame, prompts: pa.Table, responses: pa.Table, fp: str,
                   models: list[str] | None = None, rated: list[int] | None = None) -> pa.Table:
    """The ``pairs`` contract, in the order of ``pairs`` (``order_pairs``' output): ids, texts, messages
    and source gathered by row number with polars (one multi-threaded gather per column); lineage =
    ``{"stage","prompt_id","scorer","chosen_id","rejected_id"[,"models"][,"written_by"],"fingerprint"}`` JSON
    (``models``: per input set, ``lineage_models``; ``written_by``: the writers of the responses of the input
    sets ``rated`` numbers, an input dataset's, as its source names them)."""
    n = pairs.height
    c, r = pairs.get_column("ridx_c"), pairs.get_column("ridx_r")
    plain = not any(_needs_escaping(responses.column(k)) for k in ("prompt_id", "scorer", "response_id"))
    rows = scored.get_column("row")
    writers = pl.from_arrow(responses.select(["input", "generator"])).select(
        pl.when(pl.col("input").is_in(rated)).then(pl.col("generator"))).to_series().gather(rows) if rated else None
    lineage = _lineage(scored, c.to_numpy(), r.to_numpy(), fp, plain, models or [], writers)  # first: its working copies are the largest
    text = pl.from_arrow(responses.select(["text"])).get_column("text")
    prompt = pl.from_arrow(prompts.select(["messages", "source"]))[pairs.get_column("pidx")]
    string = pa.string()
    assistant = _repeat("assistant", n)
    columns = {
        "pair_id": hex_array(pairs.get_column("pair_hash").to_numpy()).cast(string),
        "prompt": _arrow(prompt.get_column("messages"), SCHEMAS["pairs"].field("prompt").type),
        "chosen": _single_turn(assistant, _arrow(text.gather(rows.gather(c)), string)),
        "rejected": _single_turn(assistant, _arrow(text.gather(rows.gather(r)), string)),
        "score_chosen": _arrow(pairs.get_column("score_c"), pa.float64()),
        "score_rejected": _arrow(pairs.get_column("score_r"), pa.float64()),
        "margin": _arrow(pairs.get_column("gap"), pa.float64()),
        "confidence": pa.nulls(n, pa.float64()),
        "label_smoothing": pa.array(np.zeros(n)),
        "noisy": pa.array(np.zeros(n, dtype=bool)),
        "level": _arrow(pairs.get_column("level"), pa.int64()),
        "method": _repeat(STAGE, n),
        "source": _arrow(prompt.get_column("source"), string),
        "lineage": lineage,
    }
    return check_table(pa.table(columns), "pairs")


# --- metrics ---------------------------------------------------------------------------------------


def gap_histogram(gaps: np.ndarray, bins: int) -> dict[str, list[float] | list[int]]:
    if len(gaps) == 0:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(gaps, bins=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def metrics(n_read: int, ranked: pl.DataFrame, pairs: pl.DataFrame, ties: int, response_drops: dict[str, int],
            thresholds: pl.DataFrame, per_input: np.ndarray, cfg: Curry) -> dict[str, Any]:
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
            "per_source": {},  # filled by run() once the table is built
            # Per input set (in curry.inputs order): the pairs ranked from its scores.
            "per_input": [{"input": spec.responses, "pairs": int(n)} for spec, n in zip(cfg.inputs, per_input, strict=True)],
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
            "quantiles": dict(zip([f"p{q}" for q in QUANTILES], map(float, np.quantile(gaps, [q / 100 for q in QUANTILES])),
                                  strict=True)) if len(gaps) else {},
            "histogram": gap_histogram(gaps, cfg.histogram_bins),
        },
        "pairing": cfg.pairing,
        "min_gap": cfg.min_gap,
        "relative_min_gap": cfg.relative_min_gap,
        # Per (input set, scorer): what its scores are, their 5th..95th percentile and the tie gap used.
        "tie_gaps": [{"input": cfg.inputs[i].responses, "scorer": s, "scores": k, "responses": n,
                      "p05": lo, "p95": hi, "tie_gap": t}
                     for i, s, n, lo, hi, k, t in thresholds.iter_rows()],
        "order": ORDER,
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
        "order": ORDER,
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
