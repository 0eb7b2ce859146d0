"""Ingest's first step: a source's records read in input order (``pipeline.io.iter_records``), each turned into
canonical rows by its format's adapter (``pipeline.adapters``) and every row validated against its record model;
a record is kept only if all of its rows pass, and a record that fails (or that no rule foresaw) becomes a reject
row naming where it was and why. ``stages.ingest`` takes the kept records on through duplicates, orphans and
cross-record facts.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.adapters import Adapted, BadRecord, Ctx, adapt
from pipeline.config import Source
from pipeline.errors import one_line, printable
from pipeline.io import HF_PREFIX, iter_records
from pipeline.jsontext import preview_of
from pipeline.limits import JSON_FILE_RECORDS, over_limit
from pipeline.readers import glob_folder, is_glob
from pipeline.records import MODELS


@dataclass
class Kept:
    """One adapted, validated record: its canonical rows by table."""

    n: int
    where: str
    raw: str
    rows: dict[str, list[dict[str, Any]]]
    skipped: Counter = field(default_factory=Counter)
    facts: dict[str, set[str]] = field(default_factory=dict)


def _base_dir(path: str) -> Path:
    """The folder a source's file names are reported relative to."""
    p = Path(path)
    if p.is_dir():
        return p
    if is_glob(path):
        return Path(glob_folder(path))
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


RECORDS = "_records"  # the key under which a reject row that stands for several input records says how many


def reject_row(src: str, n: int, reason: str, raw: str, records: int = 1) -> dict[str, Any]:
    """A rejects row; its reason one line whatever a value it quotes holds (a line break in an id). One that stands
    for more than one input record (a Parquet row group not read) says how many under ``RECORDS``, which
    ``stream_source`` counts and takes out before the row is written."""
    row = {"source": src, "row": n, "reason": printable(reason), "raw": raw}
    return row if records == 1 else {**row, RECORDS: records}


def _json_bytes(value: Any) -> int:
    """The size of a record as a UTF-8 JSON line, as a JSON lines reader measures it (not ASCII-escaped, which
    would count a CJK character as 6 bytes and an emoji as 12, rejecting non-Latin text at a fraction of the limit)."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def read_source(src: Source, max_record_bytes: int,
                empty_files: list[str] | None = None) -> Iterator[Kept | dict[str, Any]]:
    """Every record of ``src`` in input order: adapted and validated (``Kept``), or a reject row.

    Files that hold no record are appended to ``empty_files``, relative to the source and escaped like reasons (a
    name that is not UTF-8, ``bad\\udcffname.jsonl``, failed writing details.json; a line break split the warning).
    """
    base = _base_dir(src.path) if not src.path.startswith(HF_PREFIX) else None
    empty: list[str] = []
    n = 0
    files: dict[str, tuple[str, bool]] = {}  # per file, once: its name relative to the source, and JSON lines or not
    for raw in iter_records(src.path, max_record_bytes, empty):
        if src.limit is not None and n >= src.limit:
            break
        n += 1
        if raw.file not in files:  # the reader of a JSON lines file measured the line against max_record_bytes
            files[raw.file] = (os.path.relpath(raw.file, base) if base is not None else raw.file,
                               raw.file.lower().endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")))
        file_rel, is_jsonl = files[raw.file]
        where = f"{file_rel}:{raw.row}"
        preview = raw.raw or (preview_of(raw.value) if raw.value is not None else "")
        try:
            if raw.error is not None:
                raise BadRecord(raw.error)
            if not is_jsonl and _json_bytes(raw.value) > max_record_bytes:
                raise BadRecord(over_limit(max_record_bytes))
            adapted = adapt(raw.value, Ctx.for_source(src, file_rel, raw.row, JSON_FILE_RECORDS * max_record_bytes))
            rows = validate_rows(adapted)
        except BadRecord as e:
            yield reject_row(src.name, n, f"{where}: {e}{raw.hint}", preview, raw.records)
            continue
        except Exception as e:
            # A shape no adapter rule foresaw: quarantine it rather than stop the whole stage.
            yield reject_row(src.name, n, f"{where}: unexpected record shape ({one_line(e, 200)})",
                             preview)
            continue
        yield Kept(n, where, preview, rows, adapted.skipped, adapted.facts)
    if empty_files is not None:
        empty_files += [printable(os.path.relpath(f, base) if base is not None else f) for f in empty]
