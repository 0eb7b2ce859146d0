"""Export: merge the methods' pairs into one release any trainer reads, with a card, stats and plots.

    merge  ->  redact PII  ->  drop chosen == rejected  ->  de-duplicate  ->  decontaminate  ->  split  ->  write

1. merge: ``data/<method>/pairs`` for every enabled method (Curry-DPO: ``level=N`` sub-folders, read in
   level order; DOVE: the joint_pairs contract). An absent folder is skipped and noted in stats.json.
2. redact: e-mails, phones, IPs, Luhn-valid card numbers and API keys/tokens in every message.
3. drop pairs whose chosen equals rejected (after redaction).
4. de-duplicate: identical pairs; then prompts that repeat (exactly, or as MinHash near-duplicates) across
   methods or within one: the (method, prompt) with the highest confidence keeps its pairs, the others
   go. Several pairs for one exact prompt from one method (Curry-DPO's levels) stay together.
5. decontaminate: drop pairs whose prompt shares word n-grams with an evaluation prompt (overlap =
   shared n-grams / n-grams of the shorter text); each removal records the eval set and prompt id.
6. split train/test by a salted hash of the normalised prompt, so no prompt is in both splits (a DOVE
   row whose two prompts fall in different splits is dropped).
7. write ``data/release/<config>/<split>-0000i-of-0000N.parquet`` (configs: each method, plus ``all``
   for the conditional pairs), ``_manifest.json``, the card ``README.md``, ``stats.json`` (DVC metrics),
   ``plots/`` (CSV for DVC plots, ``summary.png``) and ``removed.jsonl`` (every dropped pair and why).

Memory stays bounded by streaming in two passes (``build_release``): the first reads every method's
pairs batch by batch, redacts them and keeps only ids, scores, lineage, prompt keys, text hashes and one
MinHash signature per distinct prompt; steps 3-6 decide on those; the second pass reads and redacts
the pairs again and streams the kept ones into one ``ShardWriter`` per config and split.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import hub
from pipeline.config import Export, Params, fingerprint
from pipeline.io import (
    MANIFEST,
    ShardWriter,
    SourceError,
    StageError,
    _file_sha256,
    iter_records,
    package_version,
    read_table,
    replace_dir,
    shard_files,
    write_json_atomic,
)
from pipeline.pii import redact
from pipeline.records import SCHEMAS, check_table
from pipeline.text import minhash, near_duplicate_groups, ngram_hashes, normalise, stable_hash64

log = logging.getLogger(__name__)

OUT_DIR = Path("data/release")
CONDITIONAL = ["wildfeedback", "pugc", "selfie", "curry"]
JOINT = ["dove"]
SIGNALS_DIR = Path("data/wildfeedback/signals")
_LEVEL_DIR = re.compile(r"^level=(\d+)$")


class ExportError(StageError):
    """The release cannot be built; the message names the input and what to do."""


def method_dir(root: Path, method: str) -> Path:
    return root / "data" / method / "pairs"


# --- 1. merge ------------------------------------------------------------------------------------


def _level_order(p: Path) -> tuple[int, int, str]:
    m = _LEVEL_DIR.match(p.name)
    return (0, int(m.group(1)), "") if m else (1, 0, p.name)


def iter_pairs_tree(path: Path, name: str, batch_rows: int = 65_536) -> Iterator[pa.Table]:
    """A shard set, or a folder of shard sets (``level=0/``, ``level=1/``...) streamed in level order,
    each batch checked against the ``name`` contract. A ``level=N`` folder fills ``level`` where its
    rows leave it null."""
    if not path.exists():
        raise SourceError(f"{path}: not found; run the stage that writes it first (`dvc repro`)")
    for f in shard_files(path):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows):
            yield check_table(pa.Table.from_batches([batch]), name)
    subdirs = sorted((d for d in path.iterdir() if d.is_dir() and not d.name.startswith((".", "_"))), key=_level_order)
    for sub in subdirs:
        m = _LEVEL_DIR.match(sub.name)
        for t in iter_pairs_tree(sub, name, batch_rows):
            if m and "level" in t.column_names and t.num_rows:
                level = pc.fill_null(t.column("level"), int(m.group(1)))
                t = t.set_column(t.schema.get_field_index("level"), "level", level)
            yield t


def read_pairs_tree(path: Path, name: str) -> pa.Table:
    """``iter_pairs_tree`` as one table."""
    tables = list(iter_pairs_tree(path, name))
    return pa.concat_tables(tables) if tables else SCHEMAS[name].empty_table()


def method_inputs(root: Path, methods: list[str]) -> tuple[dict[str, Path], dict[str, str]]:
    """(method -> its pairs folder, for those present; skipped method -> reason)."""
    found, skipped = {}, {}
    for method in CONDITIONAL + JOINT:
        if method not in methods and method_dir(root, method).is_dir():
            skipped[method] = "present but not listed in export.methods"
    for method in methods:
        path = method_dir(root, method)
        if path.is_dir():
            found[method] = path
        else:
            skipped[method] = f"{path.relative_to(root)} not found (stage not run or not merged yet)"
    return found, skipped


def method_batches(method: str, path: Path, batch_rows: int) -> Iterator[pl.DataFrame]:
    """A method's pairs, batch by batch, with ``_config``; an unreadable folder names itself and the fix."""
    name = "joint_pairs" if method in JOINT else "pairs"
    try:
        for table in iter_pairs_tree(path, name, batch_rows):
            yield pl.from_arrow(table).with_columns(pl.lit(method).alias("_config"))
    except (SourceError, ValueError) as e:
        raise ExportError(f"{path}: cannot read the {method} pairs ({e}); rerun `dvc repro {method}`") from e


# --- 2. redact -----------------------------------------------------------------------------------


def redact_messages(df: pl.DataFrame, columns: list[str], kinds: list[str]) -> tuple[pl.DataFrame, dict[str, int]]:
    """Redact the ``content`` of every message in the message-list ``columns`` in one vectorised pass."""
    if df.height == 0 or not kinds:
        return df, dict.fromkeys(kinds, 0)
    lists = [df[c].rechunk().to_arrow() for c in columns]
    flats = [arr.flatten() for arr in lists]
    contents = pl.Series(pa.chunked_array([f.field("content") for f in flats], type=pa.large_string()))
    redacted, counts = redact(contents, kinds)
    redacted = redacted.to_arrow()
    start, out = 0, {}
    for c, arr, flat in zip(columns, lists, flats, strict=True):
        n = len(flat)
        content = redacted.slice(start, n).combine_chunks() if isinstance(redacted, pa.ChunkedArray) else redacted.slice(start, n)
        start += n
        offsets = pc.subtract(arr.offsets, arr.offsets[0])
        values = pa.StructArray.from_arrays([flat.field("role"), content], names=["role", "content"])
        out[c] = pl.Series(c, pa.LargeListArray.from_arrays(offsets, values))
    return df.with_columns(**out), counts


# --- 3. identical --------------------------------------------------------------------------------


def text_of(col: str) -> pl.Expr:
    """All message contents of a message-list column, one per line."""
    return pl.col(col).list.eval(pl.element().struct.field("content")).list.join("\n")


def _drops(df: pl.DataFrame, reason: str, detail: pl.Expr | None = None) -> pl.DataFrame:
    return df.select(
        "pair_id", pl.col("_config").alias("method"), pl.lit(reason).alias("reason"),
        (detail if detail is not None else pl.lit("{}")).alias("detail"),
    )


def identical(sides: list[tuple[str, str]]) -> pl.Expr:
    """True where the chosen side equals the rejected side on every (chosen, rejected) column pair."""
    return pl.all_horizontal([text_of(a).str.strip_chars() == text_of(b).str.strip_chars() for a, b in sides])


def drop_identical(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows flagged ``_same`` (``identical``, computed while scanning) go."""
    return df.filter(~pl.col("_same")).drop("_same"), _drops(df.filter(pl.col("_same")), "identical")


# --- 4. de-duplicate -----------------------------------------------------------------------------


def prompt_keys(df: pl.DataFrame, col: str) -> pl.DataFrame:
    """Per row: ``_text`` (the normalised prompt text of ``col``) and ``_key`` (its stable uint64 hash)."""
    text = df.select(normalise(text_of(col)))[:, 0] if df.height else pl.Series([], dtype=pl.String)
    return pl.DataFrame({"_key": stable_hash64(text), "_text": text}, schema={"_key": pl.UInt64, "_text": pl.String})


def text_hash(col: str) -> pl.Expr:
    """A uint64 per row standing for the text of a message-list column (for equality tests)."""
    return text_of(col).map_batches(lambda s: pl.Series(stable_hash64(s), dtype=pl.UInt64), return_dtype=pl.UInt64)


class Signatures:
    """MinHash signatures of distinct normalised prompts, computed once per prompt key while scanning.

    Memory is ``num_perm`` x 8 bytes per distinct prompt, not the prompt texts.
    """

    def __init__(self, shingle: int, num_perm: int) -> None:
        self.shingle, self.num_perm = shingle, num_perm
        self.index: dict[int, int] = {}
        self.sig = np.zeros((0, num_perm), dtype=np.uint64)  # grows by doubling; rows [0, len(index)) used

    def add(self, keys: pl.Series, texts: pl.Series) -> None:
        new = pl.DataFrame({"k": keys, "t": texts}).unique("k", keep="first", maintain_order=True)
        new = new.filter(pl.Series([k not in self.index for k in new["k"].to_list()], dtype=pl.Boolean))
        if new.height == 0:
            return
        start, end = len(self.index), len(self.index) + new.height
        if end > len(self.sig):
            grown = np.zeros((max(end, 2 * len(self.sig)), self.num_perm), dtype=np.uint64)
            grown[:start] = self.sig[:start]
            self.sig = grown
        self.sig[start:end] = minhash(ngram_hashes(new["t"], self.shingle), new.height, self.num_perm)
        self.index.update((k, start + i) for i, k in enumerate(new["k"].to_list()))

    def matrix(self, keys: pl.Series) -> np.ndarray:
        return self.sig[[self.index[k] for k in keys.to_list()]]


def _best_first(methods: list[str]) -> list[pl.Expr]:
    rank = pl.col("_config").replace_strict(methods, list(range(len(methods))), default=len(methods))
    return [pl.col("confidence").fill_nan(None).fill_null(float("-inf")).alias("_c"), rank.alias("_rank")]


def dedup_pairs(df: pl.DataFrame, methods: list[str], signatures: Signatures, bands: int,
                near_threshold: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Drop identical pairs, then keep one (method, prompt) per exact/near-duplicate prompt cluster.

    ``df`` holds ``_key`` (prompt) and ``_ch``/``_rh`` (chosen/rejected text hashes), not the texts."""
    if df.height == 0:
        return df, _drops(df, "duplicate_pair")
    df = df.with_columns(*_best_first(methods))
    order = [pl.col("_c"), pl.col("_rank"), pl.col("pair_id")]
    ranked = df.sort(order, descending=[True, False, False])
    pair_key = ["_config", "_key", "_ch", "_rh"]
    is_first = ranked.select(pl.struct(pair_key).is_first_distinct())[:, 0]
    kept, dup_pairs = ranked.filter(is_first), _drops(ranked.filter(~is_first), "duplicate_pair")

    # prompt clusters: one node per distinct prompt; MinHash + LSH join near-duplicate nodes
    nodes = kept.select(pl.col("_key").unique().sort())
    sig = signatures.matrix(nodes["_key"])
    labels = near_duplicate_groups(sig, bands, near_threshold)
    cluster = nodes.select("_key", pl.Series("_cluster", nodes["_key"].to_numpy()[labels]))
    units = (
        kept.group_by("_config", "_key")
        .agg(pl.col("_c").max(), pl.col("_rank").first(), pl.len().alias("_n"))
        .join(cluster, on="_key")
        .sort(["_c", "_n", "_rank", "_key"], descending=[True, True, False, False])
    )
    winners = units.group_by("_cluster", maintain_order=True).first().select(
        "_cluster", pl.col("_config").alias("_win_config"), pl.col("_key").alias("_win_key")
    )
    kept = kept.join(cluster, on="_key").join(winners, on="_cluster")
    win = (pl.col("_config") == pl.col("_win_config")) & (pl.col("_key") == pl.col("_win_key"))
    lost = kept.filter(~win)
    detail = pl.struct(kept_method=pl.col("_win_config"), kept_prompt_key=pl.col("_win_key").cast(pl.String)).struct.json_encode()
    drops = pl.concat([
        dup_pairs,
        _drops(lost.filter(pl.col("_key") == pl.col("_win_key")), "duplicate_prompt_exact", detail),
        _drops(lost.filter(pl.col("_key") != pl.col("_win_key")), "duplicate_prompt_near", detail),
    ])
    return kept.filter(win).drop("_c", "_rank", "_cluster", "_win_config", "_win_key", "_ch", "_rh"), drops


def dedup_joint(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """DOVE rows repeating all four columns: keep the most confident (then the smallest pair_id)."""
    if df.height == 0:
        return df, _drops(df, "duplicate_pair")
    key = ["_key_c", "_ch", "_key_r", "_rh", "_cph", "_rph"]
    ranked = df.sort([pl.col("confidence").fill_nan(None).fill_null(float("-inf")), "pair_id"], descending=[True, False])
    f = ranked.select(pl.struct(key).is_first_distinct())[:, 0]
    return ranked.filter(f), _drops(ranked.filter(~f), "duplicate_pair")


# --- 5. decontaminate ----------------------------------------------------------------------------


def _field_texts(value: Any) -> list[str]:
    """Eval prompt text(s) from a field: a string, a list of strings (turns) or a list of {content}."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        out = []
        for v in value:
            if isinstance(v, str):
                out.append(v)
            elif isinstance(v, dict) and isinstance(v.get("content"), str):
                out.append(v["content"])
        return out
    return []


def load_eval_sets(sets: list) -> tuple[pl.DataFrame, dict[str, dict[str, Any]]]:
    """(eval_set, eval_id, text) of every evaluation prompt, and a status per set for stats and card."""
    rows: dict[str, list[str]] = {"eval_set": [], "eval_id": [], "text": []}
    status: dict[str, dict[str, Any]] = {}
    for s in sets:
        before = len(rows["text"])
        try:
            for raw in iter_records(s.path):
                if raw.error or not isinstance(raw.value, dict):
                    continue
                texts = _field_texts(raw.value.get(s.text_field))
                base = str(raw.value.get(s.id_field, f"row{raw.row}"))
                for i, t in enumerate(texts):
                    rows["eval_set"].append(s.name)
                    rows["eval_id"].append(base if len(texts) == 1 else f"{base}#turn{i + 1}")
                    rows["text"].append(t)
        except (SourceError, OSError) as e:
            del rows["eval_set"][before:], rows["eval_id"][before:], rows["text"][before:]
            if not s.optional:
                raise ExportError(
                    f"decontamination set {s.name!r} ({s.path}) cannot be read: {e}. Fix the path, or set "
                    f"`optional: true` under export.decontamination.sets to build without it."
                ) from e
            status[s.name] = {"prompts": 0, "status": f"unavailable: {e}"}
            log.warning("export: decontamination set %s unavailable: %s", s.name, e)
            continue
        n = len(rows["text"]) - before
        if n == 0 and not s.optional:
            raise ExportError(f"decontamination set {s.name!r} ({s.path}): no text in field {s.text_field!r}")
        status[s.name] = {"prompts": n, "status": "ok" if n else f"no text in field {s.text_field!r}"}
    return pl.DataFrame(rows, schema={"eval_set": pl.String, "eval_id": pl.String, "text": pl.String}), status


def eval_grams(evals: pl.DataFrame, n: int) -> pl.DataFrame:
    """The evaluation prompts' word n-gram hashes (``row``, ``h``), computed once for every batch."""
    return ngram_hashes(evals.select(normalise(pl.col("text")))[:, 0], n)


def contamination(prompts: pl.DataFrame, evals: pl.DataFrame, n: int, threshold: float,
                  eg: pl.DataFrame | None = None) -> pl.DataFrame:
    """Prompts (``_key``, ``_text``) that overlap an eval prompt: ``_key, eval_set, eval_id, overlap``.

    overlap = distinct shared n-grams / distinct n-grams of the shorter of the two texts; the best
    match per prompt is reported. ``eg``: ``eval_grams(evals, n)``, when already computed.
    """
    schema = {"_key": pl.UInt64, "eval_set": pl.String, "eval_id": pl.String, "overlap": pl.Float64}
    if prompts.height == 0 or evals.height == 0:
        return pl.DataFrame(schema=schema)
    tg = ngram_hashes(prompts["_text"], n)
    eg = eval_grams(evals, n) if eg is None else eg
    t_n = tg.group_by("row").len().rename({"len": "t_n"})
    e_n = eg.group_by("row").len().rename({"len": "e_n"})
    shared = (
        tg.join(eg, on="h", suffix="_e")
        .group_by("row", "row_e").len()
        .join(t_n, on="row").join(e_n.rename({"row": "row_e"}), on="row_e")
        .with_columns((pl.col("len") / pl.min_horizontal("t_n", "e_n")).alias("overlap"))
        .filter(pl.col("overlap") >= threshold)
        .sort(["row", "overlap", "row_e"], descending=[False, True, False])
        .group_by("row", maintain_order=True).first()
    )
    ev = evals.with_row_index("row_e").with_columns(pl.col("row_e").cast(pl.UInt32))
    pk = prompts.select("_key").with_row_index("row").with_columns(pl.col("row").cast(pl.UInt32))
    return shared.join(pk, on="row").join(ev, on="row_e").select(list(schema)).sort("_key")


def decontaminate(df: pl.DataFrame, key_cols: list[str], hits: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Drop rows whose prompt key(s) appear in ``hits``; the drop detail names the eval set and prompt id."""
    if df.height == 0 or hits.height == 0:
        return df, _drops(df.clear(), "contaminated")
    hit = pl.struct("eval_set", "eval_id", pl.col("overlap").round(3)).struct.json_encode()
    info = hits.select("_key", hit.alias("_hit"))
    tagged = df
    for i, k in enumerate(key_cols):
        tagged = tagged.join(info.rename({"_key": k, "_hit": f"_hit{i}"}), on=k, how="left")
    hit = pl.coalesce([pl.col(f"_hit{i}") for i in range(len(key_cols))])
    tagged = tagged.with_columns(hit.alias("_hit"))
    bad = tagged.filter(pl.col("_hit").is_not_null())
    keep = tagged.filter(pl.col("_hit").is_null()).drop([f"_hit{i}" for i in range(len(key_cols))] + ["_hit"])
    return keep, _drops(bad, "contaminated", pl.col("_hit"))


# --- 6. split ------------------------------------------------------------------------------------


def in_test_split(keys: pl.Series, fraction: float, salt: str) -> np.ndarray:
    """True where a prompt key falls in the test split: a salted hash mapped to [0, 1) below ``fraction``."""
    salted = keys.cast(pl.String).to_frame("k").select(pl.lit(salt + "\x1f") + pl.col("k"))[:, 0]
    u = (stable_hash64(salted) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return u < fraction


def split_joint(df: pl.DataFrame, fraction: float, salt: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Add ``_split``; rows whose two prompts fall in different splits are dropped (``split_straddle``)."""
    a = in_test_split(df["_key_c"], fraction, salt) if df.height else np.zeros(0, bool)
    b = in_test_split(df["_key_r"], fraction, salt) if df.height else np.zeros(0, bool)
    tagged = df.with_columns(pl.Series("_split", np.where(a, "test", "train")))
    same = a == b
    return tagged.filter(same), _drops(tagged.filter(~same), "split_straddle")


# --- 7. write ------------------------------------------------------------------------------------


SORT = {"pairs": ["level", "pair_id"], "joint_pairs": ["pair_id"]}


def release_order(kept: pl.DataFrame, name: str, configs: list[str]) -> pl.DataFrame:
    """Each kept row's position in every file set it goes to: ``_order_<config>`` per config it is in.

    A file set is sorted like the contract's ids (pairs: ``level`` then ``pair_id``, nulls last) within
    its split; ``all`` holds every conditional pair.
    """
    out = kept.select("pair_id", "_config", "_split", *(["level"] if name == "pairs" else []))
    for config in configs:
        rows = out.filter(pl.lit(True) if config == "all" else pl.col("_config") == config)
        ranked = rows.sort(["_split", *SORT[name]], nulls_last=True).with_columns(
            pl.int_range(pl.len()).over("_split").alias(f"_order_{config}"))
        out = out.join(ranked.select("pair_id", "_config", f"_order_{config}"), on=["pair_id", "_config"], how="left")
    return out


def row_counts(order: pl.DataFrame, configs: list[str]) -> dict[str, dict[str, int]]:
    """config -> split -> rows (only splits with rows)."""
    out = {}
    for c in configs:
        n = order.filter(pl.col(f"_order_{c}").is_not_null()).group_by("_split").len()
        counts = dict(n.iter_rows())
        out[c] = {s: int(counts[s]) for s in ("train", "test") if counts.get(s)}
    return out


class ReleaseWriter:
    """One streaming ``ShardWriter`` per (config, split) with rows; files ``<split>-0000i-of-0000N.parquet``
    with row groups capped by rows and bytes for the Hub viewer, no per-folder manifest."""

    def __init__(self, tmp: Path, cfg: Export, counts: dict[str, dict[str, int]], spill_bytes: int) -> None:
        self.tmp = tmp
        self.writers: dict[tuple[str, str], ShardWriter] = {}
        for config, splits in counts.items():
            name = "joint_pairs" if config in JOINT else "pairs"
            for split in splits:
                self.writers[config, split] = ShardWriter(
                    tmp / f".{config}-{split}", name=name, prefix=split, order_column="_order",
                    target_shard_bytes=cfg.shard_bytes, row_group_bytes=cfg.row_group_bytes,
                    row_group_rows=cfg.row_group_rows, spill_bytes=spill_bytes, write_manifest=False)

    def write(self, df: pl.DataFrame, name: str) -> None:
        """Route one redacted batch (with ``_split`` and ``_order_<config>`` columns) to its writers."""
        for (config, split), writer in self.writers.items():
            col = f"_order_{config}"
            if col not in df.columns:
                continue
            rows = df.filter((pl.col("_split") == split) & pl.col(col).is_not_null())
            if rows.height:
                writer.write(rows.select(*SCHEMAS[name].names, pl.col(col).alias("_order")).to_arrow())

    def close(self) -> list[dict[str, Any]]:
        """Close every writer, move its files into ``<config>/`` and return the manifest's file entries."""
        files = []
        for config in CONDITIONAL + ["all"] + JOINT:  # every config folder exists (DVC outs), empty when unused
            (self.tmp / config).mkdir()
            for split in ("train", "test"):
                writer = self.writers.get((config, split))
                if writer is None:
                    continue
                manifest = writer.close()
                for f in manifest["files"]:
                    os.rename(writer.out_dir / f["path"], self.tmp / config / f["path"])
                    files.append({**f, "path": f"{config}/{f['path']}"})
                writer.out_dir.rmdir()
        return files

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()


# --- stats and plots -----------------------------------------------------------------------------


def _histogram(df: pl.DataFrame, col: str, bins: int, lo: float | None, hi: float | None) -> list[dict[str, Any]]:
    vals = df.filter(pl.col(col).is_not_null() & pl.col(col).is_finite())
    if vals.height == 0:
        return []
    lo = float(vals[col].min()) if lo is None else lo
    hi = float(vals[col].max()) if hi is None else hi
    hi = hi if hi > lo else lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    rows = [{"bin": round(float(e), 6)} for e in edges[:-1]]
    groups = {"all": vals} | {m: vals.filter(pl.col("_config") == m) for m in sorted(set(vals["_config"]))}
    for name, g in groups.items():
        counts, _ = np.histogram(g[col].to_numpy(), bins=edges)
        for r, c in zip(rows, counts, strict=True):
            r[name] = int(c)
    return rows


def build_stats(pairs: pl.DataFrame, joint: pl.DataFrame, rows: dict[str, dict[str, int]], drops: pl.DataFrame,
                pii: dict[str, int], inputs: dict[str, int], skipped: dict[str, str],
                evals: dict[str, dict]) -> dict[str, Any]:
    levels = (pairs.filter(pl.col("level").is_not_null()).group_by("_config", "level").len().sort("_config", "level"))
    by_level: dict[str, dict[str, int]] = {}
    for r in levels.iter_rows(named=True):
        by_level.setdefault(r["_config"], {})[str(r["level"])] = r["len"]
    dropped = drops.group_by("reason").len().sort("reason")
    by_method = drops.group_by("method", "reason").len().sort("method", "reason")
    out_rows = {m: int(pairs.filter(pl.col("_config") == m).height) for m in inputs if m in CONDITIONAL}
    out_rows |= {m: int(joint.filter(pl.col("_config") == m).height) for m in inputs if m in JOINT}
    decon = drops.filter(pl.col("reason") == "contaminated").with_columns(
        pl.col("detail").str.json_path_match("$.eval_set").alias("eval_set")).group_by("eval_set").len()
    return {
        "rows": rows,
        "total": sum(n for c, splits in rows.items() if c != "all" for n in splits.values()),
        "methods": {m: {"input": inputs[m], "output": out_rows.get(m, 0)} for m in inputs},
        "levels": by_level,
        "drops": {r["reason"]: r["len"] for r in dropped.iter_rows(named=True)},
        "drops_by_method": {m: {r["reason"]: r["len"] for r in by_method.filter(pl.col("method") == m).iter_rows(named=True)}
                            for m in sorted(set(by_method["method"]))},
        "decontamination": {s: {"prompts": v["prompts"], "status": v["status"],
                                "removed": int(decon.filter(pl.col("eval_set") == s)["len"].sum())} for s, v in evals.items()},
        "pii": pii,
        "skipped": skipped,
    }


def signal_categories(root: Path) -> list[dict[str, Any]]:
    """SAT/DSAT category counts from WildFeedback's signals table, when it exists."""
    path = root / SIGNALS_DIR
    if not path.is_dir():
        return []
    s = pl.from_arrow(read_table(path, columns=["sat_categories", "dsat_categories"]))  # not the texts
    rows = []
    for kind, col in (("SAT", "sat_categories"), ("DSAT", "dsat_categories")):
        counts = s.select(pl.col(col).explode().drop_nulls()).group_by(col).len().sort(col)
        rows += [{"category": f"{kind}:{r[col]}", "count": r["len"]} for r in counts.iter_rows(named=True)]
    return rows


def write_plots(folder: Path, pairs: pl.DataFrame, stats: dict, bins: int, categories: list[dict]) -> dict[str, list]:
    """CSV files for `dvc plots` (one row per bin/level/category); returns what was written, for the PNG."""
    data = {
        "confidence": _histogram(pairs, "confidence", bins, 0.0, 1.0),
        "margin": _histogram(pairs, "margin", bins, None, None),
        "levels": [{"level": int(lv), "pairs": n} for m in sorted(stats["levels"]) for lv, n in stats["levels"][m].items()],
        "categories": categories,
    }
    header = {"confidence": ["bin", "all"], "margin": ["bin", "all"], "levels": ["level", "pairs"],
              "categories": ["category", "count"]}
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in data.items():
        df = pl.DataFrame(rows) if rows else pl.DataFrame({c: [] for c in header[name]})
        df.fill_null(0).write_csv(folder / f"{name}.csv")
    return data


def write_png(path: Path, stats: dict, plots: dict[str, list]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(10, 7))
    names = [f"{c}/{s}" for c, sp in stats["rows"].items() for s in sp]
    ax[0, 0].barh(names, [n for sp in stats["rows"].values() for n in sp.values()])
    ax[0, 0].set_title("pairs per config/split")
    for a, key in ((ax[0, 1], "confidence"), (ax[1, 0], "margin")):
        rows = plots[key]
        for series in (k for k in (rows[0] if rows else {}) if k != "bin"):
            a.plot([r["bin"] for r in rows], [r[series] for r in rows], label=series, drawstyle="steps-post")
        a.set_title(f"{key} histogram")
        if rows:
            a.legend(fontsize=7)
    ax[1, 1].bar([str(r["level"]) for r in plots["levels"]], [r["pairs"] for r in plots["levels"]])
    ax[1, 1].set_title("pairs per curriculum level")
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


# --- the stage -----------------------------------------------------------------------------------


PAIR_SIDES = ["prompt", "chosen", "rejected"]
JOINT_SIDES = ["chosen_prompt", "chosen", "rejected_prompt", "rejected"]
LIGHT = ["pair_id", "_config", "confidence", "lineage"]


def redacted(df: pl.DataFrame, method: str, kinds: list[str]) -> tuple[pl.DataFrame, dict[str, int]]:
    return redact_messages(df, JOINT_SIDES if method in JOINT else PAIR_SIDES, kinds)


def light_pairs(df: pl.DataFrame, key: pl.Series) -> pl.DataFrame:
    """What the decisions need of a redacted batch of pairs: ids, scores, prompt ``key``, text hashes."""
    return df.select(*LIGHT, "level", "margin", identical([("chosen", "rejected")]).alias("_same"),
                     key.alias("_key"), text_hash("chosen").alias("_ch"), text_hash("rejected").alias("_rh"))


def light_joint(df: pl.DataFrame, key_c: pl.Series, key_r: pl.Series) -> pl.DataFrame:
    same = identical([("chosen_prompt", "rejected_prompt"), ("chosen", "rejected")])
    return df.select(*LIGHT, same.alias("_same"), key_c.alias("_key_c"), key_r.alias("_key_r"),
                     text_hash("chosen").alias("_ch"), text_hash("rejected").alias("_rh"),
                     text_hash("chosen_prompt").alias("_cph"), text_hash("rejected_prompt").alias("_rph"))


def scan(cfg: Export, inputs: dict[str, Path], evals: pl.DataFrame, batch_rows: int):
    """Pass 1: every method's pairs streamed once, redacted, reduced to the light frames the
    decisions need; prompt signatures and contamination hits are computed batch by batch."""
    sigs = Signatures(cfg.dedup.shingle, cfg.dedup.num_perm)
    eg = eval_grams(evals, cfg.decontamination.ngram) if evals.height else None
    pairs, joint, hits, counts = [], [], [], {}
    pii = dict.fromkeys(cfg.pii_kinds, 0)
    for method, path in inputs.items():
        counts[method] = 0
        for df in method_batches(method, path, batch_rows):
            counts[method] += df.height
            df, found = redacted(df, method, cfg.pii_kinds)
            pii = {k: pii[k] + found.get(k, 0) for k in pii}
            if method in JOINT:
                pc, pr = prompt_keys(df, "chosen_prompt"), prompt_keys(df, "rejected_prompt")
                joint.append(light_joint(df, pc["_key"], pr["_key"]))
                prompts = pl.concat([pc, pr])
            else:
                prompts = prompt_keys(df, "prompt")
                pairs.append(light_pairs(df, prompts["_key"]))
                sigs.add(prompts["_key"], prompts["_text"])
            prompts = prompts.select("_key", "_text").unique("_key", keep="first", maintain_order=True).sort("_key")
            hits.append(contamination(prompts, evals, cfg.decontamination.ngram, cfg.decontamination.threshold, eg))
    no_key = pl.Series([], dtype=pl.UInt64)
    empty_p = light_pairs(pl.from_arrow(SCHEMAS["pairs"].empty_table()).with_columns(pl.lit("").alias("_config")), no_key)
    empty_j = light_joint(pl.from_arrow(SCHEMAS["joint_pairs"].empty_table()).with_columns(pl.lit("").alias("_config")),
                          no_key, no_key)
    hits_df = pl.concat(hits).unique("_key", keep="first").sort("_key") if hits else contamination(
        pl.DataFrame(schema={"_key": pl.UInt64, "_text": pl.String}), evals, 1, 1.0)
    return (pl.concat(pairs) if pairs else empty_p, pl.concat(joint) if joint else empty_j, sigs, hits_df, pii, counts)


def decide(cfg: Export, pairs: pl.DataFrame, joint: pl.DataFrame, sigs: Signatures, hits: pl.DataFrame):
    """Identical, duplicate, contaminated and split decisions on the light frames: (kept pairs, kept joint, drops)."""
    drops = []
    pairs, d = drop_identical(pairs)
    drops.append(d)
    joint, d = drop_identical(joint)
    drops.append(d)
    pairs, d = dedup_pairs(pairs, cfg.methods, sigs, cfg.dedup.bands, cfg.dedup.near_threshold)
    drops.append(d)
    joint, d = dedup_joint(joint)
    drops.append(d)
    pairs, d = decontaminate(pairs, ["_key"], hits)
    drops.append(d)
    joint, d = decontaminate(joint, ["_key_c", "_key_r"], hits)
    drops.append(d)
    test = in_test_split(pairs["_key"], cfg.test_fraction, cfg.split_salt) if pairs.height else np.zeros(0, bool)
    pairs = pairs.with_columns(pl.Series("_split", np.where(test, "test", "train"), dtype=pl.String))
    joint, d = split_joint(joint, cfg.test_fraction, cfg.split_salt)
    drops.append(d)
    return pairs, joint, pl.concat(drops).sort("reason", "method", "pair_id")


def build_release(cfg: Export, root: Path, out_dir: Path, fp: str, *, batch_rows: int = 65_536,
                  spill_bytes: int = 64 << 20) -> dict[str, Any]:
    """Run every step and publish ``out_dir`` atomically. Returns stats.json's content.

    Two passes over the methods' pairs: the first keeps only ids, scores, prompt keys, text hashes and
    MinHash signatures (so memory grows by ~1 KB per distinct prompt, not by the texts); the decisions
    run on those; the second streams the pairs again, redacts them and routes the kept ones to
    streaming shard writers per config and split.
    """
    inputs, skipped = method_inputs(root, cfg.methods)
    for m, why in skipped.items():
        log.warning("export: skipping %s: %s", m, why)
    evals, eval_status = load_eval_sets(cfg.decontamination.sets)
    pairs, joint, sigs, hits, pii, in_rows = scan(cfg, inputs, evals, batch_rows)
    pairs, joint, drops = decide(cfg, pairs, joint, sigs, hits)
    present = [m for m in cfg.methods if m in inputs]
    configs = (["all"] if any(m in CONDITIONAL for m in present) else []) + [m for m in present if m in CONDITIONAL]
    order_p = release_order(pairs, "pairs", configs)
    order_j = release_order(joint, "joint_pairs", [m for m in present if m in JOINT])
    rows = row_counts(order_p, configs) | row_counts(order_j, [m for m in present if m in JOINT])
    stats = build_stats(pairs, joint, rows, drops, pii, in_rows, skipped, eval_status)
    stats["fingerprint"] = fp

    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    writer = ReleaseWriter(tmp, cfg, rows, spill_bytes)
    try:
        for method, path in inputs.items():  # pass 2
            order = order_j if method in JOINT else order_p
            for df in method_batches(method, path, batch_rows):
                df, _ = redacted(df, method, cfg.pii_kinds)
                df = df.join(order.drop("level", strict=False), on=["pair_id", "_config"], how="inner")
                writer.write(df, "joint_pairs" if method in JOINT else "pairs")
        files = writer.close()
    except BaseException:
        writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return publish_folder(cfg, root, tmp, out_dir, files, stats, pairs, joint, drops, fp)


def publish_folder(cfg: Export, root: Path, tmp: Path, out_dir: Path, files: list[dict], stats: dict,
                   pairs: pl.DataFrame, joint: pl.DataFrame, drops: pl.DataFrame, fp: str) -> dict[str, Any]:
    """Add card, stats, plots and manifest to the temporary folder beside ``out_dir``; rename it into place."""
    categories = signal_categories(root)
    if categories:
        stats["categories"] = {r["category"]: r["count"] for r in categories}
    plots = write_plots(tmp / "plots", pairs, stats, cfg.histogram_bins, categories)
    if cfg.summary_png:
        try:
            write_png(tmp / "plots" / "summary.png", stats, plots)
        except ImportError as e:
            stats["notes"] = {"summary_png": f"not written: {e} (pip install matplotlib)"}
    drops.write_ndjson(tmp / "removed.jsonl")
    write_json_atomic(stats, tmp / "stats.json")
    lineage = hub.lineage_summary(pl.concat([pairs.select("_config", "lineage"), joint.select("_config", "lineage")]))
    (tmp / "README.md").write_text(hub.render_card(cfg, stats, lineage, png=(tmp / "plots" / "summary.png").exists()), encoding="utf-8")
    others = sorted(p for p in tmp.rglob("*") if p.is_file() and p.suffix != ".parquet")
    manifest = {
        "table": "release",
        "rows": sum(f["rows"] for f in files),
        "files": files,
        "other_files": [{"path": str(p.relative_to(tmp)), "sha256": _file_sha256(p)} for p in others],
        "configs": stats["rows"],
        "fingerprint": fp,
        "prefpipe_version": package_version(),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    replace_dir(tmp, out_dir)
    return stats


def main(params: Params) -> None:
    cfg = params.export
    fp = fingerprint(cfg)
    ex = params.execution
    stats = build_release(cfg, Path("."), OUT_DIR, fp, batch_rows=ex.batch_size, spill_bytes=ex.spill_bytes)
    log.info("export: %s pairs written to %s", stats["total"], OUT_DIR)
