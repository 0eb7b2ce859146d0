"""The ``openai`` engine: OpenAI-compatible servers (a ``vllm serve`` pool, SGLang, a hosted API), same contract.

    llm:                                   # or one role, e.g. pugc.roles.judge
      backend: openai
      model: Qwen/Qwen2.5-7B-Instruct      # the served model name
      base_url: [http://node1:8000/v1, http://node2:8000/v1]
      api_key_env: null                    # or OPENAI_API_KEY: the variable's NAME, never the key

Requests are built by the pure functions of ``pipeline.llm.openai_requests`` and sent by
``pipeline.llm.openai_client`` (many in flight, retries, a disk cache, a cost guard):

- ``generate``: ``/chat/completions``, one request per sample with ``n=1`` and that sample's contract
  seed ``sample_seed(sampling.seed, prompt, j, attempt)``, so sample ``j`` of a prompt is the same
  whichever batch, replica or rerun asks for it, and is cached on its own; a greedy call
  (temperature 0) sends one request per prompt. ``temperature``, ``top_p``, ``max_completion_tokens``,
  ``stop``; ``finish_reason: length`` is a cut-off sample (``Completion.finish_reason``); an answer whose
  ``usage`` passes the budget is a ``ServerError`` (the server ignores ``max_completion_tokens``). With a schema:
  ``response_format`` ``json_schema`` (strict), the text validated with pydantic and failed samples
  re-asked with the next attempt's seed (``generate_validated``), as in-process. One request per
  sample costs a hosted API the prompt's tokens once per sample (vLLM's prefix cache makes it free).
- ``logprobs``: ``/completions`` with the token ids of the chat-templated prompt + response and vLLM's
  ``prompt_logprobs=0`` (the log-probability of every prompt token), or with ``prompt_logprobs_via: echo``
  the legacy API's ``echo`` + ``logprobs`` (the echoed tokens checked against the local tokenizer's),
  summed over the response's tokens and the end-of-turn token: the boundary of ``pipeline.llm.chat``, from the served model's own
  tokenizer loaded locally from ``model`` (a Hub id in the local cache, at ``revision`` when set, or a
  folder). These are the numbers the in-process engines compute.
- ``choose``: ``option_scoring: sequence`` scores every option that way (one request per prompt, its
  options' token ids as a batch of prompts) and normalises: the in-process engines' numbers, options of
  any length. ``first_token`` (hosted APIs: no tokenizer, no prompt log-probs): ``/chat/completions``
  with ``max_completion_tokens=1``, ``temperature=0``, ``logprobs``, ``top_logprobs=20``; an option's
  probability is that of the first answer tokens equal to it (surrounding blanks ignored), normalised
  over the options; an option outside the top 20 gets 0. A prompt with no option among them fails its
  row (NaN ``FailedValue``); the call fails only when no prompt of it has one (the options are not tokens).

Failures, per row or per call:

- a request the server refuses for itself (a 4xx other than 408/409/429: a content filter, 413, 422, a
  400 for a bad request, a model that declines), or answers with what no row can use (a lone surrogate in the
  text, a log-probability that is NaN, Infinity or above 0, every option at -Infinity), fails only its row, since a rerun would be refused the same
  way: a plain sample becomes a ``GenerationFailure`` ("request refused: HTTP 400: ..."), a structured one
  too once its retries with the next seeds were refused or invalid as well, a ``choose`` row
  ``[nan] * len(options)`` and a ``logprobs`` row ``LogProb(nan, n_tokens)`` (``FailedValue``: NaN with the
  reason in ``error``), which the stages count as failed rows (never a verdict or a score); a warning
  names the prompt and the server's reason;
- a prompt whose messages hold a chat control string (``<|im_end|>``, ``[INST]``...: ``openai_requests.control_text``)
  is kept back from ``/chat/completions`` (``generate``, ``choose`` with ``first_token``): the server templates
  and tokenizes the messages itself and may read that text as the real token, a forged turn. Its row fails as a
  refused one does, the reason saying "not sent: message 1 (user) holds the chat control string ..."; the
  token-id requests (``logprobs``, ``sequence``) are encoded locally as plain text and sent as usual;
- a refusal saying the prompt exceeds the model's context length raises ``InputTooLong`` (naming the
  prompt; a structured sample stays a ``GenerationFailure`` row), as the in-process engines do for a prompt over ``max_model_len``, so the stages' per-prompt
  paths apply (``wildfeedback_common.per_prompt``; the other rows are cached, so asking them again is free);
- a request that still fails after ``llm.max_retries`` (transport, timeouts, 408/409/429/5xx, unreadable
  answers) fails the call, structured or not: every request of the call is completed (and cached) first,
  then ``RequestsFailed`` names how many failed, the first one's prompt and why, so a rerun resends only
  those. Such a failure is never a row's outcome (nor re-asked with the next seed): a server that is down,
  overloaded or rate-limited must not turn into failed rows that a stage counts, checkpoints and commits,
  so the rerun after it is back gives what an uninterrupted run gives.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import textwrap
from typing import Any

from pydantic import BaseModel

from pipeline.config import LLM, Sampling
from pipeline.errors import EngineError, ModelLoadError
from pipeline.llm.base import ChatPrompt, Completion, FailedValue, GenerationFailure, LogProb
from pipeline.llm.chat import ChatCodec, InputTooLong
from pipeline.llm.identity import load_revision
from pipeline.llm.openai_client import Request, RequestFailed, ServerError, Transport
from pipeline.llm.openai_requests import (
    TOP_LOGPROBS,
    control_text,
    first_token_request,
    sample_request,
    score_request,
)
from pipeline.llm.structured import NoAnswer, generate_validated
from pipeline.llm.tiny import resolve_model

log = logging.getLogger(__name__)

_REFUSED = "\x00prefpipe: request refused\x00"  # marks a refused request in a structured sample's text


class RequestsFailed(EngineError):
    """Some requests of a call got no answer after ``llm.max_retries`` (a rerun may get one): never a row's failure."""


# --- scores -> probabilities ----------------------------------------------------------------------


def option_probabilities(top: list[list], options: list[str]) -> list[float] | None:
    """Normalised probabilities of ``options`` among the first token's top alternatives (None: none is there)."""
    mass = [sum(math.exp(lp) for token, lp in top if token.strip() == o.strip()) for o in options]
    total = sum(mass)
    return [m / total for m in mass] if total > 0 else None


def softmax(xs: list[float]) -> list[float]:
    """Normalised ``exp(xs)``; every x -Infinity (each option impossible) is no distribution: a failed row."""
    m = max(xs)
    if m == -math.inf:
        return [FailedValue("the server scored every option with log-probability -Infinity")] * len(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def token_forms(tok) -> functools._lru_cache_wrapper:
    """``id -> the strings a server may echo for that token`` (its text alone or in context, its vocabulary
    entry, vLLM's ``token_id:<id>``); None for a token that cannot be compared (special, partial UTF-8)."""
    special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}

    @functools.lru_cache(maxsize=1 << 16)
    def forms(i: int) -> frozenset[str] | None:
        text = tok.decode([i])
        if i in special or "\ufffd" in text:
            return None
        raw = tok.convert_ids_to_tokens(i)
        return frozenset({text, " " + text, raw, tok.convert_tokens_to_string([raw]),
                          raw.replace("\u2581", " "), raw.replace("\u0120", " "), f"token_id:{i}"})

    return forms


@functools.lru_cache(maxsize=8)
def _tokenizer(path: str, revision: str | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, revision=revision)


# --- engine --------------------------------------------------------------------------------------


class OpenAIEngine:
    def __init__(self, cfg: LLM):
        self.cfg = cfg
        self.name = cfg.model
        self.transport = Transport(cfg)
        # The chat codec (tokenizer + template) for scoring sequences. Loaded up front with
        # option_scoring: sequence when the tokenizer is at hand; None otherwise (a generation-only role
        # on a hosted API needs none), so callers that budget prompts by tokens
        # (getattr(engine, "codec", None)) fall back to characters. Scoring without it is a clear error.
        self.codec: ChatCodec | None = None
        self._forms = None  # token_forms of the codec's tokenizer (prompt_logprobs_via: echo)
        if cfg.option_scoring == "sequence":
            with contextlib.suppress(ServerError):
                self.codec = self._load_codec("")

    def _codec(self, purpose: str) -> ChatCodec:
        if self.codec is None:
            self.codec = self._load_codec(purpose)
        return self.codec

    def _score(self, prompt: ChatPrompt, spans: list[tuple[list[int], int, int]], purpose: str):
        """The request scoring ``spans``, the way ``llm.prompt_logprobs_via`` says."""
        if self.cfg.prompt_logprobs_via == "echo" and self._forms is None:
            self._forms = token_forms(self._codec(purpose).tok)
        forms = self._forms if self.cfg.prompt_logprobs_via == "echo" else None
        return score_request(self.cfg.model, prompt, spans, purpose, forms)

    def _load_codec(self, purpose: str) -> ChatCodec:
        try:
            rev = load_revision(self.cfg)  # as the transformers engine: a branch loaded at the commit it names
            path = resolve_model(self.cfg.model, hub=rev == self.cfg.revision, revision=rev)
            return ChatCodec(_tokenizer(path, rev), name=self.cfg.model, max_len=self.cfg.max_model_len)
        except (OSError, ValueError, ModelLoadError) as e:  # no such tokenizer here, or no chat template
            # What went wrong, not the loader's remedy (meant for the in-process backends): this one's follows.
            why = textwrap.shorten(str(e).split("; ")[0], 200, placeholder=" ...")
            raise ServerError(
                f"model {self.cfg.model!r}: {purpose} needs the served model's tokenizer (chat template and "
                f"token ids), loaded locally from the model name, and it could not be loaded "
                f"({why}); set {self.cfg.model_key} to the Hub id (in the local cache) or folder "
                "the server serves (vllm serve ... --served-model-name <that id>), or, for a hosted judge, "
                "option_scoring: first_token"
            ) from None

    def _raise_failed(self, what: str, answers: list[Any], per_prompt: int = 1) -> None:
        """Raise for the failures that are not one row's: retries exhausted (``RequestsFailed``) and a
        prompt over the context length (``InputTooLong``); warn about the refused rows, left to the caller.
        Answer ``i`` belongs to prompt ``i // per_prompt``."""
        failed = [(i // per_prompt, a) for i, a in enumerate(answers) if isinstance(a, RequestFailed)]
        self._raise_unanswered(what, [(i, a.error) for i, a in failed if not a.refused], len(answers))
        too_long = [(i, a) for i, a in failed if a.too_long]
        if too_long:
            i, first = too_long[0]
            raise InputTooLong(
                f"{self.transport.where()}: {what}: prompt {i} does not fit the served model's context length "
                f"({first.error}); drop or shorten such rows before the engine step, or serve a longer context"
            )
        for i, a in failed:
            log.warning("%s: %s: prompt %d %s (%s); that row fails", self.transport.where(), what, i,
                        "refused by the server" if a.sent else "kept back", a.error)

    def _raise_unanswered(self, what: str, unanswered: list[tuple[int, str]], total: int) -> None:
        """``RequestsFailed`` for the requests that got no answer after ``llm.max_retries`` ((prompt, why) each),
        if any: raised once every request of the call is done, so what came back is cached."""
        if unanswered:
            i, error = unanswered[0]
            none = len(unanswered) == total  # a server down or gone away, more likely than bad rows
            raise RequestsFailed(
                f"{self.transport.where()}: {what}: {len(unanswered)} of {total} requests failed (first: "
                f"prompt {i}: {error}; {self.cfg.key('max_retries')}={self.cfg.max_retries}); "
                + ("none was answered: check that the server is up and serves this model; " if none else "")
                + "the answers that came back are cached, so a rerun resends only the failed ones"
            )

    # --- generate --------------------------------------------------------------------------------

    def generate(self, prompts: list[ChatPrompt], n: int = 1, sampling: Sampling | None = None,
                 schema: type[BaseModel] | None = None) -> list[list]:
        s = sampling or self.cfg.sampling
        if schema is None:
            rows = self._sample(prompts, [list(range(n))] * len(prompts), s, None, 0)
            self._raise_failed("generate", [a for row in rows for a in row], per_prompt=n)
            return [[_refused(a) if isinstance(a, RequestFailed) else Completion(a["text"], a["finish_reason"])
                     for a in row] for row in rows]

        def sample(ps: list[ChatPrompt], slots, attempt: int) -> list[list[tuple[str, bool] | NoAnswer]]:
            # `slots`: a count per prompt, or each prompt's sample indices (structured.generate_validated).
            # A refused request is that sample's failure (re-asked with the next seed, like an invalid one);
            # one that failed for now (retries exhausted) has no answer: not retried, raised below.
            slots = [list(range(slots))] * len(ps) if isinstance(slots, int) else slots
            return [[(NoAnswer(a.error) if not a.refused else (_REFUSED + _why(a), False))
                     if isinstance(a, RequestFailed) else (a["text"], a["finish_reason"] == "length") for a in row]
                    for row in self._sample(ps, slots, s, schema, attempt)]

        out = generate_validated(sample, prompts, n, schema, self.cfg.structured_retries)
        self._raise_unanswered("generate", [(i, x.error) for i, row in enumerate(out) for x in row
                                            if isinstance(x, NoAnswer)], len(prompts) * n)
        return [[_refusal(x) for x in row] for row in out]

    def _sample(self, prompts: list[ChatPrompt], slots: list[list[int]], s: Sampling,
                schema: type[BaseModel] | None, attempt: int) -> list[list[Any]]:
        """Per prompt, the answer (or RequestFailed) of each sample index in ``slots``."""
        return self._chat([[sample_request(self.cfg.model, p, s, j if s.temperature > 0 else 0, attempt, schema)
                            for j in idx] for p, idx in zip(prompts, slots, strict=True)], prompts)

    def _chat(self, requests: list[list[Request]], prompts: list[ChatPrompt]) -> list[list[Any]]:
        """Per prompt, the answers of its chat requests. The server templates the messages itself and may read a
        chat control string in them as the real token (a forged turn), so a prompt holding one is kept back
        (``control_text``): each of its requests is that row's failure (``RequestFailed`` with ``sent=False``),
        never sent, cached or counted against ``max_requests``."""
        held = [control_text(p) for p in prompts]
        answers = iter(self.transport.run([r for rs, why in zip(requests, held, strict=True) if why is None for r in rs]))
        return [[next(answers) for _ in rs] if why is None else [RequestFailed(why, refused=True, sent=False)] * len(rs)
                for rs, why in zip(requests, held, strict=True)]

    # --- scoring ---------------------------------------------------------------------------------

    def logprobs(self, prompts: list[ChatPrompt], responses: list[str]) -> list[LogProb]:
        if len(prompts) != len(responses):
            raise ValueError(f"logprobs: {len(prompts)} prompts but {len(responses)} responses")
        purpose = "logprobs (teacher forcing, e.g. Selfie's rewards)"
        codec = self._codec(purpose)
        spans = [codec.response_span(p, r) for p, r in zip(prompts, responses, strict=True)]
        answers = self.transport.run([self._score(p, [span], purpose) for p, span in zip(prompts, spans, strict=True)])
        self._raise_failed("logprobs", answers)
        return [LogProb(_nan(a) if isinstance(a, RequestFailed) else a[0], end - start)
                for a, (_, start, end) in zip(answers, spans, strict=True)]

    def choose(self, prompts: list[ChatPrompt], options: list[str]) -> list[list[float]]:
        if not options:
            raise ValueError("choose: at least one option is needed")
        if self.cfg.option_scoring == "sequence":
            purpose = "choose with option_scoring: sequence (judges)"
            codec = self._codec(purpose)
            # A judge call, rendered as the in-process engines render it (judge=True: no default system prompt).
            requests = [self._score(p, codec.response_spans(p, options, judge=True), purpose) for p in prompts]
            answers = self.transport.run(requests)
            self._raise_failed("choose", answers)
            return [[_nan(a)] * len(options) if isinstance(a, RequestFailed) else softmax(a) for a in answers]
        answers = [a for [a] in self._chat([[first_token_request(self.cfg.model, p)] for p in prompts], prompts)]
        self._raise_failed("choose", answers)
        probs = [[_nan(top)] * len(options) if isinstance(top, RequestFailed) else option_probabilities(top, options)
                 for top in answers]
        missing = [i for i, p in enumerate(probs) if p is None]
        if not missing:
            return probs  # type: ignore[return-value]
        what = (f"for {len(missing)} of {len(prompts)} prompts none of the options {options} is among the "
                f"{TOP_LOGPROBS} most likely first answer tokens (prompt {missing[0]}: "
                f"{[t for t, _ in answers[missing[0]][:5]]})")
        if len(missing) == sum(not isinstance(a, RequestFailed) for a in answers):  # the options, not the rows
            raise RequestsFailed(
                f"{self.transport.where()}: choose: {what}; option_scoring: first_token needs single-token options "
                "the model answers with; use option_scoring: sequence (vLLM) for longer options"
            )
        # Those answers start otherwise ("Sure", "**"): those rows fail (cached, a rerun would too), the others stand.
        log.warning("%s: choose: %s; those rows fail", self.transport.where(), what)
        for i in missing:
            starts = [t for t, _ in answers[i][:5]]
            probs[i] = [FailedValue(f"none of the options is among the {TOP_LOGPROBS} most likely first answer "
                                    f"tokens (the answer starts with {starts})")] * len(options)
        return probs  # type: ignore[return-value]


def _why(a: RequestFailed) -> str:
    """A failed row's reason: the server's refusal, or why the engine kept the request back (it says "not sent")."""
    return f"request refused: {a.error}" if a.sent else a.error


def _nan(a: RequestFailed) -> FailedValue:
    return FailedValue(_why(a))


def _refused(a: RequestFailed) -> GenerationFailure:
    return GenerationFailure(error=_why(a), raw="", attempts=1)


def _refusal(x: Any) -> Any:
    """A structured sample whose last attempt was a refused (or kept back) request says so (not "invalid JSON")."""
    if isinstance(x, GenerationFailure) and x.raw.startswith(_REFUSED):
        return GenerationFailure(error=x.raw[len(_REFUSED):], raw="", attempts=x.attempts)
    return x
