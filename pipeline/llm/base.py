"""The engine interface every method codes against: three batched operations.

    engine.generate(prompts, n=4, sampling=s)              -> list[list[Completion]]  (text, finish_reason)
    engine.generate(prompts, n=1, sampling=s, schema=M)    -> list[list[M | GenerationFailure]]
    engine.logprobs(prompts, responses)                    -> list[LogProb]   (sum, n_tokens)
    engine.choose(prompts, ["1", "2", "3", "4", "5"])      -> list[list[float]]  (sums to 1)

A prompt is a list of ``{"role", "content"}`` dicts, rendered with the model's chat template.
Calls take whole batches; the engine schedules them. Nothing here raises mid-batch for a bad
model output: structured generation that stays invalid after retries comes back as a
``GenerationFailure`` for the caller to record. A ``choose`` / ``logprobs`` row the engine could not
score at all (a request an OpenAI-compatible server refused) is NaN: a ``FailedValue``, a float NaN that
says why in ``error``; stages count NaN rows as failed, never as a verdict or a score. A request that
got no answer for now (a server down or overloaded, retries exhausted) is no row's outcome: the call
raises (``openai_engine.RequestsFailed``), structured or not, so a rerun can answer it.

Every sample says why it ended (``Completion.finish_reason``: ``"stop"`` for the end-of-turn token or a
stop string, ``"length"`` when it was cut at ``max_new_tokens``), so a stage never pairs a cut-off
answer unknowingly. Sample ``j`` of a prompt is drawn with the seed ``sample_seed(sampling.seed, prompt,
j)``: the same prompt gets the same samples whatever the batch size, partitioning, Ray replica or
backend that serves it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import xxhash
from pydantic import BaseModel

from pipeline.config import Sampling

ChatPrompt = list[dict[str, str]]


@dataclass(frozen=True)
class LogProb:
    """Sum of the response tokens' log-probabilities given the templated prompt, and their count."""

    logprob: float
    n_tokens: int

    @property
    def mean(self) -> float:
        return self.logprob / self.n_tokens if self.n_tokens else 0.0


@dataclass(frozen=True)
class Completion:
    """One sampled answer and why decoding stopped: ``stop`` (end of turn or a stop string) or
    ``length`` (cut at ``max_new_tokens``: the answer is unfinished)."""

    text: str
    finish_reason: Literal["stop", "length"] = "stop"

    @property
    def cut_off(self) -> bool:
        return self.finish_reason == "length"


def sample_seed(seed: int, prompt: ChatPrompt, index: int, attempt: int = 0) -> int:
    """The seed of sample ``index`` of ``prompt`` (63 bits): a stable hash of the sampling seed, the
    prompt's messages, the sample index and the retry attempt, so a sample never depends on which
    other prompts shared its batch.

    >>> sample_seed(0, [{"role": "user", "content": "hi"}], 1) == sample_seed(0, [{"role": "user", "content": "hi"}], 1)
    True
    >>> sample_seed(0, [{"role": "user", "content": "hi"}], 0) != sample_seed(0, [{"role": "user", "content": "hi"}], 1)
    True
    """
    key = json.dumps([seed, index, attempt, prompt], ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return xxhash.xxh3_64_intdigest(key.encode("utf-8", "surrogatepass")) >> 1


class FailedValue(float):
    """NaN in place of a ``choose`` probability or a ``logprobs`` sum the engine could not compute;
    ``error`` says why in one line (``getattr(p, "error", None)`` on any float).

    >>> p = FailedValue("request refused: HTTP 400: filtered")
    >>> math.isnan(p), p.error
    (True, 'request refused: HTTP 400: filtered')
    """

    error: str

    def __new__(cls, error: str) -> FailedValue:
        value = super().__new__(cls, math.nan)
        value.error = error
        return value


def first_error(values: Sequence[Any]) -> str | None:
    """The ``error`` of the first of ``values`` that carries one (a ``FailedValue`` in place of a probability
    or a log-probability, a ``GenerationFailure``): why the engine gave no answer to that prompt; else None.

    >>> first_error([0.2, 0.8]), first_error([FailedValue("request refused: HTTP 400"), FailedValue("x")])
    (None, 'request refused: HTTP 400')
    """
    return next((e for v in values if isinstance(e := getattr(v, "error", None), str)), None)


@dataclass(frozen=True)
class GenerationFailure:
    """Structured output that failed its schema after every retry."""

    error: str
    raw: str
    attempts: int


def sample_fields(sample: Completion | GenerationFailure) -> tuple[str, str]:
    """``(text, finish_reason)`` of a plain sample; one the engine could not produce (a request the server
    refused comes back as a ``GenerationFailure``) is ``("", "failed")``, for the stage to drop and count.

    >>> sample_fields(Completion("hi", "length")), sample_fields(GenerationFailure("refused", "", 1))
    (('hi', 'length'), ('', 'failed'))
    """
    if isinstance(sample, GenerationFailure):
        return "", "failed"
    return sample.text, sample.finish_reason


@runtime_checkable
class Engine(Protocol):
    name: str  # the model id or path, recorded in lineage

    def generate(
        self,
        prompts: list[ChatPrompt],
        n: int = 1,
        sampling: Sampling | None = None,
        schema: type[BaseModel] | None = None,
    ) -> list[list]: ...  # Completion per sample; with a schema, the model or a GenerationFailure

    def logprobs(self, prompts: list[ChatPrompt], responses: list[str]) -> list[LogProb]: ...

    def choose(self, prompts: list[ChatPrompt], options: list[str]) -> list[list[float]]: ...
