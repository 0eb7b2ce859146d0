"""HTML to plain text."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser


class _HTMLText(HTMLParser):
    """HTML -> plain text: block elements become line breaks, entities are decoded, tags dropped."""

    BLOCK = {"p", "div", "br", "li", "ul", "ol", "pre", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.BLOCK:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_to_text(body: str) -> str:
    """Stack Exchange post bodies are HTML: keep the words, drop the markup.

    >>> html_to_text("<p>Use a <b>burr</b> grinder &amp; fresh beans.</p>")
    'Use a burr grinder & fresh beans.'
    """
    parser = _HTMLText()
    parser.feed(html.unescape(body) if "&lt;" in body else body)
    parser.close()
    text = "".join(parser.parts)
    return re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+\n", "\n", text)).strip()
