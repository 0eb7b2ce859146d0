"""Apply a batch function to a table: in-process (`local`) or on Ray Data (`ray`).

A step is a plain top-level function over an Arrow table::

    def score(batch: pa.Table) -> pa.Table: ...            # CPU step: Ray tasks
    def judge(batch: pa.Table, engine: Engine) -> pa.Table: ...  # engine step: Ray actor pool

    out = map_batches(table, judge, execution=params.execution, engine=judge_cfg,
                      checkpoint=Checkpoint(".prefpipe/checkpoints/pugc/judge", fingerprint=fp))

Engine steps get an engine built once per process (local) or once per actor replica (ray:
``replicas`` actors, each with ``gpus_per_replica`` GPUs). With a checkpoint, the input is cut
into chunks of ``execution.checkpoint_rows`` rows; each finished chunk is written atomically, so a
killed run resumes where it stopped, and chunks whose fingerprint no longer matches are cleared.
Results come back in input order on both backends, so outputs are byte-identical.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import LLM, Execution

log = logging.getLogger(__name__)

CHECKPOINT_ROOT = Path(".prefpipe/checkpoints")


@dataclass(frozen=True)
class Checkpoint:
    """Where a step keeps its finished chunks, and the fingerprint (params + step) they must match."""

    dir: Path | str
    fingerprint: str

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# --- engine step wrapper -------------------------------------------------------------------------


class _EngineStep:
    """Holds one engine for the life of a process or Ray actor and feeds it batches."""

    def __init__(self, fn: Callable[..., pa.Table], cfg: dict[str, Any], fn_kwargs: dict[str, Any]):
        from pipeline.llm import get_engine

        self.fn = fn
        self.engine = get_engine(LLM.model_validate(cfg))
        self.fn_kwargs = fn_kwargs

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.fn(batch, self.engine, **self.fn_kwargs)


def _cpu_step(batch: pa.Table, fn: Callable[..., pa.Table], fn_kwargs: dict[str, Any]) -> pa.Table:
    return fn(batch, **fn_kwargs)


# --- backends ------------------------------------------------------------------------------------


def _batches(table: pa.Table, size: int):
    for start in range(0, table.num_rows, size):
        yield table.slice(start, size)


def _run_local(table, fn, *, engine, batch_size, fn_kwargs, desc) -> list[pa.Table]:
    from tqdm.auto import tqdm

    call = _EngineStep(fn, engine.model_dump(), fn_kwargs) if engine is not None else (lambda b: fn(b, **fn_kwargs))
    out = []
    disable = os.environ.get("PREFPIPE_PROGRESS", "1") == "0"
    with tqdm(total=table.num_rows, desc=desc or fn.__name__, unit="row", disable=disable, leave=False) as bar:
        for batch in _batches(table, batch_size):
            out.append(call(batch))
            bar.update(batch.num_rows)
    return out


def ray_init(address: str | None = None, **kwargs: Any) -> None:
    """Connect to Ray once per process: ``address``, else ``RAY_ADDRESS``, else a local instance.

    The ``pipeline`` and ``stages`` packages travel to the workers (``runtime_env.py_modules``), so
    a multi-node cluster runs the driver's code without a shared filesystem.
    """
    import ray

    if ray.is_initialized():
        return
    import pipeline
    import stages

    runtime_env = {"py_modules": [pipeline, stages], "env_vars": {"PREFPIPE_PROGRESS": "0"}}
    ray.init(
        address=address or os.environ.get("RAY_ADDRESS") or None,
        runtime_env=runtime_env,
        ignore_reinit_error=True,
        log_to_driver=False,
        include_dashboard=False,
        **kwargs,
    )


def _run_ray(table, fn, *, engine, batch_size, fn_kwargs, execution: Execution) -> list[pa.Table]:
    import ray
    import ray.data

    ray_init(execution.ray_address)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    # One block per batch keeps rows in input order through the map.
    # Ray Data retries tasks and restarts actors lost with a node by default, so a dead worker
    # costs time, not output.
    ds = ray.data.from_arrow([b for b in _batches(table, batch_size)] or [table])
    if engine is not None:
        ds = ds.map_batches(
            _EngineStep,
            fn_constructor_args=(fn, engine.model_dump(), fn_kwargs),
            batch_format="pyarrow",
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=engine.replicas),
            num_gpus=engine.gpus_per_replica or None,
        )
    else:
        ds = ds.map_batches(
            _cpu_step,
            fn_kwargs={"fn": fn, "fn_kwargs": fn_kwargs},
            batch_format="pyarrow",
            batch_size=batch_size,
            num_cpus=execution.num_cpus_per_task,
        )
    return [ray.get(ref) for ref in ds.to_arrow_refs()]


# --- checkpointed driver -------------------------------------------------------------------------


def _chunk_fingerprint(chunk: pa.Table, step_fp: str) -> str:
    h = hashlib.sha256(step_fp.encode())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, chunk.schema) as w:
        w.write_table(chunk)
    h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()[:16]


def _concat(parts: list[pa.Table]) -> pa.Table | None:
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]


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
) -> pa.Table | None:
    """Run ``fn`` over ``table`` in batches on the configured backend; returns the outputs in input order.

    ``fn(batch, **fn_kwargs)`` for CPU steps, ``fn(batch, engine, **fn_kwargs)`` when ``engine``
    (an ``llm`` config) is given. Returns None for an empty input (the caller knows the schema).
    """
    fn_kwargs = fn_kwargs or {}
    batch_size = batch_size or (engine.batch_size if engine is not None else execution.batch_size)
    if table.num_rows == 0:
        return None

    def run(chunk: pa.Table) -> pa.Table | None:
        if execution.backend == "ray":
            parts = _run_ray(chunk, fn, engine=engine, batch_size=batch_size, fn_kwargs=fn_kwargs, execution=execution)
        else:
            parts = _run_local(chunk, fn, engine=engine, batch_size=batch_size, fn_kwargs=fn_kwargs, desc=desc)
        return _concat(parts)

    if checkpoint is None:
        return run(table)

    ck_dir = Path(checkpoint.dir)
    ck_dir.mkdir(parents=True, exist_ok=True)
    chunks = list(_batches(table, execution.checkpoint_rows))
    wanted = {f"chunk-{i:05d}-{_chunk_fingerprint(c, checkpoint.fingerprint)}.parquet": c for i, c in enumerate(chunks)}
    for stale in ck_dir.glob("*"):
        if stale.name not in wanted:
            (shutil.rmtree if stale.is_dir() else os.remove)(stale)
    results = []
    for fname, chunk in wanted.items():
        path = ck_dir / fname
        if path.exists():
            log.info("resume: %s already done", path)
            results.append(pq.read_table(path))
            continue
        out = run(chunk)
        if out is None:
            out = pa.table({})
        tmp = ck_dir / f".{fname}.{uuid.uuid4().hex[:8]}"
        pq.write_table(out, tmp)
        os.replace(tmp, path)
        results.append(pq.read_table(path))
    return _concat([r for r in results if r.num_columns])
