"""The engine interface every method codes against: three batched operations.

    engine.generate(prompts, n=4, sampling=s)              -> list[list[str]]
    engine.generate(prompts, n=1, sampling=s, schema=M)    -> list[list[M | GenerationFailure]]
    engine.logprobs(prompts, responses)                    -> list[LogProb]   (sum, n_tokens)
    engine.choose(prompts, ["1", "2", "3", "4", "5"])      -> list[list[float]]  (sums to 1)

A prompt is a list of ``{"role", "content"}`` dicts, rendered with the model's chat template.
Calls take whole batches; the engine schedules them. Nothing here raises mid-batch for a bad
model output: structured generation that stays invalid after retries comes back as a
``GenerationFailure`` for the caller to record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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
class GenerationFailure:
    """Structured output that failed its schema after every retry."""

    error: str
    raw: str
    attempts: int


@runtime_checkable
class Engine(Protocol):
    name: str  # the model id or path, recorded in lineage

    def generate(
        self,
        prompts: list[ChatPrompt],
        n: int = 1,
        sampling: Sampling | None = None,
        schema: type[BaseModel] | None = None,
    ) -> list[list]: ...

    def logprobs(self, prompts: list[ChatPrompt], responses: list[str]) -> list[LogProb]: ...

    def choose(self, prompts: list[ChatPrompt], options: list[str]) -> list[list[float]]: ...
