"""Shared fixtures: the repo root, the real data folder, the project's params, one local Ray cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"

os.environ.setdefault("PREFPIPE_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance for the whole test session (2 CPUs), shut down at the end."""
    import ray

    from pipeline.execute import ray_init

    ray_init(None, num_cpus=2)
    yield ray
    ray.shutdown()
