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

Control tokens: message content is text, never the model's control language. A user turn (or a scraped
answer) holding ``<|im_end|>\\n<|im_start|>assistant\\n...`` would otherwise be encoded as the real special
tokens and forge turns inside a judge prompt. Every encoding of a conversation goes through ``encode_chat``:
when no message holds a special token's text (nearly every row), it is the plain encoding of the rendered
text, token for token; otherwise the template's own special tokens (those outside the messages' text,
located by rendering the conversation with a placeholder for each content) are kept and every piece of
text between them is encoded with the tokenizer's ``split_special_tokens=True``, so content can never
produce a special token id (``<|im_end|>`` in content becomes ``<``, ``|``, ``im``, ...).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from pipeline.errors import MODEL_KEY, EngineError, ModelLoadError

log = logging.getLogger(__name__)

_PROBE = "prefpipe-boundary-probe"
_SYSTEM_PROBE = "prefpipe-system-probe"
_UNSET = object()
# Stands for message i's content when the template is rendered to find its own text (private-use characters:
# no template strips them, no tokenizer treats them as special).
_SLOT = "\ue000prefpipe-content-{}\ue001"
_SLOTS = re.compile("\ue000prefpipe-content-(\\d+)\ue001")


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
        # The text of every special token (added tokens flagged special: <|im_start|>, </s>, ...), longest first.
        specials = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
        specials |= set(tokenizer.all_special_tokens)
        self.specials = sorted((t for t in specials if t), key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, self.specials))) if self.specials else None

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

    def encode(self, text: str, split_special: bool = False) -> list[int]:
        """Token ids of ``text`` as is (the template already writes bos/special tokens; adding them again
        would double bos); ``split_special``: special tokens' text encoded as plain text."""
        kw = {"split_special_tokens": True} if split_special else {}
        return self.tok(text, add_special_tokens=False, **kw)["input_ids"]

    def holds_special(self, text: str) -> bool:
        """Whether ``text`` holds the text of one of the tokenizer's special tokens."""
        return self._special_re is not None and self._special_re.search(text) is not None

    def content_spans(self, messages: list[dict[str, str]], text: str, generation: bool) -> list[tuple[int, int]]:
        """Character ranges in ``text`` (``messages`` rendered, with the generation prompt or not) of the contents
        that hold a special token's text: the template rendered with a placeholder per content gives the template's
        own text around them. Such a content must appear as is (or stripped: templates that ``trim`` it); one
        without special text may be rewritten (e.g. a template that drops an answer's reasoning)."""
        slots = [{**m, "content": _SLOT.format(i)} for i, m in enumerate(messages)]
        skeleton = self.tok.apply_chat_template(slots, tokenize=False, add_generation_prompt=generation)
        parts = _SLOTS.split(skeleton)  # template text, message index, template text, ...
        spans, at = [], 0
        for k in range(1, len(parts), 2):
            before, content, after = parts[k - 1], messages[int(parts[k])]["content"], parts[k + 1]
            if not text.startswith(before, at):
                raise self._not_found(parts[k])
            at += len(before)
            end = self._content_end(text, at, content, after, last=k + 2 == len(parts))
            if end is None:
                raise self._not_found(parts[k])
            if self.holds_special(content):
                spans.append((at, end))
            at = end
        shown = {int(i) for i in parts[1::2]}
        if missing := [i for i, m in enumerate(messages) if i not in shown and self.holds_special(m.get("content") or "")]:
            raise self._not_found(missing[0])
        return spans

    def _content_end(self, text: str, at: int, content: str, after: str, last: bool) -> int | None:
        """Where the content rendered at ``at`` ends: followed by the template's text ``after`` (the rest of
        ``text`` when ``last``); None when it cannot be told."""
        for c in dict.fromkeys((content, content.strip(), content.rstrip(), content.lstrip())):
            if text.startswith(c, at) and (text[at + len(c):] == after if last else text.startswith(after, at + len(c))):
                return at + len(c)
        if self.holds_special(content):
            return None  # its special tokens' text must be told from the template's exactly
        if last:
            return len(text) - len(after) if text.endswith(after) and len(text) - len(after) >= at else None
        end = text.find(after, at)
        return end if end >= 0 else None

    def _not_found(self, index) -> TemplateError:
        return TemplateError(f"model {self.name!r}: message {index}'s text is not found as is in the rendered chat "
                             f"template, so the special tokens it holds cannot be told from the template's; {_FIX}")

    def encode_spans(self, text: str, spans: list[tuple[int, int]]) -> list[int]:
        """Token ids of ``text`` whose ``spans`` are message content: a special token's text inside a span is
        encoded as plain text, the template's own special tokens (outside every span) as themselves."""
        if self._special_re is None or not any(self.holds_special(text[a:b]) for a, b in spans):
            return self.encode(text)
        ids, at = [], 0
        for m in self._special_re.finditer(text):
            if any(a < m.end() and m.start() < b for a, b in spans):
                continue  # content: stays inside the text piece around it
            ids += self.encode(text[at:m.start()], split_special=True) + [self.tok.convert_tokens_to_ids(m.group())]
            at = m.end()
        return ids + self.encode(text[at:], split_special=True)

    def special_spans(self, messages: list[dict[str, str]], text: str, generation: bool) -> list[tuple[int, int]]:
        """``content_spans`` when a message holds a special token's text, else none (nothing to keep apart)."""
        if not any(self.holds_special(m.get("content") or "") for m in messages):
            return []
        return self.content_spans(messages, text, generation)

    def encode_chat(self, messages: list[dict[str, str]], text: str, generation: bool) -> list[int]:
        """Token ids of ``text``, the rendering of ``messages``: content never gives a special token id."""
        return self.encode_spans(text, self.special_spans(messages, text, generation))

    def prompt_text(self, messages: list[dict[str, str]]) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, messages: list[dict[str, str]], judge: bool = False) -> list[int]:
        rendered = self.messages(messages, judge)
        ids = self.encode_chat(rendered, self.prompt_text(rendered), generation=True)
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
        p_ids = self.encode_chat(rendered, p_text, generation=True)
        return [self._span(rendered, r, p_text, p_ids, messages) for r in responses]

    def _span(self, rendered, response: str, p_text: str, p_ids: list[int], messages) -> tuple[list[int], int, int]:
        f_text = self._conversation_text(rendered, response)
        convo = [*rendered, {"role": "assistant", "content": response}]
        spans = self.special_spans(convo, f_text, generation=False)
        f_ids = self.encode_spans(f_text, spans)
        if f_ids[: len(p_ids)] == p_ids:
            ids = f_ids
        elif f_text.startswith(p_text):
            log.debug("model %s: tokens merge across the prompt/response boundary; splitting on text", self.name)
            cut = len(p_text)
            ids = p_ids + self.encode_spans(f_text[cut:], [(max(a - cut, 0), b - cut) for a, b in spans if b > cut])
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
        rendered = codec.messages(messages, judge)
        return len(codec.encode_chat(rendered, codec.prompt_text(rendered), generation=True)) + reserve <= limit

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
