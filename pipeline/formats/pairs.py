"""Scored and paired formats: UltraFeedback, released WildFeedback pairs, Arena-Hard model answers."""

from __future__ import annotations

from typing import Any

from pipeline.formats.common import (
    Adapted,
    BadRecord,
    Ctx,
    _as_turns,
    _common_prompt,
    _label,
    _number,
    _pair,
    _prompt,
    _response,
    _split_completion,
    blank,
    to_messages,
)
from pipeline.formats.dialogues import speaker_mixup


def ultrafeedback(rec: dict[str, Any], ctx: Ctx) -> Adapted:
    """UltraFeedback-style data.

    pairs: ``prompt`` (string or messages; optional when chosen/rejected repeat it) + ``chosen``/
    ``rejected`` (strings or message lists) + ``score_chosen``/``score_rejected`` (also read from
    ``metadata.*``). rated: ``prompt`` (or ``instruction``) + ``completions`` of {response, score, model}:
    the score is ``score`` when given, else UltraFeedback's ``fine-grained_score`` (the mean of its four
    1-5 aspect ratings, which Curry-DPO ranks by: its Figure 1 ranks 4 responses "as per their rating scores
    where R1 has the maximum score of 5"), else ``overall_score`` (the 1-10 critique score, whose 1s were
    recorded as 10s for ~2K completions: OpenBMB/UltraFeedback issue #8). One field per record
    (``SCORE_FIELDS``, the first any completion holds), so one prompt's scores never mix two scales.
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
        field = score_field(completions)
        for i, c in enumerate(completions):
            text = _present(c, "response", "text")
            if not isinstance(text, str) or blank(text):
                raise BadRecord(f"completions[{i}].response is missing or empty")
            _check_speaker([{"content": text}], f"completions[{i}].response")
            score = _number(c.get(field), f"completions[{i}].{field}")
            model = _label(c.get("model"), f"completions[{i}].model") or "unknown"
            extra = {"score_field": field} if field != "score" else {}
            out.add("responses", _response(ctx, origin, str(i), text, model, score, index=i, **extra))
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
    if score_c is not None and score_r is not None and score_c < score_r:  # a tie is kept: margin 0
        raise BadRecord(f"score_chosen {score_c:g} is below score_rejected {score_r:g}: the scores prefer the rejected "
                        "reply (swap chosen and rejected, or fix the scores)")
    replies = {"chosen": _split_completion(prompt, chosen, "chosen"),
               "rejected": _split_completion(prompt, rejected, "rejected")}
    for what, turns in replies.items():
        _check_speaker(turns, what)
    out.add("pairs", _pair(ctx, origin, prompt, replies["chosen"], replies["rejected"], score_c, score_r))
    return out


def _check_speaker(turns: list[dict[str, str]], what: str) -> None:
    """Reject a reply that speaks as the user, as HH-derived replies do ("Human: Here's a simple method"): a pair
    would teach the model to write the user's lines. Its own label ("Assistant: ...") loses nothing and is kept."""
    for turn in turns:
        if mixed := speaker_mixup(turn["content"], "Assistant", own_label=False):
            raise BadRecord(f"{what} {mixed} (the reply speaks as the user: its roles are mixed up)")


# The rating a rated UltraFeedback record is ranked by, in order of preference (see ``ultrafeedback``).
SCORE_FIELDS = ("score", "fine-grained_score", "overall_score")


def score_field(completions: list[dict[str, Any]]) -> str:
    """The first of ``SCORE_FIELDS`` that any completion holds (not null); a completion without it is unscored."""
    return next((k for k in SCORE_FIELDS if any(c.get(k) not in (None, "") for c in completions)), "score")


def _present(obj: dict[str, Any], *keys: str) -> Any:
    """The value of the first of ``keys`` that is not null in ``obj`` (a ``"score": null`` beside an
    ``overall_score`` is no score), else None."""
    return next((obj[k] for k in keys if obj.get(k) is not None), None)


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
    uid = ctx.ident(rec, "uid", "question_id", required=True)
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
    model = _label(ctx.get(rec, "model"), "model") or "unknown"
    out = Adapted()
    out.add("prompts", _prompt(ctx, uid, messages[:-1]))
    out.add("responses", _response(ctx, uid, str(model), messages[-1]["content"], str(model), None,
                                   ans_id=ctx.get(rec, "ans_id")))
    return out
