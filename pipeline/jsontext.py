"""JSON text to values without ever raising: every failure is a reason a reject row can carry.

``json.loads`` raises ``ValueError`` for an integer literal over 4,300 digits and ``RecursionError``
for deep nesting, at a depth that depends on the caller's stack; and it turns a lone UTF-16
surrogate escape (``"\\ud800"``) into a string no encoder accepts. ``parse_json`` turns each into a
reason, and rejects nesting deeper than ``MAX_JSON_DEPTH`` whether or not Python could parse it, so a
record is accepted or rejected the same way wherever it is read from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Iterator
from typing import Any

# Far deeper than any real record (OpenAssistant trees are ~15 levels) and far below Python's
# recursion limit, so a record parses, or is rejected, the same way wherever it is read from.
MAX_JSON_DEPTH = 200


def _too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        children = v.values() if isinstance(v, dict) else v
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def text_risks(text: str) -> tuple[bool, bool]:
    """Whether JSON ``text`` may hold a value nested too deep, and a lone surrogate escape: cheap tests on the
    text that let ``check_value`` skip its walks. Done once for a whole file, not once per record in it (that
    was quadratic: 8,000 records of a 4 MB array took 75 s)."""
    return text.count("[") + text.count("{") > MAX_JSON_DEPTH, "\\ud" in text or "\\uD" in text


def check_value(value: Any, text: str | None = None, risks: tuple[bool, bool] | None = None) -> str | None:
    """Why a parsed JSON value cannot go on (too deep, a lone surrogate), or None.

    With ``text`` (the JSON it came from) or its ``risks`` (``text_risks``), the walks that cannot fail are skipped.
    """
    deep, lone = risks or (text_risks(text) if text is not None else (True, True))
    if isinstance(value, dict | list) and deep:
        if _too_deep(value):
            return f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels"
    if lone:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            return (f"invalid JSON: lone surrogate \\u{ord(e.object[e.start]):04x} in a string "
                    "(half of a UTF-16 pair, not a character)")
        except (ValueError, RecursionError) as e:
            return f"invalid JSON: {e}"
    return None


class DuplicateKey(ValueError):
    """An object names a key twice with different values: ``json.loads`` would keep the last one silently."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for ``json.loads``: the object, or ``DuplicateKey`` when a key repeats with another
    value (a repeat with the same value loses nothing)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        for key, value in pairs:
            if obj[key] != value:
                raise DuplicateKey(f"invalid JSON: key {key!r} appears twice in one object with different values "
                                   "(a JSON reader keeps one of them): keep one")
    return obj


def loads(text: str) -> Any:
    """``json.loads`` of a record's text, raising ``DuplicateKey`` where it would drop a value silently."""
    return json.loads(text, object_pairs_hook=unique_keys)


def parse_json(text: str) -> tuple[Any, str | None]:
    """``json.loads`` that never raises: ``(value, None)``, or ``(None, reason)``."""
    try:
        value = loads(text)
    except json.JSONDecodeError as e:
        return None, f"invalid JSON: {e.msg.removesuffix(' at')} at column {e.colno}"  # not "starting at at"
    except DuplicateKey as e:
        return None, str(e)
    except RecursionError:
        return None, f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels"
    except ValueError as e:  # an integer literal over 4,300 digits
        return None, f"invalid JSON: {str(e).split(';')[0]}"
    error = check_value(value, text)
    return (None, error) if error else (value, None)


# A string (to skip: brackets inside it are text; an unterminated one runs to the end) or one of [ ] { } ,
_ARRAY_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\Z)|[\[\]{},]', re.S)
DATA_WRAPPER = re.compile(r'\A\s*\{\s*"data"\s*:\s*\[')
_DATA_AGAIN = re.compile(r'\s*,\s*"data"\s*:\s*\[')
# Where ``array_elements`` goes on into a second "data" array of ``{"data": [...], "data": [...]}``.
DATA_TWICE = "the file names the key 'data' twice"


def array_elements(text: str) -> Iterator[tuple[str | None, str | None]]:
    """The raw text of each element of a JSON array (or ``{"data": [...]}``), in linear time, without
    parsing them; ``(None, reason)`` where the array breaks off or is not an array. In ``{"data": [...],
    "data": [...]}`` the elements of each array, a ``(None, DATA_TWICE)`` between them."""
    wrapper = DATA_WRAPPER.match(text)
    start = wrapper.end() - 1 if wrapper else len(text) - len(text.lstrip())
    if text[start:start + 1] != "[":
        yield None, "invalid JSON: the file is neither an array of records nor JSON lines"
        return
    at: int | None = start
    while at is not None:  # a loop, not recursion: a file may name "data" thousands of times
        at = yield from _elements(text, at, wrapper is not None)


def _elements(text: str, start: int, wrapper: bool) -> Generator[tuple[str | None, str | None], None, int | None]:
    """``array_elements`` of the array that starts at ``text[start]``; returns where the next "data" array of the
    wrapper starts, if the file names the key again."""
    depth, begin = 0, start + 1
    for m in _ARRAY_TOKENS.finditer(text, start + 1):
        c = text[m.start()]
        if c in "[{":
            depth += 1
        elif c in "]}" and depth:
            depth -= 1
        elif c == "]":
            if text[begin:m.start()].strip():
                yield text[begin:m.start()], None
            if wrapper and (again := _DATA_AGAIN.match(text, m.end())):
                yield None, DATA_TWICE
                return again.end() - 1
            rest = text[m.end():].strip()
            if rest != ("}" if wrapper else ""):
                yield None, f"invalid JSON: unexpected text after the array: {rest[:40]!r}"
            return
        elif c in ",}" and not depth:
            if c == "}":
                yield None, "invalid JSON: unbalanced '}' in the array; the rest of the file is lost"
                return
            yield text[begin:m.start()], None
            begin = m.end()
    yield None, "invalid JSON: the file ends inside the array (truncated?)"


def preview_of(value: Any) -> str:
    """The first 500 characters of a value as JSON, always encodable (for the rejects table)."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)[:500]
    except (ValueError, RecursionError):
        text = repr(value)[:500]
    return text.encode("utf-8", "replace").decode("utf-8")
