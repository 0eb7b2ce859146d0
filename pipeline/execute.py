"""Apply a batch function to a table: in-process (`local`) or on a Ray cluster (`ray`).

A step is a plain top-level function over an Arrow table::

    def score(batch: pa.Table) -> pa.Table: ...                  # CPU step: Ray tasks
    def judge(batch: pa.Table, engine: Engine) -> pa.Table: ...  # engine step: one Ray actor pool

    out = map_batches(table, judge, execution=params.execution, engine=judge_cfg,
                      checkpoint=Checkpoint(".prefpipe/checkpoints/pugc/judge", fingerprint=fp))

Batches are cut at fixed rows (every ``batch_size`` rows from row 0) on both backends, and results
come back in input order, so outputs are byte-identical whatever the backend, the number of replicas
or the resume point. Engine steps get one engine per process (local) or one per actor replica (ray:
``replicas`` actors, each with ``gpus_per_replica`` GPUs, built once for the whole step; every block
of rows streams through the same actors). Inside ``engine_pools()`` (``prefpipe run`` opens one per
stage) the pool outlives its step: the next engine step with the identical engine config reuses its
actors (each replica still loads its model once), a step with another config replaces it, and the
block's end releases it. Ray tasks carry blocks of whole batches that grow until one holds about
``TASK_SECONDS`` of work (capped at ``checkpoint_rows`` and at half of each worker's share of the rows),
so a fast step is not drowned in per-task overhead and a slow model still reports back batch by batch;
a block's outputs come back as one Arrow buffer.

With a checkpoint, the driver writes finished results as they arrive: a file per run of consecutive
batches, once it covers ``execution.checkpoint_rows`` input rows or ``FLUSH_SECONDS`` have passed,
whichever comes first. A killed run resumes with the batches no file covers; a file whose rows or
fingerprint no longer match is cleared (the fingerprint covers the caller's params, the step function,
its keyword arguments, the engine config, its weights' identity, the code and the versions of the libraries
that compute results: ``step_fingerprint``; other weights, code or libraries than the files were written with,
as ``computed_with.json`` records them, are said in one warning), and so is one that cannot be read back whole (cut
short, or a page whose CRC fails): a warning names it and its rows are computed again.

This module is the driver, the local backend and the checkpoints; the Ray backend (``ray_init``,
``engine_pools``, ``stream_ray``) is ``pipeline.execute_ray``, and what both share (``Step``, ``Block``)
is ``pipeline.execute_step``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from pydantic import BaseModel

from pipeline.config import LLM, PLACEMENT_KEYS, Execution, fingerprint
from pipeline.errors import EngineError, ModelLoadError, StageError
from pipeline.execute_ray import stream_ray
from pipeline.execute_step import Block, Step, concat_outputs, to_ipc
from pipeline.files import left_out, write_json_atomic
from pipeline.llm.identity import model_identity, pinned, record_ref

log = logging.getLogger(__name__)

CHECKPOINT_ROOT = Path(".prefpipe/checkpoints")
FLUSH_SECONDS = 60.0  # a checkpoint file is written at least this often while results arrive


@dataclass(frozen=True)
class Checkpoint:
    """Where a step keeps its finished results, and the fingerprint (params + step) they must match."""

    dir: Path | str
    fingerprint: str

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def step_checkpoint(root: Path | str, step: str, *parts: Any) -> Checkpoint:
    """The checkpoint of model step ``step`` under ``root``: folder ``root/step``, fingerprint of the
    parameter sections ``parts`` and the step's name (``pipeline.config.fingerprint``)."""
    return Checkpoint(Path(root) / step, fingerprint(*parts, {"step": step}))


def clear_checkpoints(stage: str) -> None:
    """Remove every step checkpoint of ``stage`` (``CHECKPOINT_ROOT/<stage>``). A stage calls it right after
    it commits its outputs, whatever runs it: a run that fails or is killed before then resumes from them."""
    shutil.rmtree(CHECKPOINT_ROOT / stage, ignore_errors=True)


# --- the local backend: blocks of results, in input order -----------------------------------------


def _stream_local(table, spans, step: Callable[[], Step], batch_size: int) -> Iterator[Block]:
    call = step()
    for start, end in spans:
        for lo in range(start, end, batch_size):
            hi = min(end, lo + batch_size)
            yield lo, hi, [call(table.slice(lo, hi - lo))]


# --- checkpoints -----------------------------------------------------------------------------------

_NAME = re.compile(r"chunk-(\d{12})-(\d{12})-([0-9a-f]{16})\.parquet")


def _rows_hash(table: pa.Table, start: int, end: int, step_fp: str) -> str:
    """Fingerprint of input rows [start, end) under ``step_fp`` (independent of the table's chunking)."""
    h = xxhash.xxh3_64(step_fp.encode())
    h.update(f"{start}:{end}".encode())
    h.update(memoryview(to_ipc(table.slice(start, end - start).combine_chunks())))
    return h.hexdigest()


@functools.cache
def _code_version(*dirs: Path) -> str:
    """Hash of every file under ``dirs`` (modules, prompt templates, probe sets; not ``__pycache__``)."""
    h = xxhash.xxh3_64()
    for d in dirs:
        for path in sorted(d.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                h.update(f"{path.relative_to(d)}\0".encode())
                h.update(path.read_bytes())
    return h.hexdigest()


# The distributions whose versions can change a step's results (model numerics, structured decoding, hashing,
# vector search, the tables a step computes on): a resume after one is upgraded starts the step over instead
# of mixing rows computed before the upgrade with rows computed after it.
RESULT_LIBRARIES = ("torch", "transformers", "tokenizers", "vllm", "xgrammar", "gguf", "numpy", "scipy",
                    "faiss-cpu", "rensa", "polars", "pyarrow")
# Counted by release series (major.minor): their patch releases fix bugs and keep what a step computes with them,
# and polars ships them often, so a job that reinstalls its environment before resuming would otherwise redo hours
# of model calls. The model libraries count by full version: a vllm, torch or tokenizers patch release can move
# scores or token ids.
SERIES_ONLY = frozenset({"numpy", "scipy", "faiss-cpu", "polars", "pyarrow"})


@functools.cache
def _library_versions() -> dict[str, str | None]:
    """{distribution: installed version (``SERIES_ONLY``: its major.minor), None when absent} of
    ``RESULT_LIBRARIES``."""
    versions: dict[str, str | None] = {}
    for name in RESULT_LIBRARIES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
            continue
        versions[name] = ".".join(version.split(".")[:2]) if name in SERIES_ONLY else version
    return versions


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"a checkpointed step's keyword argument of type {type(value).__name__} cannot be "
                    "fingerprinted; pass str, numbers, lists, dicts or pydantic models")


def step_code(fn: Callable[..., Any]) -> str:
    """The hash of the code of the step ``fn``: every file of its package and of ``pipeline/`` (``_code_version``)."""
    module = sys.modules.get(getattr(getattr(fn, "func", fn), "__module__", ""))  # functools.partial: its func
    dirs = [Path(__file__).resolve().parent]
    if module is not None and getattr(module, "__file__", None):
        dirs.append(Path(module.__file__).resolve().parent)
    return _code_version(*sorted(set(dirs)))


def step_fingerprint(ck: Checkpoint, fn: Callable[..., Any], fn_kwargs: dict[str, Any], engine: LLM | None,
                     identity: str | None) -> str:
    """What a checkpoint file must have been computed with to be reused: the caller's fingerprint (params),
    the step's keyword arguments (prompt templates, settings), the engine config and ``identity``, its
    weights' (``model_identity``: a folder re-trained in place keeps its name), the code of the step's
    package and of ``pipeline/`` (modules, templates and probes: rows computed before an edit of them, or an
    upgrade of prefpipe, must not be mixed with rows computed after it: ``step_code``) and the versions of
    ``RESULT_LIBRARIES`` (an upgraded torch or vllm moves model scores)."""
    # Less the placement keys (a rerun on a resized cluster keeps its files) and, with no revision, that key
    # (the fingerprints checkpoints had before it existed).
    config = engine.model_dump(mode="json", exclude=PLACEMENT_KEYS | ({"revision"} if engine.revision is None else set())) \
        if engine is not None else None
    payload = [ck.fingerprint, fn_kwargs, config, step_code(fn), _library_versions()]
    if engine is not None:  # the weights, not only their name (pipeline/llm/identity.py)
        payload.append(identity)
    return xxhash.xxh3_128(json.dumps(payload, sort_keys=True, default=_plain).encode()).hexdigest()


class _Store:
    """A step's checkpoint folder: ``chunk-<start>-<end>-<hash>.parquet`` per finished run of batches."""

    def __init__(self, ck: Checkpoint, table: pa.Table, batch_size: int, fp: str, computed_with: dict):
        self.dir, self.fp, self.table = Path(ck.dir), fp, table
        self.dir.mkdir(parents=True, exist_ok=True)
        self.done: dict[int, tuple[int, pa.Table]] = {}
        n, last, dropped = table.num_rows, 0, 0
        for path in sorted(self.dir.iterdir(), key=lambda p: p.name):
            if path.name == RECORD_FILE:
                continue
            m = _NAME.fullmatch(path.name)
            s, e = (int(m[1]), int(m[2])) if m else (-1, -1)
            aligned = s % batch_size == 0 and (e % batch_size == 0 or e == n)
            done = None
            if m and last <= s < e <= n and aligned and m[3] == _rows_hash(table, s, e, self.fp):
                done = _read_chunk(path)
            if done is not None:
                self.done[s], last = (e, done), e
                log.info("resume: %s already done", path)
            else:
                dropped += m is not None
                (shutil.rmtree if path.is_dir() else os.remove)(path)
        if dropped and not self.done:
            _say_why_started_over(self.dir, computed_with)
        write_json_atomic(computed_with, self.dir / RECORD_FILE)

    def pending(self) -> list[tuple[int, int]]:
        spans, pos = [], 0
        for s, (e, _) in sorted(self.done.items()):
            if s > pos:
                spans.append((pos, s))
            pos = e
        return spans + ([(pos, self.table.num_rows)] if pos < self.table.num_rows else [])

    def write(self, start: int, end: int, out: pa.Table | None) -> pa.Table:
        name = f"chunk-{start:012d}-{end:012d}-{_rows_hash(self.table, start, end, self.fp)}.parquet"
        tmp = self.dir / f".{name}.{uuid.uuid4().hex[:8]}"
        try:
            pq.write_table(out if out is not None else pa.table({}), tmp, write_page_checksum=True)
            with open(tmp, "rb") as f:  # on disk before it is named done, so a power cut cannot leave it empty
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / name)
        except BaseException as e:
            left_out(tmp, e, self.dir)  # a full disk names this folder, not the stage's output folder
            raise
        return pq.read_table(self.dir / name)


RECORD_FILE = "computed_with.json"  # what the checkpoint files were computed with: code, libraries, model weights


def _say_why_started_over(folder: Path, now: dict) -> None:
    """One warning when none of the checkpoint files in ``folder`` can be reused because they were written
    with other model weights, code or library versions than ``now`` (``{"code", "libraries"}``, and
    ``{"model", "identity"}`` for an engine step) or by a prefpipe that kept no record of them (a version
    before ``RECORD_FILE``): the step starts over. A change of params or input rows alone is not said, nor is
    another model named in params (``llm.model: tiny`` became ``smollm2``): only new weights under the same name."""
    try:
        before = json.loads((folder / RECORD_FILE).read_text())
    except (OSError, ValueError):
        before = None
    if not isinstance(before, dict):
        log.warning("%s: these checkpoints were written by an older prefpipe, which did not record its code "
                    "and libraries; starting the step over", folder)
        return
    changed = []
    swapped = before.get("model") not in (None, now.get("model"))  # another model named: a params change, not said
    if "model" in now and not swapped and before.get("identity") != now["identity"]:
        changed.append(f"the weights of model {now['model']} ({before.get('identity')}, now {now['identity']})")
    if before.get("code") != now["code"]:
        changed.append("the code (an upgrade, or an edit of pipeline/ or of the step's package)")
    old_libs = before.get("libraries") if isinstance(before.get("libraries"), dict) else {}
    libs = [f"{name} {old_libs.get(name)} -> {version}" for name, version in sorted(now["libraries"].items())
            if old_libs.get(name) != version]
    if libs:
        changed.append(f"the libraries ({', '.join(libs)})")
    if changed:
        log.warning("%s: %s changed since these checkpoints were written; starting the step over",
                    folder, "; ".join(changed))


def _read_chunk(path: Path) -> pa.Table | None:
    """A checkpoint file's results, or None (with a one-line warning) when it is cut short or damaged: its
    rows are then computed again. Pages carry CRCs (``_Store.write``), so damage inside a page is found too."""
    try:
        return pq.read_table(path, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as e:
        log.warning("%s: unreadable checkpoint file (%s); computing its rows again", path, " ".join(str(e).split()))
        return None


# --- driver ----------------------------------------------------------------------------------------


def map_batches(
    table: pa.Table,
    fn: Callable[..., pa.Table],
    *,
    execution: Execution,
    engine: LLM | None = None,
    batch_size: int | None = None,
    checkpoint: Checkpoint | None = None,
    fn_kwargs: dict[str, Any] | None = None,
    desc: str = "",
    engine_factory: Callable[[LLM], Any] | None = None,
) -> pa.Table | None:
    """Run ``fn`` over ``table`` in batches on the configured backend; returns the outputs in input order.

    ``fn(batch, **fn_kwargs)`` for CPU steps, ``fn(batch, engine, **fn_kwargs)`` when ``engine``
    (an ``llm`` config) is given; ``engine_factory(cfg)`` builds that engine instead of ``get_engine``
    (a test double; a top-level callable, so Ray can ship it). Returns None for an empty input (the
    caller knows the schema).
    """
    from tqdm.auto import tqdm

    fn_kwargs = fn_kwargs or {}
    batch_size = batch_size or (engine.batch_size if engine is not None else execution.batch_size)
    n = table.num_rows
    if n == 0:
        return None
    identity = model_identity(engine) if engine is not None else None  # once: the fingerprint and RECORD_FILE
    computed_with = {"code": step_code(fn), "libraries": _library_versions(),
                     **({"model": engine.model, "identity": identity} if engine is not None else {})}
    store = (_Store(checkpoint, table, batch_size, step_fingerprint(checkpoint, fn, fn_kwargs, engine, identity),
                    computed_with) if checkpoint is not None else None)
    spans = store.pending() if store is not None else [(0, n)]
    pieces = {s: done for s, (_, done) in store.done.items()} if store is not None else {}
    # The engine loads the commit the identity names (resolved here, once per process: Ray actors get it too).
    step_args = (fn, fn_kwargs, pinned(engine).shipped() if engine is not None else None, engine_factory)
    if not spans:
        stream: Iterator[Block] = iter(())
    elif execution.backend == "ray":
        stream = stream_ray(table, spans, step_args=step_args, engine=engine, batch_size=batch_size,
                            execution=execution)
    else:
        stream = _stream_local(table, spans, lambda: Step(*step_args), batch_size)

    run: list[Block] = []
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        if run:
            out = concat_outputs([t for _, _, outs in run for t in outs])
            start, end = run[0][0], run[-1][1]
            pieces[start] = store.write(start, end, out) if store is not None else out
            run.clear()
        last_flush = time.monotonic()

    disable = os.environ.get("PREFPIPE_PROGRESS", "1") == "0"
    with tqdm(total=n, initial=n - sum(e - s for s, e in spans), desc=desc or fn.__name__, unit="row",
              disable=disable, leave=False) as bar:
        try:
            for block in stream:
                if run and run[-1][1] != block[0]:
                    flush()  # the next rows are already checkpointed: a file covers consecutive rows only
                run.append(block)
                bar.update(block[1] - block[0])
                if store is None:
                    continue
                if block[1] - run[0][0] >= execution.checkpoint_rows or time.monotonic() - last_flush >= FLUSH_SECONDS:
                    flush()
        except BaseException as e:  # a Ray task's error is an instance of its cause's class too
            if store is not None:
                try:  # Ctrl-C, a failed engine, a lost worker, a failing batch: the finished batches are kept
                    flush()
                except Exception:  # noqa: BLE001 - the write itself failed (disk full): the first error is the one
                    pass
            if isinstance(e, ModelLoadError) and engine is not None:  # local or from a Ray replica: the same line
                raise e.naming(engine.model_key) from e
            if not isinstance(e, EngineError):
                raise
            raise engine_step_error(desc or fn.__name__, engine, getattr(e, "cause", None) or e) from e
        finally:  # a branch its engines loaded by commit: the cache's ref to it, for offline runs
            if engine is not None:
                record_ref(engine.model, engine.revision)
        flush()
    return concat_outputs([pieces[s] for s in sorted(pieces)])


def engine_step_error(step: str, engine: LLM | None, error: BaseException) -> StageError:
    """One line for an engine call that failed as a whole: the step (its stage and role: the ``desc`` the
    stages give), the role's backend, and the engine's own message (the model, what was wrong, what to do), the
    ``llm.<field>`` keys it names replaced by those that set the role's fields (``pugc.roles.judge.timeout_s``)."""
    where = f" on the {engine.backend} backend" if engine is not None else ""
    message = ' '.join(str(error).split())
    return StageError(f"{step}{where}: {engine.naming(message) if engine is not None else message}")
