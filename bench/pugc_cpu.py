"""Benchmark: the CPU side of PUGC's model steps with an instant engine, before vs after vectorising.

The workload of issue #18: ``N`` queries -> sample n=4 answers (engine step) -> drop empty/cut-off,
response ids -> score each answer with the judge's ``choose`` over "1".."5" (engine step) -> best vs
worst pair per query -> pairs table -> shards. Each step runs as ``stages/pugc.py`` runs it (through
``stages.pugc_io.run_step``: ``map_batches`` with the shipped ``llm.batch_size`` and checkpoints).

The engine is an instant, deterministic in-process fake that follows the engine protocol the way
tests/test_pugc.py fakes it (sample i is "answer i: <query>"; the judge's p("1".."5") peaks on i+1), so
what is measured is prefpipe's own cost around the model. Its own time is measured and printed apart
(``engine``, wall seconds inside its calls). Queries and reference documents are the real Stack Exchange coffee posts in
``../shared/data/real`` (question titles and answer bodies), cycled to the size asked.

``before`` is the code path of main at 9a859dc (per-row prompt filling and ``json.dumps``, SHA-1 ids
through ``map_elements``, the ``pairs_table`` loop), kept verbatim below; ``after`` is the current
stage code. Both run in this process on the same rows, after a small warm-up, ``--repeat`` rounds in
alternating order; per step, the round with the least CPU time is reported (the machine may be shared).
The run checks that both give the same pairs, scores, details and drop counts (the ids differ: they are a
different hash) and exits non-zero when they do not.

    python bench/pugc_cpu.py                  # 10,000 queries, 3 rounds
    python bench/pugc_cpu.py --n 50000 --repeat 2
    python bench/pugc_cpu.py --batch-size 256 # engine batches of 256 rows (shipped: llm.batch_size 16)
    python bench/pugc_cpu.py --smoke          # 300 queries, 1 round
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFPIPE_PROGRESS", "0")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402
import yaml  # noqa: E402

import pipeline.llm  # noqa: E402
from pipeline.config import resolve_params  # noqa: E402
from pipeline.drops import account  # noqa: E402
from pipeline.execute import clear_checkpoints  # noqa: E402
from pipeline.io import write_shards  # noqa: E402
from pipeline.llm.base import Completion  # noqa: E402
from stages import pugc, pugc_io, pugc_judge  # noqa: E402

POSTS = ROOT.parent / "shared" / "data" / "real" / "stackexchange_coffee" / "Posts.xml"
K = 4
DETAIL = pl.Struct({"scoring": pl.String, "distribution": pl.Struct({s: pl.Float64 for s in "12345"})})
STEPS = ["sample", "filter + ids", "score", "pick pairs", "pairs table", "write shards"]


class FakeEngine:
    """Instant and deterministic; ``seconds`` is the (wall) time spent inside its calls."""

    name = "fake"

    def __init__(self):
        self.seconds = 0.0

    def generate(self, prompts, n=1, sampling=None, schema=None):
        start = time.perf_counter()
        out = [[Completion(f"answer {i}: {p[-1]['content']}", "stop") for i in range(n)] for p in prompts]
        self.seconds += time.perf_counter() - start
        return out

    def choose(self, prompts, options):
        start = time.perf_counter()
        out = []
        for p in prompts:
            c = p[-1]["content"]
            at = c.index("<<<RESPONSE\nanswer ") + 19
            probs = [0.05] * len(options)
            probs[int(c[at : c.index(":", at)]) % len(options)] = 0.8
            out.append(probs)
        self.seconds += time.perf_counter() - start
        return out

    def logprobs(self, prompts, responses):
        raise NotImplementedError("the best-of-4 workload does not use logprobs")


def queries(n: int) -> pl.DataFrame:
    """``n`` kept queries as step 3 leaves them: prompt_id, query, reference, origin_id, source."""
    rows = ET.parse(POSTS).getroot()
    clean = lambda s: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html.unescape(s))).strip()  # noqa: E731
    titles = {r.get("Id"): r.get("Title") for r in rows if r.get("PostTypeId") == "1"}
    pairs = [
        (titles[r.get("ParentId")], clean(r.get("Body")))
        for r in rows
        if r.get("PostTypeId") == "2" and r.get("ParentId") in titles
    ]
    return pl.DataFrame(
        {
            "prompt_id": [f"q{i:08d}" for i in range(n)],
            "query": [f"{pairs[i % len(pairs)][0]} (#{i})" for i in range(n)],
            "reference": [pairs[i % len(pairs)][1] for i in range(n)],
            "origin_id": [f"d{i:08d}" for i in range(n)],
            "source": ["bench"] * n,
        }
    )


# --- before: main at 9a859dc, verbatim ----------------------------------------------------------


def before_sample_responses(batch: pa.Table, engine, *, k: int, sampling) -> pa.Table:
    outs = engine.generate([pugc_judge.chat(q) for q in batch["query"].to_pylist()], n=k, sampling=sampling)
    rows = [
        (prompt_id, i, c.text, c.finish_reason)
        for prompt_id, samples in zip(batch["prompt_id"].to_pylist(), outs, strict=True)
        for i, c in enumerate(samples)
    ]
    return pl.DataFrame(rows, schema=pugc_io.empty_samples().schema, orient="row").to_arrow()


def before_with_response_ids(samples: pl.DataFrame) -> pl.DataFrame:
    from pipeline.records import stable_id

    return samples.with_columns(
        response_id=pl.struct("prompt_id", "sample_index", "text").map_elements(
            lambda r: stable_id("pugc", r["prompt_id"], r["sample_index"], r["text"]), return_dtype=pl.String
        )
    )


_RUNS = re.compile(r"<{3,}|>{3,}")


def before_escape(text: str) -> str:
    return _RUNS.sub(lambda m: m.group(0)[:2], text)


def before_fill(template_text: str, *, literal: dict[str, str] | None = None, **data: str) -> str:
    return template_text.format(**(literal or {}), **{k: before_escape(v) for k, v in data.items()})


def before_judge_prompt(query: str, document: str, response: str, scoring: str) -> list[dict[str, str]]:
    from pipeline.prompt import template

    return pugc_judge.chat(
        before_fill(
            template("pugc_judge"),
            literal={"answer_format": pugc_judge.ANSWER_FORMAT[scoring]},
            query=query,
            document=document,
            response=response,
        )
    )


def before_score_responses(batch: pa.Table, engine, *, scoring: str, n_judgments: int, sampling) -> pa.Table:
    prompts = [
        before_judge_prompt(q, d, r, scoring)
        for q, d, r in zip(
            batch["query"].to_pylist(), batch["reference"].to_pylist(), batch["text"].to_pylist(), strict=True
        )
    ]
    scores: list[float | None] = []
    details: list[str] = []
    probs = np.asarray(engine.choose(prompts, pugc_judge.SCORES), dtype=np.float64).reshape(len(prompts), 5)
    probs = probs / probs.sum(axis=1, keepdims=True)
    for p, s in zip(probs, pugc_judge.expected_score(probs), strict=True):
        scores.append(float(s))
        dist = dict(zip(pugc_judge.SCORES, p.round(6).tolist(), strict=True))
        details.append(json.dumps({"scoring": "expected", "distribution": dist}))
    return pa.table(
        {
            "response_id": batch["response_id"],
            "score": pa.array(scores, pa.float64()),
            "detail": pa.array(details, pa.string()),
        }
    )


def before_pairs_table(picked: pl.DataFrame, queries: pl.DataFrame, lineage: dict) -> pa.Table:
    from pipeline.records import MESSAGES_TYPE, stable_id

    rows = picked.filter(pl.col("drop").is_null()).join(
        queries.select("prompt_id", "query", "origin_id", "source"), on="prompt_id"
    )
    pair_ids, lineages = [], []
    for r in rows.iter_rows(named=True):
        pair_ids.append(stable_id("pugc", r["prompt_id"], r["chosen_response_id"], r["rejected_response_id"]))
        lineages.append(
            json.dumps(
                {
                    **lineage,
                    "doc_id": r["origin_id"],
                    "prompt_id": r["prompt_id"],
                    "chosen_id": r["chosen_response_id"],
                    "rejected_id": r["rejected_response_id"],
                    "chosen_finish_reason": r["chosen_finish_reason"],
                    "rejected_finish_reason": r["rejected_finish_reason"],
                },
                sort_keys=True,
            )
        )
    msg = lambda role, col: pl.concat_list(pl.struct(role=pl.lit(role), content=pl.col(col)))  # noqa: E731
    table = rows.select(
        pair_id=pl.Series(pair_ids, dtype=pl.String),
        prompt=msg("user", "query"),
        chosen=msg("assistant", "chosen_text"),
        rejected=msg("assistant", "rejected_text"),
        score_chosen="chosen_score",
        score_rejected="rejected_score",
        margin="margin",
        label_smoothing=pl.lit(0.0),
        noisy=pl.lit(False),
        method=pl.lit("pugc"),
        source="source",
        lineage=pl.Series(lineages, dtype=pl.String),
    ).to_arrow()
    for name in ("prompt", "chosen", "rejected"):
        table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(MESSAGES_TYPE))
    return table


BEFORE = {
    "sample_responses": before_sample_responses,
    "with_response_ids": before_with_response_ids,
    "score_responses": before_score_responses,
    "to_scores": lambda scores, scoring: pl.from_arrow(scores) if isinstance(scores, pa.Table) else scores,
    "pairs_table": before_pairs_table,
}
AFTER = {
    "sample_responses": pugc.sample_responses,
    "with_response_ids": pugc_io.with_response_ids,
    "score_responses": pugc_judge.score_responses,
    "to_scores": pugc_judge.to_scores,
    "pairs_table": pugc_io.pairs_table,
}


# --- one run: PUGC steps 4-6 as stages/pugc.py main() wires them ---------------------------------


def run(code: dict, q: pl.DataFrame, params, engine: FakeEngine, out: Path) -> tuple[dict, dict]:
    """Seconds per step (wall, CPU, inside the fake engine), and what the run made (for the check)."""
    cfg = params.pugc
    policy = judge = params.llm
    clear_checkpoints("pugc")  # no step may resume from the other path's chunks
    seconds: dict[str, tuple[float, float, float]] = {}  # step: (wall, CPU, engine wall)
    clock = (time.perf_counter(), time.process_time())
    engine.seconds = 0.0

    def tick(step: str) -> None:
        nonlocal clock
        now = (time.perf_counter(), time.process_time())
        seconds[step] = (now[0] - clock[0], now[1] - clock[1], engine.seconds)
        engine.seconds = 0.0
        clock = (time.perf_counter(), time.process_time())

    sampling = policy.sampling.model_copy(update={"temperature": cfg.temperature, "top_p": cfg.top_p})
    samples = pugc_io.run_step(
        q.select("prompt_id", "query"), code["sample_responses"], params, "sampling", engine=policy, k=K,
        sampling=sampling,
    )
    tick("sample")
    samples = pugc.response_filter(samples)
    sampled = account(samples)
    samples = code["with_response_ids"](samples.filter(pl.col("drop").is_null()).drop("drop"))
    tick("filter + ids")
    to_score = samples.join(q.select("prompt_id", "query", "reference"), on="prompt_id")
    scores = pugc_io.run_step(
        to_score.select("response_id", "query", "reference", "text"), code["score_responses"], params, "scoring",
        engine=judge, scoring=cfg.scoring, n_judgments=cfg.n_judgments, sampling=judge.sampling,
    )
    responses = samples.join(code["to_scores"](scores, cfg.scoring), on="response_id", how="left")
    tick("score")
    picked = pugc.pick_pairs(q["prompt_id"], responses, cfg.min_margin)
    tick("pick pairs")
    pairs = code["pairs_table"](picked, q, {"stage": "pugc", "bench": "pugc_cpu"})
    tick("pairs table")
    kw = {"fingerprint": "bench", "target_shard_bytes": params.execution.target_shard_bytes,
          "row_group_bytes": params.execution.row_group_bytes}
    scored = responses.select("prompt_id", "response_id", "text", generator=pl.lit("fake"), score="score",
                              scorer=pl.lit("pugc:fake"), detail="detail")
    write_shards(scored.to_arrow(), out / "responses", name="responses", **kw)
    write_shards(pairs, out / "pairs", name="pairs", **kw)
    tick("write shards")
    made = {
        "sampled": sampled,
        "drops": picked["drop"].value_counts().sort("drop").rows(),
        "responses": responses.select("prompt_id", "sample_index", "text", "score",
                                      pl.col("detail").str.json_decode(DETAIL)).sort("prompt_id", "sample_index"),
        "pairs": pl.from_arrow(pairs).select(
            "prompt", "chosen", "rejected", "score_chosen", "score_rejected", "margin", "source",
            pl.col("lineage").str.json_path_match("$.doc_id"),
        ).sort("prompt"),
    }
    return seconds, made


def same(a: dict, b: dict) -> bool:
    return (
        a["drops"] == b["drops"]
        and a["responses"].equals(b["responses"])
        and a["pairs"].equals(b["pairs"])
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="queries (x4 answers each)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds, each running before and after")
    ap.add_argument("--batch-size", type=int, default=None, help="llm.batch_size (default: params.yaml's)")
    ap.add_argument("--smoke", action="store_true", help="300 queries, 1 round: checks the bench runs")
    args = ap.parse_args()
    n, repeat = (300, 1) if args.smoke else (args.n, args.repeat)

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["pugc"]["responses_per_query"] = K
    if args.batch_size:
        data["llm"]["batch_size"] = args.batch_size
    params = resolve_params(data)
    engine = FakeEngine()
    pipeline.llm.get_engine = lambda cfg: engine  # the stage's engine steps get the fake
    q = queries(n)
    best: dict[str, dict[str, tuple[float, float, float]]] = {"before": {}, "after": {}}
    made: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # checkpoints (.prefpipe/) and shards go here
        for name, code in (("before", BEFORE), ("after", AFTER)):  # warm-up: imports, caches, first calls
            run(code, q.head(100), params, engine, Path(tmp) / f"warm-{name}")
        for r in range(repeat):
            for name, code in (("before", BEFORE), ("after", AFTER))[:: 1 if r % 2 == 0 else -1]:
                seconds, made[name] = run(code, q, params, engine, Path(tmp) / f"{name}-{r}")
                for step, t in seconds.items():  # best = least CPU (the machine may be shared)
                    if t[1] < best[name].get(step, (0.0, float("inf")))[1]:
                        best[name][step] = t
                wall, cpu = (sum(t[i] for t in seconds.values()) for i in (0, 1))
                print(f"round {r + 1} {name}: {wall:.2f} s wall, {cpu:.2f} s CPU", file=sys.stderr)
    ok = same(made["before"], made["after"])

    print(f"PUGC steps 4-6, {n:,} queries x {K} answers, instant fake engine, local backend, "
          f"llm.batch_size {params.llm.batch_size}, checkpoint_rows {params.execution.checkpoint_rows}; "
          f"per step the round with the least CPU of {repeat}; q/s = queries per second of wall time")
    print(f"{'step':<14}{'wall before':>12}{'after':>8}{'CPU before':>12}{'after':>8}{'engine':>8}"
          f"{'q/s before':>12}{'after':>10}{'speed-up wall':>15}{'CPU':>7}")
    for step in [*STEPS, "total"]:
        b, a = ([sum(x) for x in zip(*best[k].values(), strict=True)] if step == "total" else best[k][step]
                for k in ("before", "after"))
        print(f"{step:<14}{b[0]:>12.3f}{a[0]:>8.3f}{b[1]:>12.3f}{a[1]:>8.3f}{a[2]:>8.3f}"
              f"{n / b[0]:>12,.0f}{n / a[0]:>10,.0f}{b[0] / a[0]:>14.1f}x{b[1] / a[1]:>6.1f}x")
    print(f"same pairs, scores and drop counts before and after: {ok}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
