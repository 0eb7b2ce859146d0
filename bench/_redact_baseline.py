"""The re-scan that ``bench/redact_rescan.py`` measures against (``pipeline/column_redact.py`` at b0c18e3): every
scan of a row rewritten, until nothing more is found; a run of numbers written back to back gives up one number a
scan. Not a bench itself (the leading underscore keeps tests/test_bench.py from running it)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl
import regex

from pipeline.column_redact import Detector, _replacement, compiled


def _rewrite(row: str, cands: list[str], repl: dict[str, str], rx: regex.Pattern) -> tuple[str, int]:
    """``row`` with its candidates (the Rust engine's matches, in order) replaced where ``repl`` has them.
    Each one is located with ``str.find`` and confirmed by an anchored match at that position, so a
    look-alike substring that did not match (e.g. followed by a letter) is never replaced."""
    out, pos, n = [], 0, 0
    for c in cands:
        p = row.find(c, pos)
        while p >= 0 and not ((m := rx.match(row, p)) is not None and m.group(0) == c):
            p = row.find(c, p + 1)
        if p < 0:  # the engines disagree on this row: let the Python engine scan all of it
            return _rewrite_scan(row, repl, rx)
        out.append(row[pos:p])
        out.append(repl.get(c, c))
        n += c in repl
        pos = p + len(c)
    out.append(row[pos:])
    return "".join(out), n


def _rewrite_scan(row: str, repl: dict[str, str], rx: regex.Pattern) -> tuple[str, int]:
    n = 0

    def sub(m: regex.Match) -> str:
        nonlocal n
        n += m.group(0) in repl
        return repl.get(m.group(0), m.group(0))

    return rx.sub(sub, row), n


def old_replace_validated(s: pl.Series, d: Detector, validate: Callable) -> tuple[pl.Series, int]:
    """``s`` with every match of ``d.pattern`` that ``validate`` accepts replaced by ``d.marker``, and the number
    replaced; ``validate`` runs once per distinct candidate, and only rows holding an accepted one are rewritten.

    >>> even = Detector("even", r"(?P<pii>\d+)", "[EVEN]")
    >>> out, n = replace_validated(pl.Series(["1 2", "3"]), even, lambda m: (0, len(m[0])) if int(m[0]) % 2 == 0 else None)
    >>> out.to_list(), n
    (['1 [EVEN]', '3'], 1)
    """
    if d.needs is None:
        return _replace_validated(s, d, validate)
    rows = s.str.contains(d.needs).fill_null(False)
    if not rows.any():
        return s, 0
    some, count = _replace_validated(s.filter(rows), d, validate)
    return (s.scatter(np.flatnonzero(rows.to_numpy()), some), count) if count else (s, 0)


def _replace_validated(s: pl.Series, d: Detector, validate: Callable) -> tuple[pl.Series, int]:
    # Matches do not overlap, and a pattern bounded by a character (no look-around in Rust's regex) takes it: the
    # one between two ("DE89...和DE89...", "卡号4111...和4111...") ended the first, and the second was not seen.
    # The rewritten rows are scanned again until nothing more is found (or nothing changes: a marker the pattern
    # takes). A loop, not recursion: numbers written back to back ("+44 20 7946 0958+44 20 7946 0958...") give up
    # one a pass, and 1,200 of them in one message passed Python's recursion limit.
    count, at, rows = 0, np.arange(len(s)), s
    while (done := _replace_pass(rows, d, validate)) is not None:
        hit, new, n = done
        same = new == rows.filter(pl.Series(hit)).to_list()
        count, at = count + n, at[hit]
        s = s.scatter(pl.Series(at), pl.Series(new, dtype=pl.String))  # in place: ``rows`` may be ``s``
        if same:
            break
        rows = pl.Series(new, dtype=pl.String)
    return s, count


def _replace_pass(s: pl.Series, d: Detector, validate: Callable) -> tuple[np.ndarray, list[str], int] | None:
    """One scan of ``s``: the rows holding an accepted candidate (a mask), those rows rewritten, and the number
    replaced; None where none holds one."""
    found = s.str.extract_all(d.pattern)
    candidates = found.explode().drop_nulls().unique().to_list()
    if not candidates:
        return None
    rx = compiled(d.pattern)
    repl = {}
    for c in candidates:  # once per distinct candidate
        m = rx.fullmatch(c)
        r = _replacement(m, d.marker, validate) if m is not None else None
        if r is not None:
            repl[c] = r
    if not repl:
        return None
    hit = found.list.eval(pl.element().is_in(list(repl))).list.any().fill_null(False)
    count, new = 0, []
    for row, cands in zip(s.filter(hit).to_list(), found.filter(hit).to_list(), strict=True):
        text, n = _rewrite(row, cands, repl, rx)
        new.append(text)
        count += n
    return hit.to_numpy(), new, count
