"""The executor: identical results on both backends, resumable chunks, byte-identical reruns."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.config import Execution
from pipeline.execute import Checkpoint, map_batches


def _execution(**over) -> Execution:
    base = dict(
        backend="local", batch_size=7, checkpoint_rows=20, max_reject_fraction=0.5, ray_address=None,
        num_cpus_per_task=1, target_shard_bytes=1 << 20, row_group_bytes=1 << 20, spill_bytes=1 << 20,
        on_gate_failure="error",
    )
    return Execution(**{**base, **over})


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


KILLABLE = textwrap.dedent(
    """
    import os, sys
    import pyarrow as pa
    from pipeline.config import Execution
    from pipeline.execute import Checkpoint, map_batches
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
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, str(script), str(out), str(ck)], cwd=root, env={**os.environ, "PYTHONPATH": str(root), **env}
    ).returncode


def test_killed_stage_rerun_is_byte_identical(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(KILLABLE)
    assert _run(script, tmp_path / "clean", tmp_path / "ck_clean") == 0

    assert _run(script, tmp_path / "killed", tmp_path / "ck", DIE_AT="r0027") != 0
    assert not (tmp_path / "killed").exists()  # nothing half-written was published
    assert len(list((tmp_path / "ck").glob("chunk-*"))) == 1  # the finished chunk survived
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
