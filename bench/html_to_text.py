"""Benchmark: HTML to text (pipeline/formats/markup.py, lexbor) against the stdlib ``html.parser`` version it replaced.

    python bench/html_to_text.py                # hostile bodies of growing size + the real Stack Exchange bodies
    python bench/html_to_text.py --max-baseline 4000

Hostile bodies are unclosed tags, ``"<a " * n`` (the issue's case): the stdlib parser rescans the rest of
the body from every ``<`` it cannot close, so its time grows with n squared. The baseline runs only up
to ``--max-baseline`` repeats (it takes seconds there); the new version runs up to 100,000 (300 KB).
Both run in this process, one after the other, on the same inputs; the real bodies are the 592 posts
of the Stack Exchange coffee dump in ../shared/data/real (throughput, and how many outputs differ).
"""

from __future__ import annotations

import argparse
import html
import re
import sys
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.formats.markup import html_to_text  # noqa: E402


class _StdlibText(HTMLParser):
    """The previous implementation (stdlib parser), kept here as the baseline."""

    BLOCK = {"p", "div", "br", "li", "ul", "ol", "pre", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self.BLOCK:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")

    def handle_endtag(self, tag):
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        self.parts.append(data)


def stdlib_html_to_text(body: str) -> str:
    parser = _StdlibText()
    parser.feed(html.unescape(body) if "&lt;" in body else body)
    parser.close()
    return re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+\n", "\n", "".join(parser.parts))).strip()


def timed(fn, body: str) -> float:
    start = time.perf_counter()
    fn(body)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-baseline", type=int, default=4000, help="largest n the stdlib baseline runs on")
    ap.add_argument("--smoke", action="store_true", help="small bodies and 200 real ones (checks the bench runs)")
    args = ap.parse_args()
    sizes = (1000, 2000) if args.smoke else (1000, 2000, 4000, 8000, 100_000)
    print(f"python {sys.version.split()[0]}")
    html_to_text("<p>warm up</p>")
    print(f"{'body':<22} {'bytes':>8} {'stdlib s':>10} {'lexbor s':>10} {'ratio':>8}")
    for n in sizes:
        body = "<a " * n
        new = timed(html_to_text, body)
        old = timed(stdlib_html_to_text, body) if n <= args.max_baseline else None
        ratio = f"{old / new:,.0f}x" if old else "-"
        label = f'"<a " * {n}'
        print(f"{label:<22} {len(body):>8} {'-' if old is None else f'{old:.3f}':>10} {new:>10.4f} {ratio:>8}")
    posts = ROOT.parent / "shared/data/real/stackexchange_coffee/Posts.xml"
    bodies = [e.attrib["Body"] for _, e in ET.iterparse(posts) if e.tag == "row" and "Body" in e.attrib]
    bodies = bodies[:200] if args.smoke else bodies
    size = sum(len(b) for b in bodies)
    t_old = sum(timed(stdlib_html_to_text, b) for b in bodies)
    t_new = sum(timed(html_to_text, b) for b in bodies)
    differ = sum(stdlib_html_to_text(b) != html_to_text(b) for b in bodies)
    differ_words = sum(stdlib_html_to_text(b).split() != html_to_text(b).split() for b in bodies)
    print(f"real Stack Exchange bodies: {len(bodies)} ({size:,} chars): stdlib {t_old:.3f} s, lexbor {t_new:.3f} s "
          f"({t_old / t_new:.1f}x); outputs differ in {differ} (in words: {differ_words})")


if __name__ == "__main__":
    main()
