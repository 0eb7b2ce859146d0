"""Structured output: constrain decoding to a pydantic model's JSON schema, validate, retry.

    >>> class Verdict(BaseModel):
    ...     label: Literal["SAT", "DSAT"]
    >>> engine.generate(prompts, n=2, sampling=s, schema=Verdict)   # doctest: +SKIP
    [[Verdict(label='SAT'), GenerationFailure(error='...', raw='{"label": "S', attempts=3)], ...]

Why xgrammar: it is the grammar engine vLLM uses by default for structured outputs, so both
engines constrain with the same library and the same JSON-schema semantics; it is maintained,
compiles a schema once per tokenizer into a token-level automaton (per-step masks in
microseconds), and ships a matcher API that fits a ``transformers`` logits processor. (Outlines
and lm-format-enforcer are the alternatives; both are slower per step for large vocabularies.)

Constraint makes every *finished* output grammar-valid; pydantic then checks what a grammar cannot
(validators, cross-field rules). An output cut at ``max_new_tokens`` is a failure, like an invalid
one. Failures are retried with a fresh seed up to ``structured_retries`` times; what still fails
comes back as a ``GenerationFailure`` row, never an exception. A sample that got no answer at all
(``NoAnswer``: a server that is down; the ``openai`` engine) is no output to judge: it is neither
retried with the next seed nor a failure, and stays ``NoAnswer`` for the caller to raise on.

Termination: a model can wander inside an open string, number or array until the token budget
runs out (a random model always does). In the last ``window`` tokens of the budget,
``ClosingPolicy`` narrows the grammar's allowed tokens to those that head for the end: inside a
string, tokens that close it (``"...``); outside, eos and tokens made only of ``}``/``]``, then
``,``/``"`` (the way to the next required key); when none of them is allowed (a key being spelled
out, the first digit of a number) the grammar's own set stands. Output stays grammar-valid. The
window (twice) and the token budget (four times) of a structured call are at least a multiple of
the schema's shortest completion (measured once per schema by walking the grammar with the
same policy), so a small ``max_new_tokens`` cannot make a schema unsatisfiable; a retry widens
the window.

A grammar lets a string spell any character through a JSON escape (``"\\b"``, ``"\\u0088"``), which the
token mask of ``pipeline.llm.tiny`` and a real model's habits do not stop; every text field of a structured
schema is a ``PrintableStr``, so an answer holding a ``pipeline.encodings.UNPRINTABLE`` character is invalid
(re-asked, then a failure row) instead of a text that export would only drop later. The check is a pydantic
validator: the JSON schema sent to xgrammar, vLLM or an OpenAI server is unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ValidationError

from pipeline.encodings import UNPRINTABLE
from pipeline.llm.base import GenerationFailure

_UNPRINTABLE = re.compile(UNPRINTABLE)


def refuse_unprintable(text: str) -> str:
    """``text`` as it is, or a ValueError naming its first ``UNPRINTABLE`` character and where it is (unlike
    ``pipeline.errors.printable``, which escapes such characters for showing).

    >>> refuse_unprintable("ok\\tfine")
    'ok\\tfine'
    >>> refuse_unprintable("a\\bc")
    Traceback (most recent call last):
    ...
    ValueError: holds the control or bidi-override character U+0008 at offset 1 (pipeline.encodings.UNPRINTABLE)
    """
    if (m := _UNPRINTABLE.search(text)) is not None:
        raise ValueError(f"holds the control or bidi-override character U+{ord(m.group()):04X} at offset "
                         f"{m.start()} (pipeline.encodings.UNPRINTABLE)")
    return text


# The type of every text field of a structured output schema (same JSON schema as ``str``).
PrintableStr = Annotated[str, AfterValidator(refuse_unprintable)]


def schema_json(schema: type[BaseModel]) -> str:
    return json.dumps(schema.model_json_schema(), sort_keys=True)


def parse(schema: type[BaseModel], text: str, truncated: bool) -> BaseModel | str:
    """The validated model, or the reason it failed."""
    if truncated:
        return "output cut at max_new_tokens before the JSON was complete"
    try:
        return schema.model_validate_json(text)
    except ValidationError as e:
        return f"schema validation failed: {e.errors(include_url=False)}"


@dataclass(frozen=True)
class NoAnswer:
    """A sample whose request got no answer this time (``error``: why); asked again, it may get one."""

    error: str


# A sampler over (prompts, sample indices per prompt, attempt) -> per prompt, one (text, truncated) or
# NoAnswer per index. The indices and the attempt pick each sample's seed (``pipeline.llm.base.sample_seed``).
Sampler = Callable[[list, list[list[int]], int], list[list[tuple[str, bool] | NoAnswer]]]


def generate_validated(
    sample: Sampler, prompts: list, n: int, schema: type[BaseModel], retries: int
) -> list[list[BaseModel | GenerationFailure | NoAnswer]]:
    """Sample ``n`` per prompt, validate, re-sample only the failed slots (each with its own sample index
    and the attempt number, so two failed slots of one prompt get different retries), up to ``retries`` times.
    A slot the sampler has no answer for keeps its ``NoAnswer`` (not retried: the next attempt's seed would
    give another sample than an uninterrupted run)."""
    first = sample(prompts, [list(range(n))] * len(prompts), 0)
    out: list[list] = [[None] * n for _ in prompts]

    def settle(i: int, j: int, answer: tuple[str, bool] | NoAnswer, pending: list) -> None:
        """Slot (i, j) gets ``answer`` (a ``NoAnswer`` as it is, else its validated output), or joins ``pending``
        as (row, slot, error, raw) when the output fails validation."""
        if not isinstance(answer, NoAnswer):
            res = parse(schema, *answer)
            if isinstance(res, str):
                pending.append((i, j, res, answer[0]))
                return
            answer = res
        out[i][j] = answer

    pending: list[tuple[int, int, str, str]] = []
    for i, samples in enumerate(first):
        for j, answer in enumerate(samples):
            settle(i, j, answer, pending)
    for attempt in range(1, retries + 1):
        if not pending:
            break
        again = sample([prompts[i] for i, _, _, _ in pending], [[j] for _, j, _, _ in pending], attempt)
        still: list[tuple[int, int, str, str]] = []
        for (i, j, _, _), [answer] in zip(pending, again, strict=True):
            settle(i, j, answer, still)
        pending = still
    for i, j, err, raw in pending:
        out[i][j] = GenerationFailure(error=err, raw=raw, attempts=retries + 1)
    return out



class ClosingPolicy:
    """Which allowed tokens lead out of the JSON fastest, given whether we are inside a string."""

    def __init__(self, tokenizer, vocab: int, eos_ids: list[int]):
        import torch

        texts = [tokenizer.decode([t]) if t < len(tokenizer) else "" for t in range(vocab)]
        self.texts = texts
        self.chars = torch.tensor([len(t) for t in texts])
        self.in_string_tier = torch.tensor([t.startswith('"') for t in texts])
        close = torch.tensor([bool(t) and set(t) <= set("}]") for t in texts])
        close[eos_ids] = True
        self.close_tier = close
        self.next_key_tier = torch.tensor([t[:1] in (",", '"') for t in texts])
        self.bits = torch.arange(32, dtype=torch.int32)

    def unpack(self, bitmask_row, vocab: int):
        return ((bitmask_row.unsqueeze(-1) >> self.bits) & 1).flatten()[:vocab].bool()

    def preferred(self, allowed, in_string: bool):
        """The first non-empty tier among the allowed tokens, or None (keep the grammar's set)."""
        tiers = [self.in_string_tier] if in_string else [self.close_tier, self.next_key_tier]
        for tier in tiers:
            pick = allowed & tier
            if pick.any():
                return pick
        return None

    def advance(self, state: tuple[bool, bool], token: int) -> tuple[bool, bool]:
        """(in_string, after_backslash) after emitting ``token``."""
        in_string, escaped = state
        for c in self.texts[token] if token < len(self.texts) else "":
            if in_string and escaped:
                escaped = False
            elif in_string and c == "\\":
                escaped = True
            elif c == '"':
                in_string = not in_string
        return in_string, escaped


def shortest_completion(compiled, vocab: int, policy: ClosingPolicy, limit: int = 4096) -> int:
    """Tokens needed to finish the grammar when every choice heads for the end (longest token
    of the preferred tier, else of the grammar's allowed set)."""
    import torch
    import xgrammar as xgr

    matcher = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, vocab)
    state = (False, False)
    for step in range(limit):
        if matcher.is_terminated():
            return step
        matcher.fill_next_token_bitmask(bitmask, 0)
        allowed = policy.unpack(bitmask[0], vocab)
        pool = policy.preferred(allowed, state[0])
        pool = allowed if pool is None else pool
        token = int(torch.where(pool, policy.chars, -1).argmax())
        if not matcher.accept_token(token):
            break
        state = policy.advance(state, token)
    return limit
