"""Ingest: every configured source -> the canonical tables, bad rows quarantined with a reason.

For each ``ingest.sources`` entry: read its records (``pipeline.io.iter_records``), turn each into
canonical rows with the format's adapter (``pipeline.adapters``), validate every row against its
record model, and keep the record only if all of its rows pass. Then, per source:

1. duplicates: a row whose id was already produced by an earlier record is dropped when identical
   (Arena-Hard repeats the question in every model's answer file) and rejects its record otherwise;
2. orphans (kind ``rated``): a response whose prompt is not in the source rejects its record;
3. cross-record facts (the accepted Stack Exchange answer) are applied.

Outputs, under ``data/ingest/``: ``conversations/ documents/ prompts/ responses/ pairs/`` (all five,
empty ones too, so every downstream dependency exists), ``rejects/`` (source, row, reason, raw) and
``metrics.json``. Every input record is counted once: ``rows_in == accepted + rejected``. The stage
fails, naming the source and its top reasons, when a source rejects more than
``ingest.max_reject_fraction`` of its records (after writing rejects and metrics, for diagnosis).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from pipeline.adapters import Adapted, BadRecord, Ctx, adapt, finish
from pipeline.config import Params, Source, fingerprint
from pipeline.io import HF_PREFIX, StageError, expand_paths, iter_records, write_json_atomic, write_shards
from pipeline.records import ID_COLUMNS, MODELS, SCHEMAS

TABLES = ("conversations", "documents", "prompts", "responses", "pairs")
OUT_DIR = Path("data/ingest")
TOP_REASONS = 5


class IngestError(StageError):
    """A source rejected too much of its input; the message names it and its top reasons."""


@dataclass
class SourceResult:
    name: str
    rows: dict[str, list[dict[str, Any]]]
    rejects: list[dict[str, Any]]
    metrics: dict[str, Any]


@dataclass
class _Kept:
    where: str
    raw: str
    rows: dict[str, list[dict[str, Any]]]
    skipped: Counter = field(default_factory=Counter)


# --- steps ---------------------------------------------------------------------------------------


def _base_dir(path: str) -> Path:
    """The folder a source's file names are reported relative to."""
    p = Path(path)
    if p.is_dir():
        return p
    if any(ch in path for ch in "*?["):
        head = re.split(r"[*?\[]", path, maxsplit=1)[0]
        return Path(head) if head.endswith(os.sep) else Path(head).parent
    return p.parent


def _validation_reason(table: str, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        parts.append(f"{table}.{loc}: {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def validate_rows(adapted: Adapted) -> dict[str, list[dict[str, Any]]]:
    """Every row through its record model (normalised dumps), or BadRecord naming the first failure."""
    out: dict[str, list[dict[str, Any]]] = {}
    for table, rows in adapted.rows.items():
        model = MODELS[table]
        for row in rows:
            try:
                out.setdefault(table, []).append(model.model_validate(row).model_dump())
            except ValidationError as e:
                raise BadRecord(_validation_reason(table, e)) from None
    return out


def adapt_source(src: Source, max_record_bytes: int) -> tuple[dict[int, _Kept], list[dict[str, Any]], dict[str, set[str]], int]:
    """Read and adapt every record of ``src``: (kept records by row, rejects, facts, rows read)."""
    base = _base_dir(src.path) if not src.path.startswith(HF_PREFIX) else None
    kept: dict[int, _Kept] = {}
    rejects: list[dict[str, Any]] = []
    facts: dict[str, set[str]] = {}
    n = 0
    for raw in iter_records(src.path, max_record_bytes):
        if src.limit is not None and n >= src.limit:
            break
        n += 1
        file_rel = os.path.relpath(raw.file, base) if base is not None else raw.file
        is_jsonl = raw.file.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz"))  # the reader measured the line
        where = f"{file_rel}:{raw.row}"
        preview = raw.raw or (json.dumps(raw.value, ensure_ascii=False, default=str)[:500] if raw.value is not None else "")
        try:
            if raw.error is not None:
                raise BadRecord(raw.error)
            if not is_jsonl and len(json.dumps(raw.value, default=str)) > max_record_bytes:
                raise BadRecord(f"record is over max_record_bytes={max_record_bytes}")
            adapted = adapt(raw.value, Ctx.for_source(src, file_rel, raw.row))
            rows = validate_rows(adapted)
        except BadRecord as e:
            rejects.append({"source": src.name, "row": n, "reason": f"{where}: {e}", "raw": preview})
            continue
        except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as e:
            # A shape no adapter rule foresaw: quarantine it rather than stop the whole stage.
            rejects.append({"source": src.name, "row": n, "reason": f"{where}: unexpected record shape "
                            f"({type(e).__name__}: {e})", "raw": preview})
            continue
        for key, values in adapted.facts.items():
            facts.setdefault(key, set()).update(values)
        kept[n] = _Kept(where, preview, rows, adapted.skipped)
    return kept, rejects, facts, n


def _row_key(table: str, row: dict[str, Any]) -> tuple:
    return (table, *(row[c] for c in ID_COLUMNS[table]))


def drop_duplicates(src: str, kept: dict[int, _Kept]) -> tuple[list[dict[str, Any]], Counter]:
    """Drop repeated identical rows; reject a record whose row reuses an earlier id with other content."""
    seen: dict[tuple, tuple[int, dict[str, Any]]] = {}
    rejects, skipped = [], Counter()
    for n in sorted(kept):
        rec = kept[n]
        clash = None
        for table, rows in rec.rows.items():
            for row in rows:
                prior = seen.get(_row_key(table, row))
                if prior is not None and prior[1] != row:
                    clash = f"{table} id {_row_key(table, row)[1:]} already produced by row {prior[0]} with different content"
                    break
            if clash:
                break
        if clash:
            rejects.append({"source": src, "row": n, "reason": f"{rec.where}: duplicate: {clash}", "raw": rec.raw})
            del kept[n]
            continue
        for table in list(rec.rows):
            unique = []
            for row in rec.rows[table]:
                key = _row_key(table, row)
                if key in seen:
                    skipped[f"{table} row identical to an earlier one"] += 1
                else:
                    seen[key] = (n, row)
                    unique.append(row)
            rec.rows[table] = unique
    return rejects, skipped


def drop_orphans(src: str, kept: dict[int, _Kept]) -> list[dict[str, Any]]:
    """Reject records whose responses answer a prompt this source does not contain."""
    prompt_ids = {r["prompt_id"] for rec in kept.values() for r in rec.rows.get("prompts", [])}
    rejects = []
    for n in sorted(kept):
        rec = kept[n]
        missing = sorted({r["prompt_id"] for r in rec.rows.get("responses", [])} - prompt_ids)
        if missing:
            rejects.append({"source": src, "row": n, "raw": rec.raw,
                            "reason": f"{rec.where}: response to a prompt not in this source (prompt_id {missing[0]}; "
                                      "e.g. an answer whose question is missing)"})
            del kept[n]
    return rejects


def reason_key(reason: str) -> str:
    """A reject reason without its location and numbers, so alike reasons count together.

    >>> reason_key("bad.jsonl:12: invalid JSON: Expecting value at column 3")
    'invalid JSON: Expecting value at column N'
    """
    reason = re.sub(r"^\S*:\d+: ", "", reason)
    return re.sub(r"\d+", "N", reason)


def ingest_source(src: Source, max_record_bytes: int) -> SourceResult:
    kept, rejects, facts, n_in = adapt_source(src, max_record_bytes)
    dup_rejects, skipped = drop_duplicates(src.name, kept)
    rejects += dup_rejects
    if src.kind == "rated":
        rejects += drop_orphans(src.name, kept)
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
    for n in sorted(kept):
        for table, table_rows in kept[n].rows.items():
            rows[table].extend(table_rows)
        skipped.update(kept[n].skipped)
    finish(src.format, rows, facts)
    rejects.sort(key=lambda r: r["row"])
    reasons = Counter(reason_key(r["reason"]) for r in rejects)
    metrics = {
        "kind": src.kind,
        "format": src.format,
        "rows_in": n_in,
        "accepted": len(kept),
        "rejected": len(rejects),
        "reject_fraction": round(len(rejects) / n_in, 6) if n_in else 0.0,
        "outputs": {t: len(r) for t, r in rows.items() if r},
        "skipped": dict(sorted(skipped.items())),
        "top_reasons": [[reason, count] for reason, count in sorted(reasons.items(), key=lambda x: (-x[1], x[0]))[:TOP_REASONS]],
    }
    assert metrics["rows_in"] == metrics["accepted"] + metrics["rejected"], metrics
    return SourceResult(src.name, rows, rejects, metrics)


def check_sources_exist(sources: list[Source]) -> None:
    """Fail before any work when a local source path matches nothing."""
    for src in sources:
        if not src.path.startswith(HF_PREFIX):
            expand_paths(src.path)


def over_threshold(results: list[SourceResult], max_fraction: float) -> str | None:
    bad = [r for r in results if r.metrics["reject_fraction"] > max_fraction]
    if not bad:
        return None
    lines = [f"ingest: {len(bad)} source(s) rejected more than max_reject_fraction={max_fraction} of their rows "
             "(see data/ingest/rejects and data/ingest/metrics.json):"]
    for r in bad:
        m = r.metrics
        lines.append(f"  source {r.name!r}: {m['rejected']} of {m['rows_in']} rows rejected; top reasons:")
        lines += [f"    {count} x {reason}" for reason, count in m["top_reasons"]]
    lines.append("Fix the input or its `format`/`mapping` in params.yaml, or raise ingest.max_reject_fraction.")
    return "\n".join(lines)


# --- stage ---------------------------------------------------------------------------------------


def run(params: Params, out_dir: str | Path = OUT_DIR) -> dict[str, Any]:
    """Ingest every source into ``out_dir``; returns the metrics written to ``metrics.json``."""
    cfg, ex = params.ingest, params.execution
    out_dir = Path(out_dir)
    check_sources_exist(cfg.sources)
    results = [ingest_source(src, cfg.max_record_bytes) for src in cfg.sources]
    # A table depends on the sources that feed it alone; the two guards only quarantine or fail, which
    # rejects/ and metrics.json record. So a guard change, or a change to a source of another table, leaves
    # a table byte-identical and DVC reruns nothing that reads only it.
    fp = fingerprint({"sources": [s.model_dump(mode="json") for s in cfg.sources]})
    sizes = {"target_shard_bytes": ex.target_shard_bytes, "row_group_bytes": ex.row_group_bytes}
    for table in TABLES:
        feeding = [(s, r) for s, r in zip(cfg.sources, results, strict=True) if r.rows[table]]
        rows = [row for _, r in feeding for row in r.rows[table]]
        table_fp = fingerprint({"sources": [s.model_dump(mode="json") for s, _ in feeding]})
        write_shards(pa.Table.from_pylist(rows, schema=SCHEMAS[table]), out_dir / table, name=table,
                     fingerprint=table_fp, **sizes)
    rejects = [row for r in results for row in r.rejects]
    write_shards(pa.Table.from_pylist(rejects, schema=SCHEMAS["rejects"]), out_dir / "rejects", name="rejects",
                 fingerprint=fp, **sizes)
    metrics = {
        "sources": {r.name: r.metrics for r in results},
        "totals": {
            "rows_in": sum(r.metrics["rows_in"] for r in results),
            "accepted": sum(r.metrics["accepted"] for r in results),
            "rejected": sum(r.metrics["rejected"] for r in results),
            **{t: sum(len(r.rows[t]) for r in results) for t in TABLES},
        },
    }
    write_json_atomic(metrics, out_dir / "metrics.json")
    failure = over_threshold(results, cfg.max_reject_fraction)
    if failure:
        raise IngestError(failure)
    return metrics


def main(params: Params) -> None:
    metrics = run(params)
    t = metrics["totals"]
    print(f"ingest: {t['rows_in']} rows in, {t['accepted']} accepted, {t['rejected']} rejected -> "
          + ", ".join(f"{k} {t[k]}" for k in TABLES))
