"""Text formats: plain documents, prompt sets, and Stack Exchange ``Posts.xml`` rows (HTML bodies)."""

from __future__ import annotations

import html
from typing import Any

from pipeline.formats.common import Adapted, BadRecord, Ctx, _number, _prompt, _response, _text, blank
from pipeline.formats.markup import html_to_text
from pipeline.records import stable_id


def documents(rec: dict[str, Any], ctx: Ctx) -> Adapted:
    """A document: ``text`` (or body/content/selftext), optional ``title``, ``score``, ``id``."""
    text = _text(ctx.get(rec, "text", "body", "content", "selftext", required=True), "text")
    if blank(text):
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
    if blank(text):
        raise BadRecord("prompt text is empty")
    out.add("prompts", _prompt(ctx, ctx.origin(rec, "question_id", "uid", "prompt_id"),
                               [{"role": "user", "content": text}]))
    return out


def stackexchange(rec: dict[str, Any], ctx: Ctx) -> Adapted:
    """A ``<row>`` of a Stack Exchange ``Posts.xml`` (attributes as strings).

    Questions (PostTypeId 1) become documents (title + body) or prompts (title + body as the user
    turn). Answers (PostTypeId 2) become responses to their question's prompt in a ``rated``
    source, scored by their vote Score; ``detail`` records whether it is the accepted answer.
    Other post types (wiki, tags) and posts the source's kind does not use are counted as skipped.
    """
    post_type = str(ctx.get(rec, "PostTypeId", required=True))
    post_id = ctx.ident(rec, "Id", required=True)
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
    parent = ctx.ident(rec, "ParentId", required=True)
    out.add("responses", _response(ctx, str(parent), str(post_id), text, "human", score,
                                   post_id=str(post_id), accepted=False))
    return out
