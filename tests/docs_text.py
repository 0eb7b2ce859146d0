"""How the docs tests (tests/test_docs.py, tests/test_docs_snippets.py) read README.md, bench/README.md
and docs/*.md: their text, fenced blocks and inline code spans, and params.yaml as written.

The user documentation (``GUIDE``) is README.md, a front page, plus the pages under docs/ it links to; a guard that
checks what the documentation says reads all of it (``guide_text``, ``section``), wherever a sentence lives."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipeline.yaml12 import load_yaml

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))]
DOCS = [GUIDE[0], "bench/README.md", *GUIDE[1:]]
FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.S | re.M)


def text(doc: str) -> str:
    return (ROOT / doc).read_text(encoding="utf-8")


def fences(doc: str, lang: str | None = None) -> list[tuple[int, str]]:
    """(line, dedented body) of each fenced block, of language ``lang`` when given."""
    t = text(doc)
    out = []
    for m in FENCE.finditer(t):
        if lang is None or m.group(2) == lang:
            body = "\n".join(line[len(m.group(1)):] for line in m.group(3).splitlines())
            out.append((t[:m.start()].count("\n") + 1, body))
    return out


def prose(doc: str) -> str:
    """The text without its fenced blocks (line numbers kept)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text(doc))


def spans(doc: str) -> list[tuple[int, str]]:
    """(line, content) of every inline code span outside fenced blocks."""
    t = prose(doc)
    return [(t[:m.start()].count("\n") + 1, m.group(1)) for m in re.finditer(r"`([^`\n]+)`", t)]


def code_lines(doc: str) -> list[tuple[int, str]]:
    """Inline code spans and the lines of shell blocks (backslash continuations joined, comments cut)."""
    out = list(spans(doc))
    for line, body in fences(doc, "bash"):
        for i, row in enumerate(body.replace("\\\n", " ").splitlines()):
            out.append((line + 1 + i, row.split(" #")[0].strip()))
    return out


def guide_text() -> str:
    """README.md and every page under docs/, one after the other."""
    return "\n\n".join(text(doc) for doc in GUIDE)


def section(heading: str) -> str:
    """The text under ``heading`` (a heading of any level, written exactly), from it to the next heading of any
    level, in every doc of ``GUIDE`` that has it (README.md's summary and the docs/ page that holds the rest)."""
    found = []
    for doc in GUIDE:
        lines, heads = text(doc).splitlines(), prose(doc).splitlines()
        starts = [i for i, line in enumerate(heads) if re.fullmatch(r"#+ " + re.escape(heading), line)]
        for start in starts:
            end = next((j for j in range(start + 1, len(heads)) if re.match(r"#+ ", heads[j])), len(heads))
            found.append("\n".join(lines[start:end]))
    assert found, f"no doc has the heading {heading!r}"
    return "\n\n".join(found)


def params() -> dict[str, Any]:
    return load_yaml((ROOT / "params.yaml").read_text(encoding="utf-8"))
