"""Which of a stage's input paths its ``deps`` in ``dvc.yaml`` leave out.

DVC reruns a stage when one of its deps or params changes; a file the stage reads that no dep covers can
change without ``dvc repro`` noticing ("Data and pipelines are up to date"). A source added to
``ingest.sources`` in params.yaml is such a file until its path (or a folder above it) is added to the stage's
deps, as ``data/samples`` is for the shipped sources. ``undeclared`` names those paths, so the stage can say so
when it runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from pipeline.io import HF_PREFIX
from pipeline.yaml12 import YAMLError, YamlFileError, load_yaml_file

DVC_FILE = Path("dvc.yaml")


def _fixed_part(path: str) -> str:
    """The part of a glob before its first wildcard (the folder every match lies in), else the path."""
    head = re.split(r"[*?\[]", path, maxsplit=1)[0]
    return head if head == path else os.path.dirname(head) or "."


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


def undeclared(stage: str, paths: Iterable[str], dvc_file: Path = DVC_FILE) -> list[str]:
    """The local ``paths`` (files, folders or globs; ``hf://`` ids are skipped) that no dep of ``stage`` in
    ``dvc_file`` covers: neither the path itself nor a folder above it. Dep paths are relative to the folder
    of ``dvc_file``, input paths to the current folder (where ``prefpipe run`` reads them)."""
    deps = stage_deps(stage, dvc_file)
    if deps is None:
        return []
    base = dvc_file.resolve().parent
    covered = [Path(os.path.normpath(base / d)) for d in deps]
    out = []
    for p in paths:
        if p.startswith(HF_PREFIX):
            continue
        where = Path(os.path.normpath(Path.cwd() / _fixed_part(p)))
        if not any(where == d or d in where.parents for d in covered):
            out.append(p)
    return out
