"""Batched decoding on the KV cache for the transformers engine, with a random stream per sample.

    rows = decode(model, prompt_ids, seeds, s, eos_ids, pad_id, cache_arg)   # per prompt: [(tokens, ended)]

Why not ``model.generate``: its sampler draws every row from one random generator, so a sample
depends on which other prompts share its batch. Here sample ``j`` of a prompt draws its ``t``-th
token with the ``t``-th number of its own stream, seeded with ``sample_seed(seed, prompt, j)``
(``pipeline.llm.base``): the same prompt gets the same samples whatever the batch size, the order
of the prompts, the other prompts in the batch, the checkpoint chunking or the Ray replica.

One batch: the prompts (similar lengths, left-padded) are prefilled once (a prefix they all share, such as
a detector's instructions, once for the batch: ``prefill``); their KV cache is repeated for the ``n``
samples of each prompt (``model.generate`` prefills every sample's copy of the prompt), then one token
per row per step. Per step and row: the logits (float32), the grammar mask
of a structured call (``GrammarProcessor``), then temperature and top-p (the smallest set of most
likely tokens whose probability reaches ``top_p``) and inverse-CDF sampling with the row's number;
temperature 0 is greedy (argmax). A row ends at an end-of-turn token, at a stop string (checked on
the decoded tail as it grows) or at ``max_new_tokens``; finished rows leave the batch (the cache
rows are dropped) once they are a quarter of it, so long samples do not drag finished ones along.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pipeline.llm.structured import ClosingPolicy


class RowSampler:
    """Temperature + top-p sampling where row ``r`` draws its ``t``-th token with its own numbers ``u[r, t]``.

    Top-p without sorting the vocabulary (a full sort per step cost more than the model's forward pass on
    CPU): a token is drawn from the whole tempered distribution by inverse CDF and kept when it belongs to
    the nucleus (the tokens more likely than it hold less than ``top_p`` of the mass), else drawn again
    with the row's next number; that is rejection sampling, so the kept token follows the distribution
    restricted to the nucleus exactly, and each draw is kept with probability >= ``top_p``. A row still
    rejected after ``tries`` draws (probability <= (1 - top_p) ** tries) is drawn by sorting, exactly.
    """

    def __init__(self, seeds: list[int], steps: int, temperature: float, top_p: float, tries: int = 8):
        self.tries = tries if top_p < 1.0 else 1
        self.u = torch.stack([torch.rand((steps, self.tries + 1), generator=torch.Generator().manual_seed(s),
                                         dtype=torch.float64) for s in seeds])
        self.temperature, self.top_p = temperature, top_p

    @staticmethod
    def _inverse_cdf(cdf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        pick = torch.searchsorted(cdf, (u.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
        over = pick >= cdf.shape[-1]  # u * total rounded up to the total: the last token with mass
        if bool(over.any()):
            last = (cdf < cdf[:, -1:]).sum(-1).clamp(max=cdf.shape[-1] - 1)
            pick = torch.where(over, last, pick)
        return pick

    def __call__(self, scores: torch.Tensor, rows: torch.Tensor, step: int) -> torch.Tensor:
        probs = torch.softmax(scores / self.temperature, dim=-1)
        u = self.u[rows, step].to(probs.device)
        cdf = probs.cumsum(-1)
        pick = self._inverse_cdf(cdf, u[:, 0])
        if self.top_p >= 1.0:
            return pick
        todo = torch.arange(len(pick), device=probs.device)
        for attempt in range(1, self.tries + 1):
            p = probs[todo]
            mine = p.gather(-1, pick[todo].unsqueeze(-1))
            before = torch.where(p > mine, p, 0.0).sum(-1)
            todo = todo[before >= self.top_p]
            if not len(todo):
                return pick
            if attempt < self.tries:
                pick[todo] = self._inverse_cdf(cdf[todo], u[todo, attempt])
        # Rows rejected every time: the nucleus by sorting, then the row's last number.
        p, order = probs[todo].sort(dim=-1, descending=True, stable=True)
        p = p.masked_fill(p.cumsum(-1) - p >= self.top_p, 0.0)
        pick[todo] = order.gather(-1, self._inverse_cdf(p.cumsum(-1), u[todo, self.tries]).unsqueeze(-1)).squeeze(-1)
        return pick


def greedy(scores: torch.Tensor, rows: torch.Tensor, step: int) -> torch.Tensor:
    return scores.argmax(-1)


class StopStrings:
    """Whether a row's text so far contains a stop string (decoding only the tail that can hold one)."""

    def __init__(self, tokenizer, stops: list[str]):
        self.tok, self.stops = tokenizer, [s for s in stops if s]
        self.window = 2 * max((len(s) for s in self.stops), default=0) + 4

    def __bool__(self) -> bool:
        return bool(self.stops)

    def hit(self, tokens: list[int]) -> bool:
        tail = self.tok.decode(tokens[-self.window:], skip_special_tokens=True)
        return any(s in tail for s in self.stops)


def left_pad(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[k, width - len(r):] = 1
    return ids.to(device), mask.to(device)


def right_pad(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[k, : len(r)] = 1
    return ids.to(device), mask.to(device)


def common_prefix(rows: list[list[int]]) -> int:
    """Length of the longest token prefix every row starts with.

    >>> common_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]])
    2
    """
    first, n = rows[0], min(len(r) for r in rows)
    for r in rows[1:]:
        n = next((i for i in range(n) if r[i] != first[i]), n)
    return n


def expandable(cache) -> bool:
    """Whether a KV cache can be run once for a shared prefix and repeated for a batch with pads between
    prefix and suffix, exactly: a ``DynamicCache`` whose layers all keep every position (``DynamicLayer``).
    Sliding-window layers would count the pads into their window, linear-attention (hybrid) layers carry a
    state the pads would pass through, and layers sharing another's KV (``DummyLayer``) hold nothing; older
    ``transformers`` without per-layer caches are not checked and not used either."""
    from transformers import cache_utils

    layer = getattr(cache_utils, "DynamicLayer", None)
    layers = getattr(cache, "layers", None)
    return (layer is not None and isinstance(cache, cache_utils.DynamicCache) and bool(layers)
            and all(type(x) is layer for x in layers))


# Fewest tokens a batch's prompts must share for ``prefill`` to run them once: below that, the extra forward
# call and the cache copy outweigh the (rows - 1) x prefix tokens saved.
MIN_SHARED_PREFIX = 32


def prefill(forward: Callable, rows: list[list[int]], pad: int, device, cache_arg: str, share: bool):
    """Prompts through the model, KV cache kept: ``(out, cache, mask, pos)``: ``forward``'s output for the last
    pass (``forward(**kw) -> (out, cache)``), the cache, the attention mask over it (rows x cached length)
    and that pass's positions. With ``share`` (a cache that ``expandable`` accepts), a prefix of at least
    ``MIN_SHARED_PREFIX`` tokens shared by every row runs once with batch size 1, its cache is repeated for
    the rows and only the rest of each row runs, left-padded: pads sit between prefix and rest, masked, and
    positions continue after the prefix, so each real token sees what it sees in the full prefill. At least
    one token of each row stays after the prefix: the last position predicts the next token."""
    shared = min(common_prefix(rows), min(len(r) for r in rows) - 1) if share and len(rows) > 1 else 0
    if shared < MIN_SHARED_PREFIX:
        ids, mask = left_pad(rows, pad, device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out, cache = forward(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        return out, cache, mask, pos
    prefix = torch.tensor([rows[0][:shared]], device=device)
    _, cache = forward(input_ids=prefix, attention_mask=torch.ones_like(prefix),
                       position_ids=torch.arange(shared, device=device).unsqueeze(0), use_cache=True)
    cache.batch_repeat_interleave(len(rows))
    ids, rest = left_pad([r[shared:] for r in rows], pad, device)
    mask = torch.cat([torch.ones((len(rows), shared), dtype=rest.dtype, device=device), rest], dim=1)
    pos = shared + (rest.cumsum(-1) - 1).clamp(min=0)
    out, cache = forward(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{cache_arg: cache})
    return out, cache, mask, pos


def decode(model, prompts: list[list[int]], k: int, pick: Callable, steps: int, eos_ids: list[int], pad: int,
           cache_arg: str, stop: StopStrings | None = None, processor=None, keep: dict | None = None,
           prefill_threads: int | None = None, share_prefix: bool = False) -> list[list[tuple[list[int], bool]]]:
    """Per prompt, ``k`` samples ``(new tokens without the end token, ended)``; row ``i * k + j`` is
    sample ``j`` of prompt ``i`` (``pick`` and ``processor`` see these row numbers). ``keep``:
    ``{"logits_to_keep": 1}`` where the model takes it (the prefill needs the last position only).
    ``share_prefix``: the prompts' shared prefix runs once (``prefill``; only for caches ``expandable`` accepts)."""
    from pipeline.llm.cpu import threads

    device = model.device

    def forward(**kw):
        out = model(**kw, **(keep or {}))
        return out.logits, out[cache_arg]

    with threads(prefill_threads):
        logits, cache, mask, pos = prefill(forward, prompts, pad, device, cache_arg, share_prefix)
    logits = logits[:, -1]
    if k > 1:
        cache.batch_repeat_interleave(k)
        logits, mask = logits.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
        pos = pos.repeat_interleave(k, 0)
    last = pos[:, -1]
    rows = torch.arange(len(prompts) * k)  # the original row of each batch position
    tokens: list[list[int]] = [[] for _ in range(len(rows))]
    ended = [False] * len(rows)
    done = torch.zeros(len(rows), dtype=torch.bool)  # finished but still in the batch
    eos = set(eos_ids)
    for step in range(steps):
        scores = logits.float()
        if processor is not None:
            scores = processor(scores, rows.tolist(), done.tolist())
        nxt = pick(scores, rows, step)
        if processor is not None:
            processor.accept(nxt.tolist(), done.tolist())
        for j, (r, t) in enumerate(zip(rows.tolist(), nxt.tolist(), strict=True)):
            if done[j]:
                continue
            if t in eos:
                ended[r] = True
            else:
                tokens[r].append(t)
                ended[r] = bool(stop) and stop.hit(tokens[r])
            done[j] = ended[r]
        if step == steps - 1 or bool(done.all()):
            break
        if int(done.sum()) * 4 >= len(rows):  # drop finished rows from the batch
            keep = (~done).nonzero().squeeze(-1)
            cache.batch_select_indices(keep.to(device))
            rows, mask, last, nxt, done = rows[keep], mask[keep.to(device)], last[keep.to(device)], nxt[keep], done[keep]
            if processor is not None:
                processor.select(keep.tolist())
        nxt = nxt.to(device).masked_fill(done.to(device), pad)
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=device)], dim=1)
        last = last + 1
        out = model(input_ids=nxt.unsqueeze(-1), attention_mask=mask, position_ids=last.unsqueeze(-1),
                    use_cache=True, **{cache_arg: cache})
        cache, logits = out[cache_arg], out.logits[:, -1]
    return [[(tokens[i * k + j], ended[i * k + j]) for j in range(k)] for i in range(len(prompts))]


class GrammarProcessor:
    """xgrammar constraint for ``decode``: one matcher per batch position.

    It masks every token the grammar forbids; in the last ``window`` steps of the budget it
    narrows further with ``ClosingPolicy`` (see ``pipeline.llm.structured``). Finished rows are
    left alone. ``select`` follows ``decode`` when finished rows leave the batch.
    """

    def __init__(self, compiled, rows: int, vocab: int, policy: ClosingPolicy, budget: int, window: int):
        import xgrammar as xgr

        self.matchers = [xgr.GrammarMatcher(compiled) for _ in range(rows)]
        self.states = [(False, False)] * rows
        self.bitmask = xgr.allocate_token_bitmask(rows, vocab)
        self.vocab, self.policy, self.budget, self.window = vocab, policy, budget, window
        self.step = -1

    def select(self, keep: list[int]) -> None:
        self.matchers = [self.matchers[j] for j in keep]
        self.states = [self.states[j] for j in keep]

    def accept(self, tokens: list[int], done: list[bool]) -> None:
        """The tokens the batch positions just emitted (positions already finished emit nothing)."""
        for j, t in enumerate(tokens):
            m = self.matchers[j]
            if not done[j] and not m.is_terminated():
                m.accept_token(t)
                self.states[j] = self.policy.advance(self.states[j], t)

    def __call__(self, scores: torch.Tensor, rows: list[int], done: list[bool]) -> torch.Tensor:
        import xgrammar as xgr

        self.step += 1
        active = [j for j, m in enumerate(self.matchers) if not done[j] and not m.is_terminated()]
        if not active:
            return scores
        for j in active:
            self.matchers[j].fill_next_token_bitmask(self.bitmask, j)
        device = scores.device
        if device.type not in ("cuda", "cpu"):
            scores = scores.cpu()
        xgr.apply_token_bitmask_inplace(scores, self.bitmask[: len(rows)].to(scores.device), indices=active)
        if self.budget - self.step <= self.window:
            for j in active:
                pick = self.policy.preferred(self.policy.unpack(self.bitmask[j], self.vocab), self.states[j][0])
                if pick is not None:
                    scores[j, ~pick.to(scores.device)] = float("-inf")
        return scores.to(device)
