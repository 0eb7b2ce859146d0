"""The hand-written baseline of ``bench/engine.py --compare``: what the engine is measured against, on the same
rows, in the same process (not a bench itself; the leading underscore keeps tests/test_bench.py from running it).

- ``hand_logprobs``: length-sorted token-budget batches, vocabulary logits only at the scored positions
  (hidden states gathered, one projection), log-softmax in float32.
- ``hand_choose``: the same batches, prompts prefilled once, their KV cache repeated per option, options
  scored in one forward.
- ``hand_generate``: plain ``model.generate`` (num_return_sequences=n, batches of prompts in input order,
  left padding).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from pipeline.config import Sampling


def budget_batches(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices sorted by length, cut so that rows x longest row stays within ``budget`` tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * lengths[i] > budget:
            out.append(cur)
            cur = []
        cur.append(i)
    return out + ([cur] if cur else [])


def pad(rows: list[list[int]], value: int, device: str, left: bool = False):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        sl = slice(width - len(r), width) if left else slice(0, len(r))
        ids[k, sl] = torch.tensor(r)
        mask[k, sl] = 1
    return ids.to(device), mask.to(device)


def hand_logprobs(model, tok, prompts, answers, budget: int, device: str) -> list[float]:
    seqs, starts = [], []
    for p, a in zip(prompts, answers, strict=True):
        p_ids = tok(tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True), add_special_tokens=False)
        full = tok(tok.apply_chat_template([*p, {"role": "assistant", "content": a}], tokenize=False),
                   add_special_tokens=False)["input_ids"]
        seqs.append(full[:-1])  # ChatML: the trailing newline after <|im_end|> is not scored
        starts.append(len(p_ids["input_ids"]))
    out = [0.0] * len(seqs)
    with torch.inference_mode():
        for idx in budget_batches([len(s) for s in seqs], budget):
            ids, mask = pad([seqs[i] for i in idx], tok.pad_token_id, device)
            hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
            rows = torch.cat([torch.full((len(seqs[i]) - starts[i],), k) for k, i in enumerate(idx)]).to(device)
            pos = torch.cat([torch.arange(starts[i] - 1, len(seqs[i]) - 1) for i in idx]).to(device)
            logits = model.lm_head(hidden[rows, pos]).float()
            lp = torch.log_softmax(logits, -1).gather(-1, ids[rows, pos + 1].unsqueeze(-1)).squeeze(-1)
            sums = torch.zeros(len(idx), dtype=torch.float32, device=device).index_add_(0, rows, lp)
            for k, i in enumerate(idx):
                out[i] = float(sums[k])
    return out


def hand_choose(model, tok, prompts, options, budget: int, device: str) -> list[list[float]]:
    p_ids = [tok(tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"] for p in prompts]
    opt_ids = [tok(o, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for o in options]
    k, out = len(options), [None] * len(prompts)
    with torch.inference_mode():
        for idx in budget_batches([len(p) for p in p_ids], budget):
            ids, mask = pad([p_ids[i] for i in idx], tok.pad_token_id, device, left=True)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            first = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
            head = torch.log_softmax(first.logits[:, -1].float(), -1).repeat_interleave(k, 0)
            cache = first.cache if hasattr(first, "cache") else first.past_key_values
            cache.batch_repeat_interleave(k)
            a_ids, a_mask = pad([o for _ in idx for o in opt_ids], tok.pad_token_id, device)
            a_pos = pos[:, -1:].repeat_interleave(k, 0) + 1 + torch.arange(a_ids.shape[1], device=device)
            full_mask = torch.cat([mask.repeat_interleave(k, 0), a_mask], 1)
            kw = {"cache" if hasattr(first, "cache") else "past_key_values": cache}
            lp = torch.log_softmax(model(input_ids=a_ids, attention_mask=full_mask, position_ids=a_pos, **kw)
                                   .logits.float(), -1)
            nxt = lp[:, :-1].gather(-1, a_ids[:, 1:].unsqueeze(-1)).squeeze(-1) * a_mask[:, 1:]
            scores = (head.gather(-1, a_ids[:, :1]).squeeze(-1) + nxt.sum(-1)).view(len(idx), k)
            for j, i in enumerate(idx):
                out[i] = torch.softmax(scores[j].double(), 0).tolist()
    return out


def hand_generate(model, tok, prompts, n: int, s: Sampling, batch: int, device: str) -> list[list[tuple[str, bool]]]:
    from transformers import GenerationConfig

    kw = dict(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=0) if s.temperature > 0 else {}
    gc = GenerationConfig(max_new_tokens=s.max_new_tokens, num_return_sequences=n, pad_token_id=tok.pad_token_id,
                          eos_token_id=tok.eos_token_id, **kw)
    out = []
    with torch.inference_mode():
        for b in range(0, len(prompts), batch):
            rows = [tok(tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True),
                        add_special_tokens=False)["input_ids"] for p in prompts[b:b + batch]]
            ids, mask = pad(rows, tok.pad_token_id, device, left=True)
            new = model.generate(input_ids=ids, attention_mask=mask, generation_config=gc)[:, ids.shape[1]:].tolist()
            for i in range(len(rows)):
                samples = []
                for toks in new[i * n:(i + 1) * n]:
                    ended = tok.eos_token_id in toks
                    toks = toks[:toks.index(tok.eos_token_id)] if ended else toks
                    samples.append((tok.decode(toks, skip_special_tokens=True), ended))
                out.append(samples)
    return out
