"""Ingest: every configured source -> the canonical tables, bad rows quarantined with a reason.

For each ``ingest.sources`` entry: read its records (``pipeline.io.iter_records``), turn each into
canonical rows with the format's adapter (``pipeline.adapters``), validate every row against its
record model, and keep the record only if all of its rows pass (``stages.ingest_read``). Then, per source:

1. duplicates: a row whose id was already produced by an earlier record is dropped when identical
   (Arena-Hard repeats the question in every model's answer file) and rejects its record otherwise;
2. orphans (kind ``rated``): a response whose prompt the source does not accept (missing or rejected) rejects its record;
3. cross-record facts (the accepted Stack Exchange answer) are applied;
4. ShareGPT's regenerate counter glued to the start of a user turn ("2 / 2Create 10 marketing punch lines ...")
   is taken off (``pipeline.regenerate``), and the turns changed are counted per source (``regenerate_counters``).

Outputs, under ``data/ingest/``: ``conversations/ documents/ prompts/ responses/ pairs/`` (all five,
empty ones too, so every downstream dependency exists), ``rejects/`` (source, row, reason, raw) and
``metrics.json`` (rows in, rejected) with every count in ``details.json``. Every input record is counted once: ``rows_in == accepted + rejected``, whatever
its bytes (a record no rule foresaw is a reject naming the exception, never a crash; one reject of a Parquet row
group, or file, not read counts the rows it holds, ``unread_rows`` of them without a rejects row); a file that
holds no record is warned about and listed in the source's ``empty_files``. The stage fails, naming
the source and its top reasons (PII redacted: ``top_reasons``), when a source rejects more than
``ingest.max_reject_fraction`` of its records (after writing rejects and metrics, for diagnosis). All outputs are written through
``pipeline.outputs.stage_outputs``: they change together, or not at all.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from pipeline.adapters import finish
from pipeline.config import Params, Source, fingerprint
from pipeline.hub_source import check_hub
from pipeline.io import (
    HF_PREFIX,
    ShardWriter,
    SourceError,
    StageError,
    shard_sizes,
)
from pipeline.metrics import counted, say, write_metrics
from pipeline.outputs import stage_outputs
from pipeline.pii import KINDS, redact
from pipeline.readers import source_files
from pipeline.records import ID_COLUMNS, MESSAGES_TYPE, SCHEMAS
from pipeline.regenerate import strip_user_turns
from pipeline.seen import SeenRows
from stages.ingest_read import RECORDS, Kept, read_source, reject_row

TABLES = ("conversations", "documents", "prompts", "responses", "pairs")
OUT_DIR = Path("data/ingest")
TOP_REASONS = 5
# Distinct reasons redacted at a time (``top_reasons``): a hostile source's million distinct reasons redacted at once
# held ~220 MiB more than these batches do, for the same CPU
# (bench/README.md "After the control-token, PII-reason and lock changes").
REASON_BATCH = 65_536
CHUNK_ROWS = 2048  # rows per table gathered before they go to the shard writer as one Arrow table
TURNS = {t: [f.name for f in SCHEMAS[t] if f.type == MESSAGES_TYPE] for t in TABLES}  # message columns per table


class IngestError(StageError):
    """A source rejected too much of its input; the message names it and its top reasons."""


@dataclass
class SourceResult:
    """One source ingested in memory (``ingest_source``): its rows, rejects and metrics."""

    name: str
    rows: dict[str, list[dict[str, Any]]]
    rejects: list[dict[str, Any]]
    metrics: dict[str, Any]


# --- steps ---------------------------------------------------------------------------------------


def survey_rated(src: Source, max_record_bytes: int) -> tuple[set[str], dict[str, set[str]]]:
    """First pass over a ``rated`` source: the prompt ids its records provide, and cross-record facts.

    A response may come before its prompt (OASST trees, Stack Exchange answers), so orphans and the
    accepted answer are only known once the whole source is read; reading it twice keeps memory to
    these id sets instead of every row.
    """
    dups, prompt_ids, facts = SeenRows(ID_COLUMNS), set(), {}
    for rec in read_source(src, max_record_bytes):
        if isinstance(rec, Kept):
            for key, values in rec.facts.items():
                facts.setdefault(key, set()).update(values)
            if dups.admit(rec.where, rec.rows, rec.skipped) is None:
                prompt_ids.update(r["prompt_id"] for r in rec.rows.get("prompts", []))
    return prompt_ids, facts


def orphan_reason(rec: Kept, prompt_ids: set[str]) -> str | None:
    """Why a record answers a prompt this source does not contain, or None."""
    missing = sorted({r["prompt_id"] for r in rec.rows.get("responses", [])} - prompt_ids)
    if missing:
        return (f"response to a prompt this source does not accept (prompt_id {missing[0]}): its question is missing "
                "from the source, or was rejected itself (see its own reject)")
    return None


RowSink = Callable[[str, list[dict[str, Any]]], None]


def stream_source(src: Source, max_record_bytes: int, emit: RowSink) -> dict[str, Any]:
    """Ingest one source record by record, handing canonical rows (and ``"rejects"`` rows) to ``emit``.

    1. duplicates (``pipeline.seen.SeenRows``); 2. orphans (kind ``rated``); 3. cross-record facts (the accepted
    Stack Exchange answer). Returns the source's metrics; memory holds the id hashes, not the rows.
    """
    prompt_ids, facts = survey_rated(src, max_record_bytes) if src.kind == "rated" else (None, {})
    dups = SeenRows(ID_COLUMNS)
    n_in = accepted = unread = 0
    outputs, skipped, reasons = Counter(), Counter(), Counter()
    empty: list[str] = []
    for rec in read_source(src, max_record_bytes, empty):
        n_in += 1
        if isinstance(rec, Kept):
            clash = dups.admit(rec.where, rec.rows, rec.skipped)
            reason = f"duplicate: {clash}" if clash else (orphan_reason(rec, prompt_ids) if prompt_ids is not None else None)
            if reason is None:
                finish(src.format, rec.rows, facts)
                for table, rows in rec.rows.items():
                    if rows:
                        emit(table, rows)
                        outputs[table] += len(rows)
                skipped.update(rec.skipped)
                accepted += 1
                continue
            rec = reject_row(src.name, rec.n, f"{rec.where}: {reason}", rec.raw)
        records = rec.pop(RECORDS, 1)  # a reject of a Parquet row group not read counts its rows
        n_in, unread = n_in + records - 1, unread + records - 1
        emit("rejects", [rec])
        reasons[reason_key(rec["reason"])] += records
    rejected = n_in - accepted
    for file in empty:
        say(f"ingest: source {src.name!r}: {file} holds no records (an empty file?)")
    return {
        "kind": src.kind,
        "format": src.format,
        "rows_in": n_in,
        "accepted": accepted,
        "rejected": rejected,
        "reject_fraction": round(rejected / n_in, 6) if n_in else 0.0,
        "unread_rows": unread,
        "outputs": {t: outputs[t] for t in TABLES if outputs[t]},
        "skipped": dict(sorted(skipped.items())),
        "top_reasons": top_reasons(reasons),
        "empty_files": empty,
    }


def top_reasons(reasons: Counter) -> list[list[Any]]:
    """The ``TOP_REASONS`` commonest reasons, most frequent first, with personal data and secrets redacted
    (``pipeline.pii``, every kind): a reason quotes the value it rejects (``toxic is 'ann@example.org'``), and
    this summary leaves the machine in details.json and in the failing stage's message (a CI log). Reasons
    alike but for their PII count as one. The rejects table keeps the record as read, for the owner to fix it.

    >>> top_reasons(Counter({"toxic is 'a@example.org'": 1, "toxic is 'b@example.net'": 2}))
    [["toxic is '[REDACTED_EMAIL]'", 3]]
    """
    merged: Counter = Counter()
    items = iter(reasons.items())
    while batch := list(islice(items, REASON_BATCH)):  # each reason is redacted on its own: batches change nothing
        shown, _ = redact(pl.Series([r for r, _ in batch], dtype=pl.String), KINDS)
        for text, (_, n) in zip(shown.to_list(), batch, strict=True):
            merged[text] += n
    return [[r, c] for r, c in sorted(merged.items(), key=lambda x: (-x[1], x[0]))[:TOP_REASONS]]


def without_counters(table: str, rows: pa.Table) -> tuple[pa.Table, Counter]:
    """Rows of ``table`` with ShareGPT's regenerate counter taken off their user turns, and the turns that changed
    per source (``pipeline.regenerate``)."""
    return strip_user_turns(rows, TURNS.get(table, []), "source")


def ingest_source(src: Source, max_record_bytes: int) -> SourceResult:
    """One source ingested in memory, as ``run`` writes it: what ``stream_source`` emits, collected, without
    regenerate counters (for tests and notebooks)."""
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in (*TABLES, "rejects")}
    metrics = stream_source(src, max_record_bytes, lambda table, batch: rows[table].extend(batch))
    counters = Counter()
    for table in TABLES:
        if rows[table]:
            clean, changed = without_counters(table, pa.Table.from_pylist(rows[table], schema=SCHEMAS[table]))
            rows[table] = clean.to_pylist() if changed else rows[table]
            counters.update(changed)
    metrics["regenerate_counters"] = counters[src.name]
    rejects = sorted(rows.pop("rejects"), key=lambda r: r["row"])
    assert metrics["rejected"] == len(rejects) + metrics["unread_rows"], metrics
    return SourceResult(src.name, rows, rejects, metrics)


def reason_key(reason: str) -> str:
    """A reject reason without its location and numbers, so alike reasons count together; digits inside a name
    (UTF-16, ISO-8859-1, sha256) stay, or the summary told users to `iconv -f UTF-N -t UTF-N`.

    >>> reason_key("bad.jsonl:12: invalid JSON: Expecting value at column 3")
    'invalid JSON: Expecting value at column N'
    >>> reason_key("a.csv:1: the file is UTF-16 text, not UTF-8; re-encode it (e.g. `iconv -f UTF-16 -t UTF-8`)")
    'the file is UTF-16 text, not UTF-8; re-encode it (e.g. `iconv -f UTF-16 -t UTF-8`)'
    """
    reason = re.sub(r"^\S*:\d+: ", "", reason)
    return re.sub(r"(?<![\w-])\d+(?![\w-])", "N", reason)


def check_sources_exist(sources: list[Source]) -> None:
    """Fail before any work, naming the params key, when a local source path matches nothing or a file of
    a type no reader knows, or an ``hf://`` set cannot be reached (one request, no retries; skipped offline)."""
    for i, src in enumerate(sources):
        key = f"ingest.sources[{i}].path"
        if src.path.startswith(HF_PREFIX):
            check_hub(src.path, key)
            continue
        try:
            source_files(src.path)
        except SourceError as e:
            raise SourceError(f"{key}: {e}") from None


def over_threshold(metrics: dict[str, dict[str, Any]], max_fraction: float,
                   out_dir: Path = OUT_DIR) -> str | None:
    bad = {name: m for name, m in metrics.items() if m["reject_fraction"] > max_fraction}
    if not bad:
        return None
    # details.json holds the per-source counts and reasons (metrics.json only the two totals)
    lines = [f"ingest: {counted(len(bad), 'source')} rejected more than max_reject_fraction={max_fraction} of their rows "
             f"(see {Path(out_dir) / 'rejects'} and {Path(out_dir) / 'details.json'}):"]
    for name, m in bad.items():
        lines.append(f"  source {name!r}: {m['rejected']} of {counted(m['rows_in'], 'row')} rejected; top reasons:")
        lines += [f"    {count} x {reason}" for reason, count in m["top_reasons"]]
    lines.append("Fix the input or its `format`/`mapping` in params.yaml, or raise ingest.max_reject_fraction.")
    return "\n".join(lines)


# --- stage ---------------------------------------------------------------------------------------


class _Tables:
    """One streaming shard writer per output table; rows arrive in small batches and are flushed in chunks."""

    def __init__(self, out_dir: Path, stack: ExitStack, **sizes: int) -> None:
        self.writers = {t: stack.enter_context(ShardWriter(out_dir / t, name=t, **sizes)) for t in (*TABLES, "rejects")}
        self.pending: dict[str, list[dict[str, Any]]] = {t: [] for t in self.writers}
        self.counters: Counter = Counter()  # user turns that lost a regenerate counter, per source

    def __call__(self, table: str, rows: list[dict[str, Any]]) -> None:
        self.pending[table].extend(rows)
        if len(self.pending[table]) >= CHUNK_ROWS:
            self.flush(table)

    def flush(self, table: str) -> None:
        if self.pending[table]:
            rows, changed = without_counters(table, pa.Table.from_pylist(self.pending[table], schema=SCHEMAS[table]))
            self.writers[table].write(rows)
            self.counters.update(changed)
            self.pending[table] = []


def run(params: Params, out_dir: str | Path = OUT_DIR) -> dict[str, Any]:
    """Ingest every source into ``out_dir``; returns the metrics written to ``details.json``.

    Sources are streamed record by record into one ``ShardWriter`` per table, which spills sorted
    runs past ``execution.spill_bytes``: memory stays bounded by that and the id hashes of one source.
    Every output is staged and swapped in together (``stage_outputs``): if anything fails before the
    end, ``out_dir`` keeps the previous run's tables and metrics, untouched.
    """
    cfg, ex = params.ingest, params.execution
    out_dir = Path(out_dir)
    check_sources_exist(cfg.sources)
    sizes = shard_sizes(ex, spill_bytes=ex.spill_bytes)
    with stage_outputs(out_dir) as staged:
        with ExitStack() as stack:
            tables = _Tables(staged, stack, **sizes)
            per_source = {}
            for i, src in enumerate(cfg.sources):
                try:
                    per_source[src.name] = stream_source(src, cfg.max_record_bytes, tables)
                except SourceError as e:  # unreadable as a whole (an hf:// set not cached offline): name the key
                    raise SourceError(f"ingest.sources[{i}].path: {e}") from None
            # A table depends on the sources that feed it alone; the two guards only quarantine or fail, which
            # rejects/ and metrics.json record. So a guard change, or a change to a source of another table,
            # leaves a table byte-identical and DVC reruns nothing that reads only it.
            for table, writer in tables.writers.items():
                tables.flush(table)
                feeding = cfg.sources if table == "rejects" else [
                    s for s in cfg.sources if per_source[s.name]["outputs"].get(table)]
                writer.fingerprint = fingerprint({"sources": [s.model_dump(mode="json") for s in feeding]})
        for name, m in per_source.items():
            m["regenerate_counters"] = tables.counters[name]  # user turns in the rows written
        metrics = {
            "sources": per_source,
            "totals": {
                "rows_in": sum(m["rows_in"] for m in per_source.values()),
                "accepted": sum(m["accepted"] for m in per_source.values()),
                "rejected": sum(m["rejected"] for m in per_source.values()),
                **{t: sum(m["outputs"].get(t, 0) for m in per_source.values()) for t in TABLES},
                "regenerate_counters": sum(m["regenerate_counters"] for m in per_source.values()),
            },
        }
        t = metrics["totals"]
        write_metrics(staged, {"rows_in": t["rows_in"], "rejected": t["rejected"]}, metrics)
    failure = over_threshold(per_source, cfg.max_reject_fraction, out_dir)
    if failure:
        raise IngestError(failure)
    return metrics


def main(params: Params) -> None:
    metrics = run(params)
    t = metrics["totals"]
    print(f"ingest: {counted(t['rows_in'], 'row')} in, {t['accepted']} accepted, {t['rejected']} rejected -> "
          + ", ".join(f"{k} {t[k]}" for k in TABLES)
          + (f"; ShareGPT's regenerate counter taken off {counted(t['regenerate_counters'], 'user turn')}"
             if t["regenerate_counters"] else ""))
