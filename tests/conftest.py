"""Shared fixtures: the repo root, the real data folder, the project's params, one local Ray cluster; commands
run with their whole process tree killed on a timeout (``run_tree``, ``dvc``); and how the suite is spread over
pytest-xdist workers (`-n 2 --dist loadgroup`, pyproject.toml)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"

os.environ.setdefault("PREFPIPE_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Answers of OpenAI-compatible servers are cached on disk by model name + request (pipeline.llm.request_cache):
# the suite never reads or fills the user's cache (~/.cache/prefpipe/requests), where answers from a README
# walk-through would turn a "server is down" test into cache hits. This folder serves Ray actors and
# subprocesses started from the suite; `_empty_request_cache` gives each test its own.
os.environ["PREFPIPE_REQUEST_CACHE"] = tempfile.mkdtemp(prefix="prefpipe-test-requests-")
ENV_AT_START = dict(os.environ)  # what the suite's tests start from (tests/test_ray_workers.py checks Ray keeps it)


# pytest-xdist groups (`--dist loadgroup`): a module runs whole on one worker, so its module-scoped fixtures
# are built once; the modules that read the session's `built_repo` run together, so it is built once; and
# the longest groups (minutes each: the real model's DAG, Ray's whole-DAG runs) start first
# (`--no-loadscope-reorder` keeps this order instead of sorting groups by their number of tests).
BUILT_REPO_MODULES = {"test_cluster.py", "test_dvc.py", "test_remote.py", "test_resume.py"}
LONGEST_FIRST = ["test_real_model.py", "built_repo"]
# Modules whose tests all run on the session's local Ray (`ray_cluster`): one worker, one Ray instance.
SAME_GROUP = {"test_ray_workers.py": "test_execute.py"}


def _group(item: pytest.Item) -> str:
    name = item.path.name
    return "built_repo" if name in BUILT_REPO_MODULES else SAME_GROUP.get(name, name)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
    first = {name: rank for rank, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: first.get(_group(item), len(first)))  # stable: module order otherwise kept


@pytest.fixture(autouse=True)
def _empty_request_cache(monkeypatch, tmp_path_factory):
    """Each test starts with no cached server answers (a test may point the cache elsewhere itself)."""
    monkeypatch.setenv("PREFPIPE_REQUEST_CACHE", str(tmp_path_factory.mktemp("requests")))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def real() -> Path:
    if not REAL.exists():
        pytest.fail(f"real data not found at {REAL}: the shared/ folder must sit beside the project root")
    return REAL


@pytest.fixture(scope="session")
def params():
    from pipeline.config import load_params

    return load_params(ROOT / "params.yaml")


@pytest.fixture
def good(root) -> dict:
    """The shipped params.yaml as a mapping a test edits (tests/params_edits.py writes and loads it)."""
    import yaml

    return yaml.safe_load((root / "params.yaml").read_text())


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance for the whole test session (2 CPUs), shut down at the end."""
    import ray

    from pipeline.execute_ray import ray_init

    with environ_kept():  # Ray keeps what it needs: its workers were started with the variables it set
        ray_init(None, num_cpus=2)
    yield ray
    ray.shutdown()


@contextlib.contextmanager
def environ_kept():
    """``os.environ`` as it was on entry, again on exit. ``ray.init`` sets RAY_AUTH_MODE=token, PYTHONBREAKPOINT
    (its debugger) and RAY_USAGE_STATS_ENABLED in the driver's environment and leaves them there: every later test,
    and every command it starts (`dvc repro` on a Ray cluster), would run with them."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in [k for k in os.environ if k not in saved]:
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


def copy_project(dest: Path) -> Path:
    """A fresh checkout of the project's tracked files (plus untracked, not ignored ones) in ``dest``,
    as its own git repository, so `dvc repro` there starts from nothing."""
    import shutil
    import subprocess

    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest.parent / "shared").exists() or (dest.parent / "shared").symlink_to(ROOT.parent / "shared")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env)
    return dest


@contextlib.contextmanager
def popen_tree(cmd: list[str], **kwargs):
    """``subprocess.Popen(cmd, **kwargs)`` whose whole process tree is killed when the block ends early: a timeout
    (``TimeoutExpired``), a failed assertion, an interrupt (pytest-timeout's alarm, Ctrl-C). ``subprocess.run``
    kills only its direct child, so a `dvc repro` that hung left its stage running on the shared cores for the
    rest of the suite. (Same process group as the suite: a group kill of the suite still reaches it.)"""
    import subprocess

    import psutil

    with subprocess.Popen(cmd, **kwargs) as proc:
        try:
            yield proc
        except BaseException:
            with contextlib.suppress(psutil.NoSuchProcess):
                tree = psutil.Process(proc.pid).children(recursive=True)
                proc.kill()  # first, so it starts nothing more
                for child in tree:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        child.kill()
            raise


def run_tree(cmd: list[str], *, timeout: float | None = None, **kwargs):
    """``subprocess.run(cmd, capture_output=True, text=True)`` whose whole process tree is killed when the wait
    ends early (`popen_tree`): on ``timeout`` (``TimeoutExpired``, with the output so far) or an interrupt."""
    import subprocess

    with popen_tree(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs) as proc:
        out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def dvc(cwd: Path, *args: str, check: bool = True):
    env = {**os.environ, "PYTHONPATH": str(cwd), "DVC_NO_ANALYTICS": "1"}
    proc = run_tree(["dvc", *args], cwd=cwd, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def built_repo(tmp_path_factory) -> Path:
    """A copy of the project on which `dvc repro` has run once (shared by the end-to-end tests)."""
    dest = copy_project(tmp_path_factory.mktemp("e2e") / "prefpipe")
    dvc(dest, "repro")
    return dest
