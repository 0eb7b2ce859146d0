"""Publishing a release to the Hugging Face Hub (its dataset card is written by the export stage,
``stages/export_card.py``). ``publish`` uploads a release folder::

    prefpipe publish --repo-id my-org/my-prefs --dry-run      # what would be uploaded, no network
    prefpipe publish --repo-id my-org/my-prefs                # verify, create the repo (private), upload
    prefpipe publish --repo-id my-org/my-prefs --public       # ... a public repo (new or existing), when asked for

It refuses a folder that is no release (a stage's table: its texts are neither redacted nor decontaminated), a
release that differs from its ``_manifest.json`` (naming the file) or failed its audit (``audit.json``), and an
existing public repo unless ``--public`` is given; needs a token from ``HF_TOKEN`` or ``hf auth login`` (never
from params, never printed), and uploads with
``HfApi.upload_folder``: in huggingface_hub 2.x with ``hf_xet`` (installed with it on x86-64 and arm64) it
streams files in several commits when needed and resumes when re-run — files already committed are
skipped and uploaded chunks are deduplicated. ``upload_large_folder`` no longer exists in 2.x.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.audit import AUDIT_FILE
from pipeline.config_shared import is_ref_name
from pipeline.files import file_sha256
from pipeline.io import MANIFEST, read_manifest, verify_shards
from pipeline.metrics import counted


class PublishError(RuntimeError):
    """Publishing cannot go on; the message says what is wrong and what to do."""


# --- publish -------------------------------------------------------------------------------------


# Release files that stay local: removed.jsonl holds the texts of every removed pair, among them prompts
# that overlap evaluation sets (``contaminated``) and held-out prompts; uploading it would publish exactly
# the text decontamination and held-out sets keep out of the dataset.
LOCAL_ONLY = ("removed.jsonl",)


def verify_release(path: Path) -> list[str]:
    """Problems found comparing the release folder with its manifest; an empty list means intact."""
    manifest = read_manifest(path)
    if manifest is None:
        return [f"{path / MANIFEST}: missing"]
    problems = verify_shards(path)
    for f in manifest.get("other_files", []):
        p = path / f["path"]
        if not p.is_file():
            problems.append(f"{p}: missing")
        elif file_sha256(p) != f["sha256"]:
            problems.append(f"{p}: sha256 differs from the manifest")
    listed = {f["path"] for f in manifest["files"]} | {f["path"] for f in manifest.get("other_files", [])} | {MANIFEST}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        if p.is_file() and rel not in listed and not rel.startswith(".cache/"):
            problems.append(f"{p}: not in the manifest")
    return problems


def _audit_passed(path: Path) -> bool:
    """Whether the release's ``audit.json`` (written by export, listed and hashed in the manifest) says passed."""
    try:
        return json.loads((path / AUDIT_FILE).read_text()).get("passed") is True
    except (OSError, ValueError, AttributeError):
        return False


# the repo id the card's training snippets load (stages/export_card_trl.py TRAIN_SNIPPET, export.card.repo_id)
_CARD_REPO = re.compile(r'^REPO = "([^"]*)"', re.M)


def _card_note(path: Path, repo_id: str) -> str | None:
    """A note when the release's card tells its readers to load another repo than ``repo_id``."""
    card = path / "README.md"
    found = _CARD_REPO.search(card.read_text(encoding="utf-8")) if card.is_file() else None
    if found is None or found.group(1) == repo_id:
        return None
    return (f"note: the card's training snippets load {found.group(1)!r}, not {repo_id!r}: set export.card.repo_id: "
            f"{repo_id} in params.yaml and run `dvc repro export` first, or its readers must swap the id")


def _offline() -> bool:
    # read at call time (huggingface_hub reads its constant once, at import)
    return any(os.environ.get(v, "").strip().upper() in {"1", "ON", "YES", "TRUE"} for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


# a storage URL's query string is its signature (a short-lived credential): never printed
_SIGNED_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")


def _why(e: BaseException) -> str:
    """``e`` and the errors that caused it on one line: huggingface_hub's HTTP errors span several lines
    (with a link to a generic status-code page), and an LFS upload error names only the file, its cause
    (the storage's answer) being chained below it."""
    parts: list[str] = []
    for _ in range(4):  # the error and at most three causes
        if e is None:
            break
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith("For more information check:")]
        text = _SIGNED_QUERY.sub(r"\1?<query hidden>", " ".join(lines).rstrip("."))
        if not any(text in p for p in parts):  # a cause that only repeats its wrapper's words adds nothing
            parts.append(f"{type(e).__name__}: {text}")
        # an HTTP error already says what the server answered; the transport error below it repeats it
        e = None if getattr(e, "response", None) is not None else e.__cause__
    return " <- ".join(parts)


def _unreachable(e: BaseException | None) -> bool:
    """No answer came back from the Hub: the error's chain holds a transport error (DNS, a refused
    connection, a timeout) and no HTTP response."""
    chain: list[BaseException] = []
    while e is not None and len(chain) < 8:
        if getattr(e, "response", None) is not None:
            return False
        chain.append(e)
        e = e.__cause__ or e.__context__
    return any(isinstance(x, OSError) or any(c.__name__ == "TransportError" for c in type(x).__mro__) for x in chain)


def _refused_by_hub(e: BaseException | None) -> bool:
    """The Hub's API (not the storage behind a presigned upload URL, whose refusal a re-run mends) answered
    401 or 403: the token may read the repo but not write to it, and a re-run would be refused again."""
    for _ in range(8):
        if e is None:
            return False
        response = getattr(e, "response", None)
        if response is not None:
            url = urlsplit(str(getattr(getattr(response, "request", None), "url", "")))
            return getattr(response, "status_code", None) in (401, 403) and (
                url.path.startswith("/api/") or ".git/info/lfs/" in url.path)
        e = e.__cause__ or e.__context__
    return False


def _token() -> str | None:
    from huggingface_hub import get_token

    return get_token()  # HF_TOKEN, then the token saved by `hf auth login`


def publish(path: str | Path, repo_id: str, *, private: bool = True, revision: str | None = None,
            dry_run: bool = False, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Verify ``path`` against its manifest and upload it as dataset ``repo_id``. Returns what was done."""
    path = Path(path)
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"--repo-id must look like ORG/NAME, got {repo_id!r}")
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:  # found by --dry-run, not at the Hub (which blamed the token's write access)
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise PublishError(f"--repo-id {repo_id!r}: {e} Give ORG/NAME in letters, digits, '-', '_' and '.'") from None
    if revision is not None and not is_ref_name(revision):  # found by --dry-run, not by the Hub mid-publish
        raise PublishError(f"--revision {revision!r}: not a branch name git and the Hub accept (letters, digits, '.', "
                           "'_', '-' and '/', starting with a letter or digit; no spaces, '..' or trailing '.' or '/'); "
                           "give a branch such as main or release-v1")
    if revision is not None and re.fullmatch(r"[0-9a-fA-F]{40}", revision):  # the Hub reads it as a commit
        raise PublishError(f"--revision {revision!r} is a commit, and a publish adds a commit to a branch; "
                           "give a branch such as main or release-v1")
    if not path.is_dir() or not (path / MANIFEST).exists():
        raise PublishError(f"{path}: no release here (no {MANIFEST}); build it with `dvc repro export` first")
    manifest = read_manifest(path)  # a manifest cut short or edited: one line naming it
    if manifest.get("table") != "release":  # every stage table has a manifest too
        raise PublishError(f"{path}: a stage's table ({manifest.get('table')}), not a release: its texts are neither "
                           "redacted nor decontaminated; publish the release export builds from it (`dvc repro export`, "
                           "then --path data/release)")
    problems = verify_release(path)
    if problems:
        raise PublishError("the release does not match its manifest; rebuild it (`dvc repro export`):\n  "
                           + "\n  ".join(problems))
    if not _audit_passed(path):
        raise PublishError(f"{path / AUDIT_FILE}: the release failed its audit (export leaves such a candidate in "
                           f"data/.release.rejected): `prefpipe audit {path}` names the violations; fix them and "
                           "rebuild with `dvc repro export`")
    files = [f["path"] for f in manifest["files"]] + [f["path"] for f in manifest.get("other_files", [])
                                                      if f["path"] not in LOCAL_ONLY] + [MANIFEST]
    rows = {f["path"]: f["rows"] for f in manifest["files"]}
    plan = {"repo_id": repo_id, "repo_type": "dataset", "private": private, "revision": revision or "main",
            "files": files}
    note = _card_note(path, repo_id)
    if dry_run:
        echo(f"dry run: would upload {counted(len(files), 'file')} from {path} to dataset {repo_id} "
             f"(revision {plan['revision']}, {'private' if private else 'public'} if created):")
        for f in files:
            size = (path / f).stat().st_size
            echo(f"  {f}  {counted(size, 'byte')}" + (f"  {counted(rows[f], 'row')}" if f in rows else ""))
        echo("token: " + ("found" if _token() else "none found (set HF_TOKEN or run `hf auth login` before a real run)"))
        if note:
            echo(note)
        return plan | {"uploaded": False}
    if _offline():
        raise PublishError("HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: publishing needs the network. "
                           "Unset it for this command, e.g. `HF_HUB_OFFLINE=0 prefpipe publish ...`.")
    token = _token()
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN in the environment or run `hf auth login` "
                           "(tokens are never read from params.yaml)")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        is_private = api.repo_info(repo_id, repo_type="dataset").private  # an existing repo keeps its own
        if private and is_private is False:  # the texts come from users: a release goes public only when asked
            raise PublishError(f"dataset repo {repo_id} exists and is public, and publishing to it would make this "
                               "release public: pass --public to publish it there, or make the repo private first "
                               f"(its Settings page, or `hf repos settings {repo_id} --type dataset --private`)")
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    except PublishError:
        raise
    except Exception as e:  # auth, permissions, network: one readable message
        fix = ("The Hub could not be reached: check the network connection (and HF_ENDPOINT, if set), then "
               "run the same command again." if _unreachable(e) else
               "Check the token's write access to the organisation and the repo id.")
        raise PublishError(f"could not create or open dataset repo {repo_id}: {_why(e)}. {fix}") from e
    if not private and is_private:
        echo(f"note: dataset repo {repo_id} exists and is private; it stays private (--public sets the visibility "
             "of a new repo only; change it on the repo's Settings page)")
    if note:
        echo(note)
    echo(f"uploading {counted(len(files), 'file')} to {url} (revision {plan['revision']})")
    try:
        commit = api.upload_folder(
            repo_id=repo_id, repo_type="dataset", folder_path=str(path), revision=revision,
            allow_patterns=files,
            # shards of an earlier, larger release would otherwise linger and be read by the card's globs
            # ... and so would a LOCAL_ONLY file an older prefpipe uploaded
            delete_patterns=["*.parquet", "plots/*", *LOCAL_ONLY],
            commit_message=f"prefpipe release {manifest.get('fingerprint', '')}".strip(),
        )
    except Exception as e:
        if _refused_by_hub(e):
            raise PublishError(f"the Hub refused the upload to dataset repo {repo_id}: {_why(e)}. The token may "
                               "read the repo but not write to it: use a token with write access to it (a "
                               "fine-grained token needs write access to the repo or its organisation), via "
                               "HF_TOKEN or `hf auth login`, then run the same command again.") from e
        raise PublishError(f"upload to {repo_id} failed part-way: {_why(e)}. Nothing local is lost: "
                           "re-run the same command to resume (files already committed are skipped).") from e
    echo(f"published: {getattr(commit, 'commit_url', commit)}")
    return plan | {"uploaded": True, "url": str(url), "commit": str(getattr(commit, "commit_url", commit))}
