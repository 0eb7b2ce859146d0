"""The ``vllm`` engine: offline ``vllm.LLM`` on GPUs, same contract as the transformers engine.

    llm:
      backend: vllm
      model: meta-llama/Llama-3.1-8B-Instruct
      dtype: bfloat16
      tensor_parallel_size: 1

Needs the ``vllm`` extra (``pip install -e ".[vllm]"``) and a GPU; ``vllm`` is imported only when
this engine is built. The engine is thin: templating and the prompt/response boundary come from
``pipeline.llm.chat`` (the same token ids the transformers engine uses, sent as
``TokensPrompt``), validation and retries from ``pipeline.llm.structured``, and every vLLM request
is built by a pure function below that the contract tests check against the real package:

- ``llm_kwargs``: ``vllm.LLM(model, revision, tokenizer_revision, dtype, tensor_parallel_size, max_model_len,
  gpu_memory_utilization, seed, enable_prefix_caching)``; the revision is the commit the role's weights
  identity names (``pipeline.llm.identity.load_revision``), for the weights and the tokenizer alike.
- ``build_sample_requests``: one request per sample (``SamplingParams(n=1, seed=...)``), seeded with
  ``sample_seed(sampling.seed, prompt, j)`` (``pipeline.llm.base``), so sample ``j`` of a prompt is the
  same whatever else is in the call, whatever the batch size or replica; the n requests of a prompt
  share its prefill through prefix caching (``enable_prefix_caching``). Greedy calls (temperature 0)
  send one request per prompt and copy it. ``build_sampling_params`` makes each request's params, with
  ``structured_outputs=StructuredOutputsParams(json=...)`` for a schema (the API since vLLM 0.10;
  ``GuidedDecodingParams`` / ``guided_decoding=`` before, removed in 0.12; the old name is used only
  when the new one is missing).
- ``build_logprob_requests``: templated prompt + response token ids with ``prompt_logprobs=0``
  and ``max_tokens=1``: vLLM returns, per prompt position, the log-probability of the token that is
  there; ``sum_prompt_logprobs`` adds the response span. ``choose`` scores each option the same way.

vLLM constrains with xgrammar too, but without the transformers engine's closing policy; the
token budget of a structured call is raised to four times the schema's shortest completion, and
output cut at ``max_tokens`` is retried like invalid output.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel

from pipeline.config import LLM, Sampling
from pipeline.errors import ModelLoadError
from pipeline.llm.base import ChatPrompt, Completion, LogProb, sample_seed
from pipeline.llm.chat import ChatCodec
from pipeline.llm.identity import load_revision
from pipeline.llm.structured import ClosingPolicy, generate_validated, shortest_completion
from pipeline.llm.tiny import resolve_model

MISSING = 'the vllm backend needs the vllm package: pip install -e ".[vllm]" (on a machine with a GPU)'


class MissingVLLM(ImportError, ModelLoadError):
    """``llm.backend: vllm`` without the vllm package (a one-line error on the command line)."""


def import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise MissingVLLM(f"{MISSING} ({e})") from e
    return vllm


# --- pure request builders -----------------------------------------------------------------------


def llm_kwargs(cfg: LLM, model_path: str, revision: str | None = None) -> dict[str, Any]:
    """Arguments for ``vllm.LLM``: ``revision`` (a Hub commit, branch or tag; None: the default branch) for
    the weights, the config and the tokenizer."""
    return {
        "model": model_path,
        "tokenizer": model_path,
        "revision": revision,
        "tokenizer_revision": revision,
        "dtype": cfg.dtype,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "max_model_len": cfg.max_model_len,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "seed": cfg.sampling.seed,
        "enable_prefix_caching": cfg.enable_prefix_caching,
    }


def structured_outputs_params(schema: type[BaseModel]):
    """``(field name, params)`` constraining output to ``schema``'s JSON schema (compact JSON)."""
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:  # vLLM < 0.10
        from vllm.sampling_params import GuidedDecodingParams

        return "guided_decoding", GuidedDecodingParams(json=schema.model_json_schema())
    params = StructuredOutputsParams(
        json=schema.model_json_schema(), disable_any_whitespace=True, disable_additional_properties=True
    )
    return "structured_outputs", params


def build_sampling_params(s: Sampling, n: int, seed: int, schema: type[BaseModel] | None = None,
                          max_tokens: int | None = None):
    """``SamplingParams`` for ``n`` samples of one prompt. Stop strings are not returned (as in the
    transformers engine); structured calls ignore them, as they would cut the JSON."""
    vllm = import_vllm()
    kw: dict[str, Any] = {
        "n": n,
        "temperature": s.temperature,
        "top_p": s.top_p if s.temperature > 0 else 1.0,
        "max_tokens": max_tokens or s.max_new_tokens,
        "seed": seed,
        "stop": list(s.stop) if (s.stop and schema is None) else None,
        "include_stop_str_in_output": False,
    }
    if schema is not None:
        field, params = structured_outputs_params(schema)
        kw[field] = params
    return vllm.SamplingParams(**kw)


def build_sample_requests(prompts: list[ChatPrompt], token_ids: list[list[int]], indices: list[list[int]],
                          s: Sampling, attempt: int = 0, schema: type[BaseModel] | None = None,
                          max_tokens: int | None = None):
    """``(TokensPrompt, SamplingParams)`` lists, one request per sample: sample ``j`` of ``prompts[i]``
    gets ``n=1`` and the seed ``sample_seed(s.seed, prompts[i], j, attempt)``; with temperature 0, one
    request per prompt (every sample is the same greedy answer)."""
    vllm = import_vllm()
    requests, params = [], []
    for messages, ids, samples in zip(prompts, token_ids, indices, strict=True):
        for j in samples[:1] if s.temperature == 0 else samples:
            requests.append(vllm.TokensPrompt(prompt_token_ids=list(ids)))
            params.append(build_sampling_params(s, 1, sample_seed(s.seed, messages, j, attempt), schema, max_tokens))
    return requests, params


def build_logprob_requests(spans: list[tuple[list[int], int, int]]):
    """One scoring request per span: prompt = ids up to the span's end, one prompt log-prob each."""
    vllm = import_vllm()
    prompts = [vllm.TokensPrompt(prompt_token_ids=list(ids[:end])) for ids, _, end in spans]
    params = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
    return prompts, params


def sum_prompt_logprobs(prompt_logprobs, ids: list[int], start: int, end: int) -> LogProb:
    """Sum the log-probabilities vLLM reports for ``ids[start:end]`` (entry ``t`` holds the
    distribution of position ``t`` given ``ids[:t]``, keyed by token id; entry 0 is None)."""
    total = 0.0
    for t in range(start, end):
        entry = prompt_logprobs[t]
        if entry is None or ids[t] not in entry:
            raise ValueError(f"vLLM returned no log-probability for prompt position {t} (token {ids[t]})")
        total += entry[ids[t]].logprob
    return LogProb(total, end - start)


def softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    z = sum(e)
    return [v / z for v in e]


# --- engine --------------------------------------------------------------------------------------


class VLLMEngine:
    def __init__(self, cfg: LLM):
        from transformers import AutoTokenizer

        vllm = import_vllm()
        self.cfg = cfg
        self.name = cfg.model
        self.revision = load_revision(cfg)  # a Hub id's exact commit (pipeline/llm/identity.py); else None
        path = self.path = resolve_model(cfg.model, hub=self.revision == cfg.revision, revision=self.revision)
        self.llm = vllm.LLM(**llm_kwargs(cfg, path, self.revision))
        self.tokenizer = AutoTokenizer.from_pretrained(path, revision=self.revision)
        self.codec = ChatCodec(self.tokenizer, name=cfg.model, max_len=cfg.max_model_len)
        self._shortest: dict[str, int] = {}

    def _run(self, prompts, params):
        return self.llm.generate(prompts, params, use_tqdm=False)

    def generate(self, prompts: list[ChatPrompt], n: int = 1, sampling: Sampling | None = None,
                 schema: type[BaseModel] | None = None) -> list[list]:
        s = sampling or self.cfg.sampling
        if schema is None:
            return [[Completion(text, "length" if cut else "stop") for text, cut in row]
                    for row in self._sample(prompts, [list(range(n))] * len(prompts), s, None, 0)]
        budget = max(s.max_new_tokens, 4 * self._shortest_completion(schema) + 16)

        def sample(ps, indices, attempt):
            return self._sample(ps, indices, s, schema, attempt, budget)

        return generate_validated(sample, prompts, n, schema, self.cfg.structured_retries)

    def _sample(self, prompts, indices, s, schema, attempt, max_tokens=None):
        """Per prompt, one ``(text, truncated)`` per sample index."""
        ids = [self.codec.prompt_ids(p, judge=schema is not None) for p in prompts]
        requests, params = build_sample_requests(prompts, ids, indices, s, attempt, schema, max_tokens)
        done = iter([(o.text, o.finish_reason == "length") for out in self._run(requests, params) for o in out.outputs])
        if s.temperature == 0:
            return [[first] * len(samples) for first, samples in zip(done, indices, strict=True)]
        return [[next(done) for _ in samples] for samples in indices]

    def _shortest_completion(self, schema: type[BaseModel]) -> int:
        import json

        import xgrammar as xgr
        from transformers import AutoConfig

        key = json.dumps(schema.model_json_schema(), sort_keys=True)
        if key not in self._shortest:
            config = AutoConfig.from_pretrained(self.path, revision=self.revision)
            # The model's vocabulary can be padded beyond the tokenizer's.
            vocab = max(len(self.tokenizer), getattr(config.get_text_config(), "vocab_size", 0) or 0)
            eos = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
            info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=vocab, stop_token_ids=eos or None)
            compiled = xgr.GrammarCompiler(info).compile_json_schema(key, any_whitespace=False)
            self._shortest[key] = shortest_completion(compiled, vocab, ClosingPolicy(self.tokenizer, vocab, eos))
        return self._shortest[key]

    def logprobs(self, prompts: list[ChatPrompt], responses: list[str]) -> list[LogProb]:
        if len(prompts) != len(responses):
            raise ValueError(f"logprobs: {len(prompts)} prompts but {len(responses)} responses")
        spans = [self.codec.response_span(p, r) for p, r in zip(prompts, responses, strict=True)]
        return self._score(spans)

    def _score(self, spans):
        requests, params = build_logprob_requests(spans)
        outs = self._run(requests, params)
        return [sum_prompt_logprobs(o.prompt_logprobs, *span) for o, span in zip(outs, spans, strict=True)]

    def choose(self, prompts: list[ChatPrompt], options: list[str]) -> list[list[float]]:
        if not options:
            raise ValueError("choose: at least one option is needed")
        k = len(options)
        scores = self._score([span for p in prompts for span in self.codec.response_spans(p, options, judge=True)])
        return [softmax([scores[i * k + j].logprob for j in range(k)]) for i in range(len(prompts))]
