"""Engine throughput: the transformers engine against hand-written code on the same rows, in one run.

    python bench/engine.py --compare                    # CPU, a small random model, a few minutes on 2 cores
    python bench/engine.py --compare --device cuda --shape smollm2-1.7b --rows 2000 --gen-rows 128 \\
        --batch-size 64 --max-new-tokens 128 --max-chars 4000
    python bench/engine.py                              # tiny model: batched calls vs one request per row

``--compare``: a Llama of ``--shape`` with random weights (built locally, no download; float32 on CPU,
bfloat16 on GPU) and SmolLM2's real tokenizer and chat template (``../shared/bench/smollm2_tokenizer``).
Work: UltraFeedback prompts and chosen answers (``../shared/data/real``), cut to ``--max-chars``. The
engine gets all rows in one call, as the hand-written code does, and a third time the way the stages call
it: through ``pipeline.execute.map_batches`` (local backend), which hands an engine step ``llm.batch_size``
(``--batch-size``) rows per call, so the engine sorts and batches only within those rows. Each operation
runs the three in turn (alternating which goes first), ``--repeats`` times, and the best time of each counts:

- ``logprobs``: engine.logprobs vs length-sorted token-budget batches, vocabulary logits only at the
  scored positions (hidden states gathered, one projection), log-softmax in float32.
- ``choose`` (options "1".."5" on a rating prompt): engine.choose vs the same batches: prompts prefilled
  once, their KV cache repeated per option, options scored in one forward.
- ``generate`` (n samples per prompt): engine.generate vs plain ``model.generate`` (num_return_sequences=n,
  batches of ``--batch-size`` prompts in input order, left padding); tokens = the re-tokenised text of each
  sample plus its end-of-turn token, counted the same way for both.

The hand-written code is in ``bench/_engine_baseline.py``. Its outputs check the engine's: scored
log-probabilities and choice distributions must agree (max |diff| printed), and greedy decoding must give
the same text. The line before last gives the ratios for
the engine as the stages call it (``map_batches``); the last line is
``engine/hand-written: logprobs R choose R generate R`` (throughput ratios; >1 = the engine is faster; on CPU by
process CPU time, which the load of a shared machine does not inflate, on GPU by wall time; both are printed).
``--smoke`` runs both modes at toy size.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the hand-written baseline beside this script

import pyarrow as pa  # noqa: E402
from _engine_baseline import hand_choose, hand_generate, hand_logprobs  # noqa: E402

from pipeline.config import LLM, Sampling, load_params  # noqa: E402
from pipeline.execute import map_batches  # noqa: E402
from pipeline.llm import get_engine  # noqa: E402
from tests.llm_configs import llm_config  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data" / "real" / "dove" / "data" / "anthropic_helpful" / "val_sft.jsonl"
ULTRA = SHARED / "data" / "real" / "ultrafeedback_binarized" / "data" / "processed" / "eval_clean.jsonl"
TOKENIZER = SHARED / "bench" / "smollm2_tokenizer"
SHAPES = {  # Llama shapes: SmolLM2's two sizes and a small one for CPU runs
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=64),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, head_dim=64),
    "smollm2-1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                         num_key_value_heads=32, head_dim=64),
}
OPTIONS = ["1", "2", "3", "4", "5"]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def cfg_for(model: str, batch_size: int, dtype: str, sampling: Sampling, max_len: int = 4096) -> LLM:
    return llm_config(model=model, dtype=dtype, batch_size=batch_size, max_model_len=max_len, sampling=sampling)


# --- the random model and the work -----------------------------------------------------------------


def build_model(path: Path, shape: str, device: str) -> None:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=8192, rope_theta=130000,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, **SHAPES[shape])
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(path)
    tok.save_pretrained(path)


def load_work(rows: int, max_chars: int) -> tuple[list, list[str]]:
    prompts, answers = [], []
    for line in ULTRA.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        p, a = r.get("prompt"), r.get("chosen")
        a = a[-1]["content"] if isinstance(a, list) else a
        if isinstance(p, str) and isinstance(a, str) and a:
            prompts.append([{"role": "user", "content": p[:max_chars]}])
            answers.append(a[:max_chars])
    reps = -(-rows // len(prompts))
    return (prompts * reps)[:rows], (answers * reps)[:rows]


# --- the engine as the stages call it: engine steps through map_batches ---------------------------------


def _logprobs_step(batch: pa.Table, engine) -> pa.Table:
    out = engine.logprobs(batch["prompt"].to_pylist(), batch["answer"].to_pylist())
    return pa.table({"logprob": [x.logprob for x in out]})


def _choose_step(batch: pa.Table, engine, *, options: list[str]) -> pa.Table:
    return pa.table({"p": engine.choose(batch["prompt"].to_pylist(), options)})


def _generate_step(batch: pa.Table, engine, *, n: int, sampling: Sampling) -> pa.Table:
    rows = engine.generate(batch["prompt"].to_pylist(), n=n, sampling=sampling)
    return pa.table({"text": [[c.text for c in row] for row in rows],
                     "stop": [[c.finish_reason == "stop" for c in row] for row in rows]})


def as_stages_call(cfg: LLM, step, columns: dict[str, list], **kwargs) -> pa.Table:
    """``step`` over ``columns`` through ``pipeline.execute.map_batches`` with params.yaml's ``execution`` and
    the engine config ``cfg`` (the same cached engine): ``cfg.batch_size`` rows per engine call, as a stage's
    engine step gets them."""
    execution = load_params(Path(__file__).resolve().parents[1] / "params.yaml").execution
    return map_batches(pa.table(columns), step, execution=execution, engine=cfg, fn_kwargs=kwargs, desc="bench")


# --- the comparison -------------------------------------------------------------------------------


class Clock:
    """Best wall and process CPU time of a function over several runs. On CPU the comparison uses CPU time:
    other jobs on a shared machine lengthen wall time by whatever they take (3-4x between runs here), not
    the work done; both sides run on the same threads. On GPU, wall time (synchronised)."""

    def __init__(self, device: str):
        self.device, self.wall, self.cpu = device, float("inf"), float("inf")

    def run(self, fn):
        sync(self.device)
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        sync(self.device)
        self.wall, self.cpu = min(self.wall, time.perf_counter() - w), min(self.cpu, time.process_time() - c)
        return out

    @property
    def seconds(self) -> float:
        return self.cpu if self.device == "cpu" else self.wall

    def __str__(self) -> str:
        return f"{self.wall:.2f}s wall, {self.cpu:.2f}s CPU"


def best_of(repeats: int, device: str, *fns):
    """Run the functions in turn ``repeats`` times, alternating which goes first; each one's last output
    and its ``Clock``."""
    outs, clocks = [None] * len(fns), [Clock(device) for _ in fns]
    for r in range(repeats):
        for k in range(len(fns)) if r % 2 == 0 else reversed(range(len(fns))):
            outs[k] = clocks[k].run(fns[k])
    return outs, clocks


def compare(args) -> None:
    device = args.device
    tmp = Path(tempfile.mkdtemp(prefix="prefpipe-bench-"))
    try:
        build_model(tmp / "model", args.shape, device)
        sampling = Sampling(temperature=0.8, top_p=0.95, max_new_tokens=args.max_new_tokens, stop=[], seed=0)
        dtype = "bfloat16" if device == "cuda" else "float32"
        cfg = cfg_for(str(tmp / "model"), args.batch_size, dtype, sampling)
        engine = get_engine(cfg)
        model, tok = engine.model, engine.tokenizer
        if engine.device.type != device:
            raise SystemExit(f"--device {device}, but the engine runs on {engine.device.type} (CUDA_VISIBLE_DEVICES= for CPU)")
        threads = engine.cpu_threads
        if threads:  # the hand-written code runs on the engine's CPU threads (decoding count for generate)
            torch.set_num_threads(threads["prefill"])
        prompts, answers = load_work(args.rows, args.max_chars)
        # A system message of our own: the engine leaves a judge call's template default out (README), and
        # the hand-written code renders the same text.
        judge = [[{"role": "system", "content": "You grade answers."},
                  {"role": "user", "content": f"Rate this answer 1-5.\n\nQuestion: {p[0]['content']}\n\n"
                   f"Answer: {a}\n\nScore:"}] for p, a in zip(prompts, answers, strict=True)]
        gen = prompts[: args.gen_rows]
        print(f"{args.shape} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, random weights, "
              f"{dtype}) on {device}, torch {torch.__version__}, engine threads {threads}", flush=True)

        # warm-up on a few rows
        engine.logprobs(prompts[:4], answers[:4])
        hand_logprobs(model, tok, prompts[:4], answers[:4], args.budget, device)
        (eng_lp, hand_lp, st_lp), (t_e, t_h, t_s) = best_of(
            args.repeats, device, lambda: engine.logprobs(prompts, answers),
            lambda: hand_logprobs(model, tok, prompts, answers, args.budget, device),
            lambda: as_stages_call(cfg, _logprobs_step, {"prompt": prompts, "answer": answers}))
        n_tok = sum(x.n_tokens for x in eng_lp)
        diff = max(abs(a.logprob - b) for a, b in zip(eng_lp, hand_lp, strict=True))
        diff_s = max(abs(a.logprob - b) for a, b in zip(eng_lp, st_lp["logprob"].to_pylist(), strict=True))
        r_lp, s_lp = t_h.seconds / t_e.seconds, t_h.seconds / t_s.seconds
        print(f"logprobs  {len(prompts)} rows, {n_tok} scored tokens: engine {t_e}, hand-written {t_h} "
              f"({r_lp:.2f}x); max |diff| {diff:.1e}; as the stages call it ({args.batch_size} rows a call): {t_s} "
              f"({s_lp:.2f}x; |diff| to one call {diff_s:.1e})", flush=True)

        (eng_ch, hand_ch, st_ch), (t_e, t_h, t_s) = best_of(
            args.repeats, device, lambda: engine.choose(judge, OPTIONS),
            lambda: hand_choose(model, tok, judge, OPTIONS, args.budget, device),
            lambda: as_stages_call(cfg, _choose_step, {"prompt": judge}, options=OPTIONS))
        diff = max(abs(x - y) for a, b in zip(eng_ch, hand_ch, strict=True) for x, y in zip(a, b, strict=True))
        diff_s = max(abs(x - y) for a, b in zip(eng_ch, st_ch["p"].to_pylist(), strict=True)
                     for x, y in zip(a, b, strict=True))
        r_ch, s_ch = t_h.seconds / t_e.seconds, t_h.seconds / t_s.seconds
        print(f"choose    {len(judge)} rows x {len(OPTIONS)} options: engine {t_e} "
              f"({len(judge) / t_e.seconds:.1f} rows/s), hand-written {t_h} ({r_ch:.2f}x); max |diff| {diff:.1e}; "
              f"as the stages call it: {t_s} ({s_ch:.2f}x; |diff| to one call {diff_s:.1e})", flush=True)

        def count(rows) -> int:
            return sum(len(tok(text, add_special_tokens=False)["input_ids"]) + ended for row in rows for text, ended in row)

        def engine_gen():
            return [[(c.text, c.finish_reason == "stop") for c in row] for row in engine.generate(gen, n=args.n, sampling=sampling)]

        def hand_gen():
            torch.set_num_threads(threads.get("decode", torch.get_num_threads()))
            try:
                return hand_generate(model, tok, gen, args.n, sampling, args.batch_size, device)
            finally:
                torch.set_num_threads(threads.get("prefill", torch.get_num_threads()))

        def stages_gen():
            out = as_stages_call(cfg, _generate_step, {"prompt": gen}, n=args.n, sampling=sampling)
            return [list(zip(t, e, strict=True)) for t, e in zip(out["text"].to_pylist(), out["stop"].to_pylist(),
                                                                  strict=True)]

        (eng_g, hand_g, st_g), (t_e, t_h, t_s) = best_of(args.repeats, device, engine_gen, hand_gen, stages_gen)
        tok_e, tok_h, tok_s = count(eng_g), count(hand_g), count(st_g)
        r_gen = (tok_e / t_e.seconds) / (tok_h / t_h.seconds)
        s_gen = (tok_s / t_s.seconds) / (tok_h / t_h.seconds)
        greedy = sampling.model_copy(update={"temperature": 0.0, "max_new_tokens": min(16, args.max_new_tokens)})
        check = gen[:8]
        same = sum(a[0].text == b[0][0] for a, b in zip(
            engine.generate(check, n=1, sampling=greedy), hand_generate(model, tok, check, 1, greedy, args.batch_size, device),
            strict=True))
        print(f"generate  {len(gen)} prompts x n={args.n}, <= {args.max_new_tokens} new tokens: engine {tok_e} tokens in "
              f"{t_e} ({tok_e / t_e.seconds:.0f} tok/s), model.generate {tok_h} in {t_h} "
              f"({tok_h / t_h.seconds:.0f} tok/s) ({r_gen:.2f}x); greedy text identical {same}/{len(check)}; as the "
              f"stages call it: {tok_s} tokens in {t_s} ({tok_s / t_s.seconds:.0f} tok/s, {s_gen:.2f}x)", flush=True)
        print(f"ratios by {'CPU' if device == 'cpu' else 'wall'} time (best of {args.repeats})")
        print(f"engine as the stages call it ({args.batch_size} rows a call)/hand-written: logprobs {s_lp:.2f} "
              f"choose {s_ch:.2f} generate {s_gen:.2f}")
        print(f"engine/hand-written: logprobs {r_lp:.2f} choose {r_ch:.2f} generate {r_gen:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_rows(path: Path, rows: int, max_chars: int) -> tuple[list, list[str]]:
    """The first ``rows`` instruction/response records of a JSONL file, as chat prompts and responses."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()][:rows]
    prompts = [[{"role": "user", "content": r["instruction"][:max_chars]}] for r in records]
    return prompts, [r["response"][:max_chars] for r in records]


def batched_vs_per_row(args) -> None:
    """The tiny model: one engine call over all rows against one call per row."""
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens, stop=[], seed=0)
    engine = get_engine(cfg_for("tiny", args.batch_size, "auto", sampling, max_len=2048))
    prompts, responses = load_rows(args.data, args.rows, args.max_chars)
    engine.generate(prompts[:2], n=1, sampling=sampling)  # warm-up
    engine.logprobs(prompts[:2], responses[:2])
    results = []
    _, t = timed(lambda: engine.generate(prompts, n=args.n, sampling=sampling))
    results.append(("generate", "batched", t))
    _, t = timed(lambda: [engine.generate([p], n=args.n, sampling=sampling) for p in prompts])
    results.append(("generate", "one request per row", t))
    batched, t = timed(lambda: engine.logprobs(prompts, responses))
    results.append(("logprobs", "batched", t))
    single, t = timed(lambda: [engine.logprobs([p], [r])[0] for p, r in zip(prompts, responses, strict=True)])
    results.append(("logprobs", "one request per row", t))
    worst = max(abs(a.logprob - b.logprob) for a, b in zip(batched, single, strict=True))
    _, t = timed(lambda: engine.choose(prompts, OPTIONS))
    results.append(("choose", "batched", t))
    _, t = timed(lambda: [engine.choose([p], OPTIONS) for p in prompts])
    results.append(("choose", "one request per row", t))
    tokens = sum(x.n_tokens for x in batched)
    print(f"tiny model, {len(prompts)} rows, batch_size {args.batch_size}, generate n={args.n} x "
          f"{args.max_new_tokens} new tokens, logprobs over {tokens} response tokens "
          f"(batched vs per-row max |diff| {worst:.1e})")
    print(f"{'operation':<10}{'mode':<22}{'seconds':>9}{'rows/s':>10}{'speed-up':>10}")
    base = {op: t for op, mode, t in results if mode != "batched"}
    for op, mode, t in results:
        print(f"{op:<10}{mode:<22}{t:>9.2f}{len(prompts) / t:>10.1f}{base[op] / t:>9.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", action="store_true", help="engine against hand-written code (see above)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--shape", default="small", choices=sorted(SHAPES))
    ap.add_argument("--rows", type=int, default=None, help="rows scored and chosen (default 64; 64 without --compare)")
    ap.add_argument("--gen-rows", type=int, default=16, help="--compare: prompts for generate")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--budget", type=int, default=16384, help="--compare: padded tokens per hand-written batch")
    ap.add_argument("--n", type=int, default=None, help="samples per prompt (default 4 with --compare, else 2)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--max-chars", type=int, default=None, help="cut texts to this length (1000 / 400)")
    ap.add_argument("--repeats", type=int, default=3, help="--compare: runs of each side; the best time counts")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--smoke", action="store_true",
                    help="4 rows, 4 new tokens, one repeat; runs both modes (checks the bench runs)")
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.gen_rows, args.max_new_tokens, args.repeats = 4, 2, 4, 1
    args.rows = args.rows or 64
    args.n = args.n or (4 if args.compare else 2)
    args.max_chars = args.max_chars or (1000 if args.compare else 400)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is visible to torch")
    if args.smoke and not args.compare:  # both modes, so the headline comparison cannot rot unseen
        batched_vs_per_row(args)
        args.compare, args.n, args.max_chars = True, 4, 1000
    compare(args) if args.compare else batched_vs_per_row(args)


if __name__ == "__main__":
    main()
