"""``<row .../>`` elements of a Stack Exchange dump, one at a time, surviving malformed rows.

An XML parser stops at the first error, which silently drops every row after a bad one. Here the
file is scanned for ``<row`` and each row is cut out (its end is the first ``>`` outside a quoted
attribute value) and parsed on its own, so a malformed row is one error and reading goes on at
the next ``<row``. A ``<`` inside a row (not allowed in XML attribute values) marks the row as
malformed where it stands, which is also where a row with an unclosed quote is caught. A ``<row`` inside a
comment or CDATA section is text, not a row (a row commented out is not data). Each row
is parsed without a DTD: no entity beyond XML's five and character references is expanded.
Memory holds one row (at most ``limit`` bytes) plus one read chunk.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import IO, Any

from pipeline.encodings import RE_ENCODE
from pipeline.limits import over_limit

CHUNK = 1 << 20
_ROW = re.compile(rb"<row(?=[\s/>])")
_SPECIAL = re.compile(rb"[<>\"']")
_START_TAG = re.compile(rb"<[A-Za-z_]")
_MARKUP = re.compile(rb"<[^<>]*>")  # a tag, a declaration or a comment: what an empty dump holds
_NEXT = re.compile(rb"<row(?=[\s/>])|<!--|<!\[CDATA\[")  # a row, or a comment or CDATA section that may hold one
_LT, _GT, _SLASH = ord("<"), ord(">"), ord("/")
_QUOTES = (ord('"'), ord("'"))

# (end of the row, None) | (None, where a malformed row stops) | (None, None): the buffer ends first
_End = tuple[int | None, int | None]


def _row_end(buf: bytes, start: int) -> _End:
    quote = None
    for m in _SPECIAL.finditer(buf, start + 4):
        c = buf[m.start()]
        if quote is not None:
            if c == quote:
                quote = None
            elif c == _LT:
                return None, m.start()
        elif c in _QUOTES:
            quote = c
        elif c == _LT:
            return None, m.start()
        elif buf[m.start() - 1] == _SLASH:
            return m.end(), None
        else:  # <row ...>...</row>: runs to its end tag, which must come before the next row
            nxt = _ROW.search(buf, m.end())
            close = buf.find(b"</row>", m.end(), nxt.start() if nxt else len(buf))
            if close >= 0:
                return close + len(b"</row>"), None
            return (None, nxt.start()) if nxt else (None, None)
    return None, None


def _parse(chunk: bytes) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return dict(ET.fromstring(chunk).attrib), None
    except ET.ParseError as e:
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError as bad:  # say so, rather than expat's "not well-formed (invalid token)"
            return None, f"invalid UTF-8 at byte {bad.start} of this <row>: {RE_ENCODE}"
        return None, f"invalid XML in this <row>: {e}"


def xml_rows(f: IO[bytes], limit: int) -> Iterator[tuple[dict[str, Any] | None, str | None, str]]:
    """``(attributes, None, "")`` for each well-formed row of binary file ``f``, in order, and
    ``(None, reason, preview)`` for each malformed, truncated or over-``limit`` one."""
    buf, pos, eof = b"", 0, False
    found, elements = False, 0  # a <row> yet; other start tags before it (the root, or not a dump at all)
    text = False  # text outside any tag before a <row>: not XML at all (JSON lines named .xml)
    skip = None  # the end (b"-->" or b"]]>") of the comment or CDATA section being skipped: no row is in it
    hidden, opened = 0, ""  # the <row>s seen in the section being skipped so far, and how it starts
    while True:
        if skip is not None:
            close = buf.find(skip, pos)
            if close >= 0:
                pos, skip = close + len(skip), None
                continue
            if eof:  # the file ends inside it: what follows is no row, but rows after an opening never closed
                hidden += len(_ROW.findall(buf, pos))  # were lost without a word (a damaged dump)
                if hidden:
                    what = "comment ('<!--')" if skip == b"-->" else "CDATA section ('<![CDATA[')"
                    yield None, (f"the file ends inside a {what} that is never closed, so the {hidden} <row>(s) after "
                                 "its start are not read (a damaged dump?): close it or remove it"), opened
                return
            keep = max(pos, len(buf) - 8)  # its end, or a "<row " cut by the edge of the read
            hidden += sum(1 for r in _ROW.finditer(buf, pos) if r.start() < keep)
            data = f.read(CHUNK)
            buf, pos, eof = buf[keep:] + data, 0, not data
            continue
        m = _NEXT.search(buf, pos)
        if m is not None and m.group() != b"<row":
            skip, pos = (b"-->" if m.group() == b"<!--" else b"]]>"), m.end()
            hidden, opened = 0, _preview(buf[m.start():m.start() + 200])
            continue
        start = m.start() if m is not None else None
        found = found or start is not None
        end, bad = _row_end(buf, start) if start is not None else (None, None)
        if end is None and bad is None:  # no row, or one that runs past the buffer: read on
            if start is not None and eof:
                yield None, "the file ends inside this <row> (truncated?)", _preview(buf[start:])
                return
            if start is not None and len(buf) - start > limit:
                yield None, over_limit(limit, what="<row>"), _preview(buf[start:])
                start = len(buf)
            keep = start if start is not None else max(pos, len(buf) - 8)  # "<row", "<!--", "<![CDATA[" cut by the edge
            if not found:
                elements += len(_START_TAG.findall(buf, 0, len(buf) if eof else keep))
                text = text or _has_text(buf[: len(buf) if eof else keep])
            if eof:
                if not found and elements > 1:  # its records would be lost without a word
                    yield None, (f"the file holds {elements} XML elements but no <row>: ingest reads Stack Exchange "
                                 "dumps (one <row .../> per post); convert other XML to JSON lines"), _preview(buf)
                elif not found and text:  # it was "holds no records (an empty file?)"
                    yield None, ("the file holds text but no XML <row>: ingest reads a .xml file as a Stack Exchange "
                                 "dump (one <row .../> per post); is it another format? name it for what it holds "
                                 "(.jsonl, .csv)"), _preview(buf)
                return
            data = f.read(CHUNK)
            buf, pos, eof = buf[keep:] + data, 0, not data
        elif end is None:
            yield None, "malformed <row>: a '<' inside it before its closing '>' (an unclosed quote?)", \
                _preview(buf[start:bad])
            pos = bad
        elif end - start > limit:
            yield None, over_limit(limit, what="<row>"), _preview(buf[start:end])
            pos = end
        else:
            value, error = _parse(buf[start:end])
            yield value, error, "" if error is None else _preview(buf[start:end])
            pos = end


def _has_text(region: bytes) -> bool:
    """Text outside tags in ``region``, a stretch of the file that may start or end inside a tag."""
    gt, lt = region.find(b">"), region.find(b"<")
    if gt >= 0 and (lt < 0 or gt < lt):  # starts inside a tag
        region = region[gt + 1:]
    lt = region.rfind(b"<")
    if lt >= 0 and region.find(b">", lt) < 0:  # ends inside one
        region = region[:lt]
    return bool(_MARKUP.sub(b"", region).replace(b"\xef\xbb\xbf", b"").strip())  # a byte order mark is no text


def _preview(data: bytes) -> str:
    return data[:500].decode("utf-8", errors="replace")
