"""Fit user and model texts into a prompt budget by shortening the longest ones first.

A judge prompt that does not fit the model's context is better judged on shortened texts (and flagged)
than dropped: ``shorten`` cuts the values of a template's fields so the filled template
(``pipeline.prompt.fill``) holds at most ``max_chars`` characters, and, when the caller can count tokens,
until its ``fits`` check passes too. Values are cut from the end, longest first, to one common length
(short values stay whole), each cut one ending in ``CUT``::

    >>> data, cut = shorten("A: {a}\\nB: {b}", 40, a="x" * 100, b="short")
    >>> cut, len(data["a"]), data["b"]
    (True, 28, 'short')
    >>> shorten("A: {a}", 40, a="fits")
    ({'a': 'fits'}, False)
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pipeline.prompt import escape, fill

CUT = " [...]"  # ends a shortened value (the reader sees it was cut)
SHRINK = 0.8  # each round of a failing ``fits`` check keeps this share of the text budget
MAX_ROUNDS = 30


def _fields(template_text: str) -> set[str]:
    return set(re.findall(r"(?<!\{)\{(\w+)\}", template_text))


def _cap(lengths: list[int], budget: int) -> int:
    """The largest c with sum(min(length, c)) <= budget (water filling)."""
    lo, hi = 0, max(lengths, default=0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(n, mid) for n in lengths) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def shorten(template_text: str, max_chars: int, fits: Callable[[dict[str, str]], bool] | None = None,
            **data: str) -> tuple[dict[str, str], bool]:
    """``(data, shortened)``: ``data`` with the template's field values cut so that
    ``fill(template_text, **data)`` has at most ``max_chars`` characters and ``fits(data)`` (when given,
    e.g. a token count against the model's context) is true. Values the template does not use are
    returned unchanged. When even empty values do not fit, every used value is reduced to ``CUT``.
    """
    used = sorted(_fields(template_text) & set(data))
    values = {k: escape(data[k]) for k in used}  # measured as they will be inserted
    overhead = len(fill(template_text, **{k: "" for k in data}))
    budget = max_chars - overhead
    lengths = [len(values[k]) for k in used]
    if sum(lengths) <= budget and (fits is None or fits(data)):
        return dict(data), False
    for _ in range(MAX_ROUNDS):
        level = _cap(lengths, max(budget, 0))  # every value at most `level` characters, CUT included
        keep = max(level - len(CUT), 0)
        out = dict(data)
        for k in used:
            if len(values[k]) > level:
                out[k] = values[k][:keep].rstrip() + CUT
        if fits is None or fits(out) or keep == 0:
            return out, True
        budget = int(sum(min(n, level) for n in lengths) * SHRINK)
    return out, True
