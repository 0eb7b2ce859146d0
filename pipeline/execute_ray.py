"""The executor's Ray backend: ``ray_init``, the engine actor pools ``engine_pools()`` keeps alive, and
``stream_ray``, which sends blocks of whole batches to an engine step's actors or to Ray tasks (CPU steps)
and yields their results in input order. A task's block grows until it holds about ``TASK_SECONDS`` of work
(whole batches, at most ``checkpoint_rows`` rows and half of each worker's share of the step's rows, so
every worker gets two tasks or more); ``IN_FLIGHT`` tasks are queued per worker. Before a step starts, its
workers are sized against the cluster's live nodes: one that no node can hold fails the step at once (Ray
would wait for it forever), more replicas than fit run as many as fit, with a warning. A worker lost while
it runs (killed, out of memory, its node gone) is restarted and its block retried up to ``MAX_RESTARTS``
times; then the step fails in one line and keeps its finished batches. Ray is imported only when one of
these runs, so the local backend never needs it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.config import LLM, Execution
from pipeline.errors import EngineError, SourceError, StageError
from pipeline.execute_step import Block, Step, build_engine, concat_outputs, from_ipc, slices, to_ipc

TASK_SECONDS = 1.0  # Ray: rows per task grow (whole batches) until a task holds about this much work
IN_FLIGHT = 2  # Ray: tasks queued per worker, so a replica never waits on the driver
MAX_RESTARTS = 3  # Ray: restarts of a lost replica (and retries of its blocks) before the step fails

log = logging.getLogger(__name__)


# --- one block, in a Ray worker -------------------------------------------------------------------


def run_block(call: Callable[[pa.Table], pa.Table | None], buf: pa.Buffer,
              batch_size: int) -> tuple[pa.Buffer | None, float]:
    """Ray: every batch of one block through ``call``, their outputs as one buffer, and the seconds taken."""
    table, start = from_ipc(buf), time.perf_counter()
    out = concat_outputs([call(b) for b in slices(table, 0, table.num_rows, batch_size)])
    return to_ipc(out), time.perf_counter() - start


class _Replica:
    """A Ray actor holding one engine, built once; it runs the blocks of every step it is given. An engine
    that cannot load is raised by the first block, as itself (a failed ``__init__`` would reach the driver
    as Ray's ``ActorDiedError``, a traceback instead of the engine's one line)."""

    def __init__(self, engine: dict, factory=None):
        try:
            self.engine, self.error = build_engine(engine, factory), None
        except Exception as e:  # noqa: BLE001 - raised again, unchanged, by block()
            self.engine, self.error = None, e

    def block(self, step: tuple, buf: pa.Buffer, batch_size: int) -> tuple[pa.Buffer | None, float]:
        if self.error is not None:
            raise self.error
        fn, fn_kwargs = step
        return run_block(lambda b: fn(b, self.engine, **fn_kwargs), buf, batch_size)


def _cpu_block(buf: pa.Buffer, batch_size: int, step: tuple) -> tuple[pa.Buffer | None, float]:
    return run_block(Step(*step), buf, batch_size)


# --- connecting ------------------------------------------------------------------------------------


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
    check_address(address)
    check_gcs(address)
    common = dict(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
    if address == "local":
        from ray.job_config import JobConfig

        roots = list(dict.fromkeys(str(Path(m.__file__).resolve().parents[1]) for m in (pipeline, stages)))
        ray.init(**common, job_config=JobConfig(_py_driver_sys_path=roots), **kwargs)
    else:
        runtime_env = {"py_modules": [pipeline, stages], "env_vars": {"PREFPIPE_PROGRESS": "0"}}
        try:
            ray.init(**common, runtime_env=runtime_env, **kwargs)
        except ValueError as e:  # "nonsense", a host without its port: it was Ray's traceback
            if "address" not in str(e):
                raise
            raise StageError(f"execution.ray_address (or RAY_ADDRESS) {address!r}: not an address Ray reads "
                             f"({type(e).__name__}: {e}); give the head node's host:port (e.g. 10.0.0.1:6379), "
                             "ray://host:port, or null for a local Ray instance") from None
        except (ConnectionError, RuntimeError) as e:
            raise StageError(_connect_error(address, e)) from e


def _connect_error(address: str, error: BaseException) -> str:
    """One line for a cluster that answers but lets no driver in; most often its token authentication (on by
    default for clusters started with `ray start` since Ray 2.59; a driver sends no token unless told)."""
    chain = [error]
    while chain[-1].__cause__ is not None and len(chain) < 10:
        chain.append(chain[-1].__cause__)
    if any(type(c).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(c) for c in chain):
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":  # a token was sent: not this cluster's
            return (f"execution.ray_address (or RAY_ADDRESS) {address!r}: the Ray cluster there refused this "
                    "machine's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token); give it the "
                    "cluster's token (`ray get-auth-token` on the head node)")
        return (f"execution.ray_address (or RAY_ADDRESS) {address!r}: the Ray cluster there requires its "
                "authentication token; set RAY_AUTH_MODE=token and give this machine the cluster's token "
                "(`ray get-auth-token` on the head node, into RAY_AUTH_TOKEN or ~/.ray/auth_token)")
    text = str(chain[-1])
    if "Traceback (most recent call last)" in text:  # Ray's RuntimeError quotes a whole traceback: its last line
        head, _, tail = text.partition("Traceback (most recent call last)")
        text = head + tail.strip().splitlines()[-1]
    last = " ".join(text.split())[:300]
    return (f"execution.ray_address (or RAY_ADDRESS) {address!r}: Ray could not connect ({type(chain[-1]).__name__}: "
            f"{last}); check that a Ray cluster of this Ray version runs there (`ray status` on its head node)")


def check_address(address: str, timeout: float = 5.0) -> None:
    """A cluster address (``host:port`` or ``ray://host:port``) must answer a TCP connection within
    ``timeout`` seconds: Ray itself retries a wrong address for minutes before failing. ``local`` and
    ``auto`` are left to Ray."""
    import socket

    m = re.fullmatch(r"(?:ray://)?\[?([^\[\]/]+?)\]?:(\d+)/?", address.strip())
    if m is None:
        return
    try:
        socket.create_connection((m[1], int(m[2])), timeout=timeout).close()
    except OSError as e:
        raise StageError(
            f"execution.ray_address (or RAY_ADDRESS) {address!r}: nothing answers at {m[1]}:{m[2]} "
            f"({e.strerror or type(e).__name__}); start the cluster there (`ray start --head`) or fix the address "
            "(null: a local Ray instance)"
        ) from None



def check_gcs(address: str, timeout: float = 10.0) -> None:
    """A ``host:port`` that answers a connection must answer as a Ray cluster's GCS, which ``ray.init`` asks for
    minutes, a Ray warning every few seconds, when something else listens there (the dashboard's 8265, the Ray
    client's 10001 without ray://, a web server); and a cluster that refuses this driver's token is the line
    ``ray.init`` gives after 20 s of retries. One GCS client asks for the cluster's id, given ``timeout``
    seconds (in a thread: it waits 40 s for a listener that never answers). Other errors are left to ``ray.init``."""
    import threading

    if re.fullmatch(r"\[?[^\[\]/]+?\]?:\d+", address.strip()) is None:  # not ray://, local or auto
        return
    try:
        from ray._raylet import GcsClient
    except ImportError:
        return
    errors: list[BaseException] = []

    def probe() -> None:
        try:
            GcsClient(address=address.strip(), cluster_id=None)
        except Exception as e:  # noqa: BLE001 - acted on below, or left to ray.init
            errors.append(e)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    if errors and (type(errors[0]).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(errors[0])):
        raise StageError(_connect_error(address, errors[0]))
    if thread.is_alive() or (errors and "Timed out while waiting for GCS" in str(errors[0])):
        raise StageError(
            f"execution.ray_address (or RAY_ADDRESS) {address!r}: something answers there, but no Ray cluster "
            f"replied within {timeout:g} s; give the head node's GCS port (`ray start --head --port`, 6379 by "
            "default; not the dashboard's 8265), ray://host:10001 for the Ray client, or null for a local Ray instance"
        )


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


def _capacity(cpus: float, engine: LLM | None) -> int:
    """How many workers of ``cpus`` CPUs the cluster's live nodes hold: CPU tasks, or ``engine``'s replicas
    (at most ``replicas``, each also ``gpus_per_replica`` GPUs). None is an error naming the settings (Ray would
    queue them forever), fewer replicas than wanted a warning; both name the params keys that set them."""
    import ray

    gpus, what = (engine.gpus_per_replica, "replica") if engine is not None else (0, "task")

    ask = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    fit = sum(int(min(node.get(r, 0.0) / q for r, q in ask.items()) + 1e-9) for node in nodes)
    need = " and ".join(f"{q:g} {r}" for r, q in ask.items())
    if fit == 0:
        largest = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
        has = ", ".join(f"{largest.get(r, 0.0):g} {r}" for r in ask)
        knobs = "execution.num_cpus_per_task" + (f" and {engine.key('gpus_per_replica')}" if gpus else "")
        hint = " (gpus_per_replica: 0 runs on CPUs)" if gpus else ""
        raise EngineError(
            f"no node of the Ray cluster can hold one {what}: each asks for {need} ({knobs}) and the largest of "
            f"its {len(nodes)} node(s) has {has}; lower those settings{hint} or add a node that has them"
        )
    if engine is None:
        return fit
    if fit < engine.replicas:
        log.warning("%s is %d, but the Ray cluster holds only %d replica(s) of %s: running %d; set it to %d or "
                    "add nodes", engine.key("replicas"), engine.replicas, fit, need, fit, fit)
    return min(fit, engine.replicas)


def _engine_pool(engine: LLM, factory, cpus: float) -> list:
    """The actors of an engine step: the kept pool when its config matches, else a new one."""
    import ray

    key = (json.dumps(engine.shipped(), sort_keys=True), factory, cpus)
    if _kept and _kept["key"] == key:
        return _kept["actors"]
    if _kept:
        _release(_kept)
    n = _capacity(cpus, engine)
    replica = ray.remote(_Replica).options(num_cpus=cpus, num_gpus=engine.gpus_per_replica or None,
                                           max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)
    actors = [replica.remote(engine.shipped(), factory) for _ in range(n)]
    if _kept is not None:
        _kept.update(key=key, actors=actors)
    return actors


def _get(ref, start: int, end: int) -> tuple[pa.Buffer | None, float]:
    """A block's result. A stage's own one-line errors raised in a worker come back as themselves; a worker
    lost more than ``MAX_RESTARTS`` times is one line (``map_batches`` adds the step, keeps what finished)."""
    import ray
    from ray.exceptions import RayError, RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as e:
        if isinstance(e.cause, (StageError, SourceError)):
            raise e.cause from None
        raise
    except RayError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EngineError(
            f"the Ray worker running rows {start}-{end} was lost, also after {MAX_RESTARTS} restarts ({type(e).__name__}: "
            f"{first}): killed, out of memory or its node gone (its log: /tmp/ray/session_latest/logs on that "
            "node); the finished batches are kept: fix the cause and run the stage again to resume"
        ) from e


def stream_ray(table, spans, *, step_args: tuple, engine: LLM | None, batch_size: int,
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
    inflight: dict[Any, tuple[int, int, int, int]] = {}  # ref -> (seq, worker, start, end)
    try:
        if actors is not None:
            step_ref = ray.put((fn, fn_kwargs))
            workers = [lambda buf, a=a: a.block.remote(step_ref, buf, batch_size) for a in actors]
        else:
            task = ray.remote(_cpu_block).options(num_cpus=cpus, max_retries=MAX_RESTARTS)
            step_ref = ray.put(step_args)
            width = _capacity(cpus, None)
            workers = [lambda buf: task.remote(buf, batch_size, step_ref)] * width
        total = sum(e - s for s, e in spans)
        cap = max(batch_size, min(execution.checkpoint_rows, total // (2 * len(workers))) // batch_size * batch_size)
        rows = batch_size  # per task: one batch until the first results say how long a row takes
        todo = [(s, e) for s, e in spans]
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
                inflight[workers[w](to_ipc(table.slice(s, hi - s)))] = (sent, w, s, hi)
                busy[w] += 1
                sent += 1
            if inflight and emitted not in ready:
                (ref,), _ = ray.wait(list(inflight), num_returns=1)
                seq, w, s, e = inflight.pop(ref)
                busy[w] -= 1
                out, seconds = _get(ref, s, e)
                ready[seq] = (s, e, [from_ipc(out)])
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
        if not done:
            _settle(list(inflight))


def _settle(refs: list) -> None:
    """The blocks still in flight when a step fails (their actors killed): cancelled and their errors read, so
    Ray does not print each one after the step's one line as an 'Unhandled error' with the worker's traceback."""
    import ray

    for ref in refs:
        try:
            ray.cancel(ref)  # CPU tasks; an actor's tasks end with it
        except Exception:  # noqa: BLE001, S110 - already finished, or not cancellable: read below
            pass
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=10) if refs else ([], [])
    for ref in ready:
        try:
            ray.get(ref, timeout=0)
        except Exception:  # noqa: BLE001, S110 - the step already failed with its own line
            pass
