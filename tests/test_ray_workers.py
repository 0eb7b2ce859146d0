"""The Ray backend against the cluster it is given: workers no node can hold fail the step at once in one
line (Ray would queue them forever), more replicas than fit run on those that fit, a worker that keeps
dying fails the step in one line naming it and keeps the finished batches (a rerun resumes to the same
bytes), a stage's own one-line errors raised in a worker reach the driver as themselves, and a task's block
of whole engine batches grows with measured work up to its bound (issue 18)."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.errors import ModelLoadError, StageError
from pipeline.execute import Checkpoint, map_batches
from tests import test_execute
from tests.conftest import ENV_AT_START
from tests.test_execute import CountingEngine, _execution, _input, _llm, answer, shout

# A step that hangs is what some of these tests catch: fail instead of waiting for the suite's limit.
pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def _ship_test_modules(ray_cluster):
    from ray import cloudpickle

    for module in (sys.modules[__name__], test_execute):  # workers cannot import the tests folder
        cloudpickle.register_pickle_by_value(module)


def _loads(markers: Path) -> int:
    return sum(1 for _ in markers.iterdir())


def test_a_replica_no_node_can_hold_fails_the_step_at_once_in_one_line(tmp_path):
    """Today's failure: a GPU replica on a CPU-only cluster waited forever for a node with a GPU."""
    factory = functools.partial(CountingEngine, str(tmp_path))
    with pytest.raises(StageError) as e:
        map_batches(_input(8), answer, execution=_execution(backend="ray"), engine=_llm(gpus_per_replica=1),
                    engine_factory=factory, desc="pugc sampling (policy)")
    assert "\n" not in str(e.value)
    assert str(e.value).startswith("pugc sampling (policy) on the transformers backend: no node of the Ray cluster "
                                   "can hold one replica: each asks for 1 CPU and 1 GPU (execution.num_cpus_per_task "
                                   "and llm.gpus_per_replica) and the largest of its 1 node(s) has ")
    assert "0 GPU; lower those settings (gpus_per_replica: 0 runs on CPUs)" in str(e.value)
    assert _loads(tmp_path) == 0


def test_a_cpu_task_no_node_can_hold_fails_the_step_at_once_in_one_line():
    with pytest.raises(StageError, match=r"^shout: no node of the Ray cluster can hold one task: each asks for "
                                         r"4 CPU \(execution.num_cpus_per_task\) and the largest .* has 2 CPU; "
                                         r"lower those settings or add a node"):
        map_batches(_input(8), shout, execution=_execution(backend="ray", num_cpus_per_task=4))


def test_more_replicas_than_fit_run_on_those_that_fit_with_a_warning(tmp_path, caplog):
    """Today's failure: the blocks sent to the two replicas that could never start waited forever."""
    table, factory = _input(120), functools.partial(CountingEngine, str(tmp_path))
    local = map_batches(table, answer, execution=_execution(), engine=_llm(), engine_factory=factory)
    for m in tmp_path.iterdir():
        m.unlink()
    with caplog.at_level(logging.WARNING, logger="pipeline.execute_ray"):
        remote = map_batches(table, answer, execution=_execution(backend="ray"), engine=_llm(replicas=4),
                             engine_factory=factory)
    assert remote.drop_columns("pid").equals(local.drop_columns("pid"))
    assert _loads(tmp_path) == 2  # the test cluster's 2 CPUs hold two replicas of one CPU
    assert [r.getMessage() for r in caplog.records] == [
        "llm.replicas is 4, but the Ray cluster holds only 2 replica(s) of 1 CPU: running 2; set it to 2 or add nodes"]


def die_at(batch: pa.Table, engine, at: str, deaths: str, times: int) -> pa.Table:
    """``answer``; the batch holding row ``at`` kills its worker process (as the OOM killer or a crash in
    native code would) the first ``times`` times it is run, counted by files in ``deaths``."""
    if at in batch["id"].to_pylist() and sum(1 for _ in Path(deaths).iterdir()) < times:
        Path(deaths, str(len(list(Path(deaths).iterdir())))).touch()
        os._exit(9)
    return answer(batch, engine)


def test_a_worker_killed_once_is_restarted_and_the_output_is_unchanged(tmp_path):
    (tmp_path / "deaths").mkdir()
    (tmp_path / "markers").mkdir()
    table, factory = _input(64), functools.partial(CountingEngine, str(tmp_path / "markers"))
    kw = dict(engine=_llm(), engine_factory=factory)
    local = map_batches(table, answer, execution=_execution(), **kw)
    remote = map_batches(table, die_at, execution=_execution(backend="ray", checkpoint_rows=8), **kw,
                         checkpoint=Checkpoint(tmp_path / "ck", "fp"),
                         fn_kwargs={"at": "r0030", "deaths": str(tmp_path / "deaths"), "times": 1})
    assert remote.drop_columns("pid").equals(local.drop_columns("pid"))
    assert _loads(tmp_path / "deaths") == 1 and _loads(tmp_path / "markers") == 3  # local, replica, its restart


def test_a_worker_that_keeps_dying_fails_the_step_in_one_line_and_the_rerun_resumes(tmp_path):
    """Today's failure: the replica was restarted and the block retried forever."""
    from pipeline.execute_ray import MAX_RESTARTS

    (tmp_path / "deaths").mkdir()
    (tmp_path / "markers").mkdir()
    table, factory = _input(64), functools.partial(CountingEngine, str(tmp_path / "markers"))
    kw = dict(engine=_llm(), engine_factory=factory, checkpoint=Checkpoint(tmp_path / "ck", "fp"),
              desc="dove judge (judge)")
    ray_ex = _execution(backend="ray", checkpoint_rows=8)
    dying = {"at": "r0030", "deaths": str(tmp_path / "deaths"), "times": 1000}
    with pytest.raises(StageError) as e:
        map_batches(table, die_at, execution=ray_ex, fn_kwargs=dying, **kw)
    assert "\n" not in str(e.value)
    m = re.fullmatch(r"dove judge \(judge\) on the transformers backend: the Ray worker running rows (\d+)-(\d+) "
                     rf"was lost, also after {MAX_RESTARTS} restarts \(ActorDiedError: .*\): killed, out of memory "
                     r"or its node gone .*; the finished batches are kept: fix the cause and run the stage again "
                     r"to resume", str(e.value))
    assert m and int(m[1]) <= 30 < int(m[2])  # the block that holds row r0030
    assert _loads(tmp_path / "deaths") == MAX_RESTARTS + 1
    spans = sorted(tuple(int(x) for x in p.name.split("-")[1:3]) for p in (tmp_path / "ck").glob("chunk-*.parquet"))
    assert spans and spans[0][0] == 0 and all(end <= int(m[1]) for _, end in spans)  # what finished before it

    local = map_batches(table, answer, execution=_execution(), engine=_llm(), engine_factory=factory)
    again = map_batches(table, die_at, execution=ray_ex, fn_kwargs={**dying, "times": 0}, **kw)
    assert again.drop_columns("pid").equals(local.drop_columns("pid"))


class UnloadableEngine:
    def __init__(self, cfg):
        raise ModelLoadError(f"model {cfg.model!r}: no such file or folder; set llm.model to a local folder")


def stage_error(batch: pa.Table) -> pa.Table:
    raise StageError(f"row {batch['id'][0].as_py()}: no prompt; fix the input")


def test_a_model_that_cannot_load_is_its_own_one_line_error_on_ray():
    """Today's failure: Ray's ActorDiedError, whose message is the replica's whole traceback."""
    with pytest.raises(ModelLoadError) as e:
        map_batches(_input(8), answer, execution=_execution(backend="ray"), engine=_llm(),
                    engine_factory=UnloadableEngine)
    assert str(e.value) == "model 'tiny': no such file or folder; set llm.model to a local folder"


def test_a_stage_error_raised_in_a_ray_task_is_itself():
    """Today's failure: a RayTaskError that is also a StageError, whose message is the worker's traceback."""
    with pytest.raises(StageError) as e:
        map_batches(_input(5), stage_error, execution=_execution(backend="ray"))  # one batch
    assert type(e.value) is StageError and str(e.value) == "row r0000: no prompt; fix the input"


def test_the_sessions_ray_instance_leaves_the_environment_of_later_tests_as_it_was():
    """Today's leak: ``ray.init`` (the session's ``ray_cluster``) left RAY_AUTH_MODE=token and
    PYTHONBREAKPOINT=ray.util.rpdb._driver_set_trace in the pytest process, for every later test and every
    command one starts (tests/test_cluster.py's `dvc repro` on its own Ray cluster)."""
    keys = ("RAY_AUTH_MODE", "PYTHONBREAKPOINT", "RAY_USAGE_STATS_ENABLED")
    assert {k: os.environ.get(k) for k in keys} == {k: ENV_AT_START.get(k) for k in keys}


def test_a_model_that_cannot_load_names_its_params_key_on_ray_as_locally(tmp_path, monkeypatch):
    """docs/ray.md: the same line on both backends, naming the key that set the model (selfie.policy_model)."""
    from tests.test_engine_errors import _params_with

    monkeypatch.chdir(tmp_path)
    params = _params_with(tmp_path, **{"selfie.policy_model": "./ckpt"})
    lines = []
    for backend in ("local", "ray"):
        with pytest.raises(ModelLoadError) as e:
            map_batches(_input(8), answer, execution=_execution(backend=backend),
                        engine=params.selfie.role(params.llm, "policy"))
        lines.append(str(e.value))
    assert lines[0] == lines[1] and lines[0].startswith("model './ckpt': no such file or folder; set selfie.policy_model to")


def _sentinel():
    raise ValueError("sentinel: an error nobody reads")


def test_a_failed_engine_step_leaves_no_unhandled_ray_error_after_its_line(monkeypatch):
    """Today's failure (an openai role whose api_key_env is unset on the workers, on a Ray cluster): after the step's
    one line, Ray printed 'Unhandled error' with the replica's whole traceback for each block still in flight.
    An error nobody reads, freed after the step, shows when Ray reports such errors: by then none is the step's."""
    import gc
    import time

    import ray
    import ray._private.worker as worker

    reported: list[str] = []
    monkeypatch.setattr(worker, "_unhandled_error_handler", lambda e: reported.append(str(e)))
    with pytest.raises(ModelLoadError):
        map_batches(_input(40), answer, execution=_execution(backend="ray"), engine=_llm(),
                    engine_factory=UnloadableEngine)
    ref = ray.remote(_sentinel).remote()
    del ref  # never waited for nor read (ray.wait counts as reading it)
    gc.collect()
    for _ in range(600):  # until Ray reports the sentinel (the suite's timeout bounds it)
        if any("sentinel" in r for r in reported):
            break
        time.sleep(0.1)
    assert [r for r in reported if "sentinel" not in r] == [] and any("sentinel" in r for r in reported)


def call_rows(batch: pa.Table, engine) -> pa.Table:
    """``answer`` (no pid), each row with the number of rows of the engine call that answered it."""
    out = answer(batch, engine).drop_columns("pid")
    return out.append_column("call_rows", pa.array([batch.num_rows] * batch.num_rows, pa.int64()))


def _local_and_ray(monkeypatch, markers: Path, table: pa.Table, task_seconds: float,
                   **execution) -> tuple[pa.Table, pa.Table, list[int]]:
    """``call_rows`` over ``table`` locally and on Ray (two replicas of the instant engine, ``llm.batch_size``
    16), with the rows of each block (one Ray task) the driver got back, in order. ``task_seconds`` stands for
    ``TASK_SECONDS`` so the sizes do not hang on this machine's load: the instant engine takes far under 1e9 s
    a row, and far over 1e-12 s."""
    from pipeline import execute, execute_ray

    blocks: list[tuple[int, int]] = []

    def recorded(*args, **kwargs):
        for block in execute_ray.stream_ray(*args, **kwargs):
            blocks.append(block[:2])
            yield block

    kw = dict(engine=_llm(batch_size=16, replicas=2), engine_factory=functools.partial(CountingEngine, str(markers)))
    local = map_batches(table, call_rows, execution=_execution(**execution), **kw)
    monkeypatch.setattr(execute_ray, "TASK_SECONDS", task_seconds)
    monkeypatch.setattr(execute, "stream_ray", recorded)
    remote = map_batches(table, call_rows, execution=_execution(backend="ray", **execution), **kw)
    assert [s for s, _ in blocks] == [0] + [e for _, e in blocks[:-1]] and blocks[-1][1] == table.num_rows
    assert _loads(markers) == 3  # local, and once per replica
    return local, remote, [e - s for s, e in blocks]


@pytest.mark.parametrize(("checkpoint_rows", "cap"), [
    (300, 288),  # execution.checkpoint_rows, in whole batches of 16
    (2048, 496),  # half of each of the 2 replicas' share of the 2,010 rows (two tasks each or more), whole batches
])
def test_ray_blocks_grow_past_the_engine_batch_up_to_their_bound(monkeypatch, tmp_path, checkpoint_rows, cap):
    """Issue 18: Ray got one task per ``llm.batch_size`` (16) rows. A task now carries whole engine batches: one
    batch while nothing is measured (two tasks per replica), then as many as a task's work allows, never more
    than its bound; the engine still answers 16 rows a call, and the output is the local run's."""
    from pipeline.execute_ray import IN_FLIGHT

    local, remote, sizes = _local_and_ray(monkeypatch, tmp_path, _input(2010), 1e9, checkpoint_rows=checkpoint_rows)
    first = IN_FLIGHT * 2
    whole, rest = divmod(2010 - 16 * first, cap)
    assert sizes == [16] * first + [cap] * whole + ([rest] if rest else []), sizes
    assert local["call_rows"].to_pylist() == [16] * 2000 + [10] * 10
    assert remote.equals(local)


def test_ray_blocks_of_a_slow_step_stay_one_engine_batch(monkeypatch, tmp_path):
    """A step whose batch takes longer than a task should hold still reports back batch by batch (the bound
    alone would allow 48 rows a task here)."""
    local, remote, sizes = _local_and_ray(monkeypatch, tmp_path, _input(200), 1e-12, checkpoint_rows=2048)
    assert sizes == [16] * 12 + [8], sizes
    assert remote.equals(local)
