"""Read sources record by record: every record comes back as a value or as the reason it is unusable.

Reading yields raw records with their row numbers, so a bad row can be quarantined by position
instead of crashing the stage.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io as _io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline.errors import SourceError

HF_PREFIX = "hf://"


@dataclass(frozen=True)
class RawRow:
    """One input record, or the reason it could not be parsed."""

    file: str
    row: int  # 1-based line/record number within ``file``
    value: Any = None
    error: str | None = None
    raw: str = ""


# --- readers -------------------------------------------------------------------------------------


def expand_paths(path: str) -> list[Path]:
    """A file, a folder (all data files below it, sorted) or a glob."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(("_", ".")))
    elif any(ch in path for ch in "*?["):
        files = sorted(Path(f) for f in glob.glob(path, recursive=True) if Path(f).is_file())
    else:
        files = [p] if p.exists() else []
    if not files:
        raise SourceError(f"{path}: no such file, folder or matching glob (paths are relative to the project root)")
    return files


def _open_text(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _suffix(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return suffixes[-1].lower() if suffixes else ""


def _lines(f, limit: int | None) -> Iterator[tuple[bytes, int]]:
    """(line, its length) for every b"\\n"-terminated line of ``f``, newline removed.

    A line longer than ``limit`` is never held whole: its first ``limit + 1`` bytes come back with
    the full length, and the rest is skipped in 1 MiB steps.
    """
    while True:
        line = f.readline(limit + 1) if limit else f.readline()
        if not line:
            return
        if line.endswith(b"\n"):
            yield line[:-1], len(line) - 1
            continue
        n = len(line)
        while limit:  # an over-long line (or the file's last line, which has no newline)
            more = f.readline(1 << 20)
            if not more:
                break
            if more.endswith(b"\n"):
                n += len(more) - 1
                break
            n += len(more)
        yield line, n


def iter_jsonl(path: Path, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """JSON lines split on b"\\n" only (U+2028 inside strings is content, not a line break).

    Streams the file: memory holds one line at a time, and never more than ``max_record_bytes`` of it.
    """
    with _open_binary(path) as f:
        for i, (line, size) in enumerate(_lines(f, max_record_bytes), start=1):
            if not line.strip():
                continue
            preview = line[:500].decode("utf-8", errors="replace")
            if max_record_bytes and size > max_record_bytes:
                yield RawRow(str(path), i, error=f"record is {size} bytes, over max_record_bytes={max_record_bytes}",
                             raw=preview)
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield RawRow(str(path), i, error=f"invalid UTF-8 at byte {e.start}", raw=preview)
                continue
            try:
                yield RawRow(str(path), i, value=json.loads(text), raw=preview)
            except json.JSONDecodeError as e:
                yield RawRow(str(path), i, error=f"invalid JSON: {e.msg} at column {e.colno}", raw=preview)


def iter_json(path: Path, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """A JSON array (or {"data": [...]}) of records; falls back to JSON lines (files named .json often are)."""
    data = _open_text(path)
    try:
        value = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        yield from iter_jsonl(path, max_record_bytes)
        return
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
    if not isinstance(value, list):
        value = [value]
    for i, rec in enumerate(value, start=1):
        yield RawRow(str(path), i, value=rec, raw=json.dumps(rec, ensure_ascii=False)[:500])


def iter_csv(path: Path, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """CSV with a header row, streamed record by record (quoted fields may span lines)."""
    with _open_binary(path) as raw, _io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="") as f:
        for i, rec in enumerate(csv.DictReader(f), start=1):
            yield RawRow(str(path), i, value=dict(rec), raw=json.dumps(rec, ensure_ascii=False)[:500])


def iter_parquet(path: Path, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    i = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
        for rec in batch.to_pylist():
            i += 1
            yield RawRow(str(path), i, value=rec, raw="")


def iter_xml_rows(path: Path, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """``<row .../>`` elements (Stack Exchange dumps) as attribute dicts; parsed as data, no entities."""
    import xml.etree.ElementTree as ET

    i = 0
    try:
        for _event, elem in ET.iterparse(str(path), events=("end",)):
            if elem.tag == "row":
                i += 1
                yield RawRow(str(path), i, value=dict(elem.attrib), raw="")
                elem.clear()
    except ET.ParseError as e:
        yield RawRow(str(path), i + 1, error=f"invalid XML: {e}", raw="")


READERS = {
    ".jsonl": iter_jsonl,
    ".ndjson": iter_jsonl,
    ".json": iter_json,
    ".csv": iter_csv,
    ".parquet": iter_parquet,
    ".xml": iter_xml_rows,
}


def iter_hub(dataset_id: str, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """``hf://org/name[:split]`` (or ``hf://org/name/config:split``) through ``datasets.load_dataset``.

    Honours HF_HUB_OFFLINE and the local cache; streaming keeps memory bounded.
    """
    import datasets

    spec = dataset_id[len(HF_PREFIX):]
    spec, _, split = spec.partition(":")
    parts = spec.split("/")
    name, config = "/".join(parts[:2]), ("/".join(parts[2:]) or None)
    try:
        ds = datasets.load_dataset(name, config, split=split or "train", streaming=True)
    except Exception as e:  # network, auth, missing dataset: all surface as one readable error
        raise SourceError(
            f"{dataset_id}: could not load from the Hugging Face Hub ({type(e).__name__}: {e}). "
            "Check the id and split, your network, and `huggingface-cli login` for gated sets; "
            "or download it and point `path` at the local files."
        ) from e
    for i, rec in enumerate(ds, start=1):
        yield RawRow(dataset_id, i, value=rec, raw="")


def iter_records(path: str, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """Every record of a source, in a deterministic order, with its file and row number."""
    if path.startswith(HF_PREFIX):
        yield from iter_hub(path, max_record_bytes)
        return
    for file in expand_paths(path):
        reader = READERS.get(_suffix(file))
        if reader is None:
            raise SourceError(f"{file}: unknown file type {_suffix(file)!r}; expected one of {sorted(READERS)} (optionally .gz)")
        yield from reader(file, max_record_bytes)
