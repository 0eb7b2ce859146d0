"""Write and read shard sets (reading sources lives in ``pipeline.readers``, re-exported here).

Writing produces a deterministic shard set::

    data/ingest/conversations/
        part-00000-of-00002.parquet
        part-00001-of-00002.parquet
        _manifest.json      rows, sha256 per file, schema, params fingerprint, package version, FORMAT

Rows are sorted by the table's id columns, files are zstd Parquet with byte-sized row groups, and
the whole folder is written next to its destination and renamed into place, so a reader never sees
half a shard set and identical inputs give byte-identical files. ``ShardWriter`` builds a shard set
from a stream of tables in bounded memory (sorted runs spilled to disk, then merged); ``write_shards``
is the same writer given one table, so both paths give the same bytes (the runs' merge is
``pipeline.runmerge``). Publishing a folder by rename and the other atomic file helpers are ``pipeline.files``.

Every manifest records ``FORMAT``, and ``read_manifest`` refuses a set of another format in one line: a set an
older prefpipe wrote (before an upgrade) or a newer one (a downgrade) is rebuilt, never read as current.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import SourceError, StageError, unreadable_parquet  # noqa: F401  (re-exported: stages import them from here)
from pipeline.files import file_sha256, package_version, replace_dir
from pipeline.readers import HF_PREFIX, RawRow, expand_paths, iter_records  # noqa: F401  (re-exported)
from pipeline.records import ID_COLUMNS, SCHEMAS, SchemaError, check_table, row_bits
from pipeline.runmerge import merge_sorted_runs

MANIFEST = "_manifest.json"
# What the outputs of this prefpipe hold. Bump it when what a stage writes changes in a way that a reader depends
# on (a column, a lineage key such as ``written_by``, a manifest key): every set written before is then refused by
# name (``read_manifest``) instead of read as current. Every stage lists this file among its deps in dvc.yaml, so
# a bump makes `dvc repro` rebuild them all. 1: the first format recorded (sets without one are older).
FORMAT = 1


# --- shard sets ----------------------------------------------------------------------------------


PARQUET_OPTIONS = {"compression": "zstd", "use_dictionary": True, "write_statistics": True, "store_schema": True}


def write_parquet(table: pa.Table, path: Path, row_group_bytes: int = 100 << 20) -> None:
    """One Parquet file with the shard options (row groups of about ``row_group_bytes``)."""
    per_row = max(1, table.nbytes // max(1, table.num_rows))
    pq.write_table(table, path, row_group_size=max(1, min(table.num_rows, row_group_bytes // per_row)),
                   **PARQUET_OPTIONS)


def shard_sizes(execution: Any, **extra: Any) -> dict[str, Any]:
    """The ``execution`` section's shard sizes as ``ShardWriter`` / ``write_shards`` keyword arguments, plus
    ``extra`` (``fingerprint=...``, ``spill_bytes=...``).

    >>> shard_sizes(type("Ex", (), {"target_shard_bytes": 64, "row_group_bytes": 8})(), fingerprint="f")
    {'target_shard_bytes': 64, 'row_group_bytes': 8, 'fingerprint': 'f'}
    """
    return {"target_shard_bytes": execution.target_shard_bytes, "row_group_bytes": execution.row_group_bytes,
            **extra}


def write_shards(table: pa.Table, out_dir: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Write ``table`` as a deterministic shard set and publish it atomically. Returns the manifest.

    ``name`` is a contract in ``records.SCHEMAS``: the table is checked against it and sorted by
    its id columns. Shard count follows the table's in-memory size (``target_shard_bytes``).
    Keyword arguments are those of ``ShardWriter``.
    """
    with ShardWriter(out_dir, **kwargs) as writer:
        writer.write(table)
    return writer.manifest


class ShardWriter:
    """A shard set written from a stream of tables, in bounded memory, published atomically on close.

    Tables given to ``write`` are checked against the ``name`` contract and buffered; whenever the
    buffer passes ``spill_bytes`` it is sorted by id and spilled to a temporary run file. ``close``
    merges the sorted runs (a batched k-way merge that holds a slice of each run) into
    ``part-i-of-n.parquet`` files and the manifest. The bytes written do not depend on
    ``spill_bytes``: spilled or not, the output equals a stable sort of everything written, cut into
    the same shards and row groups, so DVC sees no change when only memory settings change.

        >>> with ShardWriter(out, name="documents", fingerprint=fp) as w:   # doctest: +SKIP
        ...     for batch in batches:
        ...         w.write(batch)
    """

    def __init__(self, out_dir: str | Path, *, name: str | None = None, fingerprint: str = "",
                 target_shard_bytes: int = 256 << 20, row_group_bytes: int = 100 << 20, prefix: str = "part",
                 sort: bool = True, extra: dict[str, Any] | None = None, spill_bytes: int = 64 << 20,
                 order_column: str | None = None, row_group_rows: int | None = None,
                 write_manifest: bool = True) -> None:
        """``order_column``: an integer column, not part of the contract, that rows are sorted by instead
        of their ids and that is left out of the files. ``row_group_rows`` caps rows per row group.
        ``write_manifest=False`` leaves ``_manifest.json`` out of the folder (the caller records it)."""
        self.out_dir = Path(out_dir)
        self.name, self.fingerprint, self.prefix, self.extra = name, fingerprint, prefix, extra
        self.target_shard_bytes, self.row_group_bytes, self.spill_bytes = target_shard_bytes, row_group_bytes, spill_bytes
        self.order_column, self.row_group_rows, self.write_manifest = order_column, row_group_rows, write_manifest
        self.keys = [k for k in ID_COLUMNS.get(name, [])] if (name is not None and sort) else []
        if order_column is not None:
            self.keys = [order_column]
        self.schema: pa.Schema | None = SCHEMAS[name] if name is not None else None
        self.rows = self.nbytes = self._bits = 0
        self.manifest: dict[str, Any] | None = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._runs: list[Path] = []
        self._tmp: Path | None = None

    # -- input --

    def write(self, table: pa.Table) -> None:
        if self.manifest is not None:
            raise RuntimeError(f"{self.out_dir}: shard set already closed")
        order = None
        if self.order_column is not None:
            order = table.column(self.order_column).cast(pa.int64())
            table = table.drop_columns([self.order_column])
        if self.name is not None:
            table = check_table(table, self.name)
        elif self.schema is None:
            self.schema = table.schema
        if not table.num_rows:
            return
        self.rows += table.num_rows
        self._bits += row_bits(table)  # of the rows as written (the order column is not), whatever the pieces
        self.nbytes = -(-self._bits // 8)
        if order is not None:
            table = table.append_column(self.order_column, order)
        self._buffer.append(table)
        self._buffered += table.nbytes
        if self._buffered >= self.spill_bytes:
            self._spill()

    def _workdir(self) -> Path:
        if self._tmp is None:
            self.out_dir.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = self.out_dir.parent / f".{self.out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
            (self._tmp / "_runs").mkdir(parents=True)
        return self._tmp

    def _sorted_buffer(self) -> pa.Table:
        table = pa.concat_tables(self._buffer) if self._buffer else self._empty()
        self._buffer, self._buffered = [], 0
        if self.keys and table.num_rows:
            table = table.take(pc.sort_indices(table, sort_keys=[(k, "ascending") for k in self.keys]))
        return table

    def _empty(self) -> pa.Table:
        table = self.schema.empty_table()
        if self.order_column is not None:
            table = table.append_column(self.order_column, pa.array([], pa.int64()))
        return table

    def _spill(self) -> None:
        run = self._sorted_buffer()
        path = self._workdir() / "_runs" / f"run-{len(self._runs):05d}.parquet"
        # Small row groups: the merge holds one decoded group per run, so this bounds its read buffers.
        per_row = max(1, run.nbytes // max(1, run.num_rows))
        group = max(64 << 10, self.spill_bytes // 64)
        pq.write_table(run, path, compression="lz4", row_group_size=max(1, group // per_row))
        self._runs.append(path)

    def _sorted_chunks(self) -> Iterator[pa.Table]:
        if not self._runs:
            yield self._sorted_buffer()
            return
        if self._buffer:
            self._spill()
        if not self.keys:
            for path in self._runs:
                yield from (pa.Table.from_batches([b]) for b in pq.ParquetFile(path).iter_batches(batch_size=65_536))
            return
        per_row = max(1, self.nbytes // max(1, self.rows))
        batch_rows = max(64, self.spill_bytes // per_row // len(self._runs))
        yield from merge_sorted_runs(self._runs, self.keys, batch_rows)

    # -- output --

    def close(self) -> dict[str, Any]:
        """Write the shards and manifest, rename them into place, and return the manifest."""
        if self.manifest is not None:
            return self.manifest
        if self.schema is None:
            raise ValueError(f"{self.out_dir}: no rows and no contract name, so the schema is unknown")
        tmp = self._workdir()
        try:
            n_shards = max(1, -(-self.nbytes // self.target_shard_bytes)) if self.rows else 1
            n_shards = min(n_shards, max(1, self.rows))
            per_row = max(1, self.nbytes // max(1, self.rows))
            group_rows = max(1, min(max(1, self.rows), self.row_group_bytes // per_row, self.row_group_rows or self.rows))
            bounds = [round(i * self.rows / n_shards) for i in range(n_shards + 1)]
            names = [f"{self.prefix}-{i:05d}-of-{n_shards:05d}.parquet" for i in range(n_shards)]
            chunks = self._sorted_chunks()
            if self.order_column is not None:
                chunks = (c.drop_columns([self.order_column]) for c in chunks)
            groups = _regroup(chunks, bounds, group_rows)
            files = [_write_shard(tmp / fname, self.schema, groups, bounds[i + 1] - bounds[i], group_rows)
                     for i, fname in enumerate(names)]
            shutil.rmtree(tmp / "_runs")
            self.manifest = {
                "table": self.name,
                "rows": self.rows,
                "files": [{"path": fname, **f} for fname, f in zip(names, files, strict=True)],
                "schema": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in self.schema],
                "fingerprint": self.fingerprint,
                "prefpipe_version": package_version(),
                "format": FORMAT,
                **(self.extra or {}),
            }
            if self.write_manifest:
                (tmp / MANIFEST).write_text(json.dumps(self.manifest, indent=2, sort_keys=True) + "\n")
            replace_dir(tmp, self.out_dir)
        except BaseException:
            self.abort()
            raise
        return self.manifest

    def abort(self) -> None:
        """Drop everything written so far; the previous shard set, if any, stays in place."""
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._buffer, self._runs = [], []

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _regroup(chunks: Iterator[pa.Table], bounds: list[int], group_rows: int) -> Iterator[pa.Table]:
    """Re-cut a stream of tables into row groups of ``group_rows`` that never straddle a shard bound."""
    cuts = sorted({*bounds, *(b for lo, hi in zip(bounds, bounds[1:], strict=False) for b in range(lo, hi, group_rows))})
    pending: list[pa.Table] = []
    have, done, i = 0, 0, 1
    for chunk in chunks:
        pending.append(chunk)
        have += chunk.num_rows
        while i < len(cuts) and done + have >= cuts[i]:
            table = pa.concat_tables(pending)
            n = cuts[i] - done
            yield table.slice(0, n)
            rest = table.slice(n)
            pending, have, done, i = [rest], rest.num_rows, cuts[i], i + 1


def _write_shard(path: Path, schema: pa.Schema, groups: Iterator[pa.Table], rows: int, group_rows: int) -> dict:
    written = 0
    with pq.ParquetWriter(path, schema, **PARQUET_OPTIONS) as w:
        if rows == 0:
            w.write_table(schema.empty_table(), row_group_size=1)
        while written < rows:
            group = next(groups)
            w.write_table(group.combine_chunks(), row_group_size=group_rows)
            written += group.num_rows
    return {"rows": rows, "sha256": file_sha256(path)}


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The shard set's manifest, None when it has none; SourceError naming it when it is not one (a copy or a
    write cut short, a hand edit): every reader of the set would fail on it with a traceback; and when another
    version of prefpipe wrote it (its format is not ``FORMAT``: ``_current``)."""
    m = Path(path) / MANIFEST
    if not m.exists():
        return None
    try:
        manifest = json.loads(m.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        why = f"not valid JSON ({e})"
    else:
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if isinstance(files, list) and all(isinstance(f, dict) and isinstance(f.get("path"), str) for f in files):
            return _current(manifest, m)
        why = "not a shard set manifest (no list of files)"
    raise SourceError(f"{m}: {why}; it was cut short or edited: run the stage that writes this folder again "
                      "(`dvc repro`)")


def _current(manifest: dict[str, Any], where: Path) -> dict[str, Any]:
    """``manifest`` (at ``where``) when this prefpipe wrote its format (``FORMAT``); else SourceError saying who
    wrote it and what to do: outputs of another version may lack what this one's readers rely on (a lineage key,
    a column) and must not be read as current."""
    got = manifest.get("format")
    if type(got) is int and got == FORMAT:  # not ``true``, which equals 1
        return manifest
    version = manifest.get("prefpipe_version", "unknown")
    if type(got) is int and got > FORMAT:
        raise SourceError(f"{where}: written by a newer prefpipe ({version}, output format {got}; this one reads "
                          f"format {FORMAT}): upgrade prefpipe (in its checkout: `git pull`, then `pip install -e .`), "
                          "or rebuild it with this version (`dvc repro`; without DVC, `prefpipe run` the stage that "
                          "writes it)")
    which = f"format {got!r}" if got is not None else "no output format recorded"
    raise SourceError(f"{where}: written by an older prefpipe ({version}, {which}; this one writes format {FORMAT}) "
                      "and may lack what this one reads: rebuild it with this version (`dvc repro`; without DVC, "
                      "`prefpipe run` the stage that writes it)")


def shard_files(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    manifest = read_manifest(path)
    if manifest is not None:
        return [path / f["path"] for f in manifest["files"]]
    return sorted(path.glob("*.parquet"))


def _must_exist(path: Path, key: str | None = None) -> None:
    """An absent input shard set is an error that says what to do, never an empty input; ``key``: the params
    key that named the path, so a misspelt path is found where it is written."""
    if not path.exists():
        where = f"{key}: " if key else ""
        fix = f", or correct {key} in params.yaml" if key else ""
        raise SourceError(f"{where}{path}: not found; run the stage that writes it first (`dvc repro`){fix}")


def _no_shards(path: Path, key: str | None = None) -> SourceError:
    """The error for a folder with neither shards nor a manifest: a write that never happened, or (Curry-DPO's
    ``level=N`` folders) a tree of shard sets, not one; ``key`` as in ``_must_exist``."""
    where = f"{key}: " if key else ""
    fix = f", or correct {key} in params.yaml" if key else ""
    subsets = sorted(d.name for d in path.glob("*/") if (d / MANIFEST).is_file()) if path.is_dir() else []
    if subsets:
        return SourceError(f"{where}{path}: holds shard sets in sub-folders ({', '.join(subsets)}), not one of its "
                           f"own: read one of them{fix}")
    return SourceError(f"{where}{path}: holds no Parquet shards and no {MANIFEST}; run the stage that writes "
                       f"it (`dvc repro`){fix}")


def read_table(path: str | Path, name: str | None = None, columns: list[str] | None = None,
               key: str | None = None) -> pa.Table:
    """Read a shard set (or a single Parquet file) into one table; an absent folder is an error that says
    which stage makes it (and names the params ``key`` the path came from, when given)."""
    path = Path(path)
    _must_exist(path, key)
    where = f"{key}: " if key else ""
    files = shard_files(path)
    if not files:  # an empty shard set still has its manifest; a bare folder is a write that never happened
        if name is not None and path.is_dir() and read_manifest(path) is not None:
            return SCHEMAS[name].empty_table()
        raise _no_shards(path, key)
    tables = []
    for f in files:  # the file that cannot be read is named, not only its folder
        try:
            tables.append(pq.read_table(f, columns=columns))
        except (pa.ArrowException, OSError) as e:
            raise SourceError(where + unreadable_parquet(f, e, f"run the stage that writes {path} again "
                                                            "(`dvc repro`)")) from None
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if name is not None and columns is None:
        try:
            table = check_table(table, name)
        except SchemaError as e:  # a params key names the wrong folder: one line, not a traceback
            named_by = key or "the params key that names it"
            raise SourceError(f"{where}{path}: not a {name} shard set ({e}); point {named_by} at a folder of "
                              f"{name} (e.g. data/ingest/{name})") from None
    return table


def iter_batches(path: str | Path, batch_size: int = 65_536, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Stream a shard set batch by batch (bounded memory); an absent folder is an error (``read_table``)."""
    _must_exist(Path(path))
    files = shard_files(path)
    if not files and read_manifest(path) is None:
        raise _no_shards(Path(path))
    for f in files:
        try:  # a shard a copy or a write left out or cut short: one line, as read_table says it
            yield from pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=columns)
        except (pa.ArrowException, OSError) as e:
            raise SourceError(unreadable_parquet(f, e, f"run the stage that writes {path} again (`dvc repro`)")) from None


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
        elif file_sha256(fp) != f["sha256"]:
            problems.append(f"{fp}: sha256 differs from the manifest")
        elif pq.ParquetFile(fp).metadata.num_rows != f["rows"]:
            problems.append(f"{fp}: row count differs from the manifest")
    return problems
