"""The ``transformers`` engine: CPU or GPU, batched, seeded, grammar-constrained when asked.

    >>> engine = TransformersEngine(llm_cfg)                                # doctest: +SKIP
    >>> engine.generate([[{"role": "user", "content": "Hi"}]], n=4)         # 4 samples, one request
    >>> engine.logprobs(prompts, responses)                                 # [LogProb(logprob, n_tokens)]
    >>> engine.choose(prompts, ["SAT", "DSAT"])                             # [[p_sat, p_dsat], ...]

Batching: prompts are left-padded for generation (new tokens line up at the right) and right-padded
for scoring; attention masks hide the padding. ``n`` samples per prompt come from one
``model.generate`` call per batch (``num_return_sequences``), so each prompt is tokenised once.
Sampling is seeded per call (``sampling.seed``) in a forked RNG: the same call gives the same
samples, and the caller's random state is untouched. Stop strings end a sample and are not part of
it (as in vLLM). Scoring and ``choose`` use the exact boundary from ``pipeline.llm.chat``; scoring
computes vocabulary logits only where a scored token is predicted, and ``choose`` encodes each
prompt once and scores all its options on the prompt's KV cache (two forward passes per batch,
not one per option).
"""

from __future__ import annotations

import inspect
import logging
from contextlib import contextmanager

import torch
from pydantic import BaseModel

from pipeline.config import LLM, Sampling
from pipeline.llm.base import ChatPrompt, Completion, LogProb
from pipeline.llm.chat import ChatCodec
from pipeline.llm.structured import ClosingPolicy, generate_validated, schema_json, shortest_completion
from pipeline.llm.tiny import resolve_model

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TransformersEngine:
    def __init__(self, cfg: LLM):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg = cfg
        self.name = cfg.model
        path = resolve_model(cfg.model)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if cfg.dtype == "auto":
            # The checkpoint's own dtype on GPU; float32 on CPU, where half precision is slow or missing.
            dtype = "auto" if self.device.type == "cuda" else torch.float32
        else:
            dtype = _DTYPES[cfg.dtype]
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        self.codec = ChatCodec(self.tokenizer, name=cfg.model, max_len=cfg.max_model_len)
        self.eos_ids = self._eos_ids()
        self._grammars: dict[str, object] = {}
        self._xgr_info = None
        self._policy: ClosingPolicy | None = None
        self._single_thread = self.device.type == "cpu" and self.model.config.hidden_size <= 256
        params = inspect.signature(self.model.forward).parameters
        self._keeps_logits = "logits_to_keep" in params
        # transformers >= 5.2x calls the KV cache `cache`; earlier versions `past_key_values`.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

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
            return [[Completion(text, "length" if cut else "stop") for text, cut in row]
                    for row in self._sample(prompts, n, s)]
        retries = self.cfg.structured_retries

        shortest = self._grammar(schema)[1]
        budget = s.model_copy(update={"max_new_tokens": max(s.max_new_tokens, 4 * shortest + 16)})

        def sample(ps, k, attempt):
            return self._sample(ps, k, budget, schema=schema, attempt=attempt)

        return generate_validated(sample, prompts, n, schema, retries)

    @contextmanager
    def _seeded(self, seed: int):
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), self._threads():
            torch.manual_seed(seed)
            yield

    @contextmanager
    def _threads(self):
        """One CPU thread for the tiny model: its matrices are too small to split, and on a busy
        machine extra intra-op threads spin against each other (measured 20x slower on 2 loaded cores)."""
        if not self._single_thread:
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def _generation_config(self, s: Sampling, n: int, schema: bool):
        from transformers import GenerationConfig

        kw = dict(
            max_new_tokens=s.max_new_tokens,
            # Greedy decoding gives n identical samples: decode once, copy (see _sample).
            num_return_sequences=n if s.temperature > 0 else 1,
            eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            # Stop strings would cut JSON short; structured calls end when the grammar completes.
            stop_strings=(s.stop or None) if not schema else None,
        )
        if s.temperature > 0:
            kw.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=0)
        else:
            kw.update(do_sample=False)
        return GenerationConfig(**kw)

    def _sample(self, prompts, n, s: Sampling, schema=None, attempt: int = 0) -> list[list[tuple[str, bool]]]:
        """Per prompt, ``n`` (text, truncated) samples; one ``model.generate`` call per batch."""
        gen_cfg = self._generation_config(s, n, schema is not None)
        out: list[list[tuple[str, bool]]] = []
        # A retry must not repeat the failed sample: a different but fixed seed per attempt.
        with self._seeded(s.seed + 1_000_003 * attempt), torch.inference_mode():
            for start in range(0, len(prompts), self.cfg.batch_size):
                chunk = prompts[start : start + self.cfg.batch_size]
                ids, mask = self._left_pad([self.codec.prompt_ids(p) for p in chunk])
                processors = []
                if schema is not None:
                    rows = len(chunk) * gen_cfg.num_return_sequences
                    processors.append(self._grammar_processor(schema, rows, s.max_new_tokens, attempt))
                seqs = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    generation_config=gen_cfg,
                    logits_processor=processors or None,
                    tokenizer=self.tokenizer if gen_cfg.stop_strings else None,
                )
                new = seqs[:, ids.shape[1] :].tolist()
                decoded = [self._finish(row, s) for row in new]
                k = gen_cfg.num_return_sequences
                out.extend(decoded[i * k : (i + 1) * k] * (n // k) for i in range(len(chunk)))
        return out

    def _finish(self, tokens: list[int], s: Sampling) -> tuple[str, bool]:
        """Decode up to eos, cut at the first stop string; truncated = budget used without an end."""
        ended = False
        for k, t in enumerate(tokens):
            if t in self.eos_ids:
                tokens, ended = tokens[:k], True
                break
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cuts = [text.find(x) for x in s.stop if x and x in text]
        if cuts:
            text, ended = text[: min(cuts)], True
        return text, not ended and len(tokens) >= s.max_new_tokens

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        return ids, mask

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
        return self._score(spans, self.cfg.batch_size)

    def choose(self, prompts: list[ChatPrompt], options: list[str]) -> list[list[float]]:
        if not options:
            raise ValueError("choose: at least one option is needed")
        k = len(options)
        out = []
        with torch.inference_mode(), self._threads():
            for b in range(0, len(prompts), self.cfg.batch_size):
                chunk = prompts[b : b + self.cfg.batch_size]
                spans = [self.codec.response_span(p, o) for p in chunk for o in options]
                lp = self._score_options(spans, k).view(len(chunk), k)
                out.extend(torch.softmax(lp, dim=1).tolist())
        return out

    def _score_options(self, spans: list[tuple[list[int], int, int]], k: int) -> torch.Tensor:
        """Log-probabilities of k answers per prompt, the prompt encoded once: one forward pass
        over the prompts (keeping their KV cache), one over all the answers of all the prompts."""
        pad = self.tokenizer.pad_token_id
        prompts = [spans[i][0][: spans[i][1]] for i in range(0, len(spans), k)]
        ids, mask = self._left_pad(prompts)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        first = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                           **({"logits_to_keep": 1} if self._keeps_logits else {}))
        head = torch.log_softmax(first.logits[:, -1].double(), dim=-1).repeat_interleave(k, dim=0)
        cache = first[self._cache_arg]
        cache.batch_repeat_interleave(k)
        answers = [ids_[start:end] for ids_, start, end in spans]
        width = max(len(a) for a in answers)
        a_ids = torch.tensor([a + [pad] * (width - len(a)) for a in answers], device=self.device)
        a_mask = torch.tensor([[1] * len(a) + [0] * (width - len(a)) for a in answers], device=self.device)
        full_mask = torch.cat([mask.repeat_interleave(k, dim=0), a_mask], dim=1)
        a_pos = pos[:, -1:].repeat_interleave(k, dim=0) + 1 + torch.arange(width, device=self.device)
        logits = self.model(input_ids=a_ids, attention_mask=full_mask, position_ids=a_pos,
                            **{self._cache_arg: cache}).logits
        lp = torch.log_softmax(logits.double(), dim=-1)
        scores = []
        for r, a in enumerate(answers):
            # The first answer token is predicted by the prompt's last position, the rest by the answer.
            total = head[r, a[0]] + lp[r, torch.arange(len(a) - 1), a_ids[r, 1 : len(a)]].sum()
            scores.append(total)
        return torch.stack(scores)

    def _score(self, spans: list[tuple[list[int], int, int]], chunk: int) -> list[LogProb]:
        """Teacher-forced sum of log p(ids[t] | ids[:t]) over each span's [start, end)."""
        out: list[LogProb | None] = [None] * len(spans)
        # Similar lengths share a batch: less padding.
        order = sorted(range(len(spans)), key=lambda i: spans[i][2])
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode(), self._threads():
            for b in range(0, len(order), chunk):
                idx = order[b : b + chunk]
                rows = [spans[i][0][: spans[i][2]] for i in idx]
                width = max(len(r) for r in rows)
                ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.device)
                mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.device)
                # Logits only where a scored token is predicted: the vocabulary projection of prompt
                # positions is most of the work (and, for large vocabularies, of the memory).
                lo = min(spans[i][1] for i in idx) - 1
                hi = max(spans[i][2] for i in idx) - 1
                kw = {"logits_to_keep": torch.arange(lo, hi, device=self.device)} if self._keeps_logits else {}
                logits = self.model(input_ids=ids, attention_mask=mask, **kw).logits
                offset = lo if self._keeps_logits else 0
                for row, i in enumerate(idx):
                    _, start, end = spans[i]
                    lp = torch.log_softmax(logits[row, start - 1 - offset : end - 1 - offset].float(), dim=-1)
                    target = ids[row, start:end].unsqueeze(-1)
                    out[i] = LogProb(float(lp.gather(-1, target).sum()), end - start)
        return out  # type: ignore[return-value]


class GrammarProcessor:
    """A ``transformers`` logits processor: one xgrammar matcher per generated row.

    It masks every token the grammar forbids; in the last ``window`` steps of the budget it
    narrows further with ``ClosingPolicy`` (see ``pipeline.llm.structured``). Rows that finished
    (eos accepted) are left alone: ``generate`` pads them.
    """

    def __init__(self, compiled, rows: int, vocab: int, policy: ClosingPolicy, budget: int, window: int):
        import xgrammar as xgr

        self.matchers = [xgr.GrammarMatcher(compiled) for _ in range(rows)]
        self.states = [(False, False)] * rows
        self.bitmask = xgr.allocate_token_bitmask(rows, vocab)
        self.vocab, self.policy, self.budget, self.window = vocab, policy, budget, window
        self.step = -1

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import xgrammar as xgr

        self.step += 1
        if self.step > 0:
            for i, (m, t) in enumerate(zip(self.matchers, input_ids[:, -1].tolist(), strict=True)):
                if not m.is_terminated():
                    m.accept_token(t)
                    self.states[i] = self.policy.advance(self.states[i], t)
        active = [i for i, m in enumerate(self.matchers) if not m.is_terminated()]
        if not active:
            return scores
        for i in active:
            self.matchers[i].fill_next_token_bitmask(self.bitmask, i)
        device = scores.device
        if device.type not in ("cuda", "cpu"):
            scores = scores.cpu()
        xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device), indices=active)
        if self.budget - self.step <= self.window:
            for i in active:
                pick = self.policy.preferred(self.policy.unpack(self.bitmask[i], self.vocab), self.states[i][0])
                if pick is not None:
                    scores[i, ~pick.to(scores.device)] = float("-inf")
        return scores.to(device)
