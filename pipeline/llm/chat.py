"""Chat templating and the exact prompt/response token boundary, shared by both engines.

    >>> codec = ChatCodec(tokenizer)                                   # doctest: +SKIP
    >>> ids = codec.prompt_ids([{"role": "user", "content": "Hi"}])    # templated, generation prompt on  # doctest: +SKIP
    >>> ids, start, end = codec.response_span(prompt, "Hello!")        # ids[start:end] are scored  # doctest: +SKIP

The boundary: the templated prompt (``add_generation_prompt=True``) and the templated conversation
(prompt + assistant turn) are tokenised separately; when the prompt's tokens are a prefix of the
conversation's tokens, the response starts right after them. Scored tokens are the response's own
tokens plus the first token of the template's closing text for the assistant turn (the
end-of-turn token, e.g. ``<|im_end|>``, ``<|eot_id|>``, ``</s>``): the model's decision to stop is
part of the answer, and it separates "1" from "10" in ``choose``. Anything the template writes
after that token (e.g. a newline) is not scored.

Judge calls: some templates add a default system prompt when a conversation has none (SmolLM2: "You are
a helpful AI assistant named SmolLM, trained by Hugging Face"; Qwen2.5: "You are Qwen, ..."), which would
precede every judge prompt. ``default_system`` finds that text once by rendering a probe conversation
with and without a system message; with ``judge=True`` a conversation without a system message is
rendered with an explicit empty one, only for such templates (others render unchanged). The engines
use it for ``choose`` and structured ``generate`` (labels, scores, verdicts, summaries); plain
``generate`` and ``logprobs`` (a policy answering, or scoring its own answers) keep the template as is.

Fallback, for tokenisers whose merges cross the boundary (the conversation's tokens do not start
with the prompt's tokens although its text starts with the prompt's text): the prompt's tokens
followed by the tokens of the remaining text, as TRL does for DPO. A template whose rendered
prompt is not a text prefix of the rendered conversation (e.g. one that rewrites earlier turns
once an assistant turn follows) raises ``TemplateError``: no boundary can be exact for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pipeline.errors import MODEL_KEY, EngineError, ModelLoadError

log = logging.getLogger(__name__)

_PROBE = "prefpipe-boundary-probe"
_SYSTEM_PROBE = "prefpipe-system-probe"
_UNSET = object()


class TemplateError(ModelLoadError, ValueError):
    """The model's chat template is missing or cannot give an exact prompt/response boundary: the model is
    unusable here, so, like any ``ModelLoadError``, `prefpipe run` reports it in one line."""


class InputTooLong(EngineError, ValueError):
    """A templated prompt (or prompt + response) does not fit the engine's ``max_model_len``. A step that does
    not handle it fails as a whole: ``map_batches`` reports it in one line naming the step (it was a traceback,
    e.g. with a ``max_model_len`` too small for a judge's probe prompts)."""


# What to do about a chat template that cannot be scored through (it writes no assistant turn, or no prompt).
_FIX = (f"set {MODEL_KEY} to an instruct/chat model whose template writes every turn, or fix tokenizer.chat_template "
        "in its folder")


class ChatCodec:
    def __init__(self, tokenizer, name: str = "", max_len: int | None = None):
        if getattr(tokenizer, "chat_template", None) is None:
            raise TemplateError(
                f"model {name or tokenizer.name_or_path!r} has no chat template; set {MODEL_KEY} to an "
                "instruct/chat model, or set tokenizer.chat_template in its folder"
            )
        self.tok = tokenizer
        self.name = name or tokenizer.name_or_path
        self.max_len = max_len
        self._tail: list[int] | None = None
        self._default_system: object = _UNSET

    @property
    def default_system(self) -> str | None:
        """The system prompt the template adds to a conversation that has none (None: it adds nothing)."""
        if self._default_system is _UNSET:
            user = [{"role": "user", "content": _PROBE}]
            try:
                plain = self.tok.apply_chat_template(user, tokenize=False)
                given = self.tok.apply_chat_template([{"role": "system", "content": _SYSTEM_PROBE}, *user], tokenize=False)
            except Exception:  # noqa: BLE001 - e.g. templates that refuse a system role: nothing to remove
                given = ""
            found = None
            if given.count(_SYSTEM_PROBE) == 1:
                pre, post = given.split(_SYSTEM_PROBE)
                if plain.startswith(pre) and plain.endswith(post) and len(plain) > len(pre) + len(post):
                    found = plain[len(pre): len(plain) - len(post)]
            self._default_system = found
        return self._default_system  # type: ignore[return-value]

    def messages(self, messages: list[dict[str, str]], judge: bool = False) -> list[dict[str, str]]:
        """The conversation as rendered: for a judge call, with an explicit empty system message when the
        template would otherwise add its default one."""
        if not judge or self.default_system is None or (messages and messages[0].get("role") == "system"):
            return messages
        return [{"role": "system", "content": ""}, *messages]

    def encode(self, text: str) -> list[int]:
        # The template already writes bos/special tokens; adding them again would double bos.
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def prompt_text(self, messages: list[dict[str, str]]) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, messages: list[dict[str, str]], judge: bool = False) -> list[int]:
        ids = self.encode(self.prompt_text(self.messages(messages, judge)))
        # Generation needs room for at least one new token.
        self._check(len(ids) + 1, messages, "prompt")
        return ids

    def _check(self, n: int, messages: list[dict[str, str]], what: str) -> None:
        if self.max_len is not None and n > self.max_len:
            first = (messages[0].get("content") or "")[:60] if messages else ""
            raise InputTooLong(
                f"model {self.name!r}: {what} of {n} tokens does not fit llm.max_model_len={self.max_len} "
                f"(conversation starting {first!r}); drop or shorten such rows before the engine step, "
                "or raise max_model_len"
            )

    def _conversation_text(self, messages: list[dict[str, str]], response: str) -> str:
        convo = [*messages, {"role": "assistant", "content": response}]
        return self.tok.apply_chat_template(convo, tokenize=False)

    def tail_ids(self) -> list[int]:
        """Tokens the template writes after an assistant message (e.g. ``<|im_end|>`` + newline)."""
        if self._tail is None:
            text = self._conversation_text([{"role": "user", "content": "x"}], _PROBE)
            at = text.rfind(_PROBE)
            if at < 0:
                raise TemplateError(f"model {self.name!r}: the chat template drops the assistant message; {_FIX}")
            self._tail = self.encode(text[at + len(_PROBE):])
        return self._tail

    def response_span(self, messages: list[dict[str, str]], response: str, judge: bool = False,
                      ) -> tuple[list[int], int, int]:
        """Token ids of prompt + response and the scored range ``[start, end)``."""
        return self.response_spans(messages, [response], judge)[0]

    def response_spans(self, messages: list[dict[str, str]], responses: list[str], judge: bool = False,
                       ) -> list[tuple[list[int], int, int]]:
        """``response_span`` for several responses to one prompt (the prompt is templated and encoded once)."""
        rendered = self.messages(messages, judge)
        p_text = self.prompt_text(rendered)
        p_ids = self.encode(p_text)
        return [self._span(rendered, r, p_text, p_ids, messages) for r in responses]

    def _span(self, rendered, response: str, p_text: str, p_ids: list[int], messages) -> tuple[list[int], int, int]:
        f_text = self._conversation_text(rendered, response)
        f_ids = self.encode(f_text)
        if f_ids[: len(p_ids)] == p_ids:
            ids = f_ids
        elif f_text.startswith(p_text):
            log.debug("model %s: tokens merge across the prompt/response boundary; splitting on text", self.name)
            ids = p_ids + self.encode(f_text[len(p_text):])
        else:
            raise TemplateError(
                f"model {self.name!r}: the templated prompt is not a prefix of the templated conversation "
                f"(prompt ends {p_text[-60:]!r}, conversation has {f_text[len(p_text) - 60:len(p_text) + 20]!r}); "
                "use a chat template that renders earlier turns the same way whether or not an assistant "
                "turn follows"
            )
        start, end = len(p_ids), len(ids)
        tail = self.tail_ids()
        if tail and end - start >= len(tail) and ids[end - len(tail):] == tail:
            end = end - len(tail) + 1  # keep the end-of-turn token, drop the template's trailing text
        if start == 0:
            raise TemplateError(f"model {self.name!r}: the templated prompt is empty; nothing to condition on; {_FIX}")
        self._check(end, messages, "prompt + response")
        return ids, start, end


def token_fit(engine, reserve: int, judge: bool = False):
    """``fits(messages) -> bool``: the templated prompt plus ``reserve`` tokens (room for the answer) within
    the engine's ``llm.max_model_len``, counted with the engine's own chat codec (``judge``: rendered as the
    engine renders judge calls). None when the engine exposes no codec or no limit (e.g. an OpenAI-compatible
    server without a local tokenizer): then the engine itself refuses a prompt that does not fit
    (``InputTooLong``)."""
    codec = getattr(engine, "codec", None)
    limit = getattr(codec, "max_len", None)
    if codec is None or not limit:
        return None

    def fits(messages: list[dict[str, str]]) -> bool:
        return len(codec.encode(codec.prompt_text(codec.messages(messages, judge)))) + reserve <= limit

    return fits


def per_prompt(call: Callable[[list], list], prompts: list, too_long: Callable[[str], Any]) -> list:
    """``call(prompts)``; when a prompt does not fit the model (``InputTooLong``), each prompt again on its
    own, with ``too_long(error)`` as the answer of those that do not fit: one long conversation costs its
    own row, not the stage."""
    try:
        return call(prompts)
    except InputTooLong:
        out = []
        for p in prompts:
            try:
                out.extend(call([p]))
            except InputTooLong as e:
                out.append(too_long(str(e)))
        return out
