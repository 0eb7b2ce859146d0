"""The transformers engine's shared-prefix reuse (``decode.prefill``) against the full prefill, on the
project's own judge and detector steps.

    python bench/engine_prefix.py                       # smollm2 (packaged SmolLM2-135M-Instruct), DOVE, 32 rows
    python bench/engine_prefix.py --step detect --rows 16 --repeats 2
    python bench/engine_prefix.py --model tiny --rows 64

``--step dove`` (``choose``): DOVE's conditional comparisons (``../shared/data/real/dove/.../
val_conditional_pref.jsonl``, an instruction with a chosen and a rejected answer) through the stage's own
engine step (``stages.dove_judge.judge``: the project's templates, fenced and shortened as the stage
does, both position orders in one ``choose`` call). ``--step detect`` (structured ``generate``):
WildFeedback's model detector (``stages.wildfeedback_detect.llm_detect``, its ~970-token instructions,
params.yaml's greedy 256-token budget) on the second user turn of WildChat conversations
(``../shared/data/real/wildchat_sample``). One engine, two views of it sharing the model and its threads:
``prefix_reuse`` on (a batch's shared prompt prefix runs once, its KV cache repeated) and off (every
prompt prefilled in full). They run in turn, alternating which goes first, ``--repeats`` times; the best
time of each counts (CPU: process CPU time, which other jobs on a shared machine do not inflate; wall time
printed too). The last line: the ``reuse/full`` time ratio and how far the outputs differ (largest
|diff| of the judge's probabilities; detector: judgments that differ).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import SHARED, best_of, cfg_for  # noqa: E402

from pipeline.config import Sampling  # noqa: E402
from pipeline.llm import get_engine  # noqa: E402
from pipeline.llm.base import GenerationFailure  # noqa: E402
from pipeline.llm.chat import InputTooLong  # noqa: E402
from pipeline.llm.decode import common_prefix  # noqa: E402
from pipeline.llm.hf import budget_batches  # noqa: E402
from pipeline.prompt import template  # noqa: E402
from stages.dove_judge import judge  # noqa: E402
from stages.wildfeedback_detect import llm_detect  # noqa: E402

DATA = SHARED / "data" / "real" / "dove" / "data" / "anthropic_helpful" / "val_conditional_pref.jsonl"
WILDCHAT = SHARED / "data" / "real" / "wildchat_sample" / "conversations.jsonl"
DETECTOR = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=256, stop=[], seed=0)  # params.yaml's detector role


def load_comparisons(rows: int) -> pa.Table:
    records = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()][:rows]
    return pa.table({
        "comparison_id": [f"c{i}" for i in range(len(records))],
        "conditional": [True] * len(records),
        "instruction_text_1": [r["i_chosen"] for r in records],
        "response_1": [r["r_chosen"] for r in records],
        "instruction_text_2": [r["i_reject"] for r in records],
        "response_2": [r["r_reject"] for r in records],
    })


def load_turns(rows: int) -> pa.Table:
    """The second user turn of conversations that have one, as the detector step reads turns."""
    out = []
    for line in WILDCHAT.read_text(encoding="utf-8").splitlines():
        c = json.loads(line)
        m = c["messages"]
        if len(m) >= 3 and [x["role"] for x in m[:3]] == ["user", "assistant", "user"]:
            out.append({"conversation_id": c["id"], "user_turn": 2, "context": m[:1], "prev": m[1]["content"],
                        "text": m[2]["content"]})
    return pa.Table.from_pylist(out[:rows])


class Recorder:
    """An engine stand-in that keeps the prompts the stage step would send (to count their tokens)."""

    def __init__(self, codec):
        self.codec, self.prompts = codec, []

    def choose(self, prompts: list, options: list[str]) -> list[list[float]]:
        self.prompts.extend(prompts)
        return [[1 / len(options)] * len(options)] * len(prompts)

    def generate(self, prompts: list, n: int = 1, sampling=None, schema=None) -> list[list]:
        self.prompts.extend(prompts)
        return [[GenerationFailure(error="recorded", raw="", attempts=0)] * n for _ in prompts]


def fitting(engine, prompts: list) -> list[int]:
    """The prompts that fit ``llm.max_model_len`` (one that does not would send its whole call one by one)."""
    def fits(p) -> bool:
        try:
            return bool(engine.codec.prompt_ids(p, judge=True))
        except InputTooLong:
            return False
    return [i for i, p in enumerate(prompts) if fits(p)]


def shared_tokens(engine, prompts: list, rows: int | None) -> tuple[int, int, list[int]]:
    """(prompt tokens, batches, tokens each batch's prompts share) as the engine batches them."""
    ids = [engine.codec.prompt_ids(p, judge=True) for p in prompts]
    batches = budget_batches([len(x) for x in ids], engine.cfg.batch_tokens, rows)
    return sum(map(len, ids)), len(batches), [common_prefix([ids[i] for i in b]) for b in batches]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step", default="dove", choices=["dove", "detect"], help="DOVE's judge or WildFeedback's detector")
    ap.add_argument("--model", default="smollm2", help="llm.model: smollm2 (default), tiny, a folder")
    ap.add_argument("--rows", type=int, default=32, help="DOVE comparisons (two prompts each) or detector turns")
    ap.add_argument("--max-chars", type=int, default=6000, help="dove.max_prompt_chars (params.yaml: 6000); detect: 1500")
    ap.add_argument("--batch-tokens", type=int, default=16384, help="llm.batch_tokens (params.yaml: 16384)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="tiny model, 4 rows, one repeat (checks the bench runs)")
    args = ap.parse_args()
    if args.smoke:
        args.model, args.rows, args.repeats = "tiny", 4, 1
    sampling = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=8, stop=[], seed=0)
    cfg = cfg_for(args.model, 16, "auto", sampling, max_len=2048).model_copy(update={"batch_tokens": args.batch_tokens})
    reuse = get_engine(cfg)
    if not reuse.prefix_reuse:
        raise SystemExit(f"model {args.model!r}: its KV cache cannot be expanded, prefix reuse is off for it")
    full = copy.copy(reuse)
    full.prefix_reuse = False
    if args.step == "dove":
        batch = load_comparisons(args.rows)
        kw = {"joint_template": template("dove_judge"), "conditional_template": template("dove_judge_conditional"),
              "max_prompt_chars": args.max_chars}
        step = judge
    else:
        batch = load_turns(10 * args.rows)
        kw = {"sampling": DETECTOR.model_copy(update={"max_new_tokens": 16}) if args.smoke else DETECTOR,
              "template_text": template("wildfeedback_detect"), "max_chars": min(args.max_chars, 1500)}
        step = llm_detect
        recorder = Recorder(reuse.codec)
        step(batch, recorder, **kw)
        keep = fitting(reuse, recorder.prompts)[: args.rows]
        if not keep:
            raise SystemExit(f"no detector prompt fits max_model_len 2048 with model {args.model!r}")
        batch = batch.take(pa.array(keep, pa.int64()))
    step(batch.slice(0, 2), reuse, **kw)  # warm-up
    recorder = Recorder(reuse.codec)
    step(batch, recorder, **kw)
    prompts = recorder.prompts
    tokens, n_batches, shared = shared_tokens(reuse, prompts, None if args.step == "dove" else cfg.batch_size)
    print(f"model {args.model}, threads {reuse.cpu_threads or 'GPU'}, {args.step}: {len(batch)} rows -> {len(prompts)} "
          f"prompts, {tokens} prompt tokens ({tokens / len(prompts):.0f} a prompt), {n_batches} batch(es) "
          f"sharing {shared} tokens", flush=True)
    (got, want), (t_reuse, t_full) = best_of(args.repeats, reuse.device.type, lambda: step(batch, reuse, **kw),
                                             lambda: step(batch, full, **kw))
    if args.step == "dove":
        diff = max(abs(a - b) for col in ("p_first_ab", "p_first_ba")
                   for a, b in zip(got[col].to_pylist(), want[col].to_pylist(), strict=True))
        same = f"max |diff| of probabilities {diff:.1e}"
    else:
        a, b = got.to_pylist(), want.to_pylist()
        same = f"judgments differing {sum(x != y for x, y in zip(a, b, strict=True))}/{len(a)} " \
               f"({sum(x['ok'] for x in a)} valid)"
    print(f"prefix reuse {t_reuse}; full prefill {t_full} (best of {args.repeats})")
    print(f"reuse/full time: {t_reuse.seconds / t_full.seconds:.2f} ({t_full.seconds / t_reuse.seconds:.2f}x faster "
          f"by {'CPU' if reuse.device.type == 'cpu' else 'wall'} time); {same}")


if __name__ == "__main__":
    main()
