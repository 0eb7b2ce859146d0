"""Which of a stage's input paths its ``deps`` in ``dvc.yaml`` leave out.

DVC reruns a stage when one of its deps or params changes; a file the stage reads that no dep covers can
change without ``dvc repro`` noticing ("Data and pipelines are up to date"). Such inputs come from
params.yaml: a source added to ``ingest.sources`` (the shipped ones lie in ``data/samples``, a dep), a local
model folder a model stage's roles name (re-trained in place, it keeps its name and every params key), and a
folder of one's own named by a key of ``INPUT_KEYS`` (a shard set DOVE, Curry-DPO or the export reads).
``prefpipe run`` names each one no dep covers (``undeclared_inputs``), before the stage starts.
It also says when ``--params`` lies in another DVC project than the folder it runs in (``elsewhere``).
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.hub_source import HF_PREFIX
from pipeline.readers import glob_folder
from pipeline.yaml12 import YAMLError, YamlFileError, load_yaml_file

DVC_FILE = Path("dvc.yaml")


def stage_deps(stage: str, dvc_file: Path = DVC_FILE) -> list[str] | None:
    """The ``deps`` of ``stage`` in ``dvc_file``; None when there is no readable dvc.yaml or no such stage
    (a stage run outside a DVC project, e.g. from a test's folder)."""
    if not dvc_file.is_file():
        return None
    try:
        doc = load_yaml_file(dvc_file)
    except (YamlFileError, YAMLError):
        return None  # DVC itself reports a broken dvc.yaml
    entry = (doc.get("stages") or {}).get(stage) if isinstance(doc, dict) else None
    if not isinstance(entry, dict):
        return None
    return [str(d) for d in entry.get("deps") or [] if isinstance(d, str)]


def undeclared(stage: str, paths: list[str], dvc_file: Path = DVC_FILE) -> list[str]:
    """The ``paths`` (files, folders or globs) that no dep of ``stage`` in ``dvc_file`` covers: neither the
    path itself nor a folder above it. Dep paths are relative to the folder of ``dvc_file``, input paths to
    the current folder (where ``prefpipe run`` reads them)."""
    deps = stage_deps(stage, dvc_file)
    if deps is None:
        return []
    base = dvc_file.resolve().parent
    covered = [Path(os.path.normpath(base / d)) for d in deps]
    out = []
    for p in paths:
        where = Path(os.path.normpath(Path.cwd() / Path(glob_folder(p)).expanduser()))
        if not any(where == d or d in where.parents for d in covered):
            out.append(p)
    return out


# Keys of a stage's params section that name a shard set it reads (``[]`` walks a list): the shipped values are
# other stages' outputs, listed as deps; a folder of one's own is not.
INPUT_KEYS = {"dove": ("inputs[].prompts", "inputs[].responses", "pairs"),
              "curry": ("inputs[].prompts", "inputs[].responses"),
              "export": ("held_out[]",)}
# Keys naming a model beside the roles' (a Hub id or a local folder: only a folder can be a dep).
MODEL_KEYS = {"dove": ("embedding_model",)}


def named_inputs(section, key: str, label: str) -> list[tuple[str, object]]:
    """(dotted key with list indices, value) of each value ``key`` names in ``section``: ``inputs[].prompts`` of
    ``dove`` gives ``("dove.inputs[0].prompts", "data/ingest/prompts")`` and a pair per further input."""
    head, _, rest = key.partition(".")
    name = head.removesuffix("[]")
    value, label = getattr(section, name), f"{label}.{name}"
    items = [(f"{label}[{i}]", v) for i, v in enumerate(value)] if head.endswith("[]") else [(label, value)]
    return [found for where, v in items for found in (named_inputs(v, rest, where) if rest else [(where, v)])]


def undeclared_inputs(stage: str, params) -> list[str]:
    """One line per input of ``stage`` named in ``params`` that ``dvc repro`` would not see change: a local
    ingest source, a local model folder of a model stage's roles (or ``MODEL_KEYS``), or a shard set an
    ``INPUT_KEYS`` key names, that no dep of the stage covers."""
    from pipeline.config import MODEL_SECTIONS, section_models

    lines = []
    if stage == "ingest":
        for i, src in enumerate(params.ingest.sources):
            if not src.path.startswith(HF_PREFIX) and undeclared(stage, [src.path]):
                lines.append(f"ingest.sources[{i}].path {src.path}")
    if stage in MODEL_SECTIONS:
        models = [*section_models(params, stage),
                  *(m for key in MODEL_KEYS.get(stage, ()) for _, m in named_inputs(getattr(params, stage), key, stage))]
        folders = sorted({m for m in models if m is not None and Path(m).expanduser().is_dir()})
        lines += [f"model folder {m}" for m in undeclared(stage, folders)]
    for key in INPUT_KEYS.get(stage, ()):
        lines += [f"{where} {path}" for where, path in named_inputs(getattr(params, stage), key, stage)
                  if undeclared(stage, [path])]
    return [f"{stage}: {what} is not among the {stage} stage's deps in dvc.yaml, so `dvc repro` will not rerun "
            f"{stage} when it changes; add it (or a folder above it) under stages.{stage}.deps" for what in lines]


def elsewhere(params: str) -> list[str]:
    """A line when ``--params`` lies in another DVC project's root than the current folder, whose data paths
    are then read from the wrong place (`cd data && prefpipe run curry --params ../params.yaml` said
    "data/ingest/prompts: not found; run the stage that writes it first")."""
    folder, here = Path(params).resolve().parent, Path.cwd().resolve()
    if folder == here or not (folder / "dvc.yaml").is_file() or (here / "dvc.yaml").is_file():
        return []
    return [f"prefpipe: {params} lies in the project {folder}, but prefpipe runs in {here}, where the data paths "
            f"in it are read from; run from {folder} (as dvc repro does)"]
