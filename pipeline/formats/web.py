"""Text formats: plain documents, prompt sets, and Stack Exchange ``Posts.xml`` rows (HTML bodies)."""

from __future__ import annotations

import html
import re
from typing import Any

from pipeline.formats.common import (
    Adapted,
    BadRecord,
    Ctx,
    _label,
    _named,
    _number,
    _prompt,
    _response,
    _text,
    blank,
    to_messages,
)
from pipeline.formats.markup import html_to_text
from pipeline.records import stable_id


def documents(rec: dict[str, Any], ctx: Ctx) -> Adapted:
    """A document: ``text`` (or body/content/selftext), optional ``title``, ``score``, ``id``."""
    text = _text(ctx.get(rec, "text", "body", "content", "selftext", required=True), "text")
    if blank(text):
        raise BadRecord("text is empty")
    title = _label(ctx.get(rec, "title"), "title")
    origin = ctx.origin(rec, "doc_id", "post_id")
    out = Adapted()
    out.add("documents", {"doc_id": stable_id(ctx.source, origin), "text": text,
                          "title": title,
                          "source": ctx.source, "score": _number(ctx.get(rec, "score"), "score")})
    return out


def prompts(rec: dict[str, Any], ctx: Ctx) -> Adapted:
    """A prompt: a text field (prompt/text/instruction/question) or a list of ``turns``.

    Only the first of several ``turns`` becomes the prompt: MT-Bench's second turn refers to an
    answer that does not exist yet (counted as skipped). Alpaca's ``input`` (the text an instruction
    such as "Summarize the following text." is about; map Dolly's ``context`` to it) and Self-Instruct
    style ``instances`` (the first instance's non-empty ``input``) are added below the instruction.
    """
    value = ctx.get(rec, "text", "prompt", "instruction", "question", "turns", required=True)
    out = Adapted()
    if isinstance(value, list) and any(isinstance(m, dict) and ("role" in m or "from" in m) for m in value):
        return _chat_prompt(value, ctx, rec, out)
    if isinstance(value, list):
        if not value:
            raise BadRecord("turns is empty")
        if len(value) > 1:
            out.skipped["follow-up turns left out (they need an answer in between)"] += 1
        value = value[0]
        if isinstance(value, dict):
            value = value.get("content", value.get("value"))
    text = _text(value, "prompt")
    extra = ctx.get(rec, "input")  # Alpaca's input: the material the instruction is about (Dolly's `context`)
    if extra is not None:
        if not isinstance(extra, str):
            raise BadRecord(f"input is {type(extra).__name__}, expected a string (the text the instruction is about)")
        if not blank(extra) and extra != text:
            text = f"{text}\n\n{extra}"
    instances = rec.get("instances")
    if isinstance(instances, list) and instances and isinstance(instances[0], dict):
        extra = instances[0].get("input")
        if isinstance(extra, str) and extra.strip():
            text = f"{text}\n\n{extra}"
    if blank(text):
        raise BadRecord("prompt text is empty")
    out.add("prompts", _prompt(ctx, ctx.origin(rec, "question_id", "uid", "prompt_id"),
                               [{"role": "user", "content": text}]))
    return out


def _chat_prompt(value: list[Any], ctx: Ctx, rec: dict[str, Any], out: Adapted) -> Adapted:
    """A prompt given as chat messages (``[{role, content}]``, a system message first perhaps). With an answer in it,
    the messages are the prompt as they stand (they must end on the user turn to answer); without one, its user
    turns are MT-Bench's: the first (after the system message) is the prompt and the follow-ups are skipped."""
    messages = to_messages(value, "prompt")
    if all(m["role"] != "assistant" for m in messages):
        first = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
        if first is None:
            raise BadRecord("prompt holds no user message")
        if len(messages) > first + 1:
            out.skipped["follow-up turns left out (they need an answer in between)"] += 1
        messages = messages[:first + 1]
    elif messages[-1]["role"] != "user":
        raise BadRecord("prompt ends with an assistant turn, not the user turn to answer: leave the answer out, or "
                        "read the file with a format that takes answers (ultrafeedback, wildchat)")
    out.add("prompts", _prompt(ctx, ctx.origin(rec, "question_id", "uid", "prompt_id"), messages))
    return out


# An answer that leans on posts of its thread the prompt (the question alone) does not hold: the comments,
# other answers, a user it @-mentions ("As @Chris said", "@PythonMaster's answer", "@henryJ exposed plunging
# in detail"). Mentions are read only in such a context, so code (@property, @Override, @param) is text.
_MENTION = r"(?<![\w@.])@[A-Za-z][\w.-]*"
_THREAD_REFERENCE = re.compile(
    r"\b(?:in|from|to|see|per|under) the comments?\b"
    r"|\b(?:the|an?) (?:other|previous|above|accepted|top|earlier) answers?\b|\banother answer\b|\bother answers\b"
    r"|\banswers? above\b"
    rf"|{_MENTION}(?:'s (?:answer|comment|post|suggestion)s?\b|\s+(?:said|says|mentioned|noted|notes|suggested|"
    r"pointed|explained|exposed|got|wrote|is right|below|above|in (?:the )?comments?|comments?)\b)"
    rf"|\b(?:as|by|to|with|from|per|on|like|credit to|thanks to|agree with)\s+(?:OP\s+)?{_MENTION}",
    re.IGNORECASE)


# An image in a post's body (also as escaped markup, which html_to_text decodes): html_to_text drops it, so the
# words around it ("it came with this lid:", "The graph below shows") point at nothing the text holds.
_IMAGE = re.compile(r"(?:<|&lt;)img\b", re.IGNORECASE)

_WHOLE = re.compile(r"(\d+)\.0+")


def _whole(value: str | None) -> str | None:
    """A post's id or type (``Ctx.ident``) as its integer's text, "12.0" read as "12": pandas writes an integer
    column that has a null (``ParentId``, ``AcceptedAnswerId``) as floats, and a CSV export as "12.0"; so an answer
    still finds its question and the accepted answer is still marked."""
    whole = _WHOLE.fullmatch(value) if value is not None else None
    return whole.group(1) if whole else value


def stackexchange(rec: dict[str, Any], ctx: Ctx) -> Adapted:
    """A ``<row>`` of a Stack Exchange ``Posts.xml`` (attributes as strings).

    Questions (PostTypeId 1) become documents (title + body) or prompts (title + body as the user
    turn). Answers (PostTypeId 2) become responses to their question's prompt in a ``rated``
    source, scored by their vote Score; ``detail`` records whether it is the accepted answer.
    An answer that refers to the comments, to other answers or to a user it @-mentions ("as mentioned
    in the comments", "@Patrick's answer") leans on posts its prompt does not hold: rejected, quoting the
    reference (19 of the 327 answers of the coffee dump). A question or answer that shows an image is rejected
    too where it becomes a prompt or a response (not as a document, which PUGC reads as a reference): the text
    keeps "it came with this lid:" or "the graph below shows" and loses what they show (15 questions and 30
    answers of the coffee dump), as a chat message with an image part is rejected.
    Other post types (wiki, tags) and posts the source's kind does not use are counted as skipped.
    """
    post_type = _whole(ctx.ident(rec, "PostTypeId", required=True))
    post_id = _whole(ctx.ident(rec, "Id", required=True))
    out = Adapted()
    body = ctx.get(rec, "Body")
    if post_type not in ("1", "2"):
        out.skipped[f"PostTypeId {post_type} (not a question or answer)"] += 1
        return out
    if not isinstance(body, str) or not body.strip():
        raise BadRecord(f"post {_named(post_id)} has no Body")
    text = html_to_text(body)
    if not text:
        raise BadRecord(f"post {_named(post_id)} has no text once HTML is removed")
    score = _number(ctx.get(rec, "Score"), "Score")
    if post_type == "1":
        title = html.unescape(_label(ctx.get(rec, "Title"), "Title") or "").strip()  # a list was its repr
        if ctx.kind == "documents":
            out.add("documents", {"doc_id": stable_id(ctx.source, str(post_id)), "text": text,
                                  "title": title or None, "source": ctx.source, "score": score})
        else:
            _refuse_image(body, "question", post_id)
            question = f"{title}\n\n{text}" if title else text
            out.add("prompts", _prompt(ctx, str(post_id), [{"role": "user", "content": question}]))
            accepted = _whole(ctx.ident(rec, "AcceptedAnswerId"))
            if accepted:
                rid = stable_id(ctx.source, str(post_id), str(accepted))
                out.facts.setdefault("accepted_response_ids", set()).add(rid)
        return out
    if ctx.kind != "rated":
        out.skipped["answer (this source's kind keeps questions only)"] += 1
        return out
    parent = _whole(ctx.ident(rec, "ParentId", required=True))
    _refuse_image(body, "answer", post_id)
    if ref := _THREAD_REFERENCE.search(text):
        raise BadRecord(f"answer {_named(post_id)} refers to posts of its thread that its prompt does not hold "
                        f"({ref.group(0)!r}); only self-contained answers are responses")
    out.add("responses", _response(ctx, str(parent), str(post_id), text, "human", score,
                                   post_id=str(post_id), accepted=False))
    return out


def _refuse_image(body: str, what: str, post_id: str | None) -> None:
    if _IMAGE.search(body):
        raise BadRecord(f"{what} {_named(post_id)} shows an image, which its text cannot carry (the words around it "
                        "point at nothing); only text-alone posts become prompts and responses")
