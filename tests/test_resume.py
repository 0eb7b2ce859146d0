"""A real model stage killed midway (SIGKILL, no cleanup) and rerun writes the same bytes as an
uninterrupted run: finished chunks are reused, the half-done one is redone, nothing partial is published."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_tree

pytestmark = pytest.mark.e2e

STAGE = "pugc"
CMD = [sys.executable, "-m", "pipeline.cli", "run", STAGE]


def _env(repo: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(repo), "PREFPIPE_PROGRESS": "0"}


def _run(repo: Path) -> subprocess.CompletedProcess:
    """A whole run; on a timeout (or pytest-timeout's alarm) it is killed, not left running beside the suite."""
    return run_tree(CMD, cwd=repo, env=_env(repo), timeout=600)


def _outputs(repo: Path) -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted((repo / "data" / STAGE).rglob("*")) if p.is_file()}


def test_killed_stage_resumes_to_identical_bytes(built_repo, tmp_path):
    from tests.conftest import copy_project

    repo = copy_project(tmp_path / "prefpipe")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["execution"]["checkpoint_rows"] = 8  # several chunks on the samples
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "data").mkdir(exist_ok=True)
    os.symlink(built_repo / "data" / "ingest", repo / "data" / "ingest")

    clean = _run(repo)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    expected = _outputs(repo)
    assert any(k.endswith(".parquet") for k in expected)
    subprocess.run(["rm", "-rf", str(repo / "data" / STAGE)], check=True)

    with open(tmp_path / "killed.log", "w") as log:  # a file: a pipe nobody reads would stall it once full
        killed = subprocess.Popen(CMD, cwd=repo, env=_env(repo), stdout=log, stderr=subprocess.STDOUT)
    checkpoints = repo / ".prefpipe" / "checkpoints" / STAGE
    deadline = time.time() + 600
    while killed.poll() is None and time.time() < deadline:
        if len(list(checkpoints.rglob("chunk-*.parquet"))) >= 2:
            break
        time.sleep(0.05)
    assert killed.poll() is None, "the stage finished before it could be killed"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    done_before = len(list(checkpoints.rglob("chunk-*.parquet")))
    assert done_before >= 2 and not (repo / "data" / STAGE / "pairs").exists()

    resumed = _run(repo)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert _outputs(repo) == expected
    assert not checkpoints.exists() or not any(checkpoints.rglob("chunk-*"))  # cleared on success
