"""Read sources record by record: every record comes back as a value or as the reason it is unusable.

Reading yields raw records with their row numbers, so a bad row can be quarantined by position
instead of crashing the stage. Whatever the bytes, a reader does not raise for a bad record: JSON
that Python cannot hold (an integer literal over 4,300 digits, nesting deeper than
``pipeline.jsontext.MAX_JSON_DEPTH``, a lone UTF-16 surrogate escape such as ``"\\ud800"``) is an error row; a
compressed file that breaks off, a Parquet row group that cannot be decoded or a malformed XML
``<row>`` is an error row and reading goes on with what can still be read. Only a source that
cannot be opened at all (no such file, unknown type, an unreachable ``hf://`` set), or an ``hf://``
stream that breaks off (a rerun reads it whole), raises ``SourceError``, with one line naming it.
Whatever the bytes, reading holds about ``max_record_bytes`` at a time (``pipeline.limits``).

The readers of each format live in ``readers_json.py`` (JSON lines, JSON), ``readers_csv.py`` (CSV, TSV),
``readers_parquet.py`` (Parquet) and here (Stack Exchange XML); what they share (``RawRow``, damaged-file error rows) in ``rawrows.py``.
"""

from __future__ import annotations

import glob
import io
import os
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from pipeline.encodings import (
    binary_file_error,
    encoding_error,
)
from pipeline.errors import SourceError, os_reason, unnameable
from pipeline.globs import dirs_below, glob_paths
from pipeline.hub_source import HF_PREFIX, hub_rows
from pipeline.rawrows import UNREADABLE, RawRow, cannot_read, numbered, open_binary
from pipeline.readers_csv import iter_csv, iter_tsv
from pipeline.readers_json import iter_json, iter_jsonl
from pipeline.readers_parquet import iter_parquet
from pipeline.xmlrows import xml_rows

# --- files ---------------------------------------------------------------------------------------


def expand_paths(path: str) -> list[Path]:
    """A file, a folder (all data files below it, sorted) or a glob. A folder below it (or one the glob looks
    into) that cannot be read fails the source: ``rglob`` and ``glob`` skip it, and its files with it, without a word."""
    try:
        return _expand_paths(path)
    except OSError as e:  # a folder on the way that cannot be searched: an input, not an output, is refused
        raise SourceError(_unreadable(e, e.filename or path)) from None


def _unreadable(e: OSError, where: str | Path, lost: str = "") -> str:
    if isinstance(e, PermissionError) and (folder := _unsearchable(Path(where))) is not None:
        return (f"{where}: cannot be read ({os_reason(e)}){lost}: the folder {folder} may be listed but not searched "
                f"(no x permission); make it searchable (chmod +x {folder}) and run again")
    return (f"{where}: cannot be read ({os_reason(e)}){lost}; make it readable (its permissions, owner "
            "or disk) and run again")


def _unsearchable(path: Path) -> Path | None:
    """The folder above ``path`` that a non-root user may list but not search (r without x): its files' names are
    seen, but none can be opened, and "make it readable" named a file whose permissions are not at fault. Reading a
    path's status needs search permission on the folders above it only, so the first that fails is below it."""
    for p in [*reversed(path.parents[:-1]), path]:
        try:
            os.stat(p)
        except PermissionError:
            return p.parent
        except OSError:
            return None
    return None


def _expand_paths(path: str) -> list[Path]:
    p = Path(path)
    if p.is_dir():
        # names starting with _ or . are left out, and so is what is below such a folder, as pyarrow.dataset's
        # ignore_prefixes and a glob's ** do (a `huggingface-cli download --local-dir` folder's .cache/ of locks)
        found = [f for f in p.rglob("*") if not any(n.startswith(("_", ".")) for n in f.relative_to(p).parts)]
        _all_listable([p, *(f for f in found if f.is_dir() and not f.is_symlink())])
        _no_broken_links(found)
        _no_special_files(found)
        _no_linked_folders(p, found)
        files = sorted(f for f in found if f.is_file())
        if not files:
            raise SourceError(f"{path}: the folder holds no data files (names starting with _ or ., and what is below "
                              "such a folder, are left out); put the source's files in it, or point the path at them")
    elif is_glob(path):
        _all_listable(_glob_dirs(path))
        looped: dict[Path, bool] = {}
        # once each: glob_paths, as glob.glob, names a file below "a/**/**/" once per way of splitting its folders
        found = list(dict.fromkeys(map(Path, glob_paths(path))))
        found = [f for f in found if not any(_loops(d, looped) for d in f.parents)]
        _no_broken_links(found)
        _no_special_files(found)
        files = sorted(f for f in found if f.is_file())
        _no_file_left_in_folders(path, [f for f in found if f.is_dir()], set(files))
    else:
        _no_special_files([p])
        files = [p] if p.exists() else []
    if not files:
        brackets = (f"; [ ] in a glob are wildcards: write a literal [ as [[] (e.g. {path.replace('[', '[[]')})"
                    if glob.has_magic(path) and "[" in path else "")
        raise SourceError(f"{path}: no such file, folder or matching glob (paths are relative to the project root)"
                          f"{brackets}{_unexpanded(path)}{_other_form(path)}{unnameable(path)}")
    return files


def _other_form(path: str) -> str:
    """``"; ..."`` when a folder or file on the way to ``path`` is there under the same name in another Unicode form
    (``café`` written as e + a combining accent, NFD, as macOS writes names; params.yaml holds the one-letter é, NFC):
    the line printed the very name the user sees on disk and said there was no such file."""
    here = Path(path)
    at = Path(here.anchor or ".")
    for part in here.parts[1 if here.anchor else 0:]:
        if glob.has_magic(part) or (at / part).exists():
            at = at / part
            continue
        try:
            same = [e.name for e in os.scandir(at) if unicodedata.normalize("NFC", e.name) == unicodedata.normalize("NFC", part)]
        except OSError:
            return ""
        if not same:
            return ""
        return (f"; {at / same[0]} is there, its name in another Unicode form (accents as separate marks or not, "
                "as macOS and Linux write them): write both in one form (`convmv -f utf8 -t utf8 --nfc --notest NAME` "
                "renames a file to the form typed on Linux)")
    return ""


def _unexpanded(path: str) -> str:
    """``"; ..."`` when ``path`` starts with ``~`` or names a ``$VARIABLE``, which a shell would expand and a params
    file does not (``~/data/x.jsonl`` was "no such file" with the file there), giving the path to write instead."""
    full = os.path.expandvars(os.path.expanduser(path))
    if full == path:
        return ""
    return f"; ~ and $VARIABLES are not expanded in params.yaml: write the path out ({full})"


def is_glob(path: str) -> bool:
    """Whether a source path that is no folder is a glob: it holds ``*``, ``?`` or ``[`` and names no file
    ("export [2024].jsonl" is that file, not a glob matching none)."""
    return glob.has_magic(path) and not Path(path).exists()


def glob_folder(path: str) -> str:
    """The folder every match of the glob ``path`` lies in: its part before the first ``*``, ``?`` or ``[`` up to
    the last separator ("data/*.jsonl" and "data/x*/y" give "data", "*.jsonl" gives "."); ``path`` itself when
    it holds no wildcard."""
    head = re.split(r"[*?\[]", path, maxsplit=1)[0]
    return head if head == path else os.path.dirname(head) or "."


def _no_file_left_in_folders(pattern: str, dirs: list[Path], matched: set[Path]) -> None:
    """SourceError naming the first data file below a folder the glob matches that the glob does not match itself
    (``logs/*`` matches ``logs/2024/``, not the files in it): it was left out of the source without a word."""
    dirset = set(dirs)
    tops = sorted(d for d in dirset if not any(parent in dirset for parent in d.parents))  # each file listed once
    for d in tops:
        for f in sorted(d.rglob("*")):
            if (f.is_file() and f not in matched and _suffix(f) in READERS
                    and not any(p.startswith(("_", ".")) for p in f.relative_to(d).parts)):
                raise SourceError(f"{pattern}: the glob matches the folder {d} but not {f} in it, which would be left "
                                  f"out; match the files below it too (e.g. {Path(pattern).parent / '**' / '*'}"
                                  f"{_ending(f)}) or point "
                                  "the path at the folder")


def _glob_dirs(pattern: str) -> list[Path]:
    """The folders ``glob_paths(pattern)`` looks into: those matching each part that holds a wildcard, and below ``**``."""
    head, tail = os.path.split(pattern)
    if glob.has_magic(head):
        parents = _glob_dirs(head)
        dirs = [Path(d) for d in glob_paths(head) if os.path.isdir(d)]
    else:
        parents, dirs = [], [Path(head or os.curdir)]
    if tail == "**":  # every folder below
        dirs = [Path(d) for top in dirs for d in dirs_below(str(top))]
    return parents + dirs


def _all_listable(dirs: list[Path]) -> None:
    """SourceError naming the first folder that cannot be listed: a source would lose its files silently."""
    for d in dirs:
        try:
            with os.scandir(d):
                pass
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            raise SourceError(_unreadable(e, d, ", so its files would be left out of the source")) from None


def _loops(folder: Path, seen: dict[Path, bool]) -> bool:
    """Whether ``folder`` is a link to a folder that holds it (``sub/up -> ..``). CPython's ``**`` followed it round
    and round (``sub/up/sub/up/.../a.jsonl``, each file read again each time, up to the system's limit on links);
    ``globs.glob_paths`` enters such a loop once at most, and a file reached through one is left out (it is matched
    under its own name; a folder path never follows links to folders). ``seen`` caches the answer per folder."""
    if folder not in seen:
        seen[folder] = False
        if folder.is_symlink():
            try:
                target, here = folder.resolve(), folder.parent.resolve()
            except (OSError, RuntimeError):  # RuntimeError: a loop of links, which resolve() reports so
                target = here = folder
            seen[folder] = here == target or target in here.parents
    return seen[folder]


def _no_broken_links(paths: list[Path]) -> None:
    """SourceError naming the first link that leads nowhere (its target moved or removed): its data would be left
    out of the source without a word."""
    for f in paths:
        if f.is_symlink() and not f.exists():
            raise SourceError(f"{f}: a link to {os.readlink(f)}, which does not exist (or links back to itself); "
                              "restore its target or remove the link")


def _no_special_files(paths: list[Path]) -> None:
    """SourceError naming the first path that is neither a file nor a folder (a pipe blocks, /dev/zero never ends)."""
    for f in paths:
        if f.exists() and not f.is_file() and not f.is_dir():
            raise SourceError(f"{f}: not a regular file (a pipe, socket or device); a source is read more than "
                              "once, so write the data to a file and point the path at it")


def _no_linked_folders(folder: Path, paths: list[Path]) -> None:
    """SourceError naming the first link in a source folder to a folder of data files (``rglob`` skipped them)."""
    root = folder.resolve()
    for f in paths:
        if not (f.is_symlink() and f.is_dir()) or (t := f.resolve()) == root or root in t.parents or t in root.parents:
            continue  # a link within the source folder (its files are read there) or up out of it (a loop)
        if (data := next((g for g in sorted(f.rglob("*")) if g.is_file() and _suffix(g) in READERS), None)):
            raise SourceError(f"{f}: a link to the folder {os.readlink(f)}, which a folder path does not follow, so "
                              f"its files ({data.relative_to(f)}, ...) would be left out; point the path at a glob, "
                              f"which follows it (e.g. {folder / '**' / ('*' + _ending(data))}), or move the folder in")


def _suffix(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s.lower() != ".gz"]
    return suffixes[-1].lower() if suffixes else ""


def _ending(path: Path) -> str:
    """How a data file's name ends, as written (".jsonl.gz", ".JSONL"): a suggested glob ends so, to match it."""
    return "".join(path.suffixes[-2:]) if path.suffix.lower() == ".gz" else path.suffix


# --- formats (JSON lines, JSON, CSV, Parquet: readers_json/_csv/_parquet.py) ---------------------------


def iter_xml_rows(path: Path, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """``<row .../>`` elements (Stack Exchange dumps) as attribute dicts (``pipeline.xmlrows``): a malformed
    row is an error row and reading goes on at the next ``<row``."""
    with open_binary(path) as f:
        for i, item in numbered(xml_rows(f, max_record_bytes or 64 << 20), path, "row"):
            if isinstance(item, RawRow):  # the rest of the file cannot be read
                yield item
                return
            value, error, preview = item
            yield RawRow(str(path), i, value=value, error=error, raw=preview)


READERS = {
    ".jsonl": iter_jsonl,
    ".ndjson": iter_jsonl,
    ".json": iter_json,
    ".csv": iter_csv,
    ".tsv": iter_tsv,
    ".parquet": iter_parquet,
    ".xml": iter_xml_rows,
}


# Data in a form no reader takes, and what to do (a glob of the folder's other files, as for a README.md, was the
# advice: for a ``datasets`` save_to_disk folder, ``**/*.json``, its dataset_info.json and state.json).
_IPC = ("Arrow IPC files (a `datasets` save_to_disk folder, polars write_ipc, Feather) are not read: write the data as "
        "Parquet (`datasets.load_from_disk(folder).to_parquet('data.parquet')`, `pl.read_ipc(file).write_parquet(...)`) "
        "and point the path at that")
_PACKED = "only .gz is decompressed: decompress the file ({tool}) or recompress it with gzip"
NOT_READ = {".arrow": _IPC, ".feather": _IPC, ".ipc": _IPC, ".zst": _PACKED.format(tool="`zstd -d`"),
            ".bz2": _PACKED.format(tool="`bunzip2`"), ".xz": _PACKED.format(tool="`xz -d`"),
            ".zip": "unzip it and point the path at the files it holds"}


# --- a source --------------------------------------------------------------------------------------


def _encoding_error(path: Path) -> str | None:
    try:
        with open_binary(path) as f:
            head = f.read(256)
        return binary_file_error(head, path.name) or encoding_error(io.BytesIO(head))
    except UNREADABLE as e:  # the reader reports it
        if cannot_read(e):
            raise
        return None


def _data_glob(path: str, known: Path) -> str:
    """A glob of a source's data files that matches ``known``: a glob ending in ``*`` narrowed to its ending
    (``logs/*`` -> ``logs/*.jsonl``), else every file so named below the folder the path starts from
    (``logs/**/*.jsonl``; appended to a glob such as ``logs/*``, ``logs/*/**/*.jsonl`` missed the files in ``logs``)."""
    end, root = _ending(known), Path(path)
    if is_glob(path):
        if path.endswith("*") and not path.endswith("**") and known in map(Path, glob_paths(path + end)):
            return path + end
        while glob.has_magic(str(root)) and root != root.parent:
            root = root.parent
    return str(root / "**" / ("*" + end))


def source_files(path: str) -> list[Path]:
    """The files of a local source (``expand_paths``), each of a type a reader knows, or SourceError
    naming the first that is not (a README.md or LICENSE in a dataset folder), before any is read."""
    files = expand_paths(path)
    if unknown := [f for f in files if _suffix(f) not in READERS]:  # data in a form not read first: its advice
        file = next((f for f in unknown if _suffix(f) in NOT_READ), unknown[0])
        known = next((f for f in files if _suffix(f) in READERS), None)  # the suggested glob matches its name
        hint = (f"; {NOT_READ[_suffix(file)]}" if _suffix(file) in NOT_READ else
                f"; point the path at the data files only, e.g. {_data_glob(path, known)}" if known else "")
        raise SourceError(f"{file}: unknown file type {_suffix(file)!r}; expected one of {sorted(READERS)} "
                          f"(optionally .gz, but for .parquet){hint}")
    for file in files:
        if _suffix(file) == ".parquet" and file.suffix.lower() == ".gz":  # read by row group, which needs to seek
            raise SourceError(f"{file}: a gzipped Parquet file cannot be read by row group: gunzip it (Parquet "
                              "compresses its pages itself)")
    return files


def iter_records(path: str, max_record_bytes: int | None = None,
                 empty_files: list[str] | None = None) -> Iterator[RawRow]:
    """Every record of a source, in a deterministic order, with its file and row number.

    Files that hold no record at all (empty, or only blank lines) are appended to ``empty_files``.
    """
    if path.startswith(HF_PREFIX):  # streamed by ``datasets``, each record a dict already
        yield from (RawRow(path, i, value=rec) for i, rec in hub_rows(path))
        return
    for file in source_files(path):
        n = 0
        reader = READERS[_suffix(file)]
        try:
            encoding = _encoding_error(file) if reader is not iter_parquet else None
            rows = [RawRow(str(file), 1, error=encoding)] if encoding else reader(file, max_record_bytes)
            for row in rows:
                n += 1
                yield row
        except OSError as e:
            if not cannot_read(e):
                raise
            raise SourceError(_unreadable(e, file)) from None
        if n == 0 and empty_files is not None:
            empty_files.append(str(file))
