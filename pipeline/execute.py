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
``TASK_SECONDS`` of work (capped at ``checkpoint_rows``), so a fast step is not drowned in per-task
overhead and a slow model still reports back batch by batch; a block's outputs come back as one
Arrow buffer.

With a checkpoint, the driver writes finished results as they arrive: a file per run of consecutive
batches, once it covers ``execution.checkpoint_rows`` input rows or ``FLUSH_SECONDS`` have passed,
whichever comes first. A killed run resumes with the batches no file covers; a file whose rows or
fingerprint no longer match the input is cleared.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from pipeline.config import LLM, Execution

log = logging.getLogger(__name__)

CHECKPOINT_ROOT = Path(".prefpipe/checkpoints")
FLUSH_SECONDS = 60.0  # a checkpoint file is written at least this often while results arrive
TASK_SECONDS = 1.0  # Ray: rows per task grow (whole batches) until a task holds about this much work
IN_FLIGHT = 2  # Ray: tasks queued per worker, so a replica never waits on the driver

Block = tuple[int, int, list[pa.Table | None]]  # input rows [start, end) and the output of each batch


@dataclass(frozen=True)
class Checkpoint:
    """Where a step keeps its finished results, and the fingerprint (params + step) they must match."""

    dir: Path | str
    fingerprint: str

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# --- one step, bound to its engine ---------------------------------------------------------------


def _ipc(table: pa.Table | None) -> pa.Buffer | None:
    """A table as one compact buffer (a pickled slice would carry its parent's whole buffers)."""
    if table is None:
        return None
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def _from_ipc(buf: pa.Buffer | None) -> pa.Table | None:
    return None if buf is None else pa.ipc.open_stream(buf).read_all()


def _build_engine(engine: dict | None, factory=None):
    if engine is None:
        return None
    if factory is None:
        from pipeline.llm import get_engine as factory
    return factory(LLM.model_validate(engine))


def _run_block(call: Callable[[pa.Table], pa.Table | None], buf: pa.Buffer,
               batch_size: int) -> tuple[pa.Buffer | None, float]:
    """Ray: every batch of one block through ``call``, their outputs as one buffer, and the seconds taken."""
    table, start = _from_ipc(buf), time.perf_counter()
    out = _concat([call(b) for b in _slices(table, 0, table.num_rows, batch_size)])
    return _ipc(out), time.perf_counter() - start


class _Step:
    """``fn`` with its kwargs and, for an engine step, the engine: built once when the step is made
    (once per process locally) by ``factory`` (default ``get_engine``)."""

    def __init__(self, fn: Callable[..., pa.Table], fn_kwargs: dict[str, Any], engine: dict | None, factory=None):
        self.fn, self.fn_kwargs, self.engine = fn, fn_kwargs, _build_engine(engine, factory)

    def __call__(self, batch: pa.Table) -> pa.Table | None:
        if self.engine is None:
            return self.fn(batch, **self.fn_kwargs)
        return self.fn(batch, self.engine, **self.fn_kwargs)


class _Replica:
    """A Ray actor holding one engine, built once; it runs the blocks of every step it is given."""

    def __init__(self, engine: dict, factory=None):
        self.engine = _build_engine(engine, factory)

    def block(self, step: tuple, buf: pa.Buffer, batch_size: int) -> tuple[pa.Buffer | None, float]:
        fn, fn_kwargs = step
        return _run_block(lambda b: fn(b, self.engine, **fn_kwargs), buf, batch_size)


def _cpu_block(buf: pa.Buffer, batch_size: int, step: tuple) -> tuple[pa.Buffer | None, float]:
    return _run_block(_Step(*step), buf, batch_size)


def _slices(table: pa.Table, start: int, end: int, size: int) -> Iterator[pa.Table]:
    for lo in range(start, end, size):
        yield table.slice(lo, min(size, end - lo))


# --- backends: blocks of results, in input order -------------------------------------------------


def _stream_local(table, spans, step: Callable[[], _Step], batch_size: int) -> Iterator[Block]:
    call = step()
    for start, end in spans:
        for lo in range(start, end, batch_size):
            hi = min(end, lo + batch_size)
            yield lo, hi, [call(table.slice(lo, hi - lo))]


def ray_init(address: str | None = None, **kwargs: Any) -> None:
    """Connect to Ray once per process: ``address``, else ``RAY_ADDRESS``, else a new local instance (never
    another job's cluster that happens to run on this machine).

    On a cluster the ``pipeline`` and ``stages`` packages travel to the workers (``runtime_env.py_modules``),
    so a multi-node cluster runs the driver's code without a shared filesystem. A new local instance shares
    the driver's filesystem: its workers import this checkout (its folder goes first on their ``sys.path``)
    with no runtime env, so an actor starts in one of the workers Ray pre-starts (measured: 0.3-0.8 s
    against 1.0-1.5 s for a fresh worker with a runtime env, `bench/README.md`).
    """
    import ray

    if ray.is_initialized():
        return
    import pipeline
    import stages

    address = address or os.environ.get("RAY_ADDRESS") or "local"
    common = dict(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
    if address == "local":
        from ray.job_config import JobConfig

        roots = list(dict.fromkeys(str(Path(m.__file__).resolve().parents[1]) for m in (pipeline, stages)))
        ray.init(**common, job_config=JobConfig(_py_driver_sys_path=roots), **kwargs)
    else:
        runtime_env = {"py_modules": [pipeline, stages], "env_vars": {"PREFPIPE_PROGRESS": "0"}}
        ray.init(**common, runtime_env=runtime_env, **kwargs)


# --- Ray engine pools ------------------------------------------------------------------------------

_kept: dict | None = None  # inside engine_pools(): {"key": ..., "actors": [...]} of the pool kept alive


@contextmanager
def engine_pools() -> Iterator[None]:
    """Keep a Ray engine step's actor pool alive for the next engine step with the identical engine
    config (and factory and CPUs), so each replica loads its model once for all of them; released at the
    end of the block, when a step needs another config (one pool at a time: GPUs are never held twice),
    when a CPU step runs on Ray (it gets the pool's CPUs back), or when a step fails. Nested blocks share
    the outermost one. No effect on the local backend."""
    global _kept
    if _kept is not None:
        yield
        return
    _kept = {}
    try:
        yield
    finally:
        _release(_kept)
        _kept = None


def _release(kept: dict) -> None:
    import ray

    for a in kept.pop("actors", []):
        ray.kill(a)
    kept.pop("key", None)


def _engine_pool(engine: LLM, factory, cpus: float) -> list:
    """The actors of an engine step: the kept pool when its config matches, else a new one."""
    import ray

    key = (engine.model_dump_json(), factory, cpus)
    if _kept and _kept["key"] == key:
        return _kept["actors"]
    if _kept:
        _release(_kept)
    replica = ray.remote(_Replica).options(num_cpus=cpus, num_gpus=engine.gpus_per_replica or None,
                                           max_restarts=-1, max_task_retries=-1)
    actors = [replica.remote(engine.model_dump(), factory) for _ in range(engine.replicas)]
    if _kept is not None:
        _kept.update(key=key, actors=actors)
    return actors


def _stream_ray(table, spans, *, step_args: tuple, engine: LLM | None, batch_size: int,
                execution: Execution) -> Iterator[Block]:
    """Blocks of whole batches to the engine step's actor pool or to Ray tasks (CPU steps), at most
    ``IN_FLIGHT`` per worker; results are yielded in input order as they arrive. Actors are restarted and
    their tasks retried when a node dies, so a lost worker costs time only. The actors are killed at the
    end unless ``engine_pools()`` keeps them, and always when the step fails."""
    import ray

    ray_init(execution.ray_address)
    cpus = execution.num_cpus_per_task
    fn, fn_kwargs, _, factory = step_args
    if engine is None and _kept:
        _release(_kept)  # a CPU step gets the kept pool's CPUs back (its tasks could otherwise never fit)
    actors = None if engine is None else _engine_pool(engine, factory, cpus)
    done = False
    try:
        if actors is not None:
            step_ref = ray.put((fn, fn_kwargs))
            workers = [lambda buf, a=a: a.block.remote(step_ref, buf, batch_size) for a in actors]
        else:
            task, step_ref = ray.remote(_cpu_block).options(num_cpus=cpus), ray.put(step_args)
            width = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus))
            workers = [lambda buf: task.remote(buf, batch_size, step_ref)] * width
        total = sum(e - s for s, e in spans)
        cap = max(batch_size, min(execution.checkpoint_rows, total // (2 * len(workers))) // batch_size * batch_size)
        rows = batch_size  # per task: one batch until the first results say how long a row takes
        todo = [(s, e) for s, e in spans]
        inflight: dict[Any, tuple[int, int, int, int]] = {}  # ref -> (seq, worker, start, end)
        ready: dict[int, Block] = {}
        busy = [0] * len(workers)
        sent = emitted = 0
        while todo or inflight or ready:
            while todo and len(inflight) + len(ready) < 2 * IN_FLIGHT * len(workers):
                w = min(range(len(workers)), key=busy.__getitem__)
                if busy[w] >= IN_FLIGHT:
                    break
                s, e = todo[0]
                hi = min(e, s + rows)
                todo[0] = (hi, e)
                if hi == e:
                    todo.pop(0)
                inflight[workers[w](_ipc(table.slice(s, hi - s)))] = (sent, w, s, hi)
                busy[w] += 1
                sent += 1
            if inflight and emitted not in ready:
                (ref,), _ = ray.wait(list(inflight), num_returns=1)
                seq, w, s, e = inflight.pop(ref)
                busy[w] -= 1
                out, seconds = ray.get(ref)
                ready[seq] = (s, e, [_from_ipc(out)])
                per_row = seconds / (e - s)
                rows = int(min(cap, max(batch_size, TASK_SECONDS / max(per_row, 1e-9))) // batch_size * batch_size)
            while emitted in ready:
                yield ready.pop(emitted)
                emitted += 1
        done = True
    finally:
        if actors is not None and not (done and _kept and _kept["actors"] is actors):
            if _kept and _kept["actors"] is actors:
                _kept.clear()
            for a in actors:
                ray.kill(a)


# --- checkpoints -----------------------------------------------------------------------------------

_NAME = re.compile(r"chunk-(\d{12})-(\d{12})-([0-9a-f]{16})\.parquet")


def _rows_hash(table: pa.Table, start: int, end: int, step_fp: str) -> str:
    """Fingerprint of input rows [start, end) under ``step_fp`` (independent of the table's chunking)."""
    h = xxhash.xxh3_64(step_fp.encode())
    h.update(f"{start}:{end}".encode())
    h.update(memoryview(_ipc(table.slice(start, end - start).combine_chunks())))
    return h.hexdigest()


class _Store:
    """A step's checkpoint folder: ``chunk-<start>-<end>-<hash>.parquet`` per finished run of batches."""

    def __init__(self, ck: Checkpoint, table: pa.Table, batch_size: int):
        self.dir, self.fp, self.table = Path(ck.dir), ck.fingerprint, table
        self.dir.mkdir(parents=True, exist_ok=True)
        self.done: dict[int, tuple[int, Path]] = {}
        n, last = table.num_rows, 0
        entries = sorted(self.dir.iterdir(), key=lambda p: p.name)
        for path in entries:
            m = _NAME.fullmatch(path.name)
            s, e = (int(m[1]), int(m[2])) if m else (-1, -1)
            aligned = s % batch_size == 0 and (e % batch_size == 0 or e == n)
            if m and last <= s < e <= n and aligned and m[3] == _rows_hash(table, s, e, self.fp):
                self.done[s], last = (e, path), e
                log.info("resume: %s already done", path)
            else:
                (shutil.rmtree if path.is_dir() else os.remove)(path)

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
        pq.write_table(out if out is not None else pa.table({}), tmp)
        os.replace(tmp, self.dir / name)
        return pq.read_table(self.dir / name)


def _concat(parts: list[pa.Table | None]) -> pa.Table | None:
    parts = [p for p in parts if p is not None and p.num_columns]
    if not parts:
        return None
    return pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]


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
    store = _Store(checkpoint, table, batch_size) if checkpoint is not None else None
    spans = store.pending() if store is not None else [(0, n)]
    pieces = {s: pq.read_table(path) for s, (_, path) in store.done.items()} if store is not None else {}
    step_args = (fn, fn_kwargs, engine.model_dump() if engine is not None else None, engine_factory)
    if not spans:
        stream: Iterator[Block] = iter(())
    elif execution.backend == "ray":
        stream = _stream_ray(table, spans, step_args=step_args, engine=engine, batch_size=batch_size,
                             execution=execution)
    else:
        stream = _stream_local(table, spans, lambda: _Step(*step_args), batch_size)

    run: list[Block] = []
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        if run:
            out = _concat([t for _, _, outs in run for t in outs])
            start, end = run[0][0], run[-1][1]
            pieces[start] = store.write(start, end, out) if store is not None else out
            run.clear()
        last_flush = time.monotonic()

    disable = os.environ.get("PREFPIPE_PROGRESS", "1") == "0"
    with tqdm(total=n, initial=n - sum(e - s for s, e in spans), desc=desc or fn.__name__, unit="row",
              disable=disable, leave=False) as bar:
        for block in stream:
            if run and run[-1][1] != block[0]:
                flush()  # the next rows are already checkpointed: a file covers consecutive rows only
            run.append(block)
            bar.update(block[1] - block[0])
            if store is None:
                continue
            if block[1] - run[0][0] >= execution.checkpoint_rows or time.monotonic() - last_flush >= FLUSH_SECONDS:
                flush()
        flush()
    return _concat([pieces[s] for s in sorted(pieces)])
