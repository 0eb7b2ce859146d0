"""README.md and bench/README.md agree with the code: every command line, flag, params key, file path,
YAML and Python snippet they show exists and means what it says (no model, nothing built).

What is checked here, and so cannot drift silently:
- ``prefpipe SUB ...`` / ``python -m pipeline.cli SUB ...``: the subcommand and each ``--flag`` exist in
  ``pipeline.cli.build_parser``; the complete command lines of the READMEs' shell blocks parse.
- ``python bench/X.py --flag``: the script exists and declares the flag.
- dotted params keys (``execution.on_gate_failure``, ``<stage>.gates.<role>``): present in params.yaml.
- repository paths (``pipeline/...``, ``stages/...``, ``tests/...::test_name``, ``../shared/...``, links): exist.
- the formats table (``FORMAT_KINDS``), the data-contracts table (``pipeline.records``), the release tree
  (dvc.yaml's export outputs), YAML snippets (validated as params), Python snippets (compile).
- every params.yaml key is documented: named in README.md or commented in params.yaml.
- the defaults README.md states in prose ("`collapse_fraction` (0.1)", "5,000 distinct instructions") are
  params.yaml's values and the code's constants (``stated_defaults``).
"""

from __future__ import annotations

import argparse
import ast
import copy
import glob
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.config import FORMAT_KINDS, resolve_params
from pipeline.yaml12 import load_yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "bench/README.md"]
FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.S | re.M)
# Paths the READMEs name as placeholders ("`pytest tests/test_x.py` runs one module").
PLACEHOLDERS = {"tests/test_x.py"}


def text(doc: str) -> str:
    return (ROOT / doc).read_text(encoding="utf-8")


def fences(doc: str, lang: str | None = None) -> list[tuple[int, str]]:
    """(line, dedented body) of each fenced block, of language ``lang`` when given."""
    t = text(doc)
    out = []
    for m in FENCE.finditer(t):
        if lang is None or m.group(2) == lang:
            body = "\n".join(line[len(m.group(1)):] for line in m.group(3).splitlines())
            out.append((t[:m.start()].count("\n") + 1, body))
    return out


def prose(doc: str) -> str:
    """The text without its fenced blocks (line numbers kept)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text(doc))


def spans(doc: str) -> list[tuple[int, str]]:
    """(line, content) of every inline code span outside fenced blocks."""
    t = prose(doc)
    return [(t[:m.start()].count("\n") + 1, m.group(1)) for m in re.finditer(r"`([^`\n]+)`", t)]


def code_lines(doc: str) -> list[tuple[int, str]]:
    """Inline code spans and the lines of shell blocks (backslash continuations joined, comments cut)."""
    out = list(spans(doc))
    for line, body in fences(doc, "bash"):
        for i, row in enumerate(body.replace("\\\n", " ").splitlines()):
            out.append((line + 1 + i, row.split(" #")[0].strip()))
    return out


def params() -> dict[str, Any]:
    return load_yaml((ROOT / "params.yaml").read_text(encoding="utf-8"))


# --- the command line ------------------------------------------------------------------------------

CLI = re.compile(r"(?:^|[\s(`&;])(?:prefpipe|python -m pipeline\.cli) ([a-z]+)((?: [^`#|;&)]*)?)")


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def cli_uses() -> list[tuple[str, int, str, str]]:
    uses = []
    for doc in DOCS:
        for line, code in code_lines(doc):
            for m in CLI.finditer(code):
                uses.append((doc, line, m.group(1), m.group(2)))
    return uses


def test_the_docs_show_the_command_line():
    used = {sub for _, _, sub, _ in cli_uses()}
    assert {"run", "inspect", "audit", "publish"} <= used, used


@pytest.mark.parametrize("doc,line,sub,args", cli_uses(), ids=lambda v: str(v)[:40])
def test_every_cli_subcommand_and_flag_in_the_docs_exists(doc, line, sub, args):
    subs = subparsers()
    assert sub in subs, f"{doc}:{line}: `{sub}` is no prefpipe subcommand ({sorted(subs)})"
    flags = {s for a in subs[sub]._actions for s in a.option_strings}
    for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", args):
        assert flag in flags, f"{doc}:{line}: `prefpipe {sub}` has no {flag} (it has {sorted(flags)})"


def test_the_complete_command_lines_of_the_shell_blocks_parse():
    parser, seen = build_parser(), 0
    for doc in DOCS:
        for line, body in fences(doc, "bash"):
            for row in body.replace("\\\n", " ").splitlines():
                row = row.split(" #")[0].strip()
                m = re.match(r"(?:prefpipe|python -m pipeline\.cli) (.*)$", row)
                if m:
                    try:
                        parser.parse_args(shlex.split(m.group(1)))
                    except SystemExit:  # an unknown flag or a missing argument (argparse printed which)
                        pytest.fail(f"{doc}:{line}: `{row}` does not parse")
                    seen += 1
    assert seen >= 4


# --- bench scripts ---------------------------------------------------------------------------------

def bench_uses() -> list[tuple[str, int, str, str]]:
    uses = []
    for doc in DOCS:
        for line, code in code_lines(doc):
            for m in re.finditer(r"python (bench/[\w-]+\.py)((?: --?[\w-]+(?: [^-\s`|][^\s`|]*)?)*)", code):
                uses.append((doc, line, m.group(1), m.group(2)))
    return uses


def test_every_bench_script_and_flag_in_the_docs_exists():
    uses = bench_uses()
    assert len({script for _, _, script, _ in uses}) >= 15, "the bench commands are no longer found in the docs"
    for doc, line, script, args in uses:
        path = ROOT / script
        assert path.exists(), f"{doc}:{line}: {script} does not exist"
        source = path.read_text(encoding="utf-8")
        for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", args):
            assert f'"{flag}"' in source, f"{doc}:{line}: {script} declares no {flag}"


# --- params keys -----------------------------------------------------------------------------------

def resolve_key(data: Any, key: str) -> bool:
    """Does the dotted ``key`` name something in params? ``<role>``-style parts match any key, ``[i]`` any
    element of a list (it is found when one element has the rest of the path)."""
    if not key:
        return True
    head, _, rest = key.partition(".")
    m = re.fullmatch(r"(<\w+>|[\w-]+)(\[\w*\])?", head)
    if m is None or not isinstance(data, dict):
        return False
    values = list(data.values()) if m.group(1).startswith("<") else [data[m.group(1)]] if m.group(1) in data else []
    if m.group(2):
        values = [v for value in values if isinstance(value, list) for v in value]
    return any(resolve_key(v, rest) for v in values)


FILE_SUFFIXES = {"py", "json", "jsonl", "md", "txt", "yaml", "csv", "png", "parquet"}


def params_keys_named() -> list[tuple[str, int, str]]:
    sections = set(params()) | {"<stage>"}
    found = []
    for doc in DOCS:
        for line, code in spans(doc):
            for key in re.findall(r"(?<![\w/.$<-])((?:[a-z_]+|<stage>)(?:\.(?:[a-z_0-9]+|<\w+>)(?:\[\w*\])?)+)", code):
                if key.split(".")[0] in sections and key.rsplit(".", 1)[1] not in FILE_SUFFIXES:
                    found.append((doc, line, key))
    return found


def test_every_params_key_the_docs_name_is_in_params_yaml():
    named, data = params_keys_named(), params()
    assert len(named) >= 40, "the params keys are no longer found in the docs"
    for doc, line, key in named:
        if key.startswith("<stage>."):
            ok = any(resolve_key(data, stage + key[len("<stage>"):]) for stage in ("wildfeedback", "pugc", "selfie", "dove"))
        else:
            ok = resolve_key(data, key)
        assert ok, f"{doc}:{line}: `{key}` is not a key of params.yaml"


def test_every_params_yaml_key_is_documented():
    """Named in README.md (`key`, `key: ...`, `.key`) or explained by a comment on its line or the line above."""
    readme, lines = text("README.md"), (ROOT / "params.yaml").read_text(encoding="utf-8").splitlines()
    stack: list[tuple[int, str]] = []
    documented: dict[str, bool] = {}
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(- )?([A-Za-z_]\w*):(.*)$", line)
        if not m:
            continue
        indent = len(m.group(1)) + (2 if m.group(2) else 0)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(3)))
        path, key = ".".join(k for _, k in stack), m.group(3)
        commented = "#" in m.group(4) or (i > 0 and lines[i - 1].strip().startswith("#"))
        named = any(s in readme for s in (f"`{key}", f"{key}:", f".{key}`"))
        documented[path] = documented.get(path, False) or commented or named
    undocumented = [p for p, ok in documented.items() if not ok]
    assert not undocumented, f"params.yaml keys neither named in README.md nor commented: {undocumented}"


# --- paths -----------------------------------------------------------------------------------------

PATH = re.compile(r"(?<![\w./-])((?:\.\./shared|pipeline|stages|tests|bench|docs|\.ci|data/samples)/[\w./*=-]*[\w*/])")


def paths_named() -> list[tuple[str, int, str]]:
    """Paths in code spans and shell blocks (relative to the project root, as the docs write them), and the
    targets of relative markdown links (relative to the document)."""
    found = []
    for doc in DOCS:
        for line, code in code_lines(doc):
            found += [(doc, line, p) for p in PATH.findall(code)
                      if "<" not in p and "..." not in p and p not in PLACEHOLDERS]
        t = text(doc)
        for m in re.finditer(r"\]\(([^)#:\s]+)\)", t):
            target = ((ROOT / doc).parent / m.group(1)).resolve().relative_to(ROOT)
            found.append((doc, t[:m.start()].count("\n") + 1, str(target)))
    return found


def test_every_path_the_docs_name_exists():
    named = paths_named()
    assert len(named) >= 60, "the paths are no longer found in the docs"
    for doc, line, p in named:
        assert glob.glob(str(ROOT / p)), f"{doc}:{line}: {p} does not exist"


def test_every_test_the_docs_name_exists():
    found = 0
    for doc in DOCS:
        t = text(doc)
        last = None
        for m in re.finditer(r"(test_\w+\.py)?::(test_\w+)(\*?)", t):
            last = m.group(1) or last
            assert last, f"{doc}: ::{m.group(2)} names no test module"
            source = (ROOT / "tests" / last).read_text(encoding="utf-8")
            pattern = rf"def {m.group(2)}" + (r"\w*" if m.group(3) else "") + r"\("
            assert re.search(pattern, source), f"{doc}: tests/{last} has no {m.group(2)}{m.group(3)}"
            found += 1
    assert found >= 5


def test_every_anchor_link_names_a_heading():
    t = text("README.md")
    slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
             for h in re.findall(r"^#+ (.+)$", prose("README.md"), re.M)}
    for anchor in re.findall(r"\]\(#([^)]+)\)", t):
        assert anchor in slugs, f"README.md links to #{anchor}, which no heading makes"


# --- tables and snippets ---------------------------------------------------------------------------

def test_the_formats_table_matches_the_adapters():
    rows = dict(re.findall(r"^\| `(\w+)` \| ([\w, ]+) \|", text("README.md"), re.M))
    rows = {name: sorted(k.strip() for k in kinds.split(",")) for name, kinds in rows.items() if name in FORMAT_KINDS}
    assert rows == {name: sorted(kinds) for name, kinds in FORMAT_KINDS.items()}


def test_the_data_contracts_table_matches_the_records():
    from pipeline import records

    models = {"conversations": records.Conversation, "documents": records.Document, "prompts": records.Prompt,
              "signals": records.Signal, "responses": records.Response, "pairs": records.Pair,
              "joint_pairs": records.JointPair}
    t = text("README.md")
    table = t[t.index("## Data contracts"):t.index("## Ingesting your data")]
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
    t = text("README.md")
    tree = next(body for _, body in fences("README.md") if body.startswith("data/release/"))
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
    """A README YAML block is a params section (validated merged into params.yaml) or an ingest source."""
    blocks = fences("README.md", "yaml")
    assert len(blocks) >= 4
    for line, body in blocks:
        snippet = yaml.safe_load(body)
        data = params()
        if isinstance(snippet, list):  # an entry of ingest.sources
            data["ingest"]["sources"] = data["ingest"]["sources"] + snippet
        else:
            data = merged(data, snippet)
        try:
            resolve_params(data)
        except Exception as e:  # the message names the key
            pytest.fail(f"README.md:{line}: the YAML snippet is not valid params: {e}")


def test_every_python_snippet_compiles():
    blocks = fences("README.md", "python")
    assert blocks
    for line, body in blocks:
        ast.parse(body, filename=f"README.md:{line}")


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

    from pipeline.config_stages import PiiKind

    t = text("README.md")
    table = t[t.index("### PII redaction"):t.index("### Auditing a release")]
    kinds = {k for cell in re.findall(r"^\| ([^|]+) \|", table, re.M) for k in re.findall(r"`(\w+)`", cell)}
    assert kinds == set(get_args(PiiKind)) == set(params()["export"]["pii_kinds"])


# --- stated defaults -------------------------------------------------------------------------------

def _at(data: Any, key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


def stated_defaults() -> list[tuple[str, Any, Any]]:
    """(what README.md says, the value in params.yaml or the code, the value the sentence states)."""
    from pipeline.execute import FLUSH_SECONDS
    from pipeline.execute_ray import IN_FLIGHT, TASK_SECONDS
    from pipeline.formats.markup import MAX_TAGS
    from pipeline.jsontext import MAX_JSON_DEPTH
    from pipeline.llm.decode import MIN_SHARED_PREFIX
    from pipeline.llm.openai_engine import TOP_LOGPROBS
    from stages import dove_similarity as sim

    p = params()
    gates = [v for s in ("wildfeedback", "pugc", "selfie", "dove") for v in p[s]["gates"].values()]
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
        ("the `held_out` shard sets (default `data/selfie/test`", p["export"]["held_out"], ["data/selfie/test"]),
        ("`dedup.priority` (default `[wildfeedback, pugc, selfie, curry]`", p["export"]["dedup"]["priority"],
         ["wildfeedback", "pugc", "selfie", "curry"]),
    ]


def test_the_defaults_the_readme_states_are_those_of_params_yaml_and_the_code():
    """A default changed in params.yaml or in a constant fails here until README.md says the new value."""
    readme = " ".join(text("README.md").split())
    for phrase, actual, stated in stated_defaults():
        assert phrase in readme, f"README.md no longer says {phrase!r}: update this list with it"
        assert actual == stated, f"README.md says {phrase!r}, but the value is {actual!r}"
