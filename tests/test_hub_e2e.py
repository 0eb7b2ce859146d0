"""`prefpipe publish` on the wire: huggingface_hub's real HTTP calls against a fake Hub on loopback
(tests/hub_server.py), not monkeypatched HfApi methods (tests/test_hub.py).

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_HUB_DISABLE_XET`` into
``huggingface_hub.constants`` once, at import; the ``hub`` fixture points those constants at the server for the
test (and sets the environment alike, which ``pipeline.hub`` reads at call time). Xet storage is disabled
(``HF_HUB_DISABLE_XET``): ``upload_folder`` then commits with ``create_commit``, the shards going through the
git-LFS batch API and a basic PUT upload, which the fake Hub stores and checks byte for byte. The Xet path
(``hf_xet``'s chunk store and the pipelined multi-commit upload used when it is installed) is not served
here.

What is proven: a release lands with exactly its manifest's files (plus the ``.gitattributes`` every Hub repo
holds), byte-identical, on the asked revision, sent with the token as a Bearer header; stale shards and plots
of an earlier, larger release are deleted in the same commit; a branch is created and main left untouched;
a commit that fails is reported in one line and the same command re-run completes it without uploading
any shard twice; an existing public repo takes a release only with ``--public``; a token that may read the
repo but not write to it (403 from the Hub's API) is told so, not to re-run.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from huggingface_hub import constants

from pipeline.cli import main as cli
from pipeline.hub import LOCAL_ONLY, PublishError, publish
from pipeline.io import read_manifest
from stages.export import build_release
from tests.conftest import ROOT
from tests.export_fixtures import TOPICS, export_cfg, pair, standard_methods, write_method
from tests.hub_server import GITATTRIBUTES, FakeHub

pytestmark = [pytest.mark.e2e, pytest.mark.hub]

TOKEN = "hf_" + "e2e" * 11 + "x"
READ_TOKEN = "hf_" + "r" * 34  # may read the repo, not write to it
REPO = "org/prefs"


def _release(root, fingerprint: str, **cfg):
    build_release(export_cfg(**cfg), root, root / "data" / "release", fingerprint)
    return root / "data" / "release"


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """Five configs with train and test shards, and plots/summary.png (a binary file: LFS by .gitattributes)."""
    root = tmp_path_factory.mktemp("large")
    standard_methods(root)
    return _release(root, "fp-large", test_fraction=0.3, summary_png=True)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """PUGC alone: all/ and pugc/ train shards, no plots/summary.png."""
    root = tmp_path_factory.mktemp("small")
    write_method(root, "pugc", [pair(f"pugc{i}", t, "pugc", confidence=0.6 + i / 100) for i, t in enumerate(TOPICS[:8])])
    return _release(root, "fp-small", test_fraction=0.3)


def manifest_files(release) -> dict[str, bytes]:
    m = read_manifest(release)
    others = [f["path"] for f in m.get("other_files", []) if f["path"] not in LOCAL_ONLY]  # removed.jsonl stays local
    paths = [f["path"] for f in m["files"]] + others + ["_manifest.json"]
    return {p: (release / p).read_bytes() for p in paths}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    server = FakeHub(token=TOKEN, read_tokens=(READ_TOKEN,)).start()
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent_harnesses.json"))  # not ~/.cache
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite runs with HF_HUB_OFFLINE=1
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    for name, value in {"HF_ENDPOINT": server.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
                        "HF_TOKEN": TOKEN}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    yield server
    server.stop()
    assert server.unhandled == [], f"huggingface_hub called endpoints the fake Hub does not serve: {server.unhandled}"


def run(release, *extra: str) -> int:
    return cli(["publish", "--repo-id", REPO, "--path", str(release), *extra])


def expected(release) -> dict[str, bytes]:
    return manifest_files(release) | {".gitattributes": GITATTRIBUTES.encode()}


def test_publish_lands_the_manifest_files_byte_identical_on_main(large, hub, capsys):
    assert run(large) == 0
    out = capsys.readouterr().out
    assert f"uploading {len(manifest_files(large))} files to {hub.url}/datasets/{REPO} (revision main)" in out
    assert f"published: {hub.url}/datasets/{REPO}/commit/" in out
    assert hub.files(REPO, "main") == expected(large)
    assert list(hub.repos[REPO].branches) == ["main"] and hub.repos[REPO].private is True  # private unless --public
    # the shards and the PNG went through LFS (PUT to the upload URL), the JSON / CSV / card inline
    lfs = {p for p, b in hub.repos[REPO].branches["main"].files.items() if b.lfs}
    assert lfs == {p for p in manifest_files(large) if p.endswith((".parquet", ".png"))}
    assert len(hub.requests("lfs_upload")) == len(lfs)
    assert len(hub.requests("commit")) == 1  # one commit: the whole release or nothing
    # the token went to every API call as a Bearer header, never to the storage URL
    api = [r for r in hub.log if r not in hub.requests("lfs_upload") + hub.requests("agent_harnesses")]
    assert {auth for _, _, auth, _ in api} == {f"Bearer {TOKEN}"}
    assert {auth for _, _, auth, _ in hub.requests("lfs_upload")} == {None}


def test_a_smaller_release_deletes_the_stale_shards_and_plots(large, small, hub):
    assert run(large) == 0
    before = set(hub.files(REPO))
    assert run(small) == 0
    assert hub.files(REPO, "main") == expected(small)
    stale = before - set(expected(small))
    assert {p for p in stale if p.endswith(".parquet")} >= {"all/test-00000-of-00001.parquet",
                                                            "dove/train-00000-of-00001.parquet"}
    assert "plots/summary.png" in stale
    # the deletions and the new files are one commit: no revision where the card's globs read a mix
    assert len(hub.requests("commit")) == 2


def test_a_revision_is_a_new_branch_and_main_is_untouched(large, small, hub):
    assert run(large) == 0
    main = hub.files(REPO, "main")
    assert run(small, "--revision", "v1") == 0
    assert hub.files(REPO, "main") == main
    # the branch starts from main, so the larger release's stale shards are deleted there too
    assert hub.files(REPO, "v1") == expected(small)
    assert [p for _, p, _, _ in hub.requests("create_branch")] == [f"/api/datasets/{REPO}/branch/v1"]
    assert [p for _, p, _, _ in hub.requests("commit")][-1] == f"/api/datasets/{REPO}/commit/v1"
    # re-running on the existing branch (409 from the Hub) is fine and changes nothing
    assert run(small, "--revision", "v1") == 0
    assert hub.files(REPO, "v1") == expected(small)


def test_a_revision_on_a_new_private_repo_starts_from_its_initial_commit(small, hub):
    assert run(small, "--revision", "v1", "--private") == 0
    assert hub.repos[REPO].private is True
    assert hub.files(REPO, "main") == {".gitattributes": GITATTRIBUTES.encode()}
    assert hub.files(REPO, "v1") == expected(small)


def test_a_failed_commit_is_one_line_and_a_rerun_completes_it(large, hub, capsys):
    hub.faults.append(("commit", 500))
    assert run(large) == 1
    err = capsys.readouterr().err  # huggingface_hub's progress bars, then prefpipe's message
    msg = err[err.index("prefpipe publish: "):]
    assert msg.startswith(f"prefpipe publish: upload to {REPO} failed part-way: HfHubHTTPError: ")
    assert "500 Internal Server Error" in msg and "injected fault on commit" in msg and "re-run the same command" in msg
    assert msg.count("\n") == 1, msg  # one line
    assert hub.files(REPO, "main") == {".gitattributes": GITATTRIBUTES.encode()}  # nothing half-applied
    uploads = len(hub.requests("lfs_upload"))
    assert uploads == len(hub.repos[REPO].lfs) > 0  # the shards reached LFS storage before the commit failed
    assert run(large) == 0
    assert hub.files(REPO, "main") == expected(large)
    assert len(hub.requests("lfs_upload")) == uploads  # the re-run uploaded no shard again
    # and once more with nothing to change: no new commit
    commits = len(hub.requests("commit"))
    assert run(large) == 0
    assert len(hub.requests("commit")) == commits and hub.files(REPO, "main") == expected(large)


def test_a_refused_shard_upload_names_its_cause_and_a_rerun_completes_it(large, hub, capsys):
    hub.faults.append(("lfs_upload", 403))  # storage refuses one shard (an expired presigned URL: not retried)
    assert run(large) == 1
    err = capsys.readouterr().err
    msg = err[err.index("prefpipe publish: "):]
    assert msg.startswith(f"prefpipe publish: upload to {REPO} failed part-way: RuntimeError: Error while uploading '")
    assert "403 Forbidden" in msg and "injected fault on lfs_upload" in msg and "re-run the same command" in msg
    assert msg.count("\n") == 1, msg
    assert hub.files(REPO, "main") == {".gitattributes": GITATTRIBUTES.encode()}
    stored = [p for _, p, _, status in hub.requests("lfs_upload") if status == 200]
    assert run(large) == 0
    assert hub.files(REPO, "main") == expected(large)
    again = [p for _, p, _, status in hub.requests("lfs_upload") if status == 200][len(stored):]
    # the re-run uploads what storage did not hold (the refused shard, and those cancelled after it), nothing twice
    assert not set(again) & set(stored) and len(stored) + len(again) == len(hub.repos[REPO].lfs)


def test_a_wrong_token_is_a_clear_error(small, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_" + "w" * 34)
    with pytest.raises(PublishError, match=rf"could not create or open dataset repo {REPO}: .*401.*write access") as e:
        publish(small, REPO, echo=lambda _: None)
    assert "Invalid credentials in Authorization header" in str(e.value) and "\n" not in str(e.value)
    assert hub.repos == {}


def test_an_existing_public_repo_takes_a_release_only_with_public(large, small, hub, capsys):
    # private unless asked: main uploaded to an existing public repo without --public, and said nothing
    assert run(small, "--public") == 0 and hub.repos[REPO].private is False
    commits = len(hub.requests("commit"))
    assert run(large) == 1
    err = capsys.readouterr().err
    assert f"prefpipe publish: dataset repo {REPO} exists and is public" in err and "pass --public" in err
    assert len(hub.requests("commit")) == commits and hub.files(REPO) == expected(small)
    assert run(large, "--revision", "v1") == 1 and hub.requests("create_branch") == []  # refused before the branch
    assert run(large, "--public") == 0 and hub.files(REPO) == expected(large)


def test_public_on_an_existing_private_repo_says_it_stays_private(small, hub, capsys):
    assert run(small) == 0
    assert run(small, "--public") == 0 and hub.repos[REPO].private is True
    assert f"note: dataset repo {REPO} exists and is private; it stays private" in capsys.readouterr().out


def test_a_token_that_may_only_read_the_repo_is_told_to_get_write_access(small, large, hub, monkeypatch, capsys):
    assert run(small) == 0
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    assert run(large) == 1
    err = capsys.readouterr().err
    msg = err[err.index("prefpipe publish: "):]
    # main said "failed part-way ... re-run the same command to resume", which the Hub refuses again
    assert msg.startswith(f"prefpipe publish: the Hub refused the upload to dataset repo {REPO}: ")
    assert "403 Forbidden" in msg and "cannot write to this repo" in msg and "write access" in msg
    assert "resume" not in msg and msg.count("\n") == 1, msg
    assert hub.files(REPO) == expected(small)


def test_hf_endpoint_in_a_fresh_process(small, hub):
    """The way a user points prefpipe at another Hub: HF_ENDPOINT in the environment of a new process."""
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": TOKEN,
           "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(small.parent)}
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "publish", "--repo-id", REPO, "--path", str(small)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert hub.files(REPO, "main") == expected(small)
