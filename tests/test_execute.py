"""The executor: identical results on both backends, resumable checkpoints, byte-identical reruns, one
engine per Ray replica for a whole step (and for all the engine steps of a stage that share a config)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline import execute
from pipeline.config import LLM, Execution
from pipeline.execute import Checkpoint, map_batches
from pipeline.execute_ray import engine_pools
from pipeline.llm.base import Completion
from tests.llm_configs import execution_config, llm_config

ROOT = Path(__file__).resolve().parents[1]


def _execution(**over) -> Execution:
    return execution_config(**{**dict(batch_size=7, checkpoint_rows=20, target_shard_bytes=1 << 20, row_group_bytes=1 << 20, spill_bytes=1 << 20, on_gate_failure="error"),
                                **over})


def shout(batch: pa.Table, suffix: str = "!") -> pa.Table:
    """A CPU step: upper-case the text, count its characters."""
    text = pc.utf8_upper(batch["text"])
    return pa.table({"id": batch["id"], "text": pc.binary_join_element_wise(text, suffix, ""), "n": pc.utf8_length(text)})


def _input(n: int = 53) -> pa.Table:
    return pa.table({"id": [f"r{i:04d}" for i in range(n)], "text": [f"row {i} " * (i % 5 + 1) for i in range(n)]})


def test_local_keeps_input_order_and_passes_kwargs():
    out = map_batches(_input(), shout, execution=_execution(), fn_kwargs={"suffix": "?"})
    assert out.column("id").to_pylist() == _input().column("id").to_pylist()
    assert out.column("text")[0].as_py() == "ROW 0 ?"


def test_empty_input_returns_none():
    assert map_batches(_input(0), shout, execution=_execution()) is None


def test_checkpoint_resumes_and_clears_stale_chunks(tmp_path):
    calls = []

    def counted(batch: pa.Table) -> pa.Table:
        calls.append(batch.num_rows)
        return shout(batch)

    ck = Checkpoint(tmp_path / "ck", fingerprint="fp1")
    first = map_batches(_input(), counted, execution=_execution(), checkpoint=ck)
    assert sum(calls) == 53 and len(list((tmp_path / "ck").glob("chunk-*.parquet"))) == 3
    calls.clear()
    again = map_batches(_input(), counted, execution=_execution(), checkpoint=ck)
    assert calls == [] and again.equals(first)
    # New params fingerprint: every old chunk is stale, cleared and recomputed.
    map_batches(_input(), counted, execution=_execution(), checkpoint=Checkpoint(tmp_path / "ck", fingerprint="fp2"))
    assert sum(calls) == 53 and len(list((tmp_path / "ck").glob("chunk-*.parquet"))) == 3


def _counted(calls: list[int]):
    def counted(batch: pa.Table, **kwargs) -> pa.Table:
        calls.append(batch.num_rows)
        return shout(batch, **kwargs)

    return counted


def test_batches_are_cut_at_fixed_rows_whatever_the_checkpoint_size(tmp_path):
    # 53 rows, batch 7: the same seven batches of 7 and one of 4 with or without checkpoints of 20 rows
    # (a checkpoint covers whole batches), so a model sees the same batches on every run.
    for ck in (None, Checkpoint(tmp_path / "ck", fingerprint="fp")):
        calls = []
        map_batches(_input(), _counted(calls), execution=_execution(), checkpoint=ck)
        assert calls == [7] * 7 + [4]
    names = sorted(p.name for p in (tmp_path / "ck").glob("chunk-*.parquet"))
    assert [n.split("-")[1:3] for n in names] == [["000000000000", "000000000021"], ["000000000021", "000000000042"],
                                                  ["000000000042", "000000000053"]]


def test_slow_steps_checkpoint_by_time_and_resume_fills_only_the_gaps(tmp_path, monkeypatch):
    plain = map_batches(_input(), shout, execution=_execution())
    ck, ck_dir = Checkpoint(tmp_path / "ck", fingerprint="fp"), tmp_path / "ck"
    monkeypatch.setattr(execute, "FLUSH_SECONDS", 0.0)  # a slow model: every batch outlasts the flush interval
    calls = []
    first = map_batches(_input(), _counted(calls), execution=_execution(), checkpoint=ck)
    files = sorted(ck_dir.glob("chunk-*.parquet"))
    assert len(files) == 8 and first.equals(plain)  # one file per batch, long before 20 rows are done
    monkeypatch.setattr(execute, "FLUSH_SECONDS", 3600.0)
    files[2].unlink()  # rows 14-20
    files[5].unlink()  # rows 35-41
    (ck_dir / ".chunk-000000000000-000000000021-0123456789abcdef.parquet.1a2b3c4d").write_bytes(b"half")  # killed write
    (ck_dir / "chunk-00003-0123456789abcdef.parquet").write_bytes(b"older layout")
    calls.clear()
    again = map_batches(_input(), _counted(calls), execution=_execution(), checkpoint=ck)
    assert calls == [7, 7] and again.equals(plain)
    # the two gaps written back, the leftovers cleared; beside the files, what they were computed with
    assert sorted(p.name for p in ck_dir.iterdir())[8:] == [execute.RECORD_FILE] and len(list(ck_dir.glob("chunk-*"))) == 8


def test_resume_fills_one_row_gaps_and_never_reads_overlapping_files_twice(tmp_path, monkeypatch):
    plain = map_batches(_input(), shout, execution=_execution())
    monkeypatch.setattr(execute, "FLUSH_SECONDS", 0.0)  # one file per batch
    per_batch = Checkpoint(tmp_path / "per_batch", fingerprint="fp")
    map_batches(_input(), shout, execution=_execution(), checkpoint=per_batch)
    monkeypatch.setattr(execute, "FLUSH_SECONDS", 3600.0)
    # a file of rows 14-21 left beside one of rows 0-21 (both valid): the rows are read once
    ck = Checkpoint(tmp_path / "ck", fingerprint="fp")
    map_batches(_input(), shout, execution=_execution(), checkpoint=ck)
    (stale,) = (tmp_path / "per_batch").glob("chunk-000000000014-000000000021-*.parquet")
    (tmp_path / "ck" / stale.name).write_bytes(stale.read_bytes())
    calls = []
    assert map_batches(_input(), _counted(calls), execution=_execution(), checkpoint=ck).equals(plain)
    assert calls == []
    # batch size 1: a gap of a single row is computed again
    one = Checkpoint(tmp_path / "one", fingerprint="fp")
    monkeypatch.setattr(execute, "FLUSH_SECONDS", 0.0)
    map_batches(_input(), shout, execution=_execution(batch_size=1), checkpoint=one)
    monkeypatch.setattr(execute, "FLUSH_SECONDS", 3600.0)
    for start in ("000000000000", "000000000030"):
        next((tmp_path / "one").glob(f"chunk-{start}-*.parquet")).unlink()
    calls.clear()
    assert map_batches(_input(), _counted(calls), execution=_execution(batch_size=1), checkpoint=one).equals(plain)
    assert calls == [1, 1]


def test_a_cut_or_damaged_checkpoint_file_is_named_and_recomputed(tmp_path, caplog):
    # A file named like a finished chunk (right rows, right fingerprint) whose bytes are cut short, or have a
    # byte flipped inside a data page, used to crash the rerun (ArrowInvalid) or feed it wrong rows.
    plain = map_batches(_input(), shout, execution=_execution())
    ck, ck_dir = Checkpoint(tmp_path / "ck", fingerprint="fp"), tmp_path / "ck"
    map_batches(_input(), shout, execution=_execution(), checkpoint=ck)
    files = sorted(ck_dir.glob("chunk-*.parquet"))
    cut = files[0].read_bytes()
    files[0].write_bytes(cut[: len(cut) // 2])
    text = pq.ParquetFile(files[1]).metadata.row_group(0).column(1)  # the last byte of its last data page
    flipped = bytearray(files[1].read_bytes())
    flipped[(text.dictionary_page_offset or text.data_page_offset) + text.total_compressed_size - 1] ^= 0x01
    files[1].write_bytes(bytes(flipped))
    calls = []
    with caplog.at_level("WARNING", logger="pipeline.execute"):
        again = map_batches(_input(), _counted(calls), execution=_execution(), checkpoint=ck)
    assert again.equals(plain) and sum(calls) == 42  # the two damaged files' rows (0-41) computed again
    warned = [r.getMessage() for r in caplog.records if "unreadable checkpoint file" in r.getMessage()]
    assert len(warned) == 2 and all("\n" not in w for w in warned)
    assert str(files[0]) in warned[0] and str(files[1]) in warned[1]
    assert sorted(ck_dir.glob("chunk-*.parquet")) == files  # rewritten under the same names


def test_a_checkpoint_computed_with_other_step_arguments_or_code_is_not_reused(tmp_path, monkeypatch):
    # Stages fingerprint their params, but a prompt template reaches the step as a keyword argument (or is
    # read by the step's code): a run killed before an edit of it used to leave rows the rerun mixed in.
    ck, calls = Checkpoint(tmp_path / "ck", fingerprint="same params"), []
    map_batches(_input(), _counted(calls), execution=_execution(), checkpoint=ck, fn_kwargs={"suffix": "!"})
    calls.clear()
    out = map_batches(_input(), _counted(calls), execution=_execution(), checkpoint=ck, fn_kwargs={"suffix": "?"})
    assert sum(calls) == 53 and out.equals(map_batches(_input(), shout, execution=_execution(), fn_kwargs={"suffix": "?"}))
    calls.clear()
    map_batches(_input(), _counted(calls), execution=_execution(), checkpoint=ck, fn_kwargs={"suffix": "?"})
    assert calls == []  # same arguments and code: resumed
    # A step whose template is a file in its package, edited between a killed run and the rerun: recomputed.
    pkg = tmp_path / "steppkg"
    (pkg / "prompts").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "prompts" / "suffix.txt").write_text("!")
    (pkg / "step.py").write_text(textwrap.dedent("""
        from pathlib import Path
        import pyarrow.compute as pc

        def templated(batch):
            suffix = (Path(__file__).parent / "prompts" / "suffix.txt").read_text()
            return batch.set_column(1, "text", pc.binary_join_element_wise(batch["text"], suffix, ""))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    from steppkg.step import templated

    first = map_batches(_input(), templated, execution=_execution(), checkpoint=ck)
    (pkg / "prompts" / "suffix.txt").write_text("?")
    execute._code_version.cache_clear()  # a new process reads the code again
    again = map_batches(_input(), templated, execution=_execution(), checkpoint=ck)
    assert first["text"][0].as_py() == "row 0 !" and again.equals(map_batches(_input(), templated, execution=_execution()))


def test_checkpoints_that_no_longer_match_the_input_are_recomputed(tmp_path):
    ck = Checkpoint(tmp_path / "ck", fingerprint="fp")
    map_batches(_input(), shout, execution=_execution(), checkpoint=ck)
    # Row 30 edited: only the file covering rows 21-41 is stale.
    edited = _input().set_column(1, "text", pa.array([("edited" if i == 30 else f"row {i} " * (i % 5 + 1))
                                                      for i in range(53)]))
    calls = []
    out = map_batches(edited, _counted(calls), execution=_execution(), checkpoint=ck)
    assert calls == [7, 7, 7] and out.equals(map_batches(edited, shout, execution=_execution()))
    # Batch size 5: no file ends on a batch boundary any more (21, 42), so none is reused.
    calls.clear()
    out = map_batches(edited, _counted(calls), execution=_execution(batch_size=5), checkpoint=ck)
    assert sum(calls) == 53 and set(calls) == {5, 3}
    assert out.equals(map_batches(edited, shout, execution=_execution(batch_size=5)))


KILLABLE = textwrap.dedent(
    """
    import os, sys
    import pyarrow as pa
    from pipeline.config import Execution
    from pipeline.execute import Checkpoint, map_batches
    from pipeline.execute_ray import engine_pools
    from pipeline.io import write_shards
    from tests.test_execute import _execution, _input, shout

    def maybe_die(batch):
        if os.environ.get("DIE_AT") and batch["id"][0].as_py() == os.environ["DIE_AT"]:
            os._exit(9)  # as abrupt as kill -9: no cleanup, no exception handlers
        return shout(batch)

    out_dir, ck_dir = sys.argv[1], sys.argv[2]
    ck = Checkpoint(ck_dir, fingerprint="stage-v1")
    out = map_batches(_input(), maybe_die, execution=_execution(), checkpoint=ck)
    write_shards(out, out_dir, fingerprint="stage-v1", target_shard_bytes=2000)
    ck.clear()
    """
)


def _run(script: Path, out: Path, ck: Path, **env) -> int:
    return subprocess.run(
        [sys.executable, str(script), str(out), str(ck)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env}
    ).returncode


def test_killed_stage_rerun_is_byte_identical(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(KILLABLE)
    assert _run(script, tmp_path / "clean", tmp_path / "ck_clean") == 0

    assert _run(script, tmp_path / "killed", tmp_path / "ck", DIE_AT="r0028") != 0
    assert not (tmp_path / "killed").exists()  # nothing half-written was published
    assert len(list((tmp_path / "ck").glob("chunk-*"))) == 1  # rows 0-20 survived (28 starts the 2nd file)
    assert _run(script, tmp_path / "killed", tmp_path / "ck") == 0

    clean = sorted(p.name for p in (tmp_path / "clean").iterdir())
    assert clean == sorted(p.name for p in (tmp_path / "killed").iterdir()) and len(clean) > 2
    for name in clean:
        assert (tmp_path / "clean" / name).read_bytes() == (tmp_path / "killed" / name).read_bytes(), name


@pytest.mark.ray
def test_ray_backend_matches_local(ray_cluster):
    table = _input(200)
    local = map_batches(table, shout, execution=_execution(batch_size=16), fn_kwargs={"suffix": "#"})
    remote = map_batches(table, shout, execution=_execution(backend="ray", batch_size=16), fn_kwargs={"suffix": "#"})
    assert remote.equals(local)


def crash_once(batch: pa.Table, log: str, at: str) -> pa.Table:
    """``shout``, logging the ids it sees to ``log``; the first time it meets row ``at`` it fails (a lost
    worker, an exception), leaving a marker so that the rerun goes through."""
    ids = batch["id"].to_pylist()
    with open(log, "a") as f:
        f.write("".join(f"{i}\n" for i in ids))
    marker = Path(log + ".crashed")
    if at in ids and not marker.exists():
        marker.touch()
        raise RuntimeError(f"step crashed at {at}")
    return shout(batch)


@pytest.mark.ray
def test_a_ray_step_that_fails_resumes_from_the_driver_checkpoints(ray_cluster, tmp_path):
    """The driver writes Ray results as they arrive: after a crash near the end, the rerun computes only the
    batches no checkpoint holds, and its output equals a local run's."""
    table, log = _input(120), str(tmp_path / "seen.log")
    ray_ex = _execution(backend="ray", batch_size=8, checkpoint_rows=16)
    ck = Checkpoint(tmp_path / "ck", fingerprint="fp")
    with pytest.raises(Exception, match="step crashed at r0115"):
        map_batches(table, crash_once, execution=ray_ex, checkpoint=ck, fn_kwargs={"log": log, "at": "r0115"})
    spans = [tuple(int(x) for x in p.name.split("-")[1:3]) for p in (tmp_path / "ck").glob("chunk-*.parquet")]
    saved = {f"r{i:04d}" for start, end in spans for i in range(start, end)}
    assert saved and "r0115" not in saved
    Path(log).unlink()
    out = map_batches(table, crash_once, execution=ray_ex, checkpoint=ck, fn_kwargs={"log": log, "at": "r0115"})
    rerun = Path(log).read_text().split()
    assert sorted(rerun) == sorted(set(table["id"].to_pylist()) - saved)  # every other row once, no saved row
    assert out.equals(map_batches(table, shout, execution=_execution(batch_size=8)))


class CountingEngine:
    """A test double of the engine protocol that leaves one marker file per construction (its pid),
    so a test can count how many times each process built its engine."""

    def __init__(self, marker_dir: str, cfg: LLM):
        if "BROKEN" in marker_dir:
            raise ValueError(f"no such model {cfg.model!r}: set llm.model to a Hub id or a local folder")
        Path(marker_dir, f"{os.getpid()}-{uuid.uuid4().hex}").touch()

    def generate(self, prompts, n=1, sampling=None, schema=None):
        return [[Completion(f"{p[-1]['content']} #{j}") for j in range(n)] for p in prompts]


def answer(batch: pa.Table, engine) -> pa.Table:
    outs = engine.generate([[{"role": "user", "content": t}] for t in batch["text"].to_pylist()], n=2)
    return pa.table({"id": batch["id"], "answer": [" | ".join(c.text for c in o) for o in outs],
                     "pid": [os.getpid()] * batch.num_rows})


def _llm(**over) -> LLM:
    return llm_config(**{"batch_size": 4, **over})


@pytest.mark.ray
def test_ray_engine_step_builds_one_engine_per_replica_for_the_whole_step(ray_cluster, tmp_path):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests folder
    markers = tmp_path / "markers"
    markers.mkdir()
    table = _input(600)
    factory = functools.partial(CountingEngine, str(markers))
    kw = dict(engine=_llm(replicas=2), engine_factory=factory)
    local = map_batches(table, answer, execution=_execution(checkpoint_rows=16), **kw)
    assert len(list(markers.iterdir())) == 1
    for m in markers.iterdir():
        m.unlink()

    ck = Checkpoint(tmp_path / "ck", fingerprint="fp")
    remote = map_batches(table, answer, execution=_execution(backend="ray", checkpoint_rows=16), checkpoint=ck, **kw)
    loads = sorted(int(m.name.split("-")[0]) for m in markers.iterdir())
    assert len(loads) == 2 and len(set(loads)) == 2  # two replicas, each built its engine once
    assert set(remote["pid"].to_pylist()) <= set(loads)  # every one of the 150 batches went through them
    assert remote.drop_columns("pid").equals(local.drop_columns("pid"))
    assert len(list((tmp_path / "ck").glob("chunk-*.parquet"))) >= 600 // 16  # written as results arrived

    with pytest.raises(Exception, match="no such model 'tiny'"):  # an engine that cannot load fails the step
        map_batches(table.slice(0, 8), answer, execution=_execution(backend="ray"), engine=_llm(),
                    engine_factory=functools.partial(CountingEngine, str(tmp_path / "BROKEN")))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def broken(batch: pa.Table, engine) -> pa.Table:
    raise ValueError("a step that fails on its first batch")


@pytest.mark.ray
@pytest.mark.timeout(300)  # a kept pool that starves a CPU step hangs it: fail, don't wait 15 minutes
def test_ray_engine_steps_with_one_config_share_the_replicas_of_a_stage(ray_cluster, tmp_path):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests folder
    markers = tmp_path / "markers"
    markers.mkdir()
    loads = lambda: sorted(int(m.name.split("-")[0]) for m in markers.iterdir())  # noqa: E731
    table = _input(300)
    factory = functools.partial(CountingEngine, str(markers))
    kw = dict(engine=_llm(replicas=2), engine_factory=factory)
    local = map_batches(table, answer, execution=_execution(), **kw)
    local2 = map_batches(local.select(["id"]).append_column("text", local["answer"]), answer, execution=_execution(),
                         **kw)
    for m in markers.iterdir():
        m.unlink()

    ray_ex = _execution(backend="ray")
    with engine_pools():
        first = map_batches(table, answer, execution=ray_ex, **kw)
        second = map_batches(first.select(["id"]).append_column("text", first["answer"]), answer, execution=ray_ex,
                             **kw)
        replicas = loads()
        assert len(replicas) == 2 and len(set(replicas)) == 2  # each replica loaded once for both steps
        assert set(first["pid"].to_pylist()) | set(second["pid"].to_pylist()) <= set(replicas)
        assert first.drop_columns("pid").equals(local.drop_columns("pid"))
        assert second.drop_columns("pid").equals(local2.drop_columns("pid"))

        other = map_batches(table, answer, execution=ray_ex, engine=_llm(replicas=2, batch_size=8),
                            engine_factory=factory)  # another engine config: a new pool, the old one is released
        assert len(loads()) == 4 and set(other["pid"].to_pylist()).isdisjoint(replicas)
        assert other.drop_columns("pid").equals(local.drop_columns("pid"))

        with pytest.raises(Exception, match="fails on its first batch"):  # a failed step never leaves its pool kept
            map_batches(table, broken, execution=ray_ex, **kw)
        before = set(loads())
        again = map_batches(table, answer, execution=ray_ex, **kw)
        # New replicas answer (a replica of the failed pool may still finish loading after the error, so its
        # marker can appear late: the count of new markers is not asserted, only who answered).
        answered = set(again["pid"].to_pylist())
        assert len(answered) <= 2 and answered <= set(loads()) - before
        assert again.drop_columns("pid").equals(local.drop_columns("pid"))

        cpu = map_batches(table, shout, execution=ray_ex)  # a CPU step on Ray: the kept pool gives its CPUs back
        assert cpu.equals(map_batches(table, shout, execution=_execution()))
        assert _all_exit(set(again["pid"].to_pylist()))
        last = map_batches(table, answer, execution=ray_ex, **kw)
    assert _all_exit(set(last["pid"].to_pylist()))  # the end of the block released the pool


def _all_exit(pids: set[int], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not any(_alive(pid) for pid in pids)


def test_a_failing_batch_keeps_every_batch_finished_before_it(tmp_path):
    """Today's failure: only Ctrl-C and a failed engine flushed; a batch that raised anything else threw away
    the batches finished since the last checkpoint file (here rows 21-28; up to checkpoint_rows or 60 s)."""
    log, ck = str(tmp_path / "seen.log"), Checkpoint(tmp_path / "ck", fingerprint="fp")
    with pytest.raises(RuntimeError, match="step crashed at r0030"):
        map_batches(_input(), crash_once, execution=_execution(), checkpoint=ck, fn_kwargs={"log": log, "at": "r0030"})
    spans = sorted(tuple(int(x) for x in p.name.split("-")[1:3]) for p in (tmp_path / "ck").glob("chunk-*.parquet"))
    assert spans == [(0, 21), (21, 28)]
    Path(log).unlink()
    out = map_batches(_input(), crash_once, execution=_execution(), checkpoint=ck, fn_kwargs={"log": log, "at": "r0030"})
    assert Path(log).read_text().split()[0] == "r0028"  # the rerun starts at the failed batch
    assert out.equals(map_batches(_input(), shout, execution=_execution()))


def test_step_checkpoint_keeps_the_folder_and_fingerprint_of_a_killed_run(tmp_path):
    """Stages name their step checkpoints with ``step_checkpoint``: a run killed before it resumes only if the
    folder (root/step) and the fingerprint (the parts plus the step's name) are what that run wrote."""
    from pipeline.config import fingerprint
    from pipeline.execute import step_checkpoint

    ck = step_checkpoint(tmp_path / "pugc", "sampling", {"k": 4})
    assert Path(ck.dir) == tmp_path / "pugc" / "sampling"
    assert ck.fingerprint == fingerprint({"k": 4}, {"step": "sampling"})
    assert ck.fingerprint != step_checkpoint(tmp_path / "pugc", "scoring", {"k": 4}).fingerprint


def test_an_engine_step_resumed_on_a_resized_cluster_keeps_its_checkpoints(tmp_path):
    """``llm.replicas`` and ``gpus_per_replica`` only place engines (pipeline/config.py ``PLACEMENT_KEYS``):
    a model step killed on one cluster size resumes from its checkpoint files on another. The step's
    fingerprint used to hash the whole engine config, so a resized rerun threw every file away and
    computed the step again (the same bytes, hours of model calls on a real cluster)."""
    markers = tmp_path / "markers"
    markers.mkdir()
    kw = dict(engine_factory=functools.partial(CountingEngine, str(markers)), checkpoint=Checkpoint(tmp_path / "ck", "fp"))
    first = map_batches(_input(), answer, execution=_execution(), engine=_llm(), **kw)
    files = sorted(p.name for p in (tmp_path / "ck").glob("chunk-*.parquet"))
    assert len(list(markers.iterdir())) == 1 and files
    again = map_batches(_input(), answer, execution=_execution(), engine=_llm(replicas=3, gpus_per_replica=1), **kw)
    assert len(list(markers.iterdir())) == 1  # no engine built: every row came from the checkpoint files
    assert sorted(p.name for p in (tmp_path / "ck").glob("chunk-*.parquet")) == files and again.equals(first)
    map_batches(_input(), answer, execution=_execution(), engine=_llm(batch_size=5), **kw)
    assert len(list(markers.iterdir())) == 2  # a key that can change the answers still starts the step over
