"""Command line: ``prefpipe run STAGE``, ``prefpipe inspect PATH``, ``prefpipe audit RELEASE``,
``prefpipe publish --repo-id ORG/NAME``.

``dvc.yaml`` calls ``python -m pipeline.cli run STAGE``, the same entry as ``prefpipe run STAGE``. ``inspect`` and
``audit`` live in ``pipeline/cli_read.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from pipeline.cli_read import cmd_audit, cmd_inspect

STAGES = ["ingest", "wildfeedback", "pugc", "selfie", "curry", "dove", "export"]


def _available_stages() -> list[str]:
    import stages

    here = Path(stages.__file__).parent
    return [s for s in STAGES if (here / f"{s}.py").exists()]


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.config import load_params
    from pipeline.dvcdeps import elsewhere, undeclared_inputs
    from pipeline.metrics import say
    from pipeline.outputs import run_lock

    available = _available_stages()
    if args.stage not in available:
        close = difflib.get_close_matches(args.stage, available, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        print(f"prefpipe: unknown stage {args.stage!r}; {hint}available: {', '.join(available)}", file=sys.stderr)
        return 2
    params = load_params(args.params)  # fails before any work on a bad params.yaml
    for line in [*elsewhere(args.params), *undeclared_inputs(args.stage, params)]:
        say(line)
    module = importlib.import_module(f"stages.{args.stage}")
    made = first_missing(output_folder(module))  # the topmost folder the write check will make, if any
    with run_lock(args.stage, output_folder(module)):  # one run of a stage at a time, from its recovery to its commit
        return _run_stage(args.stage, module, params, made)


def _run_stage(stage: str, module, params, made: Path | None) -> int:
    from pipeline.execute_ray import engine_pools
    from pipeline.outputs import discard_staged, name_path, reading

    out = prepare_outputs(stage, module)
    # what the stage can read (the other stages' folders) is not swapped until it swaps its own outputs in
    inputs = sorted(p for p in Path(out).parent.iterdir() if p.is_dir() and p.name != Path(out).name) if out else []
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        with reading(inputs), engine_pools():  # on Ray, engine steps with the same engine config share one actor pool
            module.main(params)
    except BaseException as e:
        if out is not None:
            discard_staged(out)  # a full disk keeps no half-written outputs (the next start would remove them)
            if isinstance(e, OSError):  # a failed write names no file: name the stage's output folder
                name_path(e, out)
            if made is not None:  # the folders the write check made, left empty by a stage that failed (its
                folder = Path(out)  # input absent, or run from another folder: data/data/curry)
                with contextlib.suppress(OSError):  # a folder that is not empty stays
                    while folder != made:
                        folder.rmdir()
                        folder = folder.parent
                    made.rmdir()
        raise
    # Wall and CPU seconds (all threads of this process; not Ray workers): on a shared machine the gap
    # between them is time spent waiting for a core.
    print(f"{stage}: done in {time.perf_counter() - wall:.0f} s wall, {time.process_time() - cpu:.0f} s CPU")
    return 0


def output_folder(module) -> Path | None:
    """The stage module's output folder (``OUT``, else ``OUT_DIR``), None when it names none."""
    return getattr(module, "OUT", None) or getattr(module, "OUT_DIR", None)


def first_missing(path: str | Path | None) -> Path | None:
    """The topmost folder of ``path`` that does not exist (``data`` of a missing ``data/curry``), None when it
    exists or is None."""
    if path is None or Path(path).exists():
        return None
    path = Path(path)
    while not path.parent.exists():
        path = path.parent
    return path


def prepare_outputs(stage: str, module) -> Path | None:
    """Before any work: finish or discard what an interrupted run left in the stage's output folder,
    remove its stale temporaries, refuse to read the outputs of another stage that a killed run left half
    swapped in, and check that folder (and the checkpoints of model stages) can be
    written, so a read-only or full disk is found before hours of model steps, not after."""
    from pipeline.config import MODEL_SECTIONS
    from pipeline.execute import CHECKPOINT_ROOT
    from pipeline.outputs import (
        OutputError,
        check_replaceable,
        check_writable,
        os_error_line,
        pending_commits,
        recover,
    )

    out = output_folder(module)
    if out is not None:
        recover(out)
        half = pending_commits(out)
        if half:
            names = " ".join(p.name for p in half)
            raise OutputError(f"{', '.join(map(str, half))}: a killed run left these outputs half swapped in; "
                              f"run that stage again first (`prefpipe run {names}` or `dvc repro`), which "
                              f"finishes the swap, then run {stage}")
        check_writable(out)
        try:
            check_replaceable(out)
        except OSError as e:
            raise OutputError(os_error_line(e)) from None
    if stage in MODEL_SECTIONS:  # a stage with models checkpoints its engine steps
        check_writable(CHECKPOINT_ROOT)
    return out


def cmd_publish(args: argparse.Namespace) -> int:
    from pipeline.hub import PublishError, publish

    try:
        publish(args.path, args.repo_id, private=args.private, revision=args.revision, dry_run=args.dry_run)
    except PublishError as e:
        print(f"prefpipe publish: {e}", file=sys.stderr)
        return 1
    return 0


def _at_least(low: int):
    """An argparse type: an integer >= ``low`` (``-n -1`` showed no row and said nothing)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="prefpipe", description="Build preference data for LLM alignment.",
        epilog="`dvc repro` builds the whole DAG (dvc.yaml) into data/release; `prefpipe SUB --help` for each "
               "subcommand; README.md \"Quickstart\".")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log at INFO (engine calls, requests sent and cached); before or after the subcommand")
    # -v after the subcommand too (`prefpipe run pugc -v` was "unrecognized arguments: -v"); SUPPRESS keeps a
    # subcommand without it from resetting a -v given before it.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="log at INFO, as `prefpipe -v SUB`")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[verbose], help="run one pipeline stage (what dvc.yaml calls)")
    run.add_argument("stage", help=f"one of: {', '.join(STAGES)}")
    run.add_argument("--params", default="params.yaml",
                     help="params file (default params.yaml); data paths in it are relative to the current folder")
    run.set_defaults(func=cmd_run)

    ins = sub.add_parser("inspect", parents=[verbose], help="schema, row count, manifest and a few rows of a shard set or Parquet file")
    ins.add_argument("path", help="a shard set folder (e.g. data/ingest/conversations), a release folder or a "
                     "Parquet file")
    ins.add_argument("-n", "--rows", type=_at_least(0), default=3, help="rows to show (default 3)")
    ins.add_argument("--width", type=_at_least(1), default=400, help="characters per row shown (default 400)")
    ins.set_defaults(func=cmd_inspect)

    aud = sub.add_parser("audit", parents=[verbose], help="check a release folder: identical sides, unprintable text, chat control "
                         "strings, empty configs, PII, split and held-out leaks, evaluation-set overlap, cut-off, "
                         "looping or off-context chosen answers, scores ranking chosen lower, malformed dialogues "
                         "(exit 1 on any violation)")
    aud.add_argument("path", nargs="?", default="data/release", help="the release folder (default data/release)")
    aud.add_argument("--params", default=None,
                     help="project params (export.methods, held_out, pii_kinds; default ROOT/params.yaml); "
                     "checks needing them are skipped when that default is absent")
    aud.add_argument("--root", default=None,
                     help="project root holding params.yaml and data/<method>/pairs (default .)")
    aud.add_argument("--json", default=None, help="also write the report to this file")
    aud.set_defaults(func=cmd_audit)

    pub = sub.add_parser("publish", parents=[verbose], help="verify the release against its manifest and upload it to the Hugging Face Hub")
    pub.add_argument("--repo-id", required=True, help="dataset repo, ORG/NAME (created if missing)")
    seen = pub.add_mutually_exclusive_group()  # private unless asked: the texts come from users, redaction is by pattern
    seen.add_argument("--private", dest="private", action="store_true", default=True,
                      help="create the repo private (the default; an existing public repo is refused, an "
                      "existing repo keeps its visibility)")
    seen.add_argument("--public", dest="private", action="store_false",
                      help="create the repo public, or publish to an existing public one (an existing repo "
                      "keeps its visibility)")
    pub.add_argument("--revision", default=None, help="branch to commit to (created if missing; default main)")
    pub.add_argument("--dry-run", action="store_true", help="print what would be uploaded; no network, no token needed")
    pub.add_argument("--path", default="data/release", help="the release folder (default data/release)")
    pub.set_defaults(func=cmd_publish)
    return p


# What Ctrl-C leaves, per command: a stage's outputs are staged and change only when it finishes (its model
# steps' finished batches are checkpointed); an upload resumes; inspect and audit only read the release.
INTERRUPTED = {
    "run": "prefpipe: interrupted; a stage's outputs change only when it finishes, and the finished batches "
           "of its model steps are checkpointed: run it again to resume",
    "publish": "prefpipe publish: interrupted; nothing local changed: re-run the same command to resume the "
               "upload (files already committed are skipped)",
}


@contextlib.contextmanager
def _logs_above_bars():
    """Log lines to the terminal print above the progress bars (``tqdm.write``), not glued onto the end of a
    bar's line; a process whose root logger has no console handler (a library caller, pytest) is left alone."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    console = [h for h in logging.getLogger().handlers
               if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stdout, sys.stderr)]
    with logging_redirect_tqdm() if console else contextlib.nullcontext():
        yield


def main(argv: list[str] | None = None) -> int:
    # pipeline.files imports the standard library only: its handler is in force before _main's slow imports
    from pipeline.files import Terminated, terminate_raises

    args = argparse.Namespace(command=None)
    try:  # Ctrl-C or SIGTERM, from the first import to the end: one line saying what the command left
        with terminate_raises():
            code = _main(argv, args)
    except KeyboardInterrupt as e:  # SIGTERM in the imports used to end the run silently (exit -15), Ctrl-C with
        command = args.command or _command(argv)  # a 25-line traceback through pydantic (~0.4 s of each start)
        line = INTERRUPTED.get(command, f"prefpipe {command or ''}: interrupted; run it again".replace(" :", ":"))
        term = isinstance(e, Terminated)
        print(line.replace("interrupted", "terminated (SIGTERM)", 1) if term else line, file=sys.stderr)
        code = 128 + (signal.SIGTERM if term else signal.SIGINT)  # the shell's codes: 143, 130
    if argv is None:  # the program (`prefpipe`, `python -m pipeline.cli`), not a caller in the same process
        _finished()
    return code


def _finished() -> None:
    """The command is over: Ctrl-C and SIGTERM are ignored from now on, so its exit code stands. The interpreter's
    teardown takes a while (1.4 s after PUGC's `done` line on the samples: torch's memory freed), and a signal there
    killed a stage that had committed its outputs (exit -15 or -2, no line; Python has put the default handlers back by
    then, so no handler of ours can run), and DVC took it for failed: the next `dvc repro` ran it again whole, its
    checkpoints already cleared. A teardown that hangs is ended by SIGKILL."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def _command(argv: list[str] | None) -> str | None:
    """The command named on the command line, before it is parsed: its first word that is not an option."""
    return next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)


def _main(argv: list[str] | None, parsed: argparse.Namespace) -> int:
    from pipeline.config import ParamsError
    from pipeline.errors import printable, unnameable
    from pipeline.io import SourceError, StageError
    from pipeline.outputs import os_error_line

    for stream in (sys.stdout, sys.stderr):  # what the terminal's encoding lacks (LANG=C, a cp1252 console) prints
        if hasattr(stream, "reconfigure"):  # escaped (\xbf), as on stderr; inspect died with UnicodeEncodeError
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv, namespace=parsed)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with _logs_above_bars():
            return args.func(args)
    except ParamsError as e:
        print(f"prefpipe: {e}", file=sys.stderr)
        return 2
    except SourceError as e:  # bad input: one line, whatever the file names it quotes hold (a line break)
        print(f"prefpipe: {printable(str(e))}", file=sys.stderr)
        return 1
    except StageError as e:  # too many rejects (a line per source and reason), or what a stage cannot do
        print(f"prefpipe: {e}", file=sys.stderr)
        return 1
    except UnicodeEncodeError as e:  # a path this Python cannot name (an argv path pyarrow gets as surrogates)
        hint = unnameable(e.object) if isinstance(e.object, str) else ""
        if not hint:
            raise
        print(f"prefpipe: {printable(e.object)}: cannot be opened{hint}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `prefpipe inspect ... | head`: the reader left; not an error (Python docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # disk full, read-only, no permission: one line naming the path and what to do
        line = os_error_line(e)
        if line is None:
            raise
        print(f"prefpipe: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
