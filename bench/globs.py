"""A source glob's ``**``: prefpipe's hand-written ``pipeline.globs.glob_paths`` against ``wcmatch.glob`` (the
maintained glob library), with and without its ``FOLLOW`` flag, and CPython's ``glob.glob(recursive=True)``, one run.

Three checks, each candidate on the same trees in one process:

- matches: the patterns ``tests/test_hostile_reasons.py`` pins, on its tree (hidden names, a link to a dataset
  folder ``d/linked -> ../e``): the names each candidate gives that ``glob.glob`` does not, and the other way round.
- loops: ``one/sub/up -> ..`` (one way into a loop of links) and ``set/own/up -> ..`` with ``set/same -> own`` (two
  ways in: CPython's ``**`` listed 2^40 names and ingest never started). Each is stopped after ``--loop-names``
  names or ``--loop-cpu`` seconds of CPU: "stopped" means it had not finished by then.
- speed: ``--files`` files in nested folders (a tenth of them in a dataset folder linked in, as users link one under
  data/; hidden folders and files; no loop), the patterns readers gets most, rounds alternating between the
  candidates; CPU seconds, least of the rounds.

wcmatch is not a dependency of prefpipe (the result of this bench, bench/README.md): ``pip install wcmatch``
first, or it is skipped.

    python bench/globs.py                   # 20,000 files, 5 rounds
    python bench/globs.py --smoke           # 600 files, 1 round (checks the bench runs; figures mean nothing)
"""

from __future__ import annotations

import argparse
import glob
import itertools
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.globs import glob_paths  # noqa: E402

Glob = Callable[[str], Iterable[str]]
# tests/test_hostile_reasons.py::test_glob_paths_matches_what_glob_matches_where_no_link_loops
TEST_FILES = ("d/a.jsonl", "d/sub/b.jsonl", "d/sub/deep/c.jsonl", "d/.hid/h.jsonl", "d/sub/.h.jsonl", "e/x.jsonl")
TEST_PATTERNS = ("d/**/*.jsonl", "d/*/**/*.jsonl", "**/*.jsonl", "d/**", "d/**/", "d/**/deep/*", "d/**/**/*.jsonl",
                 "*/**/b.jsonl", "{root}/d/**/*.jsonl")
SPEED_PATTERNS = ("data/**/*.jsonl", "data/*/**/*.jsonl", "data/**")


def candidates() -> dict[str, Glob]:
    found: dict[str, Glob] = {"glob.glob": lambda p: glob.iglob(p, recursive=True), "glob_paths": glob_paths}
    try:
        from wcmatch import glob as wc
    except ImportError:
        print("wcmatch: not installed (pip install wcmatch) - skipped")
        return found
    found["wcmatch GLOBSTAR"] = lambda p: wc.iglob(p, flags=wc.GLOBSTAR)
    found["wcmatch GLOBSTAR|FOLLOW"] = lambda p: wc.iglob(p, flags=wc.GLOBSTAR | wc.FOLLOW)
    return found


def touch(root: Path, names: Iterable[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")


def diff(expected: list[str], got: list[str]) -> str:
    """The names ``got`` lacks and adds against ``expected``, and the names ``expected`` gives more than once that
    ``got`` gives once (glob.glob gives a file below ``d/**/**/`` once per way of splitting its folders)."""
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    twice = sum(n - 1 for n in Counter(expected).values()) - sum(n - 1 for n in Counter(got).values())
    if not missing and not extra:
        return "same" if not twice else f"same names; glob.glob gives {twice} more repeated"
    return f"missing {missing or '-'}, extra {extra or '-'}"


def check_matches(root: Path, globs: dict[str, Glob]) -> None:
    touch(root, TEST_FILES)
    (root / "d" / "linked").symlink_to("../e")
    os.chdir(root)
    print("\nmatches against glob.glob(recursive=True) (tree of tests/test_hostile_reasons.py, d/linked -> ../e)")
    for name, fn in globs.items():
        if name == "glob.glob":
            continue
        for pattern in TEST_PATTERNS:
            pattern = pattern.format(root=root)
            print(f"  {name:24} {pattern.replace(str(root), '<tmp>'):22} "
                  f"{diff(glob.glob(pattern, recursive=True), list(fn(pattern)))}".replace(str(root), "<tmp>"))


def check_loops(root: Path, globs: dict[str, Glob], max_names: int, max_cpu: float) -> None:
    touch(root, ("one/sub/a.jsonl", "set/own/a.jsonl"))
    (root / "one" / "sub" / "up").symlink_to("..")
    (root / "set" / "own" / "up").symlink_to("..")
    (root / "set" / "same").symlink_to("own")
    os.chdir(root)
    print(f"\nloops of links (each stopped after {max_names:,} names or {max_cpu:g} s CPU)")
    for pattern, tree in (("one/**/*.jsonl", "one/sub/up -> .."), ("set/**/*.jsonl", "set/own/up -> .., set/same -> own")):
        for name, fn in globs.items():
            start, n, first = time.process_time(), 0, []
            for path in fn(pattern):
                n += 1
                first += [path] if n <= 3 else []
                if n >= max_names or time.process_time() - start > max_cpu:
                    break
            else:
                print(f"  {tree:34} {name:24} finished: {n:,} names in {time.process_time() - start:.3f} s CPU "
                      f"{sorted(first)}")
                continue
            print(f"  {tree:34} {name:24} STOPPED: {n:,} names in {time.process_time() - start:.1f} s CPU, "
                  f"e.g. {first[-1]}")


def speed_tree(root: Path, files: int) -> None:
    """``files`` data files: nine tenths in data/gNN/sNN/tNN/ (ten a folder), one tenth in elsewhere/pNN/ (a hundred a
    folder) linked as data/linked; next to every hundredth file a hidden folder and a hidden file (``**`` skips both)."""
    linked = files // 10
    names = [f"data/g{i // 1000:02}/s{i // 100 % 10:02}/t{i // 10 % 10:02}/f{i}.jsonl" for i in range(files - linked)]
    names += [f"elsewhere/p{i // 100:02}/f{i}.jsonl" for i in range(linked)]
    folders = [os.path.dirname(n) for n in names[::100]]
    touch(root, names + [f"{d}/.cache/x.jsonl" for d in folders] + [f"{d}/.hidden.jsonl" for d in folders])
    (root / "data" / "linked").symlink_to("../elsewhere")


def check_speed(root: Path, globs: dict[str, Glob], files: int, rounds: int) -> None:
    speed_tree(root, files)
    os.chdir(root)
    print(f"\nspeed: {files:,} files in nested folders, {files // 10:,} of them in data/linked -> ../elsewhere; "
          f"CPU seconds, least of {rounds} round(s), candidates alternating")
    for pattern in SPEED_PATTERNS:
        expected = sorted(glob.glob(pattern, recursive=True))
        best = dict.fromkeys(globs, float("inf"))
        got: dict[str, list[str]] = {}
        for _, (name, fn) in itertools.product(range(rounds), globs.items()):
            start = time.process_time()
            got[name] = sorted(fn(pattern))
            best[name] = min(best[name], time.process_time() - start)
        base = best["glob_paths"]
        for name in globs:
            same = "same as glob.glob" if got[name] == expected else diff(expected, got[name])[:120]
            print(f"  {pattern:18} {name:24} {best[name]:7.3f} s  {best[name] / base:5.2f}x glob_paths  "
                  f"{len(got[name]):,} names, {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--loop-names", type=int, default=200_000)
    ap.add_argument("--loop-cpu", type=float, default=10.0)
    ap.add_argument("--smoke", action="store_true", help="600 files, 1 round, loops stopped at 2,000 names / 1 s")
    args = ap.parse_args()
    if args.smoke:
        args.files, args.rounds, args.loop_names, args.loop_cpu = 600, 1, 2_000, 1.0
    globs = candidates()
    here = os.getcwd()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for part in ("matches", "loops", "speed"):
                (Path(tmp) / part).mkdir()
            check_matches(Path(tmp) / "matches", globs)
            check_loops(Path(tmp) / "loops", globs, args.loop_names, args.loop_cpu)
            check_speed(Path(tmp) / "speed", globs, args.files, args.rounds)
    finally:
        os.chdir(here)


if __name__ == "__main__":
    main()
