"""Sharing data: push the outputs to a DVC remote, pull them into a fresh clone, which is then clean."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import dvc

pytestmark = pytest.mark.e2e


def _git(cwd, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", *args], cwd=cwd, check=True, env=env, capture_output=True)


def test_push_to_local_remote_and_pull_into_fresh_clone(built_repo, tmp_path):
    remote = tmp_path / "remote"
    dvc(built_repo, "remote", "add", "--force", "-d", "storage", str(remote))
    _git(built_repo, "add", "dvc.lock", ".dvc/config")
    _git(built_repo, "commit", "-qm", "lock + remote")
    dvc(built_repo, "push")
    assert any(remote.rglob("*")), "nothing was pushed"

    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(built_repo), str(clone))
    dvc(clone, "pull")
    status = dvc(clone, "status").stdout
    assert "up to date" in status.lower(), status
    for out in ("data/ingest/conversations/_manifest.json",):
        assert (clone / out).read_bytes() == (built_repo / out).read_bytes()
