"""What every format adapter shares: the record context, message parsing and the canonical row builders."""

from __future__ import annotations

import json
import math
import re
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pipeline.config import Source
from pipeline.encodings import VISIBLE, not_text
from pipeline.records import stable_id


class BadRecord(ValueError):
    """The record cannot be used; the message is the reject reason."""


@dataclass
class Adapted:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)
    # Facts that only make sense across records, applied by ``finish`` once the source is read
    # (a Stack Exchange question names its accepted answer, which is another row).
    facts: dict[str, set[str]] = field(default_factory=dict)

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.rows.setdefault(table, []).append(row)


@dataclass(frozen=True)
class Ctx:
    source: str  # the ingest source name; written to every row's `source`
    kind: str
    format: str
    mapping: dict[str, str]
    where: str  # "<file relative to the source>:<row>", the id of a record that has none
    # The most text one record may expand to (an OASST tree repeats the path to each leaf in its conversation):
    # ingest sets it to JSON_FILE_RECORDS x max_record_bytes, so memory stays bounded by the limit.
    max_output: int = 1 << 62

    @classmethod
    def for_source(cls, src: Source, file_rel: str, row: int, max_output: int = 1 << 62) -> Ctx:
        return cls(src.name, src.kind, src.format, dict(src.mapping), f"{file_rel}:{row}", max_output)

    def _find(self, rec: dict[str, Any], name: str, fallbacks: tuple[str, ...], required: bool) -> tuple[str, Any]:
        """(the field found, its value): ``name`` (renamed by ``mapping``), else the first present fallback."""
        candidates = [self.mapping[name]] if name in self.mapping else [name, *fallbacks]
        for cand in candidates:
            value = _dig(rec, cand)
            if value is not None:
                return cand, value
        if required:
            shown = " or ".join(repr(c) for c in candidates)
            if null := next((c for c in candidates if isinstance(rec, dict) and c in rec), None):  # there, but null
                raise BadRecord(f"field {null!r} is null: the record has no {shown}")
            near = _near_key(rec, candidates)
            if near is not None:  # the header's " text" or "Text": every record was a reject naming no cause
                raise BadRecord(f"missing field {shown}; the record has {_shown(near)}, which differs only in case or "
                                "white space: rename it in the file, or set `mapping` to read it")
            raise BadRecord(f"missing field {shown}" + ("" if name in self.mapping else " (set `mapping` to rename)"))
        return candidates[0], None

    def get(self, rec: dict[str, Any], name: str, *fallbacks: str, required: bool = False) -> Any:
        """Field ``name`` (renamed by ``mapping``), else the first present fallback field."""
        return self._find(rec, name, fallbacks, required)[1]

    def field(self, rec: dict[str, Any], name: str, *fallbacks: str, required: bool = False) -> tuple[str, Any]:
        """(the record's key, its value) for ``get``'s field: a reject names the key the record holds."""
        return self._find(rec, name, fallbacks, required)

    def ident(self, rec: dict[str, Any], name: str, *fallbacks: str, required: bool = False) -> str | None:
        """An id field as a string (a string, an integer or a finite number); None when absent or "".

        A NaN, an infinity, a boolean, an object or a list is a reject, not an id ("nan", "{'a': 1}"). A whole
        float is the integer it holds (``7.0`` is ``7``, as JSON and pandas write an integer column that has a
        null: a Stack Exchange ``ParentId``), not "7.0", which no record's ``7`` would match.
        """
        field_name, value = self._find(rec, name, fallbacks, required)
        if value is None or value == "":
            if required:
                raise BadRecord(f"{field_name} is empty")
            return None
        if isinstance(value, float | Decimal) and math.isfinite(value):  # a Parquet decimal (Spark's big ids) too
            return str(int(value)) if value == int(value) else str(value)
        if isinstance(value, str | int | uuid.UUID) and not isinstance(value, bool):  # a Parquet UUID column too
            return str(value)
        raise BadRecord(f"{field_name} is {_shown(value)}, expected a string or a number (an id)")

    def origin(self, rec: dict[str, Any], *fallbacks: str) -> str:
        """The record's own id as a string, or its file:row position when it has none."""
        return self.ident(rec, "id", *fallbacks) or self.where


def _near_key(rec: dict[str, Any], candidates: list[str]) -> str | None:
    """A key of ``rec`` that is one of ``candidates`` but for case and surrounding white space (a CSV header written
    ``id, text``, a ``Text`` column), or None. Only its first 1,000 keys are looked at: this is a reject's hint."""
    wanted = {c.casefold() for c in candidates}
    keys = (k for k in list(rec)[:1000] if isinstance(k, str)) if isinstance(rec, dict) else ()
    return next((k for k in keys if k.strip().casefold() in wanted), None)


def _dig(rec: dict[str, Any], dotted: str) -> Any:
    """Field ``dotted`` of ``rec``: a top-level field of that name (a flattened CSV or Parquet export names its
    column ``metadata.score_chosen``), else the path through nested objects."""
    if "." not in dotted or dotted in rec:  # the usual case: a top-level field
        return rec.get(dotted) if isinstance(rec, dict) else None
    value: Any = rec
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


# --- messages ------------------------------------------------------------------------------------

# Role names seen in the wild -> the three canonical roles.
ROLES = {
    "user": "user", "human": "user", "prompter": "user", "customer": "user",
    "assistant": "assistant", "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant",
    "bing": "assistant", "model": "assistant", "bot": "assistant", "ai": "assistant",
    "system": "system", "developer": "system",  # OpenAI's newer name for the system message
}


# The text part types of OpenAI-style multi-part content (Chat Completions, and the Responses API's input/output).
# A refusal part (``{"type": "refusal", "refusal": ...}``) is the assistant's text too: it was a reject saying the text
# "would lose what it refers to".
TEXT_PARTS = ("text", "input_text", "output_text", "refusal")


_VISIBLE = re.compile(VISIBLE)  # a character that shows


def blank(text: str) -> bool:
    """True when ``text`` shows nothing: empty, white space, or only NULs, zero-width spaces and the like."""
    return _VISIBLE.search(text) is None


def _text(value: Any, what: str) -> str:
    """A string, or multi-part content whose parts are all text (joined by newlines). Content with an image,
    audio or file part is a reject: its text alone ("what is in this picture?") would lose what it refers to."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        raise BadRecord(f"{what} is {'an empty list' if value == [] else not_text(value)}, expected a string")
    texts = []
    for j, part in enumerate(value):
        kind = part.get("type", "text") if isinstance(part, dict) else None
        if not isinstance(part, dict) or not isinstance(kind, str):
            raise BadRecord(f"{what}[{j}] is {_shown(part)}, expected a text part {{'type': 'text', 'text': ...}}")
        if kind not in TEXT_PARTS:
            raise BadRecord(f"{what}[{j}] is a {_shown(kind)} part; only text content can be used "
                            "(the text without it would lose what it refers to)")
        text = part.get("refusal" if kind == "refusal" else "text")
        if isinstance(text, dict) and isinstance(text.get("value"), str):  # the Assistants API: {value, annotations}
            text = text["value"]
        if not isinstance(text, str):
            raise BadRecord(f"{what}[{j}].text is {not_text(text)}, expected a string")
        texts.append(text)
    return "\n".join(texts)


def to_messages(value: Any, what: str = "messages", *, role_key: str = "role", content_key: str = "content",
                empty_ok: bool = False) -> list[dict[str, str]]:
    """A list of message objects -> ``[{role, content}]`` with canonical roles, or BadRecord.

    Accepts role/content and from/value spellings. Order is checked later by the record models.
    """
    if value is None:
        raise BadRecord(f"{what} is missing")
    if not isinstance(value, list):
        as_text = isinstance(value, str) and value.lstrip().startswith(("[", "{"))
        hint = ("; it holds a list as text (a CSV cell, or JSON written into a string): write the file as JSON lines "
                "or Parquet, with the messages as a list") if as_text else ""
        raise BadRecord(f"{what} is {type(value).__name__}, expected a list of messages{hint}")
    if not value and not empty_ok:
        raise BadRecord(f"{what} is empty")
    out = []
    for i, m in enumerate(value):
        if m is None:  # a null in the list (a Parquet list of structs, JSON): it said "is NoneType"
            raise BadRecord(f"{what}[{i}] is null, expected an object with role and content: a message is missing "
                            "there; write it, or drop the conversation")
        if not isinstance(m, dict):
            raise BadRecord(f"{what}[{i}] is {type(m).__name__}, expected an object with role and content")
        role = _first(m, role_key, "from", "role")
        content = _first(m, content_key, "value", "content", "text")
        canonical = ROLES.get(role.strip().lower()) if isinstance(role, str) else None  # "User " too
        if role is None:  # it said "unknown role None"
            keys = " or ".join(repr(k) for k in dict.fromkeys((role_key, "from", "role")))
            raise BadRecord(f"{what}[{i}] has no role (a {keys} key naming the speaker)")
        if canonical is None:
            raise BadRecord(f"{what}[{i}] has unknown role {_shown(role)}; expected one of {sorted(set(ROLES))}")
        if content is None:
            raise BadRecord(f"{what}[{i}] has no content")
        if not isinstance(content, str):
            content = _text(content, f"{what}[{i}].content")
        if blank(content):
            raise BadRecord(f"{what}[{i}] ({canonical}) has empty content")
        out.append({"role": canonical, "content": content})
    return out


def _first(m: dict[str, Any], *keys: str) -> Any:
    """The value of the first of ``keys`` that ``m`` has (even a None), else None."""
    for key in keys:
        if key in m:
            return m[key]
    return None


def _as_turns(value: Any, role: str, what: str) -> list[dict[str, str]]:
    """A string, one message object, or a list of messages -> messages."""
    if isinstance(value, str):
        if blank(value):
            raise BadRecord(f"{what} is empty")
        return [{"role": role, "content": value}]
    if isinstance(value, dict):
        return to_messages([value], what)
    return to_messages(value, what)


def _shown(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut to ``width`` characters (a reject reason quotes the value, not a megabyte of it), at the
    last space before the cut when there is one: a cut inside an e-mail address or a key would leave its start,
    which the redaction of the reasons' summary (``stages.ingest.top_reasons``) no longer recognises.

    >>> _shown("write to me at ann.lee@example.org", width=24)
    "'write to me at..."
    """
    if isinstance(value, int) and value.bit_length() > 3 * width:  # repr of a huge int is slow, or refused
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    if isinstance(value, bytes):  # a Parquet binary column's value that is not UTF-8 (one that is was read as text)
        return not_text(value)
    text = repr(value)
    if len(text) <= width:
        return text
    cut = text.rfind(" ", 0, width + 1)
    return text[: cut if cut > 0 else width].rstrip() + "..."


def _named(ident: Any) -> str:
    """An id as a reject reason names it: as it is when short and printable (``post 12``), else quoted and cut
    (``_shown``), so that an id holding line breaks or a megabyte of text keeps the reason one short line.

    >>> _named("12"), _named("a\\nb")
    ('12', "'a\\\\nb'")
    """
    text = str(ident)
    return text if len(text) <= 60 and text.isprintable() else _shown(text)


def _label(value: Any, what: str) -> str | None:
    """An optional text field (a title, a language tag, a model name): its text, None when absent or blank; a number is
    its text (a title "1984"). Anything else (a list, an object) is a reject: it was dropped without a word."""
    if value is None or isinstance(value, str) and blank(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and math.isfinite(value):
        return str(value)  # math.isfinite of an integer over ~1e308 (which JSON holds) raised OverflowError
    raise BadRecord(f"{what} is {_shown(value)}, expected a string")


def _number(value: Any, what: str) -> float | None:
    """A score: a finite number (or a string of one), None when absent; NaN and infinities are rejects."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadRecord(f"{what} is a boolean, expected a number")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise BadRecord(f"{what} is {_shown(value)}, expected a number") from None
    if not math.isfinite(number):
        raise BadRecord(f"{what} is {_shown(value)}, expected a finite number")
    return number


def _lineage(ctx: Ctx, origin: str, **extra: Any) -> str:
    return json.dumps({"stage": "ingest", "source": ctx.source, "origin_id": origin, "at": ctx.where, **extra},
                      sort_keys=True, ensure_ascii=False)


def _conversation(ctx: Ctx, origin: str, messages: list[dict[str, str]], *, language: Any = None,
                  model: Any = None, flags: Iterable[str] = ()) -> dict[str, Any]:
    return {
        "conversation_id": stable_id(ctx.source, origin),
        "messages": messages,
        "source": ctx.source,
        "language": (_label(language, "language") or "").strip() or None,  # "" is no tag
        "model": _label(model, "model"),
        "flags": sorted(set(flags)),
    }


def _prompt(ctx: Ctx, origin: str, messages: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    return {"prompt_id": stable_id(ctx.source, origin), "messages": messages, "source": ctx.source,
            "origin_id": origin, **extra}


def _pair(ctx: Ctx, origin: str, prompt: list[dict[str, str]], chosen: list[dict[str, str]],
          rejected: list[dict[str, str]], score_chosen: float | None = None,
          score_rejected: float | None = None) -> dict[str, Any]:
    if chosen == rejected:
        raise BadRecord("chosen and rejected are identical")
    margin = score_chosen - score_rejected if score_chosen is not None and score_rejected is not None else None
    if margin is not None and not math.isfinite(margin):  # finite scores whose difference overflows: 1e308 - -1e308
        raise BadRecord(f"score_chosen - score_rejected is {margin} (the scores {score_chosen} and {score_rejected} are "
                        "too far apart for a float), expected a finite margin")
    return {
        "pair_id": stable_id(ctx.source, origin), "prompt": prompt, "chosen": chosen, "rejected": rejected,
        "score_chosen": score_chosen, "score_rejected": score_rejected, "margin": margin,
        "method": "ingest", "source": ctx.source, "lineage": _lineage(ctx, origin),
    }


def _response(ctx: Ctx, prompt_origin: str, response_origin: str, text: str, generator: str,
              score: float | None, **detail: Any) -> dict[str, Any]:
    return {
        "prompt_id": stable_id(ctx.source, prompt_origin),
        "response_id": stable_id(ctx.source, prompt_origin, response_origin),
        "text": text, "generator": generator, "score": score, "scorer": ctx.source,
        "detail": _detail(detail) if detail else None,
    }


def _detail(detail: dict[str, Any]) -> str:
    """A response's ``detail`` as JSON. A value JSON cannot hold (a Parquet timestamp, bytes or decimal as an
    ``ans_id`` or ``message_id``, a NaN) is a reject naming its key; it fell through to the catch-all
    ("unexpected record shape (TypeError: Object of type datetime is not JSON serializable)")."""
    try:
        return json.dumps(detail, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        for key, value in sorted(detail.items()):
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise BadRecord(f"{key} is {_shown(value)}, expected a string, an integer or a finite float") from None
        raise


def _split_completion(prompt: list[dict[str, str]], full: list[dict[str, str]], what: str) -> list[dict[str, str]]:
    """``full`` minus a leading copy of ``prompt`` (TRL's implicit-prompt format repeats it)."""
    if full[: len(prompt)] == prompt:
        full = full[len(prompt):]
    if not full:
        raise BadRecord(f"{what} holds no assistant reply after the prompt")
    if any(m["role"] != "assistant" for m in full):
        raise BadRecord(f"{what} does not start with the prompt and is not only assistant replies")
    return full


def _common_prompt(a: list[dict[str, str]], b: list[dict[str, str]]) -> list[dict[str, str]]:
    """The shared prefix of two dialogues, cut back to end on a user turn."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    while n and a[n - 1]["role"] != "user":
        n -= 1
    return a[:n]
