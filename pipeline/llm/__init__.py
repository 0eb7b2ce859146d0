"""Model engines behind one batched interface; see ``pipeline.llm.base`` for the contract.

    >>> from pipeline.llm import get_engine
    >>> engine = get_engine(params.llm)            # built once per process  # doctest: +SKIP
    >>> engine.generate(prompts, n=2)              # doctest: +SKIP

``get_engine`` builds one engine per process (or Ray actor) and resolved config and reuses it;
configs that differ only in how calls are made (sampling defaults, batch size, retries) share the
loaded model, so two roles on one model never load it twice:
``backend: transformers`` -> ``TransformersEngine`` (CPU or GPU), ``backend: vllm`` ->
``VLLMEngine`` (needs ``pip install -e ".[vllm]"`` and a GPU), ``backend: openai`` -> ``OpenAIEngine``
(an OpenAI-compatible server: a ``vllm serve`` pool or a hosted API; nothing is loaded but, for
scoring, the tokenizer). ``model: tiny`` is the built-in offline model (``pipeline.llm.tiny``);
``model: smollm2`` the packaged real one, SmolLM2-135M-Instruct (``pipeline.llm.smollm2``).
"""

from __future__ import annotations

import copy
import json

from pipeline.config import LLM
from pipeline.llm.base import ChatPrompt, Completion, Engine, GenerationFailure, LogProb, sample_seed
from pipeline.llm.tiny import resolve_model

__all__ = ["ChatPrompt", "Completion", "Engine", "GenerationFailure", "LogProb", "get_engine", "resolve_model",
           "sample_seed"]

_ENGINES: dict[str, Engine] = {}
_LOADED: dict[str, Engine] = {}
# What loading a model depends on; the other LLM fields only shape calls.
_LOAD_FIELDS = ("backend", "model", "revision", "dtype", "tensor_parallel_size", "max_model_len",
                "gpu_memory_utilization", "enable_prefix_caching")


def get_engine(cfg: LLM) -> Engine:
    """The engine for ``cfg``, built on first use in this process and cached (per role: the params keys that set
    ``cfg`` are part of it, so its messages name them; roles alike share the loaded model)."""
    key = json.dumps(cfg.shipped(), sort_keys=True)
    if key in _ENGINES:
        return _ENGINES[key]
    if cfg.backend == "openai":  # a client: every config gets its own (its own server, cost guard)
        from pipeline.llm.openai_engine import OpenAIEngine

        engine = _ENGINES[key] = OpenAIEngine(cfg)
        return engine
    load_key = cfg.model_dump_json(include=set(_LOAD_FIELDS))
    if load_key in _LOADED:
        engine = copy.copy(_LOADED[load_key])  # shares the model, tokenizer and grammar caches
        engine.cfg = cfg
    elif cfg.backend == "vllm":
        from pipeline.llm.vllm_engine import VLLMEngine

        engine = _LOADED[load_key] = VLLMEngine(cfg)
    else:
        from pipeline.llm.hf import TransformersEngine

        engine = _LOADED[load_key] = TransformersEngine(cfg)
    _ENGINES[key] = engine
    return engine
