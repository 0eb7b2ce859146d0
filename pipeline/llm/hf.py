"""The ``transformers`` engine: CPU or GPU, batched, seeded per sample, grammar-constrained when asked.

    >>> engine = TransformersEngine(llm_cfg)                                # doctest: +SKIP
    >>> engine.generate([[{"role": "user", "content": "Hi"}]], n=4)         # 4 samples, one prefill  # doctest: +SKIP
    >>> engine.logprobs(prompts, responses)                                 # [LogProb(logprob, n_tokens)]  # doctest: +SKIP
    >>> engine.choose(prompts, ["SAT", "DSAT"])                             # [[p_sat, p_dsat], ...]  # doctest: +SKIP

Batching: every call sorts its rows by length and cuts them into batches of at most
``llm.batch_tokens`` padded tokens (generation: also at most ``llm.batch_size`` prompts), so rows of
similar lengths share a forward pass and little is spent on padding; results come back in input order.

Generation runs ``pipeline.llm.decode``: each prompt is prefilled once for its ``n`` samples, and sample
``j`` of a prompt is drawn with its own random stream seeded by ``sample_seed(sampling.seed, prompt, j)``,
so it never depends on the batch; the caller's random state is untouched. Stop strings end a sample and
are not part of it (as in vLLM); ``finish_reason`` says whether it ended or was cut at ``max_new_tokens``.

Scoring (``logprobs``) and ``choose`` use the exact boundary from ``pipeline.llm.chat`` and compute
vocabulary logits only where a scored token is predicted: the decoder's hidden states at those positions
go through the output layer in one projection (for architectures whose logits are exactly that layer's
output, checked when the engine is built; others get the model's own logits). ``choose`` encodes each
prompt once and scores all its options on the prompt's KV cache (two forward passes per batch).

Shared prompt prefix (``choose`` and ``generate``): judge and detector prompts start with the same template
text, so when a batch's prompts share at least ``decode.MIN_SHARED_PREFIX`` tokens (and two rows or more),
that prefix runs once with batch size 1, its KV cache is repeated for the rows and only the rest of each
prompt is prefilled (``decode.prefill``): the same computation up to float rounding
(tests/test_prefix_cache.py). It needs a cache that keeps every position (``decode.expandable``, probed
when the engine is built: ``prefix_reuse``); others take the full prefill.

CPU threads: ``llm.cpu_threads`` (``auto`` measures at start, see ``pipeline.llm.cpu``).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import torch
from pydantic import BaseModel
from safetensors import SafetensorError

from pipeline.config import LLM, Sampling
from pipeline.errors import MODEL_KEY, ModelLoadError, one_line
from pipeline.llm.base import ChatPrompt, Completion, LogProb, sample_seed
from pipeline.llm.chat import ChatCodec
from pipeline.llm.cpu import measure, threads
from pipeline.llm.decode import (
    GrammarProcessor,
    RowSampler,
    StopStrings,
    decode,
    expandable,
    greedy,
    prefill,
    right_pad,
)
from pipeline.llm.identity import load_revision
from pipeline.llm.structured import ClosingPolicy, generate_validated, schema_json, shortest_completion
from pipeline.llm.tiny import MODEL_CHOICES, model_path_problem, resolve_model

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Config keys of architectures whose logits are not the plain output layer (soft-capping, scaling).
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def budget_batches(lengths: list[int], tokens: int, rows: int | None = None) -> list[list[int]]:
    """Indices sorted by length, cut so that a batch's rows x longest row stays within ``tokens``
    (and its row count within ``rows``); a longer row gets a batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and ((len(cur) + 1) * lengths[i] > tokens or (rows is not None and len(cur) >= rows)):
            out.append(cur)
            cur = []
        cur.append(i)
    return out + ([cur] if cur else [])


class TransformersEngine:
    def __init__(self, cfg: LLM):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg = cfg
        self.name = cfg.model
        # A Hub id's exact commit, the one its weights identity names (pipeline/llm/identity.py); else None.
        self.revision = rev = load_revision(cfg)
        path = resolve_model(cfg.model, hub=rev == cfg.revision, revision=rev)  # resolved: the Hub has it
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if cfg.dtype == "auto":
            # The checkpoint's own dtype on GPU; float32 on CPU, where half precision is slow or missing.
            dtype = "auto" if self.device.type == "cuda" else torch.float32
        else:
            dtype = _DTYPES[cfg.dtype]
        if why := model_path_problem(path):
            raise ModelLoadError(f"model {cfg.model!r}: {why}; set {MODEL_KEY} to {MODEL_CHOICES}")
        if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
            raise ModelLoadError(f"model {cfg.model!r}: the folder holds no config.json, so it is not a "
                                 f"Hugging Face model folder; set {MODEL_KEY} to "
                                 f"{MODEL_CHOICES}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, revision=rev)
        except (OSError, ValueError) as e:  # not on the Hub nor in the offline cache, no tokenizer: one line
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(f"model {cfg.model!r} could not be loaded ({why}); set {MODEL_KEY} to "
                                 f"{MODEL_CHOICES}") from e
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        try:
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, revision=rev).to(self.device).eval()
        except (OSError, ValueError, SafetensorError) as e:  # weights cut short, none, an architecture it cannot run
            raise ModelLoadError(f"model {cfg.model!r}: its weights could not be loaded ({one_line(e, 200)}); copy or "
                                 f"download the model again, or set {MODEL_KEY} to {MODEL_CHOICES}") from e
        self.codec = ChatCodec(self.tokenizer, name=cfg.model, max_len=cfg.max_model_len)
        self.eos_ids = self._eos_ids()
        self._grammars: dict[str, object] = {}
        self._xgr_info = None
        self._policy: ClosingPolicy | None = None
        params = inspect.signature(self.model.forward).parameters
        # transformers >= 5.2x calls the KV cache `cache`; earlier versions `past_key_values`.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        with threads(1):  # a few tokens; more threads could only stall on a busy machine
            self._split = self._head_is_linear()
            self.prefix_reuse = self._cache_expandable()
        self._measured: dict[str, int] = {}  # shared by the copies get_engine makes for other roles
        if self.device.type == "cpu" and cfg.cpu_threads == "auto":
            self._measured.update({k: v for k, v in measure(self.model, self._cache_arg).items() if k != "seconds"})

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    # --- threads and the model's two halves -----------------------------------------------------

    @property
    def cpu_threads(self) -> dict[str, int]:
        """Threads per operation kind (``decode``, ``prefill``) on CPU; empty on GPU."""
        if self.device.type != "cpu":
            return {}
        if isinstance(self.cfg.cpu_threads, int):
            return {"decode": self.cfg.cpu_threads, "prefill": self.cfg.cpu_threads}
        if not self._measured:
            self._measured.update({k: v for k, v in measure(self.model, self._cache_arg).items() if k != "seconds"})
        return dict(self._measured)

    def _threads(self, kind: str):
        return threads(self.cpu_threads.get(kind))

    def _head_is_linear(self) -> bool:
        """Whether logits are exactly the output layer applied to the decoder's hidden states."""
        config = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") else self.model.config
        if any(getattr(config, key, None) not in (None, 1, 1.0) for key in _LOGIT_TRANSFORMS):
            return False
        try:
            self._decoder, self._out = self.model.get_decoder(), self.model.get_output_embeddings()
        except (AttributeError, NotImplementedError):
            return False
        if self._decoder is None or self._out is None:
            return False
        probe = torch.arange(3, 11, device=self.device).unsqueeze(0) % config.vocab_size
        with torch.inference_mode():
            want = self.model(input_ids=probe).logits.float()
            got = self._out(self._decoder(input_ids=probe).last_hidden_state).float()
        tol = 1e-4 if self.model.dtype == torch.float32 else 2e-2
        return bool(torch.allclose(got, want, rtol=tol, atol=tol * float(want.abs().max())))

    def _cache_expandable(self) -> bool:
        """Whether the model's KV cache can hold a shared prefix repeated for a batch (``decode.expandable``)."""
        probe = torch.arange(3, 7, device=self.device).unsqueeze(0) % self.model.config.get_text_config().vocab_size
        with torch.inference_mode():
            cache = self._body(True, input_ids=probe, use_cache=True)[1]
        if cache is None:  # an encoder (BERT) under a language-model head: nothing to generate with (was a KeyError)
            raise ModelLoadError(f"model {self.name!r}: a {type(self.model).__name__}, which keeps no KV cache, so not "
                                 f"a decoder (chat) model; set {MODEL_KEY} to an instruct/chat model")
        return expandable(cache)

    def _body(self, last_only: bool = False, **kw) -> tuple[torch.Tensor, object]:
        """The decoder's hidden states (or the model's logits, when the output layer cannot be split
        off: then only the last position's with ``last_only``) and the KV cache."""
        out = self._decoder(**kw) if self._split else self.model(**kw, **(self._keep if last_only else {}))
        return (out.last_hidden_state if self._split else out.logits), out.get(self._cache_arg)

    def _logprobs_at(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(target) at gathered positions (N, H) -> (N,), float32, in chunks of bounded memory."""
        vocab = self.model.config.get_text_config().vocab_size if hasattr(self.model.config, "get_text_config") \
            else self.model.config.vocab_size
        step = max(64, (1 << 26) // vocab)
        out = []
        for a in range(0, states.shape[0], step):
            logits = (self._out(states[a:a + step]) if self._split else states[a:a + step]).float()
            out.append(torch.log_softmax(logits, -1).gather(-1, targets[a:a + step, None]).squeeze(-1))
        return torch.cat(out) if out else torch.zeros(0, device=states.device)

    # --- generate --------------------------------------------------------------------------------

    def generate(
        self,
        prompts: list[ChatPrompt],
        n: int = 1,
        sampling: Sampling | None = None,
        schema: type[BaseModel] | None = None,
    ) -> list[list]:
        s = sampling or self.cfg.sampling
        if schema is None:
            rows = self._sample(prompts, [list(range(n))] * len(prompts), s)
            return [[Completion(text, "length" if cut else "stop") for text, cut in row] for row in rows]
        shortest = self._grammar(schema)[1]
        budget = s.model_copy(update={"max_new_tokens": max(s.max_new_tokens, 4 * shortest + 16)})

        def sample(ps, indices, attempt):
            return self._sample(ps, indices, budget, schema=schema, attempt=attempt)

        return generate_validated(sample, prompts, n, schema, self.cfg.structured_retries)

    def _sample(self, prompts, indices: list[list[int]], s: Sampling, schema=None, attempt: int = 0):
        """Per prompt, one ``(text, truncated)`` per sample index (every prompt has as many)."""
        if not prompts:
            return []
        k = len(indices[0])
        assert all(len(ix) == k for ix in indices), "every prompt asks for as many samples"
        ids = [self.codec.prompt_ids(p, judge=schema is not None) for p in prompts]
        width = 1 if s.temperature == 0 else k  # greedy: decode once, copy
        stop = None if schema is not None else StopStrings(self.tokenizer, list(s.stop))
        out: list = [None] * len(prompts)
        with torch.inference_mode(), self._threads("decode"):
            for idx in budget_batches([len(x) for x in ids], self.cfg.batch_tokens, self.cfg.batch_size):
                if s.temperature == 0:
                    pick = greedy
                else:
                    seeds = [sample_seed(s.seed, prompts[i], j, attempt) for i in idx for j in indices[i]]
                    pick = RowSampler(seeds, s.max_new_tokens, s.temperature, s.top_p)
                processor = None if schema is None else self._grammar_processor(
                    schema, len(idx) * width, s.max_new_tokens, attempt)
                rows = decode(self.model, [ids[i] for i in idx], width, pick, s.max_new_tokens, self.eos_ids,
                              self.tokenizer.pad_token_id, self._cache_arg, stop=stop, processor=processor,
                              keep=self._keep, prefill_threads=self.cpu_threads.get("prefill"),
                              share_prefix=self.prefix_reuse)
                for i, samples in zip(idx, rows, strict=True):
                    done = [self._finish(toks, ended, s) for toks, ended in samples]
                    out[i] = done * k if width == 1 else done
        return out

    def _finish(self, tokens: list[int], ended: bool, s: Sampling) -> tuple[str, bool]:
        """Decode, cut at the first stop string; truncated = the budget ran out before an end."""
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cuts = [text.find(x) for x in s.stop if x and x in text]
        if cuts:
            text, ended = text[: min(cuts)], True
        return text, not ended and len(tokens) >= s.max_new_tokens

    # --- grammar ---------------------------------------------------------------------------------

    def _grammar(self, schema: type[BaseModel]):
        """The compiled grammar for ``schema`` and its shortest completion in tokens (cached)."""
        import xgrammar as xgr

        vocab = self.model.config.vocab_size
        if self._xgr_info is None:
            self._xgr_info = xgr.TokenizerInfo.from_huggingface(
                self.tokenizer, vocab_size=vocab, stop_token_ids=self.eos_ids
            )
            self._policy = ClosingPolicy(self.tokenizer, vocab, self.eos_ids)
        key = schema_json(schema)
        if key not in self._grammars:
            compiler = xgr.GrammarCompiler(self._xgr_info)
            # Compact JSON: free whitespace lets a weak model emit blanks until the budget runs out.
            compiled = compiler.compile_json_schema(key, any_whitespace=False, strict_mode=True)
            shortest = shortest_completion(compiled, vocab, self._policy)
            self._grammars[key] = (compiled, shortest)
        return self._grammars[key]

    def _grammar_processor(self, schema: type[BaseModel], rows: int, budget: int, attempt: int):
        compiled, shortest = self._grammar(schema)
        window = min(budget, (2 * shortest + 8) << attempt)
        return GrammarProcessor(compiled, rows, self.model.config.vocab_size, self._policy, budget, window)

    # --- scoring ---------------------------------------------------------------------------------

    def logprobs(self, prompts: list[ChatPrompt], responses: list[str]) -> list[LogProb]:
        if len(prompts) != len(responses):
            raise ValueError(f"logprobs: {len(prompts)} prompts but {len(responses)} responses")
        spans = [self.codec.response_span(p, r) for p, r in zip(prompts, responses, strict=True)]
        out: list[LogProb | None] = [None] * len(spans)
        with torch.inference_mode(), self._threads("prefill"):
            for idx in budget_batches([spans[i][2] for i in range(len(spans))], self.cfg.batch_tokens):
                sums = self._score_batch([spans[i] for i in idx])
                for i, v in zip(idx, sums, strict=True):
                    out[i] = LogProb(v, spans[i][2] - spans[i][1])
        return out  # type: ignore[return-value]

    def _score_batch(self, spans: list[tuple[list[int], int, int]]) -> list[float]:
        """Teacher-forced sum of log p(ids[t] | ids[:t]) over each span's [start, end), right-padded."""
        rows = [ids[:end] for ids, _, end in spans]
        ids, mask = right_pad(rows, self.tokenizer.pad_token_id, self.device)
        states, _ = self._body(input_ids=ids, attention_mask=mask)
        row = torch.cat([torch.full((end - start,), k, dtype=torch.long) for k, (_, start, end) in enumerate(spans)])
        pos = torch.cat([torch.arange(start - 1, end - 1) for _, start, end in spans])
        row, pos = row.to(self.device), pos.to(self.device)
        lp = self._logprobs_at(states[row, pos], ids[row, pos + 1])
        return torch.zeros(len(spans), dtype=torch.float64, device=self.device).index_add_(0, row, lp.double()).tolist()

    def choose(self, prompts: list[ChatPrompt], options: list[str]) -> list[list[float]]:
        if not options:
            raise ValueError("choose: at least one option is needed")
        k = len(options)
        spans = [self.codec.response_spans(p, options, judge=True) for p in prompts]
        out: list = [None] * len(prompts)
        with torch.inference_mode(), self._threads("prefill"):
            for idx in budget_batches([spans[i][0][1] for i in range(len(prompts))], self.cfg.batch_tokens):
                lp = self._score_options([spans[i] for i in idx], k)
                for i, row in zip(idx, torch.softmax(lp, dim=1).tolist(), strict=True):
                    out[i] = row
        return out

    def _score_options(self, spans: list[list[tuple[list[int], int, int]]], k: int) -> torch.Tensor:
        """Log-probabilities of k answers per prompt (float64, rows x k), the prompt encoded once: one
        forward pass over the prompts (keeping their KV cache; two with a shared prefix, ``decode.prefill``),
        one over all the answers."""
        states, cache, mask, pos = prefill(lambda **kw: self._body(True, **kw), [o[0][0][: o[0][1]] for o in spans],
                                           self.tokenizer.pad_token_id, self.device, self._cache_arg, self.prefix_reuse)
        answers = [a[start:end] for opts in spans for a, start, end in opts]
        head = self._logprobs_at(states[:, -1].repeat_interleave(k, 0),
                                 torch.tensor([a[0] for a in answers], device=self.device))
        cache.batch_repeat_interleave(k)
        a_ids, a_mask = right_pad(answers, self.tokenizer.pad_token_id, self.device)
        width = a_ids.shape[1]
        total = head.double()
        if width > 1:
            full_mask = torch.cat([mask.repeat_interleave(k, dim=0), a_mask], dim=1)
            a_pos = pos[:, -1:].repeat_interleave(k, dim=0) + 1 + torch.arange(width, device=self.device)
            states, _ = self._body(input_ids=a_ids, attention_mask=full_mask, position_ids=a_pos,
                                   **{self._cache_arg: cache})
            # The first answer token is predicted by the prompt's last position, the rest by the answer.
            row = torch.cat([torch.full((len(a) - 1,), r, dtype=torch.long) for r, a in enumerate(answers)]).to(self.device)
            at = torch.cat([torch.arange(len(a) - 1) for a in answers]).to(self.device)
            lp = self._logprobs_at(states[row, at], a_ids[row, at + 1])
            total = total.index_add(0, row, lp.double())
        return total.view(len(spans), k)
