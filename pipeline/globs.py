"""``glob.glob(pattern, recursive=True)`` that does not follow a link round a loop.

CPython's ``**`` follows links to folders, round and round where one leads back to a folder that holds it: with
one such link each file comes back under ever longer names up to the system's limit on links (``readers`` drops
those), but with two ways into the loop (``set/own/up -> ..`` and ``set/same -> own``) the names double at each
turn, 2^40 of them: the glob never returned. Here ``**`` follows a link to a folder unless that folder is one the
walk is already inside, so each folder is entered at most once per way down to it.

Hand-written because no maintained library does this (bench/globs.py;
bench/README.md "Source globs over links to folders"): wcmatch's ``glob`` without ``FOLLOW`` does not enter a link
to a folder under ``**`` (a linked dataset folder's files left out), and with ``FOLLOW`` it goes round the two-way
loop as CPython does. It is ~1.5x faster on 20,000 files (0.06 s against 0.09-0.10 s CPU), a difference that
reading the files dwarfs.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path


def glob_paths(pattern: str) -> list[str]:
    """The paths ``pattern`` matches, as ``glob.glob(pattern, recursive=True)`` gives them where no link loops."""
    parts = pattern.split(os.sep)
    if "**" not in parts:
        return glob.glob(pattern, recursive=True)
    i = parts.index("**")
    head, tail = os.sep.join(parts[:i]), os.sep.join(parts[i + 1:])
    if i == 1 and pattern.startswith(os.sep):
        head = os.sep
    tops = glob.glob(head) if glob.has_magic(head) else [head]
    found: list[str] = []
    for top in (t for t in tops if os.path.isdir(t or os.curdir)):
        for here in dirs_below(top):
            if tail or i + 1 < len(parts):  # "a/**/" ends in an empty part: the folders only
                found += glob_paths(os.path.join(glob.escape(here), tail))
            else:  # "a/**": a/ and everything below it
                found += [os.path.join(here, "")] if here == top else [here]
                found += [p for p in glob.glob(os.path.join(glob.escape(here), "*")) if not os.path.isdir(p)]
    return found


def dirs_below(top: str) -> Iterator[str]:
    """``top`` and every folder below it whose name does not start with "." (as ``**`` matches them), links to
    folders followed unless they lead back to ``top``, a folder above it or one the walk is inside. ``top`` ""
    is the current folder, and the names below it stay relative ("sub", not "./sub")."""
    real = os.path.realpath(top or os.curdir)
    stack = [(top, (real, *map(str, Path(real).parents)))]
    while stack:
        folder, inside = stack.pop()
        yield folder
        try:
            entries = sorted(os.scandir(folder or os.curdir), key=lambda e: e.name, reverse=True)
        except OSError:  # a folder that cannot be listed: ``readers._all_listable`` names it
            continue
        for e in entries:
            if not e.name.startswith(".") and e.is_dir() and (real := os.path.realpath(e.path)) not in inside:
                stack.append((os.path.join(folder, e.name), (*inside, real)))
