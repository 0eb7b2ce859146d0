"""The per-row paths of the control-token, PII-reason, checkpoint and lock changes, against another checkout's code.

- ``encode``: ``ChatCodec.prompt_ids`` and ``response_spans`` (``encode_chat``: ``holds_special`` on every
  message) on the built-in tiny tokenizer with ``--specials`` special tokens added (Llama 3 has 256 reserved
  ones), synthetic prompts, a third of them with HTML (``<div>``, ``a < b``); the ids must equal the baseline's.
- ``control_token_text`` (export's drop and the audit check) on ``--rows`` pairs of prompt, chosen and rejected
  message lists, beside ``unprintable_text`` over the same columns (a check both codes have).
- the openai backend's ``control_text`` per prompt, beside ``route`` (the request's cache key, both codes).
- ingest's ``top_reasons`` on ``--rows`` distinct reject reasons (half quote an e-mail address), against the
  baseline's sort.
- per run: ``run_lock`` + ``reading`` of the seven stage folders + ``publishing``; ``map_batches`` of a trivial
  step over ``--rows`` rows with a checkpoint (``computed_with.json``), against the baseline's.

CPU seconds, least of ``--rounds``, this checkout and the baseline alternating in one process (the map_batches
rounds run one code after the other).

    git worktree add ../wt-base 8a30086    # the code before these changes
    python bench/control_paths.py --baseline-code ../wt-base        # 1,000,000 rows, 20,000 prompts
    python bench/control_paths.py --smoke                           # 2,000 rows, this checkout against itself
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from export import synthetic_prompts  # noqa: E402

MODULES = ("pipeline.llm.chat", "pipeline.checks", "pipeline.llm.openai_requests", "pipeline.execute",
           "pipeline.config", "pipeline.outputs", "stages.ingest")


def _ours(name: str) -> bool:
    return name.split(".")[0] in ("pipeline", "stages")


def load(checkout: Path) -> dict[str, object]:
    """``MODULES`` of ``checkout``, with every ``pipeline``/``stages`` module they import from it too; this
    process's own modules are back in ``sys.modules`` afterwards."""
    ours = {name: sys.modules.pop(name) for name in list(sys.modules) if _ours(name)}
    sys.path.insert(0, str(checkout))
    try:
        mods = {name: importlib.import_module(name) for name in MODULES}
        for name in list(sys.modules):
            if _ours(name):
                del sys.modules[name]
    finally:
        sys.path.remove(str(checkout))
        sys.modules.update(ours)
    for name, m in mods.items():
        if not Path(m.__file__).resolve().is_relative_to(checkout):
            raise SystemExit(f"{name} came from {m.__file__}, not {checkout}: another copy of pipeline is ahead "
                             "of sys.path")
    return mods


def least(fn, rounds: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(rounds):
        start = time.process_time()
        out = fn()
        best = min(best, time.process_time() - start)
    return best, out


def alternating(fns: dict[str, object], rounds: int) -> tuple[dict[str, float], dict[str, object]]:
    """Least CPU seconds and the output of each of ``fns``, run in turn ``rounds`` times (load falls on all)."""
    best, out = dict.fromkeys(fns, float("inf")), {}
    for _ in range(rounds):
        for k, fn in fns.items():
            t, out[k] = least(fn, 1)
            best[k] = min(best[k], t)
    return best, out


def row(name: str, t_this: float, t_base: float | None, note: str = "") -> None:
    base = f"{t_base:.3f} s | {t_this / t_base:.2f}x" if t_base else "- | -"
    print(f"| {name} | {t_this:.3f} s | {base} | {note} |", flush=True)


def messages(texts: list[str], forged: int = 0) -> list[list[dict[str, str]]]:
    """[system, user] prompts; a third of the user turns end in HTML and ``<|not a token|>``, and every
    ``forged``-th (0: none) in a ChatML end of turn."""
    html = " <div><b>x</b></div> and a < b <= c, <|not a token|>"
    return [[{"role": "system", "content": "Judge."},
             {"role": "user", "content": t + (html if i % 3 == 0 else "") + ("<|im_end|>" if forged and i % forged == 0
                                                                              else "")}]
            for i, t in enumerate(texts)]


def bench_encode(codes: dict, n: int, specials: int, rounds: int) -> None:
    from transformers import AutoTokenizer

    from pipeline.llm import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("tiny"))
    tok.add_special_tokens({"additional_special_tokens": [f"<|reserved_special_token_{i}|>" for i in range(specials)]})
    codecs = {k: m["pipeline.llm.chat"].ChatCodec(tok, name="tiny") for k, m in codes.items()}
    prompts = messages(synthetic_prompts(n))
    answers = [" ".join(p[1]["content"].split()[:12]) for p in prompts]
    t, out = alternating({k: lambda c=c: [c.prompt_ids(p, judge=True) for p in prompts] for k, c in codecs.items()},
                         rounds)
    if out["this"] != out["baseline"]:
        raise SystemExit("prompt_ids: ids differ from the baseline's")
    held = set(tok.all_special_tokens) | {t.content for t in tok.added_tokens_decoder.values() if t.special}
    row(f"`prompt_ids`, {n:,} prompts, {len(held)} special tokens", t["this"], t["baseline"], "ids equal")
    t, out = alternating({k: lambda c=c: [c.response_spans(p, [a, a[::-1]]) for p, a in zip(prompts, answers, strict=True)]
                          for k, c in codecs.items()}, rounds)
    if out["this"] != out["baseline"]:
        raise SystemExit("response_spans: ids differ from the baseline's")
    row(f"`response_spans`, {n:,} prompts x 2 answers", t["this"], t["baseline"], "ids and spans equal")
    c = codecs["this"]
    if hasattr(c, "holds_special"):
        row(f"of which `holds_special` on every message ({2 * n:,})",
            least(lambda: [c.holds_special(m["content"]) for p in prompts for m in p], rounds)[0], None)


def pairs(n: int) -> pl.DataFrame:
    texts = [m[1]["content"] for m in messages(synthetic_prompts(min(n, 50_000)), forged=1000)]
    rng = random.Random(1)
    pick = [rng.randrange(len(texts)) for _ in range(3 * n)]

    def side(offset: int, role: str) -> pl.Series:
        return pl.Series([[{"role": role, "content": texts[pick[3 * i + offset]]}] for i in range(n)])

    return pl.DataFrame({"prompt": side(0, "user"), "chosen": side(1, "assistant"), "rejected": side(2, "assistant")})


def bench_checks(codes: dict, n: int, rounds: int) -> None:
    df = pairs(n)
    cols = ["prompt", "chosen", "rejected"]
    checks = codes["this"]["pipeline.checks"]
    row(f"`unprintable_text`, {n:,} pairs (the yardstick: both codes have it)",
        least(lambda: df.select(checks.unprintable_text(cols)), rounds)[0], None)
    if hasattr(checks, "control_token_text"):
        t, out = least(lambda: df.select(checks.control_token_text(cols))[:, 0], rounds)
        row(f"`control_token_text`, {n:,} pairs (new check)", t, None, f"{out.sum()} flagged")


def bench_openai(codes: dict, n: int, rounds: int) -> None:
    prompts = messages(synthetic_prompts(min(n, 50_000)), forged=1000)
    prompts = [prompts[i % len(prompts)] for i in range(n)]
    req = codes["this"]["pipeline.llm.openai_requests"]
    t_route, _ = least(lambda: [req.route(p) for p in prompts], rounds)
    row(f"openai `route` (the cache key, both codes), {n:,} prompts", t_route, None)
    if hasattr(req, "control_text"):
        t, out = least(lambda: [req.control_text(p) for p in prompts], rounds)
        row(f"openai `control_text`, {n:,} prompts (new)", t, None, f"{sum(o is not None for o in out)} kept back")


def bench_reasons(codes: dict, n: int, rounds: int) -> None:
    rng = random.Random(3)
    words = "maybe perhaps yes no sometimes often".split()

    def letters(i: int) -> str:
        return "".join(chr(97 + int(d)) for d in str(i))

    reasons = Counter({f"toxic is '{letters(i)}@example.org', expected true or false" if i % 2 else
                       f"toxic is '{rng.choice(words)} {letters(i)}', expected true or false": 1 for i in range(n)})
    fns = {}
    for k, m in codes.items():
        ingest = m["stages.ingest"]
        fn = ingest.top_reasons if hasattr(ingest, "top_reasons") else (
            lambda r, top=ingest.TOP_REASONS: [[a, c] for a, c in sorted(r.items(), key=lambda x: (-x[1], x[0]))[:top]])
        fns[k] = lambda fn=fn: fn(reasons)
    t, _ = alternating(fns, rounds)
    row(f"ingest `top_reasons`, {n:,} distinct reasons", t["this"], t["baseline"])


def bench_run(codes: dict, n: int, rounds: int) -> None:
    table = pa.table({"x": pa.array(range(n), pa.int64())})
    t = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, m in codes.items():
            ex, cfg = m["pipeline.execute"], m["pipeline.config"]

            execution = cfg.Execution.model_validate(yaml.safe_load((ROOT / "params.yaml").read_text())["execution"])

            def step(k=k, ex=ex, execution=execution):
                ck = ex.Checkpoint(dir=Path(tmp) / k, fingerprint="f")
                ck.clear()
                return ex.map_batches(table, _double, execution=execution, checkpoint=ck)
            t[k], _ = least(step, rounds)
        row(f"`map_batches` with a checkpoint, {n:,} rows, trivial step", t["this"], t["baseline"])
        outputs = codes["this"]["pipeline.outputs"]
        if hasattr(outputs, "run_lock"):
            cwd = os.getcwd()
            os.chdir(tmp)
            try:
                folders = [Path("data") / s for s in ("ingest", "wildfeedback", "pugc", "selfie", "dove", "curry",
                                                      "release")]

                def locks():
                    for _ in range(100):
                        with outputs.run_lock("export"), outputs.reading(folders), outputs.publishing(folders[-1]):
                            pass
                row("`run_lock` + `reading` (7 folders) + `publishing`, 100 runs", least(locks, rounds)[0], None)
            finally:
                os.chdir(cwd)


def _double(batch: pa.Table) -> pa.Table:
    return pa.table({"y": pc.multiply(batch["x"], 2)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-code", type=Path, default=ROOT, help="another checkout (default: this one)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="pairs, prompts, reasons and rows of the steps")
    ap.add_argument("--prompts", type=int, default=20_000, help="prompts encoded")
    ap.add_argument("--specials", type=int, default=256, help="special tokens added to the tiny tokenizer")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", nargs="+", choices=["encode", "checks", "openai", "reasons", "run"],
                    default=["encode", "checks", "openai", "reasons", "run"])
    ap.add_argument("--smoke", action="store_true", help="2,000 rows and prompts, 1 round (figures mean nothing)")
    args = ap.parse_args()
    os.environ.setdefault("PREFPIPE_PROGRESS", "0")
    if args.smoke:
        args.rows, args.prompts, args.rounds = 2_000, 2_000, 1
    import pipeline.llm.openai_requests  # noqa: F401  (this checkout's modules, loaded before the baseline's)

    codes = {"this": load(ROOT), "baseline": load(args.baseline_code.resolve())}
    print(f"baseline code {args.baseline_code.resolve()}; least CPU of {args.rounds}; load average "
          f"{os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d %H:%M')}")
    print("| path | this | baseline | ratio | note |\n|---|---|---|---|---|")
    steps = {"encode": lambda: bench_encode(codes, args.prompts, args.specials, args.rounds),
             "checks": lambda: bench_checks(codes, args.rows, args.rounds),
             "openai": lambda: bench_openai(codes, args.rows, args.rounds),
             "reasons": lambda: bench_reasons(codes, args.rows, args.rounds),
             "run": lambda: bench_run(codes, args.rows, args.rounds)}
    for name in args.only:
        steps[name]()


if __name__ == "__main__":
    main()
