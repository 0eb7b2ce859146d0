"""Chat templating and the exact prompt/response token boundary, shared by both engines.

    >>> codec = ChatCodec(tokenizer)                                   # doctest: +SKIP
    >>> ids = codec.prompt_ids([{"role": "user", "content": "Hi"}])    # templated, generation prompt on
    >>> ids, start, end = codec.response_span(prompt, "Hello!")        # ids[start:end] are scored

The boundary: the templated prompt (``add_generation_prompt=True``) and the templated conversation
(prompt + assistant turn) are tokenised separately; when the prompt's tokens are a prefix of the
conversation's tokens, the response starts right after them. Scored tokens are the response's own
tokens plus the first token of the template's closing text for the assistant turn (the
end-of-turn token, e.g. ``<|im_end|>``, ``<|eot_id|>``, ``</s>``): the model's decision to stop is
part of the answer, and it separates "1" from "10" in ``choose``. Anything the template writes
after that token (e.g. a newline) is not scored.

Fallback, for tokenisers whose merges cross the boundary (the conversation's tokens do not start
with the prompt's tokens although its text starts with the prompt's text): the prompt's tokens
followed by the tokens of the remaining text, as TRL does for DPO. A template whose rendered
prompt is not a text prefix of the rendered conversation (e.g. one that rewrites earlier turns
once an assistant turn follows) raises ``TemplateError``: no boundary can be exact for it.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_PROBE = "prefpipe-boundary-probe"


class TemplateError(ValueError):
    """The model's chat template cannot give an exact prompt/response boundary."""


class InputTooLong(ValueError):
    """A templated prompt (or prompt + response) does not fit the engine's ``max_model_len``."""


class ChatCodec:
    def __init__(self, tokenizer, name: str = "", max_len: int | None = None):
        if getattr(tokenizer, "chat_template", None) is None:
            raise TemplateError(
                f"model {name or tokenizer.name_or_path!r} has no chat template; use an instruct/chat model "
                "or set tokenizer.chat_template in its folder"
            )
        self.tok = tokenizer
        self.name = name or tokenizer.name_or_path
        self.max_len = max_len
        self._tail: list[int] | None = None

    def encode(self, text: str) -> list[int]:
        # The template already writes bos/special tokens; adding them again would double bos.
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def prompt_text(self, messages: list[dict[str, str]]) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        ids = self.encode(self.prompt_text(messages))
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
                raise TemplateError(f"model {self.name!r}: the chat template drops the assistant message")
            self._tail = self.encode(text[at + len(_PROBE):])
        return self._tail

    def response_span(self, messages: list[dict[str, str]], response: str) -> tuple[list[int], int, int]:
        """Token ids of prompt + response and the scored range ``[start, end)``."""
        p_text = self.prompt_text(messages)
        f_text = self._conversation_text(messages, response)
        p_ids, f_ids = self.encode(p_text), self.encode(f_text)
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
            raise TemplateError(f"model {self.name!r}: the templated prompt is empty; nothing to condition on")
        self._check(end, messages, "prompt + response")
        return ids, start, end
