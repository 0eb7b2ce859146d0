"""Read sources, write shard sets.

Reading yields raw records with their row numbers, so a bad row can be quarantined by position
instead of crashing the stage. Writing produces a deterministic shard set::

    data/ingest/conversations/
        part-00000-of-00002.parquet
        part-00001-of-00002.parquet
        _manifest.json      rows, sha256 per file, schema, params fingerprint, package version

Rows are sorted by the table's id columns, files are zstd Parquet with byte-sized row groups, and
the whole folder is written next to its destination and renamed into place, so a reader never sees
half a shard set and identical inputs give byte-identical files.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io as _io
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.records import ID_COLUMNS, SCHEMAS, check_table

MANIFEST = "_manifest.json"
HF_PREFIX = "hf://"


class SourceError(ValueError):
    """A source cannot be read at all (missing file, unknown format); names the path and what to do."""


class StageError(RuntimeError):
    """A stage cannot finish (e.g. too many rejected rows); the message says where and what to do."""


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


def _suffix(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return suffixes[-1].lower() if suffixes else ""


def iter_jsonl(path: Path, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """JSON lines split on b"\\n" only (U+2028 inside strings is content, not a line break)."""
    data = _open_text(path)
    for i, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        preview = line[:500].decode("utf-8", errors="replace")
        if max_record_bytes and len(line) > max_record_bytes:
            yield RawRow(str(path), i, error=f"record is {len(line)} bytes, over max_record_bytes={max_record_bytes}", raw=preview)
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
    text = _open_text(path).decode("utf-8", errors="replace")
    for i, rec in enumerate(csv.DictReader(_io.StringIO(text, newline="")), start=1):
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


# --- shard sets ----------------------------------------------------------------------------------


def sort_by_id(table: pa.Table, name: str) -> pa.Table:
    keys = [k for k in ID_COLUMNS.get(name, []) if k in table.column_names]
    if not keys or table.num_rows == 0:
        return table
    return table.take(pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys]))


def _rows_per_group(table: pa.Table, target_bytes: int) -> int:
    if table.num_rows == 0:
        return 1
    per_row = max(1, table.nbytes // table.num_rows)
    return max(1, min(table.num_rows, target_bytes // per_row))


def _file_sha256(path: Path) -> str:
    h = sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("prefpipe")
    except Exception:
        return "0+unknown"


def write_parquet(table: pa.Table, path: Path, row_group_bytes: int = 100 << 20) -> None:
    pq.write_table(
        table,
        path,
        compression="zstd",
        row_group_size=_rows_per_group(table, row_group_bytes),
        use_dictionary=True,
        write_statistics=True,
        store_schema=True,
    )


def write_shards(
    table: pa.Table,
    out_dir: str | Path,
    *,
    name: str | None = None,
    fingerprint: str = "",
    target_shard_bytes: int = 256 << 20,
    row_group_bytes: int = 100 << 20,
    prefix: str = "part",
    sort: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``table`` as a deterministic shard set and publish it atomically. Returns the manifest.

    ``name`` is a contract in ``records.SCHEMAS``: the table is checked against it and sorted by
    its id columns. Shard count follows the table's in-memory size (``target_shard_bytes``).
    """
    out_dir = Path(out_dir)
    if name is not None:
        table = check_table(table, name)
        if sort:
            table = sort_by_id(table, name)
    n_shards = max(1, -(-table.nbytes // target_shard_bytes)) if table.num_rows else 1
    n_shards = min(n_shards, max(1, table.num_rows))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        files = []
        bounds = [round(i * table.num_rows / n_shards) for i in range(n_shards + 1)]
        for i in range(n_shards):
            fname = f"{prefix}-{i:05d}-of-{n_shards:05d}.parquet"
            part = table.slice(bounds[i], bounds[i + 1] - bounds[i])
            write_parquet(part, tmp / fname, row_group_bytes)
            files.append({"path": fname, "rows": part.num_rows, "sha256": _file_sha256(tmp / fname)})
        manifest = {
            "table": name,
            "rows": table.num_rows,
            "files": files,
            "schema": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in table.schema],
            "fingerprint": fingerprint,
            "prefpipe_version": package_version(),
            **(extra or {}),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, replacing it; the old folder is renamed away first, then removed."""
    old = None
    if dst.exists():
        old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(dst, old)
    os.rename(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json_atomic(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    m = Path(path) / MANIFEST
    return json.loads(m.read_text()) if m.exists() else None


def shard_files(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    manifest = read_manifest(path)
    if manifest is not None:
        return [path / f["path"] for f in manifest["files"]]
    return sorted(path.glob("*.parquet"))


def read_table(path: str | Path, name: str | None = None, columns: list[str] | None = None) -> pa.Table:
    """Read a shard set (or a single Parquet file) into one table; an absent folder is an error that says which stage makes it."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: not found; run the stage that writes it first (`dvc repro`)")
    files = shard_files(path)
    if not files:
        if name is not None:
            return SCHEMAS[name].empty_table()
        raise SourceError(f"{path}: holds no Parquet shards")
    tables = [pq.read_table(f, columns=columns) for f in files]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if name is not None and columns is None:
        table = check_table(table, name)
    return table


def iter_batches(path: str | Path, batch_size: int = 65_536, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Stream a shard set batch by batch (bounded memory)."""
    for f in shard_files(path):
        yield from pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=columns)


def verify_shards(path: str | Path) -> list[str]:
    """Problems found comparing a shard set to its manifest (empty list = intact)."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        return [f"{path}: no {MANIFEST}"]
    problems = []
    for f in manifest["files"]:
        fp = path / f["path"]
        if not fp.exists():
            problems.append(f"{fp}: missing")
        elif _file_sha256(fp) != f["sha256"]:
            problems.append(f"{fp}: sha256 differs from the manifest")
        elif pq.ParquetFile(fp).metadata.num_rows != f["rows"]:
            problems.append(f"{fp}: row count differs from the manifest")
    return problems
