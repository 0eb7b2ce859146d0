"""Peer bench: best-of-4 pairs through prefpipe (local and Ray) and distilabel 1.5.3, in one run.

The workload is PUGC's own steps (stages/pugc.py): sample n=4 responses per query -> score each with
the judge's `choose` over "1".."5" (expected score) -> best-vs-worst pairs -> shards. The model is an
instant, deterministic in-process fake that follows the engine protocol the way tests/test_pugc.py
fakes it (sample i is "answer i: <query>"; the judge's p("1".."5") peaks on score i+1 for sample i),
so what is measured is each framework's own cost around the model. Queries and reference documents
come from the real StackExchange coffee posts in ../shared/data/real, cycled to the size asked.

distilabel runs in its own virtual environment (built on first use under --venv: distilabel==1.5.3
plus `requests` and `beautifulsoup4`, which it imports without declaring them), as idiomatic
distilabel: LoadDataFromDicts -> TextGeneration(num_generations=4, the fake as a custom LLM) -> a step
that scores with the same judge template and fake `choose` -> FormatTextGenerationDPO -> Distiset
saved to disk. Both sides use their shipped batch sizes (prefpipe llm.batch_size 16 with its
checkpoints, distilabel's input_batch_size 50).

prefpipe runs inside `engine_pools()` as `prefpipe run` runs a stage. Ray is measured three ways: the steps
on a private local instance started just before them ("prefpipe ray", the issue's Ray / local), the same
plus that instance's start ("+ ray init"), and on a cluster already running (started untimed, joined
through its address: connect + steps), as a user with RAY_ADDRESS sees it.

    python bench/peer.py                      # 10,000 queries: prefpipe local, Ray, distilabel
    python bench/peer.py --n 50000 --skip-ray
    python bench/peer.py --smoke              # 300 queries, prefpipe local + Ray, no distilabel
"""

from __future__ import annotations

import argparse
import functools
import html
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POSTS = ROOT.parent / "shared" / "data" / "real" / "stackexchange_coffee" / "Posts.xml"
JUDGE_TEMPLATE = ROOT / "pipeline" / "prompts" / "pugc_judge.txt"
DISTILABEL = ["distilabel==1.5.3", "requests", "beautifulsoup4"]
K, SCORES = 4, ["1", "2", "3", "4", "5"]
_SAMPLE = re.compile(r"answer (\d+):")

CHILD = "--distilabel-child" in sys.argv
if not CHILD:  # prefpipe's side: the engine contract's Completion
    sys.path.insert(0, str(ROOT))  # this checkout's code, whatever is installed
    from pipeline.llm.base import Completion
else:  # inside distilabel's venv, which has no prefpipe

    @dataclass(frozen=True)
    class Completion:  # type: ignore[no-redef]
        text: str
        finish_reason: str = "stop"


class FakeEngine:
    """Instant and deterministic; leaves one marker file per construction in ``marker_dir``, so the
    bench can count engine builds."""

    name = "fake"

    def __init__(self, cfg=None, marker_dir: str | None = None):
        if marker_dir:
            Path(marker_dir, f"{os.getpid()}-{uuid.uuid4().hex}").touch()

    def generate(self, prompts, n=1, sampling=None, schema=None):
        return [[Completion(f"answer {i}: {p[-1]['content']}") for i in range(n)] for p in prompts]

    def choose(self, prompts, options):
        out = []
        for p in prompts:
            i = int(_SAMPLE.search(p[-1]["content"]).group(1))
            probs = [0.05] * len(options)
            probs[i % len(options)] = 0.8
            out.append(probs)
        return out

    def logprobs(self, prompts, responses):
        raise NotImplementedError("the best-of-4 workload does not use logprobs")


def queries(n: int) -> list[dict]:
    """``n`` (query, reference) rows: question titles of the real posts and the answers' text, cycled."""
    rows = ET.parse(POSTS).getroot()
    clean = lambda s: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html.unescape(s))).strip()  # noqa: E731
    titles = {r.get("Id"): r.get("Title") for r in rows if r.get("PostTypeId") == "1"}
    pairs = [(titles[r.get("ParentId")], clean(r.get("Body"))) for r in rows
             if r.get("PostTypeId") == "2" and r.get("ParentId") in titles]
    return [{"prompt_id": f"q{i:08d}", "query": f"{pairs[i % len(pairs)][0]} (#{i})",
             "reference": pairs[i % len(pairs)][1]} for i in range(n)]


# --- prefpipe ------------------------------------------------------------------------------------


def prefpipe(rows: list[dict], backend: str, work: Path, marker_dir: Path) -> tuple[int, dict[str, float]]:
    """PUGC steps 4-6 as stages/pugc.py main() runs them, with its own functions; returns (pairs, seconds
    per step)."""
    import polars as pl
    import yaml

    from pipeline.config import LLM, Execution, Params, Pugc, fingerprint
    from pipeline.execute import Checkpoint, map_batches
    from stages import pugc, pugc_io, pugc_judge

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    ex = Execution.model_validate({**data["execution"], "backend": backend})
    llm = LLM.model_validate(data["llm"])
    cfg = Pugc.model_validate({**data["pugc"], "responses_per_query": K})
    params = Params.model_construct(execution=ex, llm=llm, pugc=cfg)
    factory = functools.partial(FakeEngine, marker_dir=str(marker_dir))
    steps: dict[str, float] = {}
    clock = time.perf_counter()

    def tick(name: str) -> None:
        nonlocal clock
        steps[name] = time.perf_counter() - clock
        clock = time.perf_counter()

    def run(table, fn, step, **kw):  # pugc_io.run_step, with the fake engine and a private checkpoint folder
        ck = Checkpoint(work / "checkpoints" / step, fingerprint(cfg, llm, {"step": step}))
        out = map_batches(table.to_arrow(), fn, execution=ex, engine=llm, engine_factory=factory, checkpoint=ck,
                          fn_kwargs=kw, desc=step)
        ck.clear()
        return pl.from_arrow(out)

    q = pl.DataFrame(rows).with_columns(source=pl.lit("bench"), origin_id=pl.col("prompt_id"))
    sampling = llm.sampling.model_copy(update={"temperature": cfg.temperature, "top_p": cfg.top_p})
    samples = run(q.select("prompt_id", "query"), pugc.sample_responses, "sampling", k=K, sampling=sampling)
    tick("sample (engine step)")
    samples = pugc.response_filter(samples)
    samples = pugc_io.with_response_ids(samples.filter(pl.col("drop").is_null()).drop("drop"))
    to_score = samples.join(q.select("prompt_id", "query", "reference"), on="prompt_id")
    tick("response ids + join")
    scored = run(to_score.select("response_id", "query", "reference", "text"), pugc_judge.score_responses,
                 "scoring", scoring="expected", n_judgments=cfg.n_judgments, sampling=llm.sampling)
    tick("score (engine step)")
    responses = samples.join(pugc_judge.to_scores(scored, "expected"), on="response_id", how="left")
    picked = pugc.pick_pairs(q["prompt_id"], responses, cfg.min_margin)
    tick("scores + pick pairs")
    pairs = pugc_io.pairs_table(picked, q, {"stage": "pugc", "bench": "peer"})
    tick("pairs table")
    pugc_io.write_outputs(params, q, responses, pairs, llm, llm, work / "out", fp=fingerprint(cfg, params.llm))
    tick("write shards")
    return pairs.num_rows, steps


# --- distilabel (runs inside its own venv) -------------------------------------------------------


if CHILD:  # distilabel's pipeline steps must be importable from this module in its worker processes
    from distilabel.models.llms.base import LLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import FormatTextGenerationDPO, LoadDataFromDicts, StepInput, step
    from distilabel.steps.tasks import TextGeneration

    TEMPLATE = JUDGE_TEMPLATE.read_text(encoding="utf-8")

    def unfence(text: str) -> str:
        return re.sub(r">{3,}", ">>", re.sub(r"<{3,}", "<<", text))

    class FakeLLM(LLM):
        @property
        def model_name(self) -> str:
            return "fake"

        def generate(self, inputs, num_generations: int = 1):
            outs = FakeEngine().generate(inputs, n=num_generations)
            return [{"generations": [c.text for c in o], "statistics": {}} for o in outs]

    def score_responses(inputs):
        """The same judge prompt as PUGC's, the same fake `choose`, the expected score."""
        prompts = [[{"role": "user", "content": TEMPLATE.format(
            query=unfence(r["instruction"]), document=unfence(r["reference"]), response=unfence(g),
            answer_format="Answer with a single digit from 1 to 5.")}] for r in inputs for g in r["generations"]]
        probs = FakeEngine().choose(prompts, SCORES)
        expected = [sum((i + 1) * p for i, p in enumerate(ps)) / sum(ps) for ps in probs]
        for j, r in enumerate(inputs):
            r["ratings"] = expected[j * K:(j + 1) * K]
        yield inputs

    score_responses.__annotations__ = {"inputs": StepInput}  # a real type: this file's annotations are strings
    # The step class takes the function's name, so it must be this module's `score_responses` (pickled by name).
    score_responses = step(inputs=["instruction", "reference", "generations"], outputs=["ratings"])(score_responses)


def distilabel_child(data: Path, out: Path) -> None:
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    start = time.perf_counter()
    with Pipeline(name="peer-best-of-4", cache_dir=str(out / "cache")) as pipeline:
        load = LoadDataFromDicts(data=[{"instruction": r["query"], "reference": r["reference"]} for r in rows])
        gen = TextGeneration(llm=FakeLLM(), num_generations=K, group_generations=True,
                             output_mappings={"generation": "generations"})
        load >> gen >> score_responses() >> FormatTextGenerationDPO()
    distiset = pipeline.run(use_cache=False)
    distiset.save_to_disk(out / "distiset", save_card=False, save_pipeline_config=False, save_pipeline_log=False)
    seconds = time.perf_counter() - start
    pairs = sum(len(split) for config in distiset.values() for split in config.values())
    print(json.dumps({"seconds": seconds, "pairs": pairs}))


def distilabel(rows: list[dict], venv: Path, work: Path) -> tuple[int, float]:
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"building the distilabel venv in {venv} ({', '.join(DISTILABEL)}) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *DISTILABEL], check=True)
    work.mkdir(parents=True, exist_ok=True)
    data = work / "queries.jsonl"
    data.write_text("".join(json.dumps({"query": r["query"], "reference": r["reference"]}) + "\n" for r in rows))
    env = {**os.environ, "DISTILABEL_LOG_LEVEL": "ERROR", "PYTHONPATH": ""}
    proc = subprocess.run([str(python), __file__, "--distilabel-child", str(data), str(work)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"distilabel run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["pairs"], result["seconds"]


# --- Ray: a private instance, then an already running cluster -----------------------------------

RAY_RUNS = {"ray": "prefpipe ray", "ray-cluster": "prefpipe ray, running cluster"}
_cluster = None


def ray_connect(run: str) -> float:
    """Seconds to get the driver onto Ray. ``ray``: ``ray_init`` starts a private local instance (what
    `execution.backend: ray` with no address does). ``ray-cluster``: a cluster already running before the
    stage (started here, untimed, with ``ray.cluster_utils.Cluster``; 2 CPUs like the private one), joined
    through its address, the way a user with ``RAY_ADDRESS`` / ``execution.ray_address`` runs."""
    global _cluster
    from pipeline.execute_ray import ray_init

    if run == "ray-cluster":
        ray_disconnect()
        from ray.cluster_utils import Cluster

        _cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    start = time.perf_counter()
    ray_init(_cluster.address if _cluster is not None else "local")
    return time.perf_counter() - start


def ray_disconnect() -> None:
    """Leave Ray, and stop the cluster this bench started (only its own processes)."""
    global _cluster
    if "ray" not in sys.modules:
        return
    import ray

    ray.shutdown()
    if _cluster is not None:
        _cluster.shutdown()
        _cluster = None


# --- driver --------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="queries (x4 responses)")
    ap.add_argument("--smoke", action="store_true", help="300 queries, prefpipe local and Ray only")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-distilabel", action="store_true")
    ap.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "prefpipe-bench-distilabel",
                    help="where distilabel's virtual environment is built (reused when present)")
    ap.add_argument("--distilabel-child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.distilabel_child:
        return distilabel_child(*args.distilabel_child)
    os.environ.setdefault("PREFPIPE_PROGRESS", "0")
    from pipeline.execute_ray import engine_pools

    n = 300 if args.smoke else args.n
    rows = queries(n)
    results: dict[str, tuple[int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="peer-") as tmp:
        tmp = Path(tmp)
        warm = tmp / "warm"
        warm.mkdir()
        prefpipe(rows[:64], "local", warm, warm)  # imports are not the workload (distilabel's are not timed either)
        try:
            for run in ["local"] + ([] if args.skip_ray else ["ray", "ray-cluster"]):
                connect, label = 0.0, "prefpipe local"
                if run != "local":
                    connect, label = ray_connect(run), RAY_RUNS[run]
                markers = tmp / f"markers-{run}"
                markers.mkdir()
                start = time.perf_counter()
                with engine_pools():  # as `prefpipe run` runs a stage
                    pairs, steps = prefpipe(rows, "local" if run == "local" else "ray", tmp / run, markers)
                seconds = time.perf_counter() - start
                if run == "ray":  # the steps alone, and (below) with the start of the private instance
                    results["prefpipe ray"] = (pairs, seconds)
                    label = "prefpipe ray + ray init"
                results[label] = (pairs, seconds + connect)
                builds = len(list(markers.iterdir()))
                print(f"{RAY_RUNS.get(run, label)}: {pairs:,} pairs; engine builds: {builds} (2 engine steps, "
                      f"llm.replicas 1)" + (f"; ray init / connect {connect:.2f} s" if run != "local" else ""))
                print("  seconds per step: " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))
        finally:
            ray_disconnect()
        if args.smoke or args.skip_distilabel:
            print("distilabel: skipped" + (" (--smoke never builds its venv)" if args.smoke else ""))
        else:
            results["distilabel 1.5.3"] = distilabel(rows, args.venv, tmp / "distilabel")

    print(f"\nbest-of-{K} pairs, {n:,} queries ({n * K:,} responses), instant fake engine")
    print(f"{'runner':<30}{'pairs':>10}{'seconds':>10}{'queries/s':>12}")
    for name, (pairs, seconds) in results.items():
        print(f"{name:<30}{pairs:>10,}{seconds:>10.2f}{n / seconds:>12,.0f}")
    local = results["prefpipe local"][1]
    for name in results:
        if name.startswith("prefpipe ray"):
            goal = " (goal >= 0.5x)" if name == "prefpipe ray" else ""
            print(f"{name} / local: {local / results[name][1]:.2f}x{goal}")
    if "distilabel 1.5.3" in results:
        print(f"prefpipe local / distilabel: {results['distilabel 1.5.3'][1] / local:.1f}x (goal >= 10x)")
        if "prefpipe ray" in results:
            print(f"prefpipe Ray / distilabel: {results['distilabel 1.5.3'][1] / results['prefpipe ray'][1]:.1f}x")


if __name__ == "__main__":
    main()
