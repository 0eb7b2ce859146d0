"""Replace a regular expression's matches in a polars string column with a marker, counting them; where a
pattern alone is not precise enough, a validator is run once per *distinct* candidate the pattern found.

The pattern runs over the whole column in polars (Rust regex, no Python loop per row); rows are rewritten in
Python only when they hold a validated candidate (rare: most rows hold none), so the cost per row is the Rust
regex scan. The machinery holds no detector: ``pipeline.pii`` holds the detectors (patterns and validators) of
personal data and secrets, and ``redact``, which runs them in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import polars as pl
import regex


@dataclass(frozen=True)
class Detector:
    """``pattern`` finds candidates; the named group ``pii`` (or the whole match) is what gets replaced
    (a group ``keep`` before it stays). ``validate(match) -> (start, end) | None`` narrows a candidate to the
    span inside ``pii`` to replace, or rejects it; ``None`` validator = every match is replaced. ``needs``: a
    pattern every match of ``pattern`` contains, cheap to scan for (a literal the regex engine can jump to): a
    validated detector scans only the rows holding it, where ``pattern`` itself cannot be searched fast."""

    kind: str
    pattern: str
    marker: str
    validate: Callable[[regex.Match], tuple[int, int] | None] | None = None
    needs: str | None = None


@cache
def compiled(pattern: str) -> regex.Pattern:
    """``pattern`` compiled by the Python ``regex`` engine, once per pattern."""
    return regex.compile(pattern)


def replace_plain(s: pl.Series, d: Detector) -> tuple[pl.Series, int]:
    """``s`` with every match of ``d.pattern`` replaced by ``d.marker`` (its ``keep`` group kept), and the number
    of matches: all in polars, for a detector without a validator.

    >>> replace_plain(pl.Series(["key sk-1", "none"]), Detector("key", r"sk-\d", "[KEY]"))[0].to_list()
    ['key [KEY]', 'none']
    """
    n = int(s.str.count_matches(d.pattern).sum() or 0)
    if not n:
        return s, 0
    repl = ("${keep}" if "(?P<keep>" in d.pattern else "") + d.marker.replace("$", "$$")
    return s.str.replace_all(d.pattern, repl), n


def _replacement(m: regex.Match, marker: str, validate: Callable) -> str | None:
    """The text that replaces match ``m`` (the ``pii`` span narrowed by ``validate`` becomes ``marker``),
    or None when the candidate is not PII."""
    span = validate(m)
    if span is None:
        return None
    text, off = m.group(0), m.start("pii") - m.start() if "pii" in m.re.groupindex else 0
    end = off + span[1] if "pii" in m.re.groupindex else len(text)
    return text[: off + span[0]] + marker + text[end:]


def _rewrite(row: str, cands: list[str], repl: dict[str, str], rx: regex.Pattern, replace: Callable
             ) -> tuple[str, int]:
    """``row`` with its candidates (the Rust engine's matches, in order) replaced where ``repl`` has them.
    Each one is located with ``str.find`` and confirmed by an anchored match at that position, so a
    look-alike substring that did not match (e.g. followed by a letter) is never replaced. After a replacement,
    what the next scan would find right behind it is settled here (``_seam``)."""
    out, pos, at, n = [], 0, 0, 0  # ``pos``: how far ``row`` is written out; ``at``: the Rust scan's position
    for c in cands:
        p = row.find(c, at)
        while p >= 0 and not ((m := rx.match(row, p)) is not None and m.group(0) == c):
            p = row.find(c, p + 1)
        if p < 0:  # the engines disagree on this row: let the Python engine scan all of it
            return _rewrite_scan(row, repl, rx)
        at = p + len(c)
        if p < pos:  # a seam match took (part of) this candidate's text
            continue
        out.append(row[pos:p])
        out.append(repl.get(c, c))
        n += c in repl
        pos = p + len(c)
        if c in repl:
            pos, k = _seam(row, pos, repl[c], rx, replace, out)
            n += k
    out.append(row[pos:])
    return "".join(out), n


# how far past a replacement the seam match is looked for: a longer match there is left to the next scan
_SEAM = 256


def _seam(row: str, pos: int, r: str, rx: regex.Pattern, replace: Callable, out: list[str]) -> tuple[int, int]:
    """Matches that start on the last character of replacement ``r`` (ending at ``pos`` of ``row``): a pattern
    bounded by a character takes it, so the next scan would find them one per scan ("+44 20 7946 0958+44 20 7946
    0958...", "DE89...和DE89..."): thousands of numbers back to back were thousands of scans of the whole row.
    Replaced here, one after the other, each read within ``_SEAM`` characters (a match reaching that far is left to
    the next scan). Appends to ``out``; returns the new position and the number replaced."""
    n = 0
    while True:  # the replacement stays before the probe, so ``^``, ``\b`` and look-behinds read it as the next scan would
        probe = r + row[pos:pos + _SEAM]
        m = rx.match(probe, len(r) - 1)
        if m is None or m.end() <= len(r) or m.end() >= len(probe) - 1 and pos + _SEAM < len(row):
            return pos, n
        new = replace(m.group(0))
        if new is None or not new.startswith(r[-1]):
            return pos, n
        out.append(new[1:])
        pos += m.end() - len(r)
        n += 1
        r = new


def _rewrite_scan(row: str, repl: dict[str, str], rx: regex.Pattern) -> tuple[str, int]:
    n = 0

    def sub(m: regex.Match) -> str:
        nonlocal n
        n += m.group(0) in repl
        return repl.get(m.group(0), m.group(0))

    return rx.sub(sub, row), n


def replace_validated(s: pl.Series, d: Detector, validate: Callable) -> tuple[pl.Series, int]:
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
    # takes). A loop, not recursion. What starts right behind a replacement is replaced in the same scan (``_seam``):
    # numbers written back to back ("+44 20 7946 0958+44 20 7946 0958...") gave up one a scan of the whole row, so
    # n of them took n scans (3,000: 9.0 s; now 0.015 s, bench/redact_rescan.py); the next scan finds nothing.
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

    @cache
    def replace(c: str) -> str | None:  # a candidate found at a seam: validated once per distinct one
        if c in repl:
            return repl[c]
        m = rx.fullmatch(c)
        return _replacement(m, d.marker, validate) if m is not None else None

    for row, cands in zip(s.filter(hit).to_list(), found.filter(hit).to_list(), strict=True):
        text, n = _rewrite(row, cands, repl, rx, replace)
        new.append(text)
        count += n
    return hit.to_numpy(), new, count
