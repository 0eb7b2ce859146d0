"""The command line's own parsing (pipeline/cli.py): what a user types, not what a stage does."""

from __future__ import annotations

import json

import pytest
import yaml

from pipeline.cli import build_parser, main


@pytest.mark.parametrize("argv,verbose", [
    (["run", "curry", "-v"], True),          # after the subcommand: was "unrecognized arguments: -v"
    (["inspect", "data/release", "--verbose"], True),
    (["audit", "-v"], True),
    (["-v", "run", "curry"], True),          # before it, as the README shows
    (["--verbose", "audit"], True),
    (["run", "curry"], False),
    (["publish", "--repo-id", "org/name", "--dry-run"], False),
])
def test_verbose_is_taken_before_or_after_the_subcommand(argv, verbose):
    assert build_parser().parse_args(argv).verbose is verbose


def test_the_top_level_help_says_where_to_start(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "dvc repro" in out and "SUB --help" in out


# --- inputs dvc.yaml does not list ------------------------------------------------------------------

def _project(tmp_path, monkeypatch, deps: dict[str, list[str]], edit) -> None:
    """A project in tmp_path: dvc.yaml with these deps per stage, params.yaml the shipped one edited."""
    from tests.conftest import ROOT

    monkeypatch.chdir(tmp_path)
    stages = {s: {"cmd": f"python -m pipeline.cli run {s}", "deps": d} for s, d in deps.items()}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(data)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))


def _warned(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("WARNING ") and "deps in dvc.yaml" in line]


# each audit check and the words `prefpipe --help` names it by
AUDIT_HELP = {"identical": "identical sides", "unprintable_text": "unprintable text",
              "control_token_text": "chat control strings", "empty_config": "empty configs", "pii": "PII",
              "prompt_in_both_splits": "split", "seed_in_test": "split", "held_out_in_train": "held-out leaks",
              "contaminated": "evaluation-set overlap", "cut_off_chosen": "cut-off",
              "unprompted_acknowledgement": "off-context chosen", "looping_chosen": "looping",
              "chosen_scored_lower": "scores ranking chosen lower", "malformed_dialogue": "malformed dialogues"}


def test_the_help_names_every_check_the_audit_runs(capsys):
    """It named ten of fourteen: not the unprintable text, chat control string or evaluation-set checks."""
    from pipeline.audit import CHECKS

    assert set(AUDIT_HELP) == set(CHECKS), "a check was added or renamed: say how the help names it"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    unnamed = [check for check, words in AUDIT_HELP.items() if words not in out]
    assert not unnamed, f"`prefpipe --help` does not name the audit checks {unnamed}"


def test_a_source_dvc_yaml_does_not_list_as_an_ingest_dep_is_named_when_ingest_runs(tmp_path, monkeypatch, capsys):
    """A source added to params.yaml outside the ingest stage's deps: `dvc repro` said "Data and pipelines are
    up to date" after its file changed (measured with a local JSONL source), and nothing said why."""
    for folder in ("data/samples", "logs"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "posts.jsonl").write_text(json.dumps({"id": folder, "text": "a post " * 30}) + "\n")
    absolute = str(tmp_path / "logs/*.jsonl")

    def sources(data):
        data["ingest"]["sources"] += [  # after the shipped five, whose files this project lacks
            {"name": n, "kind": "documents", "path": p, "format": "documents", "mapping": {}, "limit": None}
            for n, p in (("declared", "data/samples/posts.jsonl"), ("declared_glob", "data/samples/*.jsonl"),
                         ("mine", "logs/posts.jsonl"), ("mine_abs", absolute), ("hub", "hf://org/name"))]

    _project(tmp_path, monkeypatch, {"ingest": ["stages/ingest.py", "data/samples"]}, sources)
    from pipeline.config import load_params
    from pipeline.dvcdeps import undeclared_inputs

    lines = undeclared_inputs("ingest", load_params("params.yaml"))
    assert lines == [  # an hf:// source cannot be a dep (README: `dvc repro -f ingest`)
        f"ingest: ingest.sources[{i}].path {p} is not among the ingest stage's deps in dvc.yaml, so `dvc repro` "
        "will not rerun ingest when it changes; add it (or a folder above it) under stages.ingest.deps"
        for i, p in ((7, "logs/posts.jsonl"), (8, absolute))]
    # `prefpipe run` says so before the stage starts (which then stops at the first shipped source's missing file)
    assert main(["run", "ingest"]) != 0
    assert _warned(capsys.readouterr().out) == [f"WARNING {line}" for line in lines]
    # a folder above the source listed as a dep covers it; outside a DVC project nothing is said
    _project(tmp_path, monkeypatch, {"ingest": ["data/samples", "logs"]}, sources)
    assert undeclared_inputs("ingest", load_params("params.yaml")) == []
    (tmp_path / "dvc.yaml").unlink()
    assert undeclared_inputs("ingest", load_params("params.yaml")) == []


def test_a_local_model_folder_dvc_yaml_does_not_list_is_named_when_its_stage_runs(tmp_path, monkeypatch):
    """docs/real_models.md "Model weights": DVC does not see a folder re-trained in place unless it is a dep of the stage."""
    from pipeline.config import load_params
    from pipeline.dvcdeps import undeclared_inputs

    (tmp_path / "models/sft").mkdir(parents=True)

    def judge_on_folder(data):
        data["pugc"]["roles"]["judge"] = {"model": "models/sft"}

    _project(tmp_path, monkeypatch, {"pugc": ["stages/pugc.py"], "dove": ["stages/dove.py", "data"]}, judge_on_folder)
    params = load_params("params.yaml")
    assert undeclared_inputs("pugc", params) == [
        "pugc: model folder models/sft is not among the pugc stage's deps in dvc.yaml, so `dvc repro` will not "
        "rerun pugc when it changes; add it (or a folder above it) under stages.pugc.deps"]
    assert undeclared_inputs("dove", params) == []  # its judge is the built-in tiny model, no folder
    _project(tmp_path, monkeypatch, {"pugc": ["stages/pugc.py", "models"]}, judge_on_folder)
    assert undeclared_inputs("pugc", load_params("params.yaml")) == []


def test_a_folder_of_ones_own_named_as_a_stage_input_is_named_unless_a_dep_covers_it(tmp_path, monkeypatch):
    """An eval set added to export.held_out (or scored responses added to curry.inputs, an embedding model folder
    for DOVE): the params change reran the stage once, then edits of the folder went unseen by `dvc repro`."""
    from pipeline.config import load_params
    from pipeline.dvcdeps import undeclared_inputs

    (tmp_path / "models/embedder").mkdir(parents=True)  # a Hub id is no folder: only a folder is named

    def own_inputs(data):
        data["export"]["held_out"].append("evals/mine")
        data["curry"]["inputs"].append({"prompts": "scored/prompts", "responses": "scored/responses", "scores": "rated"})
        data["dove"]["embedding_model"] = "models/embedder"

    shipped = {"export": ["data/selfie/test", "data/wildfeedback/test"],
               "curry": ["data/ingest", "data/pugc", "data/selfie"], "dove": ["data/ingest", "data/pugc", "data/selfie"]}
    _project(tmp_path, monkeypatch, shipped, own_inputs)
    params = load_params("params.yaml")
    said = "is not among the {0} stage's deps in dvc.yaml, so `dvc repro` will not rerun {0} when it changes"
    assert undeclared_inputs("export", params) == [f"export: export.held_out[2] evals/mine {said.format('export')}; "
                                                   "add it (or a folder above it) under stages.export.deps"]
    assert [line.split(" is not")[0] for line in undeclared_inputs("curry", params)] == [
        "curry: curry.inputs[3].prompts scored/prompts", "curry: curry.inputs[3].responses scored/responses"]
    assert [line.split(" is not")[0] for line in undeclared_inputs("dove", params)] == [
        "dove: model folder models/embedder"]
    _project(tmp_path, monkeypatch, {s: [*d, "evals", "scored", "models"] for s, d in shipped.items()}, own_inputs)
    assert [undeclared_inputs(s, load_params("params.yaml")) for s in shipped] == [[], [], []]


def test_the_shipped_dvc_yaml_covers_every_input_the_shipped_params_name(monkeypatch):
    from pipeline.cli import STAGES
    from pipeline.config import load_params
    from pipeline.dvcdeps import undeclared_inputs
    from tests.conftest import ROOT

    monkeypatch.chdir(ROOT)  # data paths and dvc.yaml's deps are read from the project root, built or not
    params = load_params("params.yaml")
    assert {s: undeclared_inputs(s, params) for s in STAGES} == {s: [] for s in STAGES}


def test_a_glob_is_covered_by_a_dep_above_the_folder_its_wildcard_is_in(tmp_path, monkeypatch):
    """``logs/2024*/a.jsonl`` matches ``logs/2024-01/``, ``logs/2024-02/``...: a dep ``logs/2024`` covers none of
    them, ``logs`` covers all. Dep paths are relative to dvc.yaml's folder, wherever the caller runs."""
    from pipeline.dvcdeps import undeclared

    monkeypatch.chdir(tmp_path)
    (tmp_path / "p").mkdir()
    for deps, left in ((["logs/2024"], ["logs/2024*/a.jsonl"]), (["logs"], [])):
        (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"ingest": {"cmd": "x", "deps": deps}}}))
        assert undeclared("ingest", ["logs/2024*/a.jsonl"], tmp_path / "dvc.yaml") == left
    # p/dvc.yaml's dep "logs" is p/logs: it does not cover ./logs, read from here
    (tmp_path / "p" / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"ingest": {"cmd": "x", "deps": ["logs"]}}}))
    assert undeclared("ingest", ["logs/a.jsonl"], tmp_path / "p" / "dvc.yaml") == ["logs/a.jsonl"]
    assert undeclared("ingest", ["p/logs/a.jsonl"], tmp_path / "p" / "dvc.yaml") == []


def test_params_of_a_project_run_from_another_folder_are_named_before_the_stage_fails(tmp_path, monkeypatch, capsys):
    """`cd data && prefpipe run curry --params ../params.yaml` said only "data/ingest/prompts: not found; run the
    stage that writes it first (`dvc repro`)": the stage had run, in the project; the paths were read from data/."""
    _project(tmp_path, monkeypatch, {"curry": ["stages/curry.py"]}, lambda data: None)
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path / "data")
    assert main(["run", "curry", "--params", "../params.yaml"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"WARNING prefpipe: ../params.yaml lies in the project {tmp_path.resolve()}, but prefpipe runs in "
                      f"{(tmp_path / 'data').resolve()}, where the data paths in it are read from; run from "
                      f"{tmp_path.resolve()} (as dvc repro does)")
    monkeypatch.chdir(tmp_path)  # from the project root nothing is said (the stage fails on its missing input)
    assert main(["run", "curry"]) == 1
    assert "lies in the project" not in capsys.readouterr().out


def test_a_warning_logged_under_a_progress_bar_starts_its_own_line(monkeypatch, capsys):
    import argparse
    import logging
    import sys

    from tqdm.auto import tqdm

    import pipeline.cli as cli

    def step(args):  # a stage that warns while its model step's bar is on screen
        with tqdm(total=2, desc="pugc score", file=sys.stderr) as bar:
            bar.update(1)
            logging.getLogger("pipeline.llm").warning("connection failed; retry 1 of 6")
            bar.update(1)
        return 0

    parser = argparse.ArgumentParser()
    parser.add_argument("-v", dest="verbose", action="store_true")
    parser.set_defaults(func=step, command="run")
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    console = logging.StreamHandler(sys.stderr)  # what basicConfig gives a user's terminal (pytest holds the root)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(console)
    try:
        assert cli.main([]) == 0
    finally:
        logging.getLogger().removeHandler(console)
    err = capsys.readouterr().err
    line = next(seg for seg in err.replace("\r", "\n").split("\n") if "connection failed" in seg)
    assert line == "WARNING pipeline.llm: connection failed; retry 1 of 6"  # was "pugc score:  50%|...]WARNING ..."


# --- Ctrl-C and SIGTERM while a command starts ------------------------------------------------------

_STARTING = """
import signal, sys, types

class Importing(types.ModuleType):  # main()'s first slow import (pydantic models: ~0.4 s of every start)
    def __getattr__(self, name):
        signal.raise_signal(signal.{sig})  # as a Ctrl-C or `kill` while it is imported would

sys.modules["pipeline.config"] = Importing("pipeline.config")
from pipeline.cli import main
sys.exit(main(["run", "curry"]))
"""


@pytest.mark.parametrize("sig,code,said", [("SIGINT", 130, "prefpipe: interrupted; "),
                                           ("SIGTERM", 143, "prefpipe: terminated (SIGTERM); ")])
def test_ctrl_c_or_sigterm_while_a_run_starts_is_one_line(tmp_path, sig, code, said):
    """bench/killfuzz.py: Ctrl-C in the first ~0.4 s of a run printed a 25-line traceback through pydantic, and
    SIGTERM there ended it silently (exit -15): the handlers came after main()'s imports."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    proc = subprocess.run([sys.executable, "-c", _STARTING.format(sig=sig)], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert (proc.returncode, proc.stdout) == (code, ""), proc.stderr
    assert proc.stderr.startswith(said) and proc.stderr.count("\n") == 1, proc.stderr


_FINISHED = """
import signal, sys

sys.argv = ["prefpipe", "run", "no_such_stage"]
from pipeline.cli import main
code = main()
signal.raise_signal(signal.{sig})  # after main() returned: the interpreter's teardown
sys.exit(code)
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_after_a_command_finished_keeps_its_exit_code(tmp_path, sig):
    """bench/killfuzz.py: a signal in the ~1.4 s of teardown after a stage's `done` line killed it (exit -15 or -2,
    no line), so `dvc repro` took a stage that had committed its outputs for failed and ran it again whole."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    proc = subprocess.run([sys.executable, "-c", _FINISHED.format(sig=sig)], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert proc.returncode == 2, proc.stderr  # the unknown stage's code, the command's own result
    assert proc.stderr.startswith("prefpipe: unknown stage 'no_such_stage'") and "Traceback" not in proc.stderr
