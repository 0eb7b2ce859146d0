"""Format adapters: one raw source record -> rows of the canonical tables.

Each adapter is a small function ``adapter(record, ctx) -> Adapted`` (``ctx.kind`` says which
tables the source feeds). A record the adapter cannot use raises ``BadRecord`` with a reason a user
can act on; the ingest stage turns that into a row of ``rejects``. Parts of a good record that are
left out on purpose (a deleted OpenAssistant message, an answer in a documents-only source) are
counted in ``Adapted.skipped`` instead, so every input row is either accepted or rejected.

``Source.mapping`` renames fields: ``{"text": "instruction", "id": "instruction_id"}`` reads the
canonical ``text`` from the source's ``instruction`` field. Dotted names reach into nested objects
(``"score_chosen": "metadata.score_chosen"``).

>>> from pipeline.config import Source
>>> src = Source(name="demo", kind="prompts", path="x.jsonl", format="prompts", mapping={})
>>> out = adapt({"id": "q1", "prompt": "Hi there"}, Ctx.for_source(src, "x.jsonl", 1))
>>> out.rows["prompts"][0]["messages"]
[{'role': 'user', 'content': 'Hi there'}]
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from pipeline.config import Source
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

    @classmethod
    def for_source(cls, src: Source, file_rel: str, row: int) -> Ctx:
        return cls(src.name, src.kind, src.format, dict(src.mapping), f"{file_rel}:{row}")

    def get(self, rec: dict[str, Any], name: str, *fallbacks: str, required: bool = False) -> Any:
        """Field ``name`` (renamed by ``mapping``), else the first present fallback field."""
        candidates = [self.mapping[name]] if name in self.mapping else [name, *fallbacks]
        for cand in candidates:
            value = _dig(rec, cand)
            if value is not None:
                return value
        if required:
            shown = " or ".join(repr(c) for c in candidates)
            raise BadRecord(f"missing field {shown}" + ("" if name in self.mapping else " (set `mapping` to rename)"))
        return None

    def origin(self, rec: dict[str, Any], *fallbacks: str) -> str:
        """The record's own id as a string, or its file:row position when it has none."""
        value = self.get(rec, "id", *fallbacks)
        return self.where if value is None or value == "" else str(value)


def _dig(rec: dict[str, Any], dotted: str) -> Any:
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
    "system": "system",
}


def _text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    # OpenAI-style multi-part content: keep the text parts.
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        parts = [p.get("text") for p in value if p.get("type", "text") == "text"]
        if parts and all(isinstance(p, str) for p in parts):
            return "\n".join(parts)
    raise BadRecord(f"{what} is {type(value).__name__}, expected a string")


def to_messages(value: Any, what: str = "messages", *, role_key: str = "role", content_key: str = "content",
                empty_ok: bool = False) -> list[dict[str, str]]:
    """A list of message objects -> ``[{role, content}]`` with canonical roles, or BadRecord.

    Accepts role/content and from/value spellings. Order is checked later by the record models.
    """
    if value is None:
        raise BadRecord(f"{what} is missing")
    if not isinstance(value, list):
        raise BadRecord(f"{what} is {type(value).__name__}, expected a list of messages")
    if not value and not empty_ok:
        raise BadRecord(f"{what} is empty")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise BadRecord(f"{what}[{i}] is {type(m).__name__}, expected an object with role and content")
        role = m.get(role_key, m.get("from", m.get("role")))
        content = m.get(content_key, m.get("value", m.get("content", m.get("text"))))
        if not isinstance(role, str) or role.lower() not in ROLES:
            raise BadRecord(f"{what}[{i}] has unknown role {role!r}; expected one of {sorted(set(ROLES))}")
        if content is None:
            raise BadRecord(f"{what}[{i}] has no content")
        content = _text(content, f"{what}[{i}].content")
        if not content.strip():
            raise BadRecord(f"{what}[{i}] ({ROLES[role.lower()]}) has empty content")
        out.append({"role": ROLES[role.lower()], "content": content})
    return out


def _as_turns(value: Any, role: str, what: str) -> list[dict[str, str]]:
    """A string, one message object, or a list of messages -> messages."""
    if isinstance(value, str):
        if not value.strip():
            raise BadRecord(f"{what} is empty")
        return [{"role": role, "content": value}]
    if isinstance(value, dict):
        return to_messages([value], what)
    return to_messages(value, what)


def _number(value: Any, what: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadRecord(f"{what} is a boolean, expected a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BadRecord(f"{what} is {value!r}, expected a number") from None


def _lineage(ctx: Ctx, origin: str, **extra: Any) -> str:
    return json.dumps({"stage": "ingest", "source": ctx.source, "origin_id": origin, "at": ctx.where, **extra},
                      sort_keys=True, ensure_ascii=False)


def _conversation(ctx: Ctx, origin: str, messages: list[dict[str, str]], *, language: Any = None,
                  model: Any = None, flags: Iterable[str] = ()) -> dict[str, Any]:
    return {
        "conversation_id": stable_id(ctx.source, origin),
        "messages": messages,
        "source": ctx.source,
        "language": language if isinstance(language, str) else None,
        "model": model if isinstance(model, str) else None,
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
        "detail": json.dumps(detail, sort_keys=True, ensure_ascii=False) if detail else None,
    }


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


# --- adapters ------------------------------------------------------------------------------------


def wildchat(rec: dict[str, Any], ctx: Ctx) -> Adapted:
    """WildChat / LMSYS-Chat: ``conversation`` (or ``messages``) of {role, content}; ``toxic``/``redacted`` become flags."""
    messages = to_messages(ctx.get(rec, "messages", "conversation", required=True), "conversation")
    origin = ctx.origin(rec, "conversation_id", "conversation_hash")
    flags = [f for f in ("toxic", "redacted") if ctx.get(rec, f) is True]
    out = Adapted()
    if ctx.kind == "conversations":
        out.add("conversations", _conversation(ctx, origin, messages, language=ctx.get(rec, "language"),
                                               model=ctx.get(rec, "model"), flags=flags))
    else:  # prompts: the first user turn (with a leading system message, if any)
        first = 2 if messages[0]["role"] == "system" else 1
        out.add("prompts", _prompt(ctx, origin, messages[:first]))
    return out


def sharegpt(rec: dict[str, Any], ctx: Ctx) -> Adapted:
    """ShareGPT: ``conversations`` of {from, value} (from: human/gpt/system)."""
    messages = to_messages(ctx.get(rec, "messages", "conversations", required=True), "conversations",
                           role_key="from", content_key="value")
    origin = ctx.origin(rec)
    out = Adapted()
    if ctx.kind == "conversations":
        out.add("conversations", _conversation(ctx, origin, messages, model=ctx.get(rec, "model")))
    else:
        first = 2 if messages[0]["role"] == "system" else 1
        out.add("prompts", _prompt(ctx, origin, messages[:first]))
    return out


# HH-RLHF: "\n\nHuman: ...\n\nAssistant: ..." with no speaker names inside turns we can trust.
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def parse_hh(transcript: Any, what: str) -> list[dict[str, str]]:
    """An HH-RLHF transcript -> messages.

    Consecutive turns by the same speaker (a few transcripts repeat ``Assistant:``) are merged into
    one turn, and whitespace around each turn is trimmed.
    """
    if not isinstance(transcript, str):
        raise BadRecord(f"{what} is {type(transcript).__name__}, expected a transcript string")
    parts = _HH_TURN.split(transcript)
    if parts[0].strip():
        raise BadRecord(f"{what} does not start with '\\n\\nHuman:'")
    messages: list[dict[str, str]] = []
    for speaker, text in zip(parts[1::2], parts[2::2], strict=True):
        role = "user" if speaker == "Human" else "assistant"
        text = text.strip()
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] = (messages[-1]["content"] + "\n\n" + text).strip()
        else:
            messages.append({"role": role, "content": text})
    if not messages:
        raise BadRecord(f"{what} holds no Human/Assistant turns")
    return messages


def hh_rlhf(rec: dict[str, Any], ctx: Ctx) -> Adapted:
    """HH-RLHF {chosen, rejected} transcripts.

    conversations: the chosen transcript (an empty final Assistant turn is dropped and counted).
    pairs: the dialogue both share, then the differing last Assistant turns.
    """
    chosen = parse_hh(ctx.get(rec, "chosen", required=True), "chosen")
    origin = ctx.origin(rec)
    out = Adapted()
    if ctx.kind == "conversations":
        if chosen[-1]["role"] == "assistant" and not chosen[-1]["content"]:
            chosen = chosen[:-1]
            out.skipped["empty final Assistant turn dropped"] += 1
        if any(not m["content"] for m in chosen):
            raise BadRecord("chosen has an empty turn")
        out.add("conversations", _conversation(ctx, origin, chosen))
        return out
    rejected = parse_hh(ctx.get(rec, "rejected", required=True), "rejected")
    if chosen[:-1] != rejected[:-1]:
        raise BadRecord("chosen and rejected do not share the dialogue before their last turn")
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise BadRecord("chosen/rejected must end with an Assistant turn")
    if not chosen[-1]["content"] or not rejected[-1]["content"]:
        raise BadRecord("chosen or rejected has an empty final Assistant turn")
    out.add("pairs", _pair(ctx, origin, chosen[:-1], chosen[-1:], rejected[-1:]))
    return out


def ultrafeedback(rec: dict[str, Any], ctx: Ctx) -> Adapted:
    """UltraFeedback-style data.

    pairs: ``prompt`` (string or messages; optional when chosen/rejected repeat it) + ``chosen``/
    ``rejected`` (strings or message lists) + ``score_chosen``/``score_rejected`` (also read from
    ``metadata.*``). rated: ``prompt`` (or ``instruction``) + ``completions`` of {response, score}
    (``overall_score`` and ``model`` are read too).
    """
    origin = ctx.origin(rec, "prompt_id", "source_index")
    out = Adapted()
    if ctx.kind == "rated":
        prompt = _as_turns(ctx.get(rec, "prompt", "instruction", required=True), "user", "prompt")
        completions = ctx.get(rec, "completions", required=True)
        if not isinstance(completions, list) or not completions:
            raise BadRecord("completions must be a non-empty list")
        out.add("prompts", _prompt(ctx, origin, prompt))
        for i, c in enumerate(completions):
            if not isinstance(c, dict):
                raise BadRecord(f"completions[{i}] is {type(c).__name__}, expected an object")
            text = c.get("response", c.get("text"))
            if not isinstance(text, str) or not text.strip():
                raise BadRecord(f"completions[{i}].response is missing or empty")
            score = _number(c.get("score", c.get("overall_score")), f"completions[{i}].score")
            model = c.get("model") if isinstance(c.get("model"), str) else "unknown"
            out.add("responses", _response(ctx, origin, str(i), text, model, score, index=i))
        return out
    chosen_raw = ctx.get(rec, "chosen", required=True)
    rejected_raw = ctx.get(rec, "rejected", required=True)
    chosen = _as_turns(chosen_raw, "assistant", "chosen")
    rejected = _as_turns(rejected_raw, "assistant", "rejected")
    prompt_raw = ctx.get(rec, "prompt")
    prompt = _as_turns(prompt_raw, "user", "prompt") if prompt_raw is not None else _common_prompt(chosen, rejected)
    if not prompt:
        raise BadRecord("no prompt: give a `prompt` field, or chosen/rejected that start with the same user turn")
    score_c = _number(ctx.get(rec, "score_chosen", "metadata.score_chosen"), "score_chosen")
    score_r = _number(ctx.get(rec, "score_rejected", "metadata.score_rejected"), "score_rejected")
    out.add("pairs", _pair(ctx, origin, prompt, _split_completion(prompt, chosen, "chosen"),
                           _split_completion(prompt, rejected, "rejected"), score_c, score_r))
    return out


def documents(rec: dict[str, Any], ctx: Ctx) -> Adapted:
    """A document: ``text`` (or body/content/selftext), optional ``title``, ``score``, ``id``."""
    text = _text(ctx.get(rec, "text", "body", "content", "selftext", required=True), "text")
    if not text.strip():
        raise BadRecord("text is empty")
    title = ctx.get(rec, "title")
    origin = ctx.origin(rec, "doc_id", "post_id")
    out = Adapted()
    out.add("documents", {"doc_id": stable_id(ctx.source, origin), "text": text,
                          "title": title if isinstance(title, str) and title.strip() else None,
                          "source": ctx.source, "score": _number(ctx.get(rec, "score"), "score")})
    return out


def prompts(rec: dict[str, Any], ctx: Ctx) -> Adapted:
    """A prompt: a text field (prompt/text/instruction/question) or a list of ``turns``.

    Only the first of several ``turns`` becomes the prompt: MT-Bench's second turn refers to an
    answer that does not exist yet (counted as skipped). Self-Instruct style ``instances`` add the
    first instance's non-empty ``input`` below the instruction.
    """
    value = ctx.get(rec, "text", "prompt", "instruction", "question", "turns", required=True)
    out = Adapted()
    if isinstance(value, list):
        if not value:
            raise BadRecord("turns is empty")
        if len(value) > 1:
            out.skipped["follow-up turns left out (they need an answer in between)"] += 1
        value = value[0]
        if isinstance(value, dict):
            value = value.get("content", value.get("value"))
    text = _text(value, "prompt")
    instances = rec.get("instances")
    if isinstance(instances, list) and instances and isinstance(instances[0], dict):
        extra = instances[0].get("input")
        if isinstance(extra, str) and extra.strip():
            text = f"{text}\n\n{extra}"
    if not text.strip():
        raise BadRecord("prompt text is empty")
    out.add("prompts", _prompt(ctx, ctx.origin(rec, "question_id", "uid", "prompt_id"),
                               [{"role": "user", "content": text}]))
    return out


def oasst(rec: dict[str, Any], ctx: Ctx) -> Adapted:
    """An OpenAssistant message tree ({message_tree_id, prompt: message with nested replies}).

    Deleted messages and messages that failed review (``review_result`` false) are pruned with
    their replies and counted. conversations: every root-to-leaf path. rated: every prompter
    message with two or more ranked assistant replies becomes a prompt (the path down to it) and
    its ranked replies become responses scored ``1 - position / (n - 1)`` where ``position`` is the
    reply's place in rank order (0 = best) among the ``n`` ranked siblings: best 1.0, worst 0.0.
    Unranked replies of a ranked group are counted as skipped.
    """
    root = ctx.get(rec, "prompt", "root", required=True)
    if not isinstance(root, dict):
        raise BadRecord("prompt is not a message object")
    tree_id = str(ctx.get(rec, "id", "message_tree_id") or root.get("message_id") or ctx.where)
    out = Adapted()

    def usable(m: dict[str, Any]) -> bool:
        if m.get("deleted") is True:
            out.skipped["deleted message (and its replies)"] += 1
            return False
        if m.get("review_result") is False:
            out.skipped["message failed review (and its replies)"] += 1
            return False
        return True

    def message(m: dict[str, Any]) -> dict[str, str]:
        if not isinstance(m, dict) or "role" not in m or "text" not in m or "message_id" not in m:
            raise BadRecord("a tree message lacks message_id, role or text")
        return to_messages([{"role": m["role"], "content": m["text"]}], f"message {m['message_id']}")[0]

    def walk(m: dict[str, Any], path: list[dict[str, str]], synthetic: bool) -> None:
        path = [*path, message(m)]
        synthetic = synthetic or bool(m.get("synthetic"))
        replies = m.get("replies") or []
        if not isinstance(replies, list):
            raise BadRecord(f"replies of message {m['message_id']} is not a list")
        kept = [r for r in replies if isinstance(r, dict) and usable(r)]
        if ctx.kind == "rated" and path[-1]["role"] == "user":
            ranked = sorted((r for r in kept if isinstance(r.get("rank"), int)), key=lambda r: r["rank"])
            if len(ranked) >= 2:
                pid = str(m["message_id"])
                out.add("prompts", _prompt(ctx, pid, path))
                for pos, r in enumerate(ranked):
                    text = message(r)["content"]
                    gen = f"synthetic:{r['model_name']}" if r.get("synthetic") and r.get("model_name") else "human"
                    out.add("responses", _response(ctx, pid, str(r["message_id"]), text, gen,
                                                   1 - pos / (len(ranked) - 1), rank=r["rank"], n_ranked=len(ranked),
                                                   message_id=r["message_id"]))
                out.skipped["unranked reply in a ranked group"] += len(kept) - len(ranked)
        if not kept and ctx.kind == "conversations":
            out.add("conversations", _conversation(ctx, f"{tree_id}/{m['message_id']}", path,
                                                   language=root.get("lang"),
                                                   flags=["synthetic"] if synthetic else []))
        for r in kept:
            walk(r, path, synthetic)

    if not usable(root):
        return out
    walk(root, [], False)
    return out


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


def stackexchange(rec: dict[str, Any], ctx: Ctx) -> Adapted:
    """A ``<row>`` of a Stack Exchange ``Posts.xml`` (attributes as strings).

    Questions (PostTypeId 1) become documents (title + body) or prompts (title + body as the user
    turn). Answers (PostTypeId 2) become responses to their question's prompt in a ``rated``
    source, scored by their vote Score; ``detail`` records whether it is the accepted answer.
    Other post types (wiki, tags) and posts the source's kind does not use are counted as skipped.
    """
    post_type = str(ctx.get(rec, "PostTypeId", required=True))
    post_id = ctx.get(rec, "Id", required=True)
    out = Adapted()
    body = ctx.get(rec, "Body")
    if post_type not in ("1", "2"):
        out.skipped[f"PostTypeId {post_type} (not a question or answer)"] += 1
        return out
    if not isinstance(body, str) or not body.strip():
        raise BadRecord(f"post {post_id} has no Body")
    text = html_to_text(body)
    if not text:
        raise BadRecord(f"post {post_id} has no text once HTML is removed")
    score = _number(ctx.get(rec, "Score"), "Score")
    if post_type == "1":
        title = html.unescape(str(ctx.get(rec, "Title") or "")).strip()
        if ctx.kind == "documents":
            out.add("documents", {"doc_id": stable_id(ctx.source, str(post_id)), "text": text,
                                  "title": title or None, "source": ctx.source, "score": score})
        else:
            question = f"{title}\n\n{text}" if title else text
            out.add("prompts", _prompt(ctx, str(post_id), [{"role": "user", "content": question}]))
            accepted = ctx.get(rec, "AcceptedAnswerId")
            if accepted:
                rid = stable_id(ctx.source, str(post_id), str(accepted))
                out.facts.setdefault("accepted_response_ids", set()).add(rid)
        return out
    if ctx.kind != "rated":
        out.skipped["answer (this source's kind keeps questions only)"] += 1
        return out
    parent = ctx.get(rec, "ParentId", required=True)
    out.add("responses", _response(ctx, str(parent), str(post_id), text, "human", score,
                                   post_id=str(post_id), accepted=False))
    return out


def wildfeedback(rec: dict[str, Any], ctx: Ctx) -> Adapted:
    """Released WildFeedback pairs: ``conversations`` (dialogue ending on a user turn) + ``chosen``/
    ``rejected`` as {from, value} objects (or lists of them, or strings)."""
    prompt = to_messages(ctx.get(rec, "conversations", "messages", required=True), "conversations",
                         role_key="from", content_key="value")
    chosen = _as_turns(ctx.get(rec, "chosen", required=True), "assistant", "chosen")
    rejected = _as_turns(ctx.get(rec, "rejected", required=True), "assistant", "rejected")
    out = Adapted()
    out.add("pairs", _pair(ctx, ctx.origin(rec), prompt, _split_completion(prompt, chosen, "chosen"),
                           _split_completion(prompt, rejected, "rejected")))
    return out


def arena_answers(rec: dict[str, Any], ctx: Ctx) -> Adapted:
    """Arena-Hard model answers ({uid, model, messages: [user, assistant {content: {answer}}]}).

    Each file is one model; the answers to the same ``uid`` become unscored responses to one prompt
    (the prompt row repeats per answer file and is de-duplicated by the stage).
    """
    uid = ctx.get(rec, "uid", "question_id", required=True)
    raw = ctx.get(rec, "messages", required=True)
    if not isinstance(raw, list) or len(raw) < 2:
        raise BadRecord("messages must hold the question and the answer")
    fixed = []
    for m in raw:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, dict):
            content = content.get("answer")
        fixed.append({"role": m.get("role") if isinstance(m, dict) else None, "content": content})
    messages = to_messages(fixed, "messages")
    if messages[-1]["role"] != "assistant":
        raise BadRecord("the last message is not the model's answer")
    model = ctx.get(rec, "model") or "unknown"
    out = Adapted()
    out.add("prompts", _prompt(ctx, str(uid), messages[:-1]))
    out.add("responses", _response(ctx, str(uid), str(model), messages[-1]["content"], str(model), None,
                                   ans_id=ctx.get(rec, "ans_id")))
    return out


ADAPTERS: dict[str, Callable[[dict[str, Any], Ctx], Adapted]] = {
    "wildchat": wildchat,
    "sharegpt": sharegpt,
    "oasst": oasst,
    "hh_rlhf": hh_rlhf,
    "ultrafeedback": ultrafeedback,
    "documents": documents,
    "prompts": prompts,
    "stackexchange": stackexchange,
    "wildfeedback": wildfeedback,
    "arena_answers": arena_answers,
}


def adapt(rec: Any, ctx: Ctx) -> Adapted:
    """Run the source's adapter on one record."""
    if not isinstance(rec, dict):
        raise BadRecord(f"record is {type(rec).__name__}, expected a JSON object")
    return ADAPTERS[ctx.format](rec, ctx)


def finish(fmt: str, rows: dict[str, list[dict[str, Any]]], facts: dict[str, set[str]]) -> None:
    """Apply cross-record facts in place once a whole source has been adapted."""
    accepted = facts.get("accepted_response_ids", set())
    if fmt == "stackexchange":
        for r in rows.get("responses", []):
            detail = json.loads(r["detail"])
            detail["accepted"] = r["response_id"] in accepted
            r["detail"] = json.dumps(detail, sort_keys=True, ensure_ascii=False)
