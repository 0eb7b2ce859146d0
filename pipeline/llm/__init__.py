"""Model engines behind one batched interface; see ``pipeline.llm.base`` for the contract.

    >>> from pipeline.llm import get_engine
    >>> engine = get_engine(params.llm)            # doctest: +SKIP  (built once per process)
    >>> engine.generate(prompts, n=2)              # doctest: +SKIP

``get_engine`` builds one engine per process (or Ray actor) and resolved config and reuses it:
``backend: transformers`` -> ``TransformersEngine`` (CPU or GPU), ``backend: vllm`` ->
``VLLMEngine`` (needs ``pip install -e ".[vllm]"`` and a GPU). ``model: tiny`` is the built-in
offline model (``pipeline.llm.tiny``).
"""

from __future__ import annotations

from pipeline.config import LLM
from pipeline.llm.base import ChatPrompt, Engine, GenerationFailure, LogProb
from pipeline.llm.tiny import resolve_model

__all__ = ["ChatPrompt", "Engine", "GenerationFailure", "LogProb", "get_engine", "resolve_model"]

_ENGINES: dict[str, Engine] = {}


def get_engine(cfg: LLM) -> Engine:
    """The engine for ``cfg``, built on first use in this process and cached."""
    key = cfg.model_dump_json()
    if key not in _ENGINES:
        if cfg.backend == "vllm":
            from pipeline.llm.vllm_engine import VLLMEngine

            _ENGINES[key] = VLLMEngine(cfg)
        else:
            from pipeline.llm.hf import TransformersEngine

            _ENGINES[key] = TransformersEngine(cfg)
    return _ENGINES[key]
