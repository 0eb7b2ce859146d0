"""The whole DAG on a real multi-node Ray cluster on this machine (a head and a worker node as separate
Ray processes on loopback): output byte-identical to the local backend, also when a worker node dies
in the middle of a stage."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_project, popen_tree, run_tree

# The module's whole-DAG Ray run happens in the first test's setup (minutes; more while the other xdist
# worker shares the two cores), so the limit is wider than the suite's default.
pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.timeout(2400)]

# A stage with model steps long enough to kill a node under it.
KILL_STAGE = "pugc"


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 2, "include_dashboard": False})
    c.add_node(num_cpus=2)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def _use_ray(repo: Path) -> None:
    params = repo / "params.yaml"
    data = yaml.safe_load(params.read_text())
    data["execution"]["backend"] = "ray"
    params.write_text(yaml.safe_dump(data, sort_keys=False))


def _env(repo: Path, cluster) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(repo), "RAY_ADDRESS": cluster.address, "DVC_NO_ANALYTICS": "1"}


def _shards(repo: Path) -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted((repo / "data").rglob("*.parquet"))}


@pytest.fixture(scope="module")
def ray_repo(cluster, built_repo, tmp_path_factory) -> Path:
    repo = copy_project(tmp_path_factory.mktemp("ray") / "prefpipe")
    _use_ray(repo)
    # The whole DAG on the cluster takes minutes; a run that hangs is killed with its stages (`run_tree`).
    proc = run_tree(["dvc", "repro"], cwd=repo, env=_env(repo, cluster), timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return repo


def test_ray_cluster_repro_is_byte_identical_to_local(ray_repo, built_repo, cluster):
    local, remote = _shards(built_repo), _shards(ray_repo)
    assert local.keys() == remote.keys() and len(local) > 5
    different = [k for k in local if local[k] != remote[k]]
    assert not different, f"differs between local and ray backends: {different}"
    assert len(cluster.list_all_nodes()) == 2  # a head and a worker served the run


def test_worker_killed_mid_stage_still_completes_identically(ray_repo, built_repo, cluster):
    before = _shards(built_repo)
    with popen_tree(  # a failure or timeout below kills the run and its stage (`communicate` would leave them)
        ["dvc", "repro", "--force", "--single-item", KILL_STAGE],
        cwd=ray_repo, env=_env(ray_repo, cluster), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) as proc:
        checkpoints = ray_repo / ".prefpipe" / "checkpoints" / KILL_STAGE
        deadline = time.time() + 300
        while not checkpoints.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "the stage finished before a node could be killed"
        worker = next(n for n in cluster.list_all_nodes() if n is not cluster.head_node)
        cluster.remove_node(worker, allow_graceful=False)  # SIGKILL the worker's raylet and its workers
        cluster.add_node(num_cpus=2)
        out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    after = _shards(ray_repo)
    stage_files = [k for k in after if k.startswith(f"data/{KILL_STAGE}/")]
    assert stage_files
    assert all(after[k] == before[k] for k in stage_files)
