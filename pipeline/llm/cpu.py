"""CPU threads for the transformers engine: measured when the engine starts, or set.

    llm:
      cpu_threads: auto     # measure; or an integer, e.g. 1

Why measure: how many intra-op threads pay off depends on the model's matrix sizes, the operation
(a decoding step multiplies a few rows, a prefill many) and on how busy the machine's cores are, not
on one size threshold. On a 2-core VM shared with other jobs, SmolLM2-135M decoded 5-20x slower with
torch's default two threads than with one (threads that wait for each other at every operation while
another process holds a core); on an idle many-core machine, more threads make prefill faster.

``auto``: when the engine is built on CPU, ``measure`` times a decoding step (4 rows on a 48-token
KV cache) and a prefill (64 tokens) of the loaded model with each candidate thread count (1, 2,
4, ... up to the threads torch would use, which is what the process is allowed: its CPU affinity,
``OMP_NUM_THREADS`` or a Ray actor's ``num_cpus``), three rounds interleaved (a count more than twice
as slow as the best after a round is not timed again), and keeps for each operation the fastest
median; more threads must win by 10% to be chosen; a count whose decoding step was more than 4x slower
than the best (its threads stall) is not tried for prefill. It is done once per loaded model and process
(a Ray actor measures for itself): about a second on an idle machine, more on a loaded one, where one
forward pass with stalling threads takes seconds (measured with SmolLM2-135M on the 2-core VM at load
average 8-13: 10-30 s). It is not stored across processes: it reflects the machine's load when the
engine starts, which a cache would pin. The engine uses the decoding count for generation steps and
the prefill count for prompt prefill, ``logprobs`` and ``choose``; it sets torch's thread count only
during its own calls and restores it. Threads never change a sample's seed; like batch shapes, they
can change the last bits of float32 results.
"""

from __future__ import annotations

import logging
import statistics
import time
from contextlib import contextmanager

import torch

log = logging.getLogger(__name__)

KINDS = ("decode", "prefill")
_WIN = 1.10  # more threads must be at least 10% faster


def candidates(limit: int) -> list[int]:
    """1, 2, 4, ... below ``limit``, and ``limit``."""
    out, t = [], 1
    while t < limit:
        out.append(t)
        t *= 2
    return [*out, max(1, limit)]


@contextmanager
def threads(n: int | None):
    """torch's intra-op thread count set to ``n`` inside the block (None: unchanged)."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _probes(model, cache_arg: str):
    """Two timed closures over the loaded model: one decoding step and one prefill."""
    vocab = model.config.get_text_config().vocab_size if hasattr(model.config, "get_text_config") else model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    ctx = torch.randint(0, vocab, (4, 48), generator=gen)
    prefill = torch.randint(0, vocab, (1, 64), generator=gen)
    step = torch.randint(0, vocab, (4, 1), generator=gen)
    with torch.inference_mode():
        cache = model(input_ids=ctx, use_cache=True)[cache_arg]

    def decode() -> None:
        with torch.inference_mode():
            model(input_ids=step, **{cache_arg: cache}, use_cache=True)  # the cache grows by one per probe

    def fill() -> None:
        with torch.inference_mode():
            model(input_ids=prefill)

    return {"decode": decode, "prefill": fill}


def _stalled(times: dict[int, list[float]], n: int) -> bool:
    """Whether ``n`` threads were more than 4x slower than the best count: they wait on each other."""
    return min(times[n]) > 4 * min(min(v) for v in times.values() if v)


def measure(model, cache_arg: str, limit: int | None = None, rounds: int = 3) -> dict:
    """``{"decode": n, "prefill": n, "seconds": {kind: {n: median}}}`` for the loaded CPU model."""
    limit = limit or torch.get_num_threads()
    cands = candidates(limit)
    times: dict[str, dict[int, list[float]]] = {k: {n: [] for n in cands} for k in KINDS}
    with threads(cands[0]):
        probes = _probes(model, cache_arg)
        for kind in KINDS:
            probes[kind]()  # warm-up (first-touch allocations)
    for r in range(rounds):
        for kind in KINDS:
            for n in cands:
                if r > 0 and min(times[kind][n]) > 2 * min(min(v) for v in times[kind].values() if v):
                    continue  # clearly lost (a stalled thread pool costs seconds per probe): stop paying for it
                if kind == "prefill" and r == 0 and _stalled(times["decode"], n):
                    times[kind][n].append(float("inf"))  # threads that stall a decoding step stall a prefill
                    continue
                with threads(n):
                    t = time.perf_counter()
                    probes[kind]()
                    times[kind][n].append(time.perf_counter() - t)
    med = {k: {n: statistics.median(v) for n, v in times[k].items() if v} for k in KINDS}
    chosen = {}
    for kind in KINDS:
        best = cands[0]
        for n in cands[1:]:
            if med[kind][n] * _WIN < med[kind][best]:
                best = n
        chosen[kind] = best
    log.info("CPU threads measured: decode %d, prefill %d (median seconds %s)", chosen["decode"], chosen["prefill"], med)
    return {**chosen, "seconds": med}
