"""HTML to plain text, in time linear in the input.

Parsing is lexbor's (``selectolax``), a maintained HTML5 parser. Lexbor's tree building slows down
with deeply nested blocks (each new ``<div>`` looks through the open elements: 40,000 nested
``<div>`` take seconds), so a body with more than ``MAX_TAGS`` tags, far more than any Stack Exchange
post holds (bodies are capped at 30,000 characters), has its tags stripped by one regex pass instead. So does
a body whose formatting elements are left open across many tags (``MAX_REOPENED``): HTML5 reopens every open
``<b>``, ``<a>``, ... in each new paragraph, so ``"<b id=1><p>x<b id=2><p>x..."`` builds a tree quadratic in its
tags (5,000 pairs, 80 KB: 12 million elements and 20 s).
``bench/html_to_text.py`` runs it against the stdlib ``html.parser`` version it replaced, which is quadratic
on unclosed tags (figures in bench/README.md).
"""

from __future__ import annotations

import html
import re

from selectolax.lexbor import LexborHTMLParser

# Elements that start and end a line; ``li`` also starts its line with "- ".
BLOCK = ("p", "div", "br", "li", "ul", "ol", "pre", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "hr")
VOID = ("br", "hr")  # no end tag: one line break
# Elements whose content is code or markup, never shown as text: a post's <script> is not words of the post.
HIDDEN = ("script", "style", "noscript", "template")
MAX_TAGS = 10_000
# HTML5's formatting elements: open ones are reopened in each new block (the parser's "list of active formatting
# elements"; only identical ones are capped, at three).
FORMATTING = ("a", "b", "big", "code", "em", "font", "i", "nobr", "s", "small", "strike", "strong", "tt", "u")
# The most (open formatting elements x tags after them) a parsed body may hold: what lexbor could reopen, about a
# microsecond each (100,000: ~0.1 s). Real posts close what they open: the coffee dump's largest is 40.
MAX_REOPENED = 100_000
# A tag: "<", an optional "/", a name, then anything up to the next ">" that holds no "<" (so a "<"
# left open is text and the scan never runs past the next tag: linear).
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)[^<>]*>")


def _reopened(body: str) -> int:
    """An upper bound on the elements the HTML5 parser may reopen in ``body``: the sum, over its tags, of the
    formatting elements open before each (closed by name, an end tag with none open ignored), in one pass."""
    open_by_name: dict[str, int] = {}
    total = open_now = 0
    for m in _TAG.finditer(body):
        name = m.group(2).lower()
        if name in FORMATTING:
            if m.group(1):
                if open_by_name.get(name):
                    open_by_name[name] -= 1
                    open_now -= 1
            else:  # "<b/>" opens one too: HTML5 ignores the slash but on void elements
                open_by_name[name] = open_by_name.get(name, 0) + 1
                open_now += 1
        total += open_now
    return total


def _link_target(href: str, text: str) -> str | None:
    """What follows a link's words, " (url)", when they do not show where it goes: "here is the website: Caffeine In
    Coffee" names a page only its URL finds (422 links in 158 of the 327 answers of the real coffee dump). A link
    whose words are its URL, an in-page or relative link, and a link with no words (an image) add nothing; nor does
    the tag-stripping fallback for pathological bodies (``MAX_TAGS``, ``MAX_REOPENED``), which keeps words only."""
    href, words = href.strip(), text.strip()
    if not href.startswith(("http://", "https://")) or not words:
        return None
    bare = href.split("://", 1)[1].rstrip("/")
    if words.rstrip("/") in (href.rstrip("/"), bare) or words.removeprefix("www.").rstrip("/") == bare.removeprefix("www."):
        return None
    return f" ({href})"


def _parsed_text(body: str) -> str:
    root = LexborHTMLParser(body).root
    if root is None:
        return ""
    for node in root.css(", ".join(HIDDEN)):
        node.decompose()
    for node in root.css("a[href]"):
        if shown := _link_target(node.attributes.get("href") or "", node.text(deep=True)):
            node.insert_after(shown)
    for node in root.css(", ".join(BLOCK)):
        node.insert_before("\n- " if node.tag == "li" else "\n")
        if node.tag not in VOID:
            node.insert_after("\n")
    return root.text(deep=True)


_HIDDEN_OPEN = re.compile(r"<(" + "|".join(HIDDEN) + r")\b[^<>]*>", re.I)


def _without_hidden(body: str) -> str:
    """``body`` without ``HIDDEN`` elements and their content, in one pass: each search starts where the last
    ended (an element never closed runs to the end, as an HTML parser reads it)."""
    out, pos = [], 0
    while m := _HIDDEN_OPEN.search(body, pos):
        out.append(body[pos:m.start()])
        close = re.compile(rf"</{m.group(1)}\s*>", re.I).search(body, m.end())
        if close is None:
            return "".join(out)
        pos = close.end()
    out.append(body[pos:])
    return "".join(out)


def _stripped_text(body: str) -> str:
    def tag(m: re.Match) -> str:
        name = m.group(2).lower()
        if name not in BLOCK:
            return ""
        return "\n- " if name == "li" and not m.group(1) else "\n"

    return html.unescape(_TAG.sub(tag, _without_hidden(body)))


def html_to_text(body: str) -> str:
    """Stack Exchange post bodies are HTML: keep the words, drop the markup.

    Block elements become line breaks, list items start with "- ", entities are decoded, and a link whose words
    do not show its web address is followed by it in parentheses (``_link_target``).

    >>> html_to_text("<p>Use a <b>burr</b> grinder &amp; fresh beans.</p>")
    'Use a burr grinder & fresh beans.'
    >>> html_to_text('<p>See <a href="http://www.ico.org/caffeine.asp">Caffeine In Coffee</a>.</p>')
    'See Caffeine In Coffee (http://www.ico.org/caffeine.asp).'
    """
    # Markup escaped once more than usual has no tag left: a body that has tags and also "&lt;" shows code as
    # text (`<code>&lt;br&gt;</code>`), which unescaping would turn into tags and lose.
    if "&lt;" in body and "<" not in body:
        body = html.unescape(body)
    tags = body.count("<")  # _reopened is at most tags squared: most bodies need no count
    parse = tags <= MAX_TAGS and (tags * tags <= MAX_REOPENED or _reopened(body) <= MAX_REOPENED)
    text = _parsed_text(body) if parse else _stripped_text(body)
    return re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+\n", "\n", text)).strip()
