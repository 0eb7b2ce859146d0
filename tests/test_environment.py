"""The user's environment changes no output byte and breaks no command: locale and encodings, time zone, hash
seed, umask, thread counts, temporary folder, and a project folder whose path has spaces, non-ASCII letters and a
leading ``-`` reached through a link (docs/reliability.md, "Environment"). Each case runs the CLI in a subprocess
with the variable set, since most of them are read once when Python or a library starts."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_tree
from tests.export_fixtures import TOPICS, pair, write_method

# Python without UTF-8: C locale not coerced to C.UTF-8 and UTF-8 mode off (its file names, argv and stdio are ASCII)
ASCII_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
HOSTILE = {**ASCII_LOCALE, "TZ": "Pacific/Kiritimati", "PYTHONHASHSEED": "random", "POLARS_MAX_THREADS": "1",
           "OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}


def _cli(args: list[str], cwd: Path, root: Path, env: dict[str, str], umask: int = 0o022, encoding: str = "utf-8"):
    code = f"import os, sys; os.umask({umask:#o}); from pipeline import cli; sys.exit(cli.main(sys.argv[1:]))"
    return run_tree([sys.executable, "-c", code, *args], cwd=cwd, timeout=120, encoding=encoding,
                    env={**os.environ, "PYTHONPATH": str(root), **env})


def _digests(folder: Path) -> dict[str, str]:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


def _modes(folder: Path) -> set[tuple[str, int]]:
    return {("dir" if p.is_dir() else "file", p.stat().st_mode & 0o777) for p in folder.rglob("*")}


def _project(root: Path, where: Path) -> Path:
    where.mkdir(parents=True)
    shutil.copy(root / "params.yaml", where / "params.yaml")
    shutil.copytree(root / "data" / "samples", where / "data" / "samples")
    return where


@pytest.mark.parametrize(("env", "encoding", "shown"), [
    ({"PYTHONIOENCODING": "ascii"}, "ascii", "\\xbfQu\\xe9 tal? \\U0001f319 ok"),
    ({"PYTHONIOENCODING": "latin-1"}, "latin-1", "¿Qué tal? \\U0001f319 ok"),
    (ASCII_LOCALE, "ascii", "\\xbfQu\\xe9 tal? \\U0001f319 ok"),
], ids=["ascii-stdout", "latin-1-stdout", "C-locale-without-utf8"])
def test_inspect_shows_what_the_terminal_cannot_encode_escaped(tmp_path, root, env, encoding, shown):
    """A row holding a letter or emoji the terminal's encoding lacks raised UnicodeEncodeError mid-listing."""
    write_method(tmp_path, "pugc", [pair("p0", TOPICS[0], "pugc", chosen="¿Qué tal? 🌙 ok")])
    proc = _cli(["inspect", "data/pugc/pairs"], tmp_path, root, env, encoding=encoding)
    assert proc.returncode == 0, proc.stderr
    assert shown in proc.stdout


def test_ingest_writes_the_same_bytes_whatever_the_environment(tmp_path, root):
    """Default environment against an ASCII-only Python, the date line's far side, a random hash seed, one thread,
    umask 077, TMPDIR on another file system, and a project path with a space, letters outside ASCII and a leading
    ``-`` entered through a link. Outputs follow the umask (nothing is written with a mode of its own)."""
    plain = _project(root, tmp_path / "plain")
    odd = _project(root, tmp_path / "-pröj dir ü")
    (tmp_path / "link").symlink_to(odd)
    other_tmp = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path
    runs = [_cli(["run", "ingest"], plain, root, {}),
            _cli(["run", "ingest"], tmp_path / "link", root, {**HOSTILE, "TMPDIR": str(other_tmp)}, umask=0o077)]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
    assert _digests(odd / "data" / "ingest") == _digests(plain / "data" / "ingest")
    assert _modes(plain / "data" / "ingest") == {("dir", 0o755), ("file", 0o644)}
    assert _modes(odd / "data" / "ingest") == {("dir", 0o700), ("file", 0o600)}


def test_a_source_path_this_python_cannot_name_says_to_turn_on_utf8_mode(tmp_path, root):
    """Under a non-UTF-8 Python an existing `pösts.jsonl` was "no such file", which sent the user looking for it."""
    project = _project(root, tmp_path / "p")
    shutil.copy(project / "data" / "samples" / "posts.jsonl", project / "pösts.jsonl")
    data = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    data["ingest"]["sources"][1]["path"] = "pösts.jsonl"
    (project / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    assert _cli(["run", "ingest"], project, root, {}).returncode == 0  # a UTF-8 Python reads it
    proc = _cli(["run", "ingest"], project, root, ASCII_LOCALE)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        "prefpipe: ingest.sources[1].path: p\\xf6sts.jsonl: no such file, folder or matching glob (paths are relative "
        "to the project root); this Python's file system encoding (ascii) cannot name it: run with PYTHONUTF8=1 "
        "(Python's UTF-8 mode) or in a UTF-8 locale"]


def test_inspect_of_a_path_this_python_cannot_name_is_one_line(tmp_path, root):
    """A non-UTF-8 Python decodes `dätä` in argv into surrogates, which pyarrow refused with a UnicodeEncodeError."""
    write_method(tmp_path / "dätä", "pugc", [pair("p0", TOPICS[0], "pugc")])
    proc = _cli(["inspect", str(tmp_path / "dätä" / "data" / "pugc" / "pairs")], tmp_path, root, ASCII_LOCALE)
    assert proc.returncode == 1, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("prefpipe: ") and "d\\udcc3\\udca4t\\udcc3\\udca4" in line, line
    assert line.endswith(": cannot be opened; this Python's file system encoding (ascii) cannot name it: run with "
                         "PYTHONUTF8=1 (Python's UTF-8 mode) or in a UTF-8 locale"), line
