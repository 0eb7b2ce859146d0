"""Dialogue formats: WildChat / LMSYS, ShareGPT, HH-RLHF transcripts, OpenAssistant message trees."""

from __future__ import annotations

import re
from typing import Any

from pipeline.formats.common import (
    Adapted,
    BadRecord,
    Ctx,
    _conversation,
    _named,
    _pair,
    _prompt,
    _response,
    _shown,
    blank,
    to_messages,
)


def wildchat(rec: dict[str, Any], ctx: Ctx) -> Adapted:
    """WildChat / LMSYS-Chat: ``conversation`` (or ``messages``) of {role, content}; ``toxic``/``redacted`` become flags.

    A flag (and ``model``) is also read from ``metadata.toxic`` / ``metadata.redacted`` (``metadata.model``) when the
    record has no top-level one: converted WildChat exports (the shared sample's) nest them there, and a redacted
    conversation must not pass as clean because its flag sat one level down. ``metadata.language`` is not read
    unless mapped (``mapping: {language: metadata.language}``): in the shared sample 10 of the 187 conversations
    tagged "English" there are Chinese, Russian, Korean, ... (a tag wins over language identification)."""
    key, value = ctx.field(rec, "messages", "conversation", required=True)  # a reject names the key the record has
    messages = to_messages(value, key)
    origin = ctx.origin(rec, "conversation_id", "conversation_hash")
    flags = [f for f in ("toxic", "redacted") if _flag(ctx.get(rec, f, f"metadata.{f}"), f)]
    out = Adapted()
    if ctx.kind == "conversations":
        out.add("conversations", _conversation(ctx, origin, messages, language=ctx.get(rec, "language"),
                                               model=ctx.get(rec, "model", "metadata.model"), flags=flags))
    else:  # prompts: the first user turn (with a leading system message, if any)
        first = 2 if messages[0]["role"] == "system" else 1
        out.add("prompts", _prompt(ctx, origin, messages[:first]))
    return out


def _flag(value: Any, what: str) -> bool:
    """A yes/no field: a boolean, 0/1, or "true"/"false"/"yes"/"no" in any case (a CSV export); absent is no.
    Anything else is a reject: a toxic conversation must not pass as clean because its flag was spelled oddly."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int | float) and value in (0, 1):  # 1.0 (pandas' nullable column) is yes: it read as no
        return value == 1
    words = ("true", "false", "yes", "no", "0", "1", "0.0", "1.0", "")
    if isinstance(value, str) and value.strip().lower() in words:
        return value.strip().lower() in ("true", "yes", "1", "1.0")
    raise BadRecord(f"{what} is {_shown(value)}, expected true or false")


def sharegpt(rec: dict[str, Any], ctx: Ctx) -> Adapted:
    """ShareGPT: ``conversations`` of {from, value} (from: human/gpt/system); a top-level ``system`` string (as
    LLaMA-Factory writes the format) is the conversation's system message."""
    key, value = ctx.field(rec, "messages", "conversations", required=True)
    messages = to_messages(value, key, role_key="from", content_key="value")
    system = ctx.get(rec, "system")
    if system is not None and not (isinstance(system, str) and blank(system)):
        if not isinstance(system, str):
            raise BadRecord(f"system is {type(system).__name__}, expected a string (the system prompt)")
        if messages[0]["role"] == "system":
            if messages[0]["content"] != system:
                raise BadRecord("system and the conversation's first (system) message differ: keep one of them")
        else:
            messages = [{"role": "system", "content": system}, *messages]
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
# A turn that itself opens with a speaker label ("\n\nAssistant: Human: No, you are racist."): the model wrote
# the other speaker's line, so the transcript's roles cannot be trusted.
_HH_LABEL = re.compile(r"(Human|Assistant)\s*:")
# A turn that holds the other speaker's line after a sentence gap (two spaces or a line break), as HH transcripts
# join turns ("Well that doesn't seem like a good idea.  Human:  Why not?"): the model wrote the user's next
# line inside its answer (7 of the 2,312 harmless-base test records). A single-spaced "from Human: ..." quotes.
_HH_OTHER = {"Human": re.compile(r"(?:[ \t]{2,}|\n)(Assistant\s*:)[ \t]*\S"),
             "Assistant": re.compile(r"(?:[ \t]{2,}|\n)(Human\s*:)[ \t]*\S")}


def speaker_mixup(text: str, speaker: str, own_label: bool = True) -> str | None:
    """How an HH-style turn by ``speaker`` ("Human" or "Assistant") mixes up the roles, or None: it opens with a
    speaker label (its own too, unless ``own_label`` is false), or holds the other speaker's line after a sentence
    gap. Replies taken from HH data into other formats carry the same flaw (DOVE's ``val_conditional_pref.jsonl``:
    8 of its 363 rows, 3 of them in the chosen reply)."""
    label = _HH_LABEL.match(text.strip())
    if label and (own_label or label.group(1) != speaker):
        return f"opens with the speaker label {label.group(0)!r}"
    if other := _HH_OTHER[speaker].search(text.strip()):
        return f"holds the other speaker's line {other.group(1)!r}"
    return None


def parse_hh(transcript: Any, what: str) -> list[dict[str, str]]:
    """An HH-RLHF transcript -> messages.

    Consecutive turns by the same speaker (a few transcripts repeat ``Assistant:``) are merged into
    one turn, and whitespace around each turn is trimmed. A turn that opens with a speaker label of its
    own ("Assistant: Human: No, you are racist.": 40 of the 2,312 harmless-base test records, 18 of them
    in the chosen answer itself) or holds the other speaker's line after a sentence gap ("...a good idea.
    Human:  Why not?": 7 more) is a record with its roles mixed up: rejected, naming the turn.
    """
    if not isinstance(transcript, str):
        raise BadRecord(f"{what} is {type(transcript).__name__}, expected a transcript string")
    parts = _HH_TURN.split(transcript)
    if parts[0].strip():
        raise BadRecord(f"{what} does not start with '\\n\\nHuman:'")
    messages: list[dict[str, str]] = []
    for n, (speaker, text) in enumerate(zip(parts[1::2], parts[2::2], strict=True), 1):
        role = "user" if speaker == "Human" else "assistant"
        text = text.strip()
        if mixed := speaker_mixup(text, speaker):
            raise BadRecord(f"{what}: turn {n} ({speaker}) {mixed} (the transcript's roles are mixed up)")
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] = (messages[-1]["content"] + "\n\n" + text).strip()
        else:
            messages.append({"role": role, "content": text})
    if not messages:
        raise BadRecord(f"{what} holds no Human/Assistant turns")
    for m in messages:  # white space, NULs or zero-width marks only: no text (an empty last Assistant turn stays "")
        if blank(m["content"]):
            m["content"] = ""
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
    if empty := [what for what, turns in (("chosen", chosen), ("rejected", rejected)) if not turns[-1]["content"]]:
        raise BadRecord(f"{' and '.join(empty)} {'has' if len(empty) == 1 else 'have'} an empty final Assistant turn")
    shared = chosen[:-1]
    if empty := next((n for n, m in enumerate(shared, 1) if not m["content"]), None):
        speaker = "Human" if shared[empty - 1]["role"] == "user" else "Assistant"
        raise BadRecord(f"turn {empty} ({speaker}) of the dialogue chosen and rejected share is empty")
    out.add("pairs", _pair(ctx, origin, chosen[:-1], chosen[-1:], rejected[-1:]))
    return out


# What a message costs in memory beyond its text (its dicts, before and after validation), counted against
# ``Ctx.max_output`` so that a tree of many tiny messages is bounded too.
MESSAGE_OVERHEAD = 256


def _rank(m: dict[str, Any]) -> int | None:
    """A reply's rank: an integer, or a whole float (pandas writes the nullable rank column as floats: ``0.0``, which
    left the reply unranked); None when unranked."""
    rank = m.get("rank")
    if isinstance(rank, float) and rank.is_integer():
        return int(rank)
    return rank if isinstance(rank, int) and not isinstance(rank, bool) else None


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
        # flags read as WildChat's are ("true", 1.0): a "deleted": 1.0 message was kept, "synthetic": "false" was set
        if _flag(m.get("deleted"), "deleted"):
            out.skipped["deleted message (and its replies)"] += 1
            return False
        if m.get("review_result") not in (None, "") and not _flag(m["review_result"], "review_result"):
            out.skipped["message failed review (and its replies)"] += 1
            return False
        return True

    def message(m: dict[str, Any]) -> dict[str, str]:
        if not isinstance(m, dict) or "role" not in m or "text" not in m or "message_id" not in m:
            raise BadRecord("a tree message lacks message_id, role or text")
        return to_messages([{"role": m["role"], "content": m["text"]}], f"message {_named(m['message_id'])}")[0]

    emitted = 0  # characters of the messages written so far: a path is repeated in each conversation below it

    def emit(path: list[dict[str, str]]) -> None:
        nonlocal emitted
        emitted += sum(len(msg["content"]) + MESSAGE_OVERHEAD for msg in path)
        if emitted > ctx.max_output:
            raise BadRecord(f"the tree expands to over {ctx.max_output} bytes of messages (each path repeated for every "
                            "leaf or ranked group below it), over 16 x max_record_bytes: split the tree")

    def walk(m: dict[str, Any], path: list[dict[str, str]], synthetic: bool) -> None:
        path = [*path, message(m)]
        synthetic = synthetic or _flag(m.get("synthetic"), "synthetic")
        replies = m.get("replies") or []
        if not isinstance(replies, list):
            raise BadRecord(f"replies of message {_named(m['message_id'])} is not a list")
        kept = [r for r in replies if isinstance(r, dict) and usable(r)]
        if ctx.kind == "rated" and path[-1]["role"] == "user":
            ranked = sorted((r for r in kept if _rank(r) is not None), key=_rank)
            if len(ranked) >= 2:
                emit(path)
                pid = str(m["message_id"])
                out.add("prompts", _prompt(ctx, pid, path))
                for pos, r in enumerate(ranked):
                    text = message(r)["content"]
                    gen = f"synthetic:{r['model_name']}" if _flag(r.get("synthetic"), "synthetic") and r.get("model_name") \
                        else "human"
                    out.add("responses", _response(ctx, pid, str(r["message_id"]), text, gen,
                                                   1 - pos / (len(ranked) - 1), rank=_rank(r), n_ranked=len(ranked),
                                                   message_id=r["message_id"]))
                out.skipped["unranked reply in a ranked group"] += len(kept) - len(ranked)
        if not kept and ctx.kind == "conversations":
            emit(path)
            out.add("conversations", _conversation(ctx, f"{tree_id}/{m['message_id']}", path,
                                                   language=root.get("lang"),
                                                   flags=["synthetic"] if synthetic else []))
        for r in kept:
            walk(r, path, synthetic)

    if not usable(root):
        return out
    walk(root, [], False)
    return out
