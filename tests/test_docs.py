"""README.md, docs/ and bench/README.md agree with the code: every command line, flag, params key and file path
they name exists (no model, nothing built; their tables, snippets and stated defaults are checked in
tests/test_docs_snippets.py, both read through tests/docs_text.py).

What is checked here, and so cannot drift silently:
- ``prefpipe SUB ...`` / ``python -m pipeline.cli SUB ...``: the subcommand and each ``--flag`` exist in
  ``pipeline.cli.build_parser``; the complete command lines of the READMEs' shell blocks parse.
- ``python bench/X.py --flag``: the script exists and declares the flag.
- ``dvc SUB ...`` (``dvc exp run -S ...``, ``dvc remote modify --local ...``) and ``ray start ...``: DVC's and Ray's
  own command lines take them.
- every ``PREFPIPE_*`` environment variable the code reads is named in README.md or docs/.
- dotted Python names (``pipeline.checks.same_text``, ``stages.curry.curriculum_files("data/curry/pairs")``):
  they exist, and a call written with its arguments binds to the signature.
- dotted params keys (``execution.on_gate_failure``, ``<stage>.gates.<role>``): present in params.yaml.
- repository paths (``pipeline/...``, ``stages/...``, ``tests/...::test_name``, ``../shared/...``, links): exist.
- every params.yaml key is documented: named in README.md or docs/ (``GUIDE``) or commented in params.yaml.
- sections cited by name (params.yaml's `docs/real_models.md "Model weights"`, a doc's `"Deterministic outputs" in
  [Reliability](reliability.md)`, the code's `README.md "Quickstart"`): a heading or bold lead of that doc.
- every list of the keys that change no output byte (README, docs/ray.md, docs/reliability.md, params.yaml,
  dvc.yaml) is ``PLACEMENT_KEYS`` | ``EXECUTION_PLACEMENT_KEYS``.
"""

from __future__ import annotations

import argparse
import ast
import glob
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import build_parser
from tests.docs_text import DOCS, GUIDE, ROOT, code_lines, fences, guide_text, params, prose, spans, text

# Paths the READMEs name as placeholders ("`pytest tests/test_x.py` runs one module").
PLACEHOLDERS = {"tests/test_x.py"}


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


def test_every_cli_option_is_documented_in_the_readme_and_in_its_help():
    """The reverse of the test above: a flag a user can only find by reading cli.py (``run --params`` had no
    help and no README mention) fails here. Each option is named in a code span or block of README.md or a
    docs/ page (``GUIDE``), each argument says in ``--help`` what it is."""
    readme = "\n".join(code for doc in GUIDE for _, code in code_lines(doc))
    parsers = {"": build_parser(), **{f" {sub}": p for sub, p in subparsers().items()}}
    for name, parser in parsers.items():
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            what = f"prefpipe{name} {max(action.option_strings, key=len, default=action.dest)}"
            assert action.help, f"`{what}` has no help text in pipeline/cli.py"
            if action.option_strings:
                flag = max(action.option_strings, key=len)
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", readme), f"README.md and docs/ never name `{what}`"


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


def test_every_prefpipe_environment_variable_the_code_reads_is_documented():
    """``PREFPIPE_PROGRESS`` (progress bars off) was read by pipeline/execute.py and named nowhere a user reads."""
    read = {m for p in [*ROOT.joinpath("pipeline").rglob("*.py"), *ROOT.joinpath("stages").rglob("*.py")]
            for m in re.findall(r"\bPREFPIPE_[A-Z_]+\b", p.read_text(encoding="utf-8"))}
    documented = set(re.findall(r"\bPREFPIPE_[A-Z_]+\b", guide_text()))
    assert {"PREFPIPE_CACHE", "PREFPIPE_REQUEST_CACHE"} <= read, "the environment variables are no longer found"
    assert read <= documented, f"README.md and docs/ never name {sorted(read - documented)}"


DVC = re.compile(r"(?:^|[\s(`&;])dvc ([a-z]+(?: [a-z]+)?)((?: [^`#|;&)]*)?)")


def test_every_dvc_command_and_flag_in_the_docs_exists():
    """`dvc exp run -S ...`, `dvc remote modify --local ...`, `dvc repro -f export`: DVC's own parser takes the
    documented command lines (placeholders filled in), and a bare `dvc metrics show` names a DVC command."""
    import contextlib
    import io

    from dvc.cli import DvcParserError
    from dvc.cli.parser import get_main_parser

    parser, checked = get_main_parser(), 0
    commands = dict(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices)
    for doc in DOCS:
        for line, code in code_lines(doc):
            for m in DVC.finditer(code):
                words, args = m.group(1).split(), m.group(2).replace("...", "x").replace("STAGE", "export").split()
                command = commands.get(words[0])
                assert command is not None, f"{doc}:{line}: `dvc {words[0]}` is no DVC command"
                subs = {c: p for a in command._actions if isinstance(a, argparse._SubParsersAction)
                        for c, p in a.choices.items()}
                if not subs:  # `dvc repro export`: the second word is an argument
                    words, args = words[:1], words[1:] + args
                assert len(words) == 1 or words[1] in subs, f"{doc}:{line}: `dvc {m.group(1)}` is no DVC command"
                if args:  # a bare `dvc remote add` names the command only
                    try:
                        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                            parser.parse_args([*words, *args])
                    except (SystemExit, DvcParserError):  # an unknown flag or a missing argument
                        pytest.fail(f"{doc}:{line}: `dvc {' '.join(words + args)}` does not parse (`dvc {' '.join(words)} "
                                    "--help` lists what it takes)")
                checked += 1
    assert checked >= 10, "the dvc commands are no longer found in the docs"


def test_every_ray_command_and_flag_in_the_docs_exists():
    """`ray start --head --port=6379`, `ray get-auth-token` (Ray >= 2.59), `ray start --address=...`: Ray's own
    command line takes them (placeholders filled in)."""
    import click
    from ray.scripts.scripts import cli

    checked = 0
    for doc in DOCS:
        for line, code in code_lines(doc):
            for m in re.finditer(r"(?:^|[\s(`&;])ray ([a-z][\w-]*(?: [^`#|;&)]*)?)", code):
                args = re.sub(r"<[^>]+>", "10.0.0.1", m.group(1)).split()
                try:
                    ctx = cli.make_context("ray", list(args))
                    name, command, rest = cli.resolve_command(ctx, list(args))
                    command.make_context(name, rest, parent=ctx)
                except click.UsageError as e:
                    pytest.fail(f"{doc}:{line}: `ray {m.group(1)}` is not a Ray command line: {e}")
                checked += 1
    assert checked >= 3, "the ray commands are no longer found in the docs"


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
    """Named in README.md or docs/ (`key`, `key: ...`, `.key`) or explained by a comment on its line or the line above."""
    readme, lines = guide_text(), (ROOT / "params.yaml").read_text(encoding="utf-8").splitlines()
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
    assert not undocumented, f"params.yaml keys neither named in README.md or docs/ nor commented: {undocumented}"


# --- Python names ----------------------------------------------------------------------------------

def python_names() -> list[tuple[str, int, str, str | None]]:
    """(doc, line, dotted name, call arguments or None) of every ``pipeline.x.y`` / ``stages.x.y`` the docs
    name in code, e.g. ``pipeline.checks.same_text`` or ``stages.curry.curriculum_files("data/curry/pairs")``."""
    found = []
    for doc in DOCS:
        for line, code in code_lines(doc):
            for m in re.finditer(r"(?<![\w./])((?:pipeline|stages)(?:\.\w+)+)(?:\(([^()]*)\))?", code):
                found.append((doc, line, m.group(1), m.group(2)))
    return found


def test_every_python_name_the_docs_name_exists_and_takes_the_arguments_shown():
    import importlib
    import inspect

    named = python_names()
    assert len(named) >= 10, "the dotted names are no longer found in the docs"
    for doc, line, name, args in named:
        parts = name.split(".")
        for depth in range(len(parts), 0, -1):  # the longest module prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:depth]))
                break
            except ModuleNotFoundError:
                continue
        for attr in parts[depth:]:
            assert hasattr(obj, attr), f"{doc}:{line}: {name} does not exist"
            obj = getattr(obj, attr)
        if args is not None:  # a call as written: its arguments bind to the signature
            call = ast.parse(f"f({args})", mode="eval").body
            values = [ast.literal_eval(a) for a in call.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
            try:
                inspect.signature(obj).bind(*values, **kwargs)
            except TypeError as e:
                pytest.fail(f"{doc}:{line}: `{name}({args})` does not match {name}{inspect.signature(obj)}: {e}")


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
        for m in re.finditer(r"\]\(([^)#:\s]+)(?:#[^)\s]*)?\)", t):
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


def heading_slugs(doc: str) -> set[str]:
    """The anchors GitHub makes for a document's headings."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", prose(doc), re.M)}


def test_every_anchor_link_names_a_heading():
    """``[..](#anchor)`` in a doc and ``[..](other.md#anchor)`` across docs (README's contents list, links to docs/)."""
    checked = 0
    for doc in DOCS:
        for m in re.finditer(r"\]\(([^)#:\s]*)#([^)\s]+)\)", text(doc)):
            target = str(((ROOT / doc).parent / m.group(1)).resolve().relative_to(ROOT)) if m.group(1) else doc
            assert target in DOCS, f"{doc} links to {m.group(1)}#{m.group(2)}, which is not one of the docs"
            assert m.group(2) in heading_slugs(target), f"{doc} links to {target}#{m.group(2)}, which no heading makes"
            checked += 1
    assert checked >= 20, "the anchor links are no longer found in the docs"


# --- cross-references from the code and params.yaml ------------------------------------------------

CITED_DOC = r"(README(?:\.md)?|(?:docs/|bench/)?\w+\.md)"
CITATIONS = [  # (pattern, group of the doc, group of the title)
    # `README "Running on a Ray cluster"`, `docs/real_models.md "Model weights"`, `bench/README.md, "Bounded reads..."`
    (re.compile(CITED_DOC + r"\)?,? \\?\"([A-Z][^\"\\]{2,80})\\?\""), 1, 2),
    # `["Model weights"](real_models.md)`
    (re.compile(r"\[\"([^\"]{3,80})\"\]\(((?:docs/)?\w+\.md)\)"), 2, 1),
    # `"Deterministic outputs" in [Reliability](reliability.md)`, `("Model weights", docs/real_models.md)`
    (re.compile(r"\"([A-Z][^\"]{2,80})\",? (?:in )?(?:\[[^\]]+\]\(((?:docs/)?\w+\.md)\)|((?:docs/)?\w+\.md))"), (2, 3), 1),
    # `[Real models, ...](real_models.md) ("The whole DAG with the real model")`
    (re.compile(r"\]\(((?:docs/)?\w+\.md)\) \(\"([A-Z][^\"]{2,80})\"\)"), 1, 2),
]


def cited_places() -> list[tuple[str, int, str, str]]:
    """(file, line, cited doc, cited title) of every `<doc> "<title>"` reference in README.md, docs/, bench/README.md,
    params.yaml, dvc.yaml, the code and the tests (a comment pointing at a section that moved or was renamed is a
    dead end)."""
    files = [*DOCS, "params.yaml", "dvc.yaml",
             *(str(p.relative_to(ROOT)) for d in ("pipeline", "stages", "bench", "tests") for p in (ROOT / d).rglob("*.py")
               if p != Path(__file__))]  # this file's own examples aside
    found = []
    for f in files:
        t = text(f)
        for pattern, doc_group, title_group in CITATIONS:
            for m in pattern.finditer(t):
                groups = doc_group if isinstance(doc_group, tuple) else (doc_group,)
                doc = next(m.group(g) for g in groups if m.group(g))
                if doc.startswith("README"):
                    doc = "README.md"
                elif "/" not in doc:  # relative to the citing file's folder, as a markdown link is
                    doc = str(((ROOT / f).parent / doc).resolve().relative_to(ROOT))
                found.append((f, t[:m.start()].count("\n") + 1, doc, m.group(title_group)))
    return found


def titles(doc: str) -> set[str]:
    """A doc's section headings and the bold leads of its paragraphs and items (`**Model weights.**`)."""
    t = prose(doc)
    return ({h.strip() for h in re.findall(r"^#+ (.+)$", t, re.M)}
            | {b.rstrip(".:").strip() for b in re.findall(r"^\s*(?:- )?\*\*([^*]+)\*\*", t, re.M)})


def test_every_section_the_code_params_and_docs_cite_by_name_exists():
    """params.yaml pointed at README "Judge gates", "Model weights" and "Deterministic outputs" after those
    sections had moved to docs/: a reader found nothing under those names. A cited title is the start of a heading
    (README "PUGC" for "PUGC: preferences implied by ...") or of a paragraph's bold lead in the cited doc."""
    cited = cited_places()
    assert len(cited) >= 15, "the citations are no longer found"
    for f, line, doc, title in cited:
        assert (ROOT / doc).exists(), f"{f}:{line}: cites {doc}, which does not exist"
        assert any(t.startswith(title) for t in titles(doc)), \
            f"{f}:{line}: cites {doc} \"{title}\", which no heading or bold lead of {doc} starts with"


def test_a_params_key_whose_comment_sends_the_reader_to_a_doc_is_named_there():
    """``llm.cpu_threads`` ended its comment with "(README)", which says nothing of it (docs/vllm.md does): a key
    line of params.yaml whose comment closes on a bare citation, "(README)" or "(...; docs/x.md)", names a
    document that names the key (a section cited by title is the test above's)."""
    cited = 0
    for line, row in enumerate(text("params.yaml").splitlines(), 1):
        m = re.match(r"\s*(?:- )?(\w+):[^#]*#.*\((?:[^()]*; )?(README|docs/[\w.]+\.md)\)\s*$", row)
        if m:
            key, doc = m.groups()
            doc = "README.md" if doc == "README" else doc
            assert re.search(rf"(?<![\w-]){key}(?!\w)", text(doc)), \
                f"params.yaml:{line}: `{key}` sends the reader to {doc}, which never names it"
            cited += 1
    assert cited >= 2, "the key lines citing a document are no longer found"


def test_every_list_of_the_keys_that_change_no_output_byte_is_the_codes():
    """README, docs/ray.md, docs/reliability.md, params.yaml and dvc.yaml each list the `llm` and `execution` keys
    that the model stages' DVC params leave out; a key added to (or taken from) ``PLACEMENT_KEYS`` /
    ``EXECUTION_PLACEMENT_KEYS`` in pipeline/config.py changes what DVC reruns, so every list must follow."""
    from pipeline.config import EXECUTION_PLACEMENT_KEYS, PLACEMENT_KEYS
    from pipeline.config_shared import LLM, Execution

    fields = set(LLM.model_fields) | set(Execution.model_fields)
    passages = [("README.md", "only the keys that change no output byte are left out", "[Running on a Ray cluster]"),
                ("docs/ray.md", "leave out the keys that only say where the work runs", "So after"),
                ("docs/reliability.md", "(all but `replicas`", "are not DVC params either"),
                ("params.yaml", "# backend, ray_address", "change no output byte"),
                ("dvc.yaml", "EXECUTION_PLACEMENT_KEYS):", "so moving the DAG")]
    for doc, start, end in passages:
        t = " ".join(text(doc).split())
        assert start in t and end in t[t.index(start):], f"{doc} no longer says {start!r} ... {end!r}: update this test"
        passage = t[t.index(start):t.index(end, t.index(start))]
        words = re.findall(r"`([\w.]+)`", passage) if doc.endswith(".md") else re.findall(r"[\w.]+", passage)
        listed = {w.rsplit(".", 1)[-1] for w in words} & fields
        assert listed == PLACEMENT_KEYS | EXECUTION_PLACEMENT_KEYS, \
            f"{doc}: the keys listed after {start!r} are {sorted(listed)}, pipeline/config.py's {sorted(PLACEMENT_KEYS | EXECUTION_PLACEMENT_KEYS)}"
