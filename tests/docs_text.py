"""How the docs tests (tests/test_docs.py, tests/test_docs_snippets.py) read README.md, bench/README.md
and docs/*.md: their text, fenced blocks and inline code spans, and params.yaml as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipeline.yaml12 import load_yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "bench/README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
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


def params() -> dict[str, Any]:
    return load_yaml((ROOT / "params.yaml").read_text(encoding="utf-8"))
