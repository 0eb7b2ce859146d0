"""Readers of JSON sources: JSON lines (``.jsonl``, ``.ndjson``) and JSON (``.json``: an array, ``{"data": [...]}``
or JSON lines under that name), each record a ``RawRow`` (``pipeline.rawrows``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from pipeline import limits
from pipeline.encodings import RE_ENCODE
from pipeline.jsontext import (
    DATA_TWICE,
    DATA_WRAPPER,
    array_elements,
    check_value,
    loads,
    parse_json,
    preview_of,
    text_risks,
)
from pipeline.rawrows import UNREADABLE, RawRow, cannot_read, numbered, open_binary, unreadable_rest

BOM = b"\xef\xbb\xbf"
_BRACKETS = ("{", "[", "}", "]", "},", "],")  # the lines of pretty-printed JSON that hold no value
_JOINED = re.compile(r"[}\]]\s*[{\[]")  # where one JSON value ends and the next begins


def iter_jsonl(path: Path, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """JSON lines split on b"\\n" only (U+2028 inside strings is content, not a line break).

    Streams the file: memory holds one line at a time, and never more than ``max_record_bytes`` of it.
    A UTF-8 byte order mark at the start of a line is skipped.
    """
    with open_binary(path) as f:  # a line is held up to a byte past the limit, a byte order mark before it not counted
        lines = limits.bounded_lines(f, max_record_bytes and max_record_bytes + len(BOM))
        for i, item in numbered(lines, path, "line"):
            if isinstance(item, RawRow):  # the rest of the file cannot be read
                yield item
                return
            line, size = item
            if line.startswith(BOM):  # the file's, or one of files joined with `cat` (never JSON)
                line, size = line[len(BOM):], size - len(BOM)
            if not line.strip():
                continue
            preview = line[:500].decode("utf-8", errors="replace")
            if max_record_bytes and size > max_record_bytes:
                yield RawRow(str(path), i, error=limits.over_limit(max_record_bytes, size),
                             raw=preview)
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield RawRow(str(path), i, error=f"invalid UTF-8 at byte {e.start}: {RE_ENCODE}", raw=preview)
                continue
            value, error = parse_json(text)
            if error and "\r" in text.rstrip("\r") and error.startswith("invalid JSON: Extra data"):
                error += "; the line holds bare CR line breaks (old Mac style): convert them to \\n (`tr '\\r' '\\n'`)"
            elif error and text.strip() in _BRACKETS:  # it said only "Expecting property name ... at column 2"
                error += (f"; a line that is only {text.strip()!r} is JSON written over several lines (pretty-printed), "
                          "not JSON lines: write one record per line (`jq -c '.[]'` for an array, `jq -c .` for "
                          "objects one after another), or name the file .json if it holds one array")
            elif error and error.startswith("invalid JSON: Extra data") and _JOINED.search(text):
                error += ("; the line holds two records (a file that did not end in a line break, joined to another "
                          "with `cat`?): put each record on a line of its own")
            yield RawRow(str(path), i, value=value, error=error, raw=preview)


def iter_json(path: Path, max_record_bytes: int | None = None) -> Iterator[RawRow]:
    """A JSON array (or {"data": [...]}) of records; falls back to JSON lines (files named .json often are).

    An array that does not parse whole (an element Python cannot hold, such as a huge integer or
    deep nesting, a syntax error, a file cut short) is split into its elements without parsing them
    and each is parsed on its own: only the bad ones are error rows.
    """
    cap = limits.JSON_FILE_RECORDS * (max_record_bytes or 1 << 30)
    try:
        data = limits.read_capped(path, cap)
    except UNREADABLE as e:
        if cannot_read(e):
            raise
        yield RawRow(str(path), 1, error=unreadable_rest(e, None))
        return
    if len(data) > cap:  # JSON lines (its first line a record on its own) stream; an array is not read
        lines = parse_json(data.split(b"\n", 1)[0].decode("utf-8-sig", "replace"))[1] is None
        yield from iter_jsonl(path, max_record_bytes) if lines else [RawRow(str(path), 1,
                                                                            error=limits.json_too_big(cap))]
        return
    try:
        text, utf8 = data.decode("utf-8-sig"), True
    except UnicodeDecodeError:  # bad bytes are kept as lone surrogates, so the elements around them still parse
        text, utf8 = data.decode("utf-8-sig", "surrogateescape"), False
    del data
    whole, broken = False, not utf8
    if utf8:
        try:
            value, whole = loads(text), True
        except json.JSONDecodeError:
            broken = True
        except (ValueError, RecursionError):  # a value Python cannot hold (huge integer, deep nesting), a key twice
            pass
    if broken and not text.lstrip().startswith("[") and not _broken_data_wrapper(text):  # not an array: JSON lines
        yield from iter_jsonl(path, max_record_bytes)
        return
    if whole:
        if _data_wrapper(value):
            value = value["data"]
        risks = text_risks(text)
        hint = _wrapped_records(value)
        for i, rec in enumerate(value if isinstance(value, list) else [value], start=1):
            error = check_value(rec, risks=risks)
            yield RawRow(str(path), i, value=None if error else rec, error=error, raw=preview_of(rec), hint=hint)
        return
    twice = _data_twice(text)
    i = 0
    for element, error in array_elements(text):
        if error == DATA_TWICE:
            continue
        i += 1
        preview = (element or "")[:500].encode("utf-8", "replace").decode("utf-8")
        if twice and element is not None:
            yield RawRow(str(path), i, error=twice, raw=preview)
            continue
        if element is not None and not utf8:
            try:
                element.encode("utf-8")
            except UnicodeEncodeError as e:
                at = len(element[:e.start].encode("utf-8", "replace"))
                element, error = None, f"invalid UTF-8 at byte {at}: {RE_ENCODE}"
        value, error = (None, error) if element is None else parse_json(element)
        yield RawRow(str(path), i, value=value, error=error, raw=preview)


def _data_twice(text: str) -> str | None:
    """For ``{"data": [...], "data": [...]}``, the reject of each of its records: a JSON reader keeps the last array
    only (``json.loads``, jq, pandas), and reading both would make the file mean one thing here and another there.
    Each element of every array is a reject naming the key and the arrays' sizes (the second array's records were
    lost under one 'unexpected text after the array' reject)."""
    if not DATA_WRAPPER.match(text):
        return None
    sizes, n = [], 0
    for element, error in array_elements(text):
        if error == DATA_TWICE:
            sizes.append(n)
            n = 0
        elif element is not None:
            n += 1
    if not sizes:
        return None
    sizes.append(n)
    return (f"{DATA_TWICE} at the top level, holding arrays of {' and '.join(map(str, sizes))} records (a JSON reader "
            "keeps the last one only), so none of them is read: put all the records in one \"data\" array")


def _data_wrapper(value: object) -> bool:
    """Whether a parsed ``.json`` file is ``{"data": [records]}`` rather than one record that has a ``data`` list of
    no records (numbers, strings), which was read as its elements, each a reject, and the record itself lost. A
    list holding a record is the file's records, a null or a number among them a reject each: taken for one
    record, they were all lost under one "missing field" reject."""
    data = value.get("data") if isinstance(value, dict) else None
    return isinstance(data, list) and (not data or any(isinstance(rec, dict) for rec in data))


def _wrapped_records(value: object) -> str:
    """For a .json file that is one object (not ``{"data": [...]}``) holding a list of objects under a key, what a
    reject of it should add: ``{"examples": [...]}`` was one record with a 'missing field' reason, its records
    never named. An array of arrays (rows without their column names, as pandas ``to_json(orient='values')`` writes
    them) says so: each row was a reject, "record is list, expected a JSON object", the cause and fix unsaid."""
    if isinstance(value, list) and value and all(isinstance(row, list) for row in value) \
            and not any(isinstance(v, dict) for row in value for v in row):  # not lists of messages (a null among them)
        return (f"; the file is an array of {len(value)} arrays, rows without their column names (pandas "
                "`to_json(orient='values')`): write records, `df.to_json(path, orient='records', lines=True)`")
    if not isinstance(value, dict):
        return ""
    if frame := _pandas_frame(value):
        return (f"; the file is one JSON object holding {frame}, not a list of records: write it with "
                "`df.to_json(path, orient='records', lines=True)`, one record a line")
    lists = [(len(v), k) for k, v in value.items()  # of objects, not of messages (a record's own conversation)
             if isinstance(v, list) and v and isinstance(v[0], dict) and not {"role", "from"} & set(v[0])]
    if not lists:
        return ""
    n, key = max(lists)
    return (f"; the file is one JSON object whose {key!r} holds a list of {n} objects: if they are the records, "
            f"write them as the file's array, or as JSON lines (`jq -c '.[{json.dumps(key)}][]'`)")


def _pandas_frame(value: dict) -> str:
    """What table a .json object is, as pandas' ``to_json()`` writes a DataFrame without ``orient='records'``, or "":
    by default one object per column keyed by row number ({"id": {"0": ..., "1": ...}, ...}; orient 'index' the other
    way round), or its rows as lists ('split'). Taken for one record, its rows were one reject, "messages is dict"."""
    if {"columns", "data"} <= value.keys() and isinstance(value["data"], list) and value["data"] \
            and all(isinstance(row, list) for row in value["data"]):
        return f"a table of {len(value['data'])} rows as lists under 'data' (pandas `to_json(orient='split')`)"
    inner = {tuple(v) if isinstance(v, dict) else None for v in value.values()}
    if len(value) > 1 and len(inner) == 1 and (keys := inner.pop()):
        return (f"{len(value)} objects with the same {len(keys)} keys each (a table by column or by row index, as "
                "pandas `to_json()` writes by default)")
    return ""


def _broken_data_wrapper(text: str) -> bool:
    """Whether ``text``, which does not parse, is ``{"data": [...]}`` (split into its elements like an array) rather
    than JSON lines that happen to start with a "data" key (their first line parses on its own)."""
    return DATA_WRAPPER.match(text) is not None and parse_json(text.split("\n", 1)[0])[1] is not None
