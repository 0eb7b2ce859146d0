"""Every script in bench/ runs at its ``--smoke`` size, so a bench cannot silently break again.

The figures a smoke run prints mean nothing (sizes of seconds); what is checked is that the script
still runs against the current code and prints its result table. A new bench is picked up by itself
and must offer ``--smoke``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_tree

ROOT = Path(__file__).resolve().parents[1]
BENCHES = sorted(p.name for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_"))
# Last lines whose form an issue fixed: the smoke run checks that form.
LAST_LINES = {
    # issue #21: `python bench/engine.py --compare` ends with the three throughput ratios
    "engine.py": r"engine/hand-written: logprobs \d+\.\d\d choose \d+\.\d\d generate \d+\.\d\d",
}

pytestmark = pytest.mark.bench


def test_the_benches_are_found():
    assert {"executor.py", "peer.py", "dove_similar.py"} <= set(BENCHES)


@pytest.mark.parametrize("script", BENCHES)
def test_bench_runs_at_smoke_size(script):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFPIPE_PROGRESS": "0"}
    try:  # a smoke run takes seconds (the slowest ~15 s); a hang must not eat CI's time budget
        proc = run_tree([sys.executable, str(ROOT / "bench" / script), "--smoke"], cwd=ROOT, env=env, timeout=180)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"bench/{script} --smoke still ran after {e.timeout:.0f} s (it hangs: a smoke run takes "
                    f"seconds):\n{(e.stdout or b'')[-2000:]!r}\n{(e.stderr or b'')[-2000:]!r}")
    if "unrecognized arguments: --smoke" in proc.stderr:
        pytest.fail(f"bench/{script} has no --smoke size: add one that runs in seconds and prints its table")
    assert proc.returncode == 0, f"bench/{script} --smoke failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    assert proc.stdout.strip(), f"bench/{script} --smoke printed nothing"
    if script in LAST_LINES:
        last = proc.stdout.strip().splitlines()[-1]
        assert re.fullmatch(LAST_LINES[script], last), f"bench/{script}'s last line changed its form: {last!r}"


def test_a_run_that_times_out_takes_the_processes_it_started_with_it(tmp_path):
    """A bench (or `dvc repro`) that hangs in a child: the timeout, or pytest-timeout's alarm, killed only the
    script, and the child it was waiting on ran on beside the rest of the suite (a stage, a forked writer)."""
    import psutil

    def gone(pid: int) -> bool:  # killed: reaped, or a zombie where the container's init reaps nothing
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    pid = tmp_path / "child.pid"
    with pytest.raises(subprocess.TimeoutExpired):
        run_tree(["sh", "-c", f"sleep 300 & echo $! > {pid}; wait"], timeout=3)
    child = int(pid.read_text())
    deadline = time.monotonic() + 10  # SIGKILL lands at the child's next scheduling, not at once
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(child), f"the child (pid {child}) of the timed-out run still runs"


def test_every_dvc_command_a_test_starts_is_killed_with_its_tree_on_a_timeout():
    """tests/test_cluster.py ran `dvc repro` on its Ray cluster with ``subprocess.run`` and no timeout: a hung
    run waited for the suite's limit, and a run a failure left behind went on with its stages (`run_tree`)."""
    import ast

    direct = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "subprocess"
                    and node.args and isinstance(node.args[0], ast.List) and node.args[0].elts
                    and isinstance(node.args[0].elts[0], ast.Constant) and node.args[0].elts[0].value == "dvc"):
                direct.append(f"{path.name}:{node.lineno}")
    assert not direct, f"dvc started with subprocess directly (use tests.conftest's dvc, run_tree or popen_tree): {direct}"


def test_the_pii_baseline_runs_on_its_own_checkouts_modules(tmp_path):
    """`bench/export.py --pii-only --baseline-code DIR` loaded DIR's pipeline/pii.py by file path, which then
    imported this checkout's `pipeline.column_redact`: the "baseline" ran half on the code it was compared with."""
    import importlib.util
    import shutil

    import pipeline.column_redact
    import pipeline.pii

    path, modules = list(sys.path), set(sys.modules)
    try:  # the script puts bench/ first on sys.path and imports its sibling "executor": undone after
        spec = importlib.util.spec_from_file_location("bench_export", ROOT / "bench" / "export.py")
        spec.loader.exec_module(bench := importlib.util.module_from_spec(spec))
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if str(getattr(sys.modules[name], "__file__", None) or "").startswith(str(ROOT / "bench")):
                del sys.modules[name]
    load_baseline = bench.load_baseline
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    base = load_baseline(tmp_path)
    assert Path(base.__file__) == (tmp_path / "pipeline" / "pii.py").resolve()
    assert Path(base.replace_validated.__code__.co_filename) == (tmp_path / "pipeline" / "column_redact.py").resolve()
    assert sys.modules["pipeline.pii"] is pipeline.pii and sys.modules["pipeline.column_redact"] is pipeline.column_redact
    with pytest.raises(SystemExit, match="no pipeline/pii.py there"):
        load_baseline(tmp_path / "nowhere")
