"""The read-side commands: ``prefpipe inspect PATH`` (a shard set's or a release's files, schema, manifest and
first rows) and ``prefpipe audit RELEASE`` (the release's checks, exit 1 on a violation)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

INSPECT_FIX = "if a stage wrote it, rebuild it with `dvc repro`"


def cmd_inspect(args: argparse.Namespace) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.errors import printable, unreadable_parquet
    from pipeline.io import read_manifest, shard_files
    from pipeline.metrics import counted

    path = Path(args.path)
    if not path.exists():
        print(f"prefpipe: {path}: not found", file=sys.stderr)
        return 2
    if path.is_file() and path.suffix != ".parquet":  # a stage's details.json, the card: it read them as Parquet
        print(f"prefpipe: {path}: not a Parquet file; inspect takes a shard set folder (e.g. data/ingest/conversations), "
              "a release folder or a .parquet file", file=sys.stderr)
        return 2
    files = shard_files(path)
    if not files:
        # Curry-DPO's levels and Selfie's iterations are one shard set per sub-folder: name them.
        subs = sorted(d.name for d in path.iterdir() if d.is_dir() and shard_files(d)) if path.is_dir() else []
        fix = (f"; it holds shard sets in {', '.join(subs)}: inspect one of them ({path / subs[0]})" if subs
               else "")
        print(f"prefpipe: {path}: no Parquet files{fix}", file=sys.stderr)
        return 2
    manifest = read_manifest(path) if path.is_dir() else None
    rows, schemas = 0, {}  # one schema block per distinct schema (a release's DOVE config has prompts per side)
    for f in files:
        if manifest and not f.exists():  # a shard deleted, or a copy or `dvc pull` cut short
            print(f"prefpipe: {f}: missing (its folder's _manifest.json lists it); the folder is incomplete: rebuild "
                  "it (`dvc repro`) or fetch it again (`dvc pull`)", file=sys.stderr)
            return 2
        try:
            pf = pq.ParquetFile(f)  # each footer read once: its rows and its schema
            rows += pf.metadata.num_rows
            schemas.setdefault(pf.schema_arrow.remove_metadata(), []).append(f)
        except (pa.ArrowException, OSError) as e:
            print(f"prefpipe: {unreadable_parquet(f, e, INSPECT_FIX)}", file=sys.stderr)
            return 2
    try:  # a data page cut short or corrupt: its footer read, its rows cannot be (was pyarrow's traceback)
        head = pq.ParquetFile(files[0]).read_row_group(0).slice(0, args.rows).to_pylist() if rows else []
    except (pa.ArrowException, OSError) as e:
        print(f"prefpipe: {unreadable_parquet(files[0], e, INSPECT_FIX)}", file=sys.stderr)
        return 2
    print(f"path:   {path}")
    print(f"files:  {len(files)}")
    configs = (manifest or {}).get("configs") if (manifest or {}).get("table") == "release" else None
    if configs:  # a release: `all` holds the other configs' rows again, so their sum counts each pair twice
        per = ", ".join(f"{c} {sum(splits.values())}" for c, splits in sorted(configs.items()))
        print(f"rows:   {rows} in all files; per config: {per}")
    else:
        print(f"rows:   {rows}")
    for schema, where in schemas.items():
        more = f" and {counted(len(where) - 1, 'more file')}" if len(where) > 1 else ""
        print("schema:" if len(schemas) == 1 else f"schema of {where[0].relative_to(path) if path.is_dir() else where[0]}"
              f"{more}:")
        for field in schema:
            print(f"  {field.name}: {field.type}{'' if field.nullable else ' not null'}")
    if manifest:
        shown = {k: v for k, v in manifest.items() if k not in ("files", "schema")}
        if "other_files" in shown:  # a release's card, stats, plots: their names (the hashes are for `publish`)
            shown["other_files"] = [f["path"] for f in shown["other_files"]]
        print("manifest:", json.dumps(shown, sort_keys=True))
    if head and len(files) > 1:  # a release's (or a sharded set's) first rows are one file's: say whose
        print(f"rows of {files[0].relative_to(path)}:")
    for i, row in enumerate(head):
        # C1 controls (U+009B opens a terminal escape), bidi overrides and zero-width marks shown escaped, as JSON's C0
        text = printable(json.dumps(row, ensure_ascii=False, default=str))
        print(f"[{i}] {text[:args.width]}{'...' if len(text) > args.width else ''}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from pipeline.outputs import reading

    release = Path(args.path)
    if not release.is_dir():
        print(f"prefpipe audit: {release}: not a folder; build the release with `dvc repro export`", file=sys.stderr)
        return 2
    # Export does not swap a new release in while it is audited. Its lock lies in its project's .prefpipe/locks, so
    # only a release in the data/ folder here can have one; a release elsewhere (downloaded) leaves no .prefpipe here.
    ours = release.resolve().parent == Path("data").resolve()
    with reading([release]) if ours else contextlib.nullcontext():
        return _audit(args, release)


def _audit(args: argparse.Namespace, release: Path) -> int:
    from pipeline.audit import audit_release, summary_lines
    from pipeline.config import load_params
    from pipeline.errors import SourceError, StageError, os_reason
    from pipeline.files import write_json_atomic
    from pipeline.metrics import counted
    from pipeline.release_folder import release_problem

    try:
        problem = release_problem(release)  # an empty or mistyped folder must not "pass"
    except SourceError as e:  # its _manifest.json cut short or edited: not audited (exit 1 is for violations)
        problem = str(e)
    if problem:
        print(f"prefpipe audit: {problem}", file=sys.stderr)
        return 2
    if args.json and not Path(args.json).parent.is_dir():  # found before the audit, not after it
        print(f"prefpipe audit: --json {args.json}: no folder {Path(args.json).parent}; create it or write "
              "the report elsewhere", file=sys.stderr)
        return 2
    if args.root and not Path(args.root).is_dir():  # with --params given, a misspelt root skipped the project checks
        print(f"prefpipe audit: --root {args.root}: not a folder; pass the project root (it holds data/<method>/pairs)",
              file=sys.stderr)
        return 2
    cfg = root = None
    # The project's params.yaml: --params, else the one under --root (README: both under --root).
    params = Path(args.params) if args.params else Path(args.root or ".") / "params.yaml"
    if params.exists():
        cfg, root = load_params(params).export, Path(args.root or ".")
    elif args.params or args.root:  # named, not the default: its checks were skipped with a "skip" line
        print(f"prefpipe audit: {params}: not found" + ("" if args.params else f"; --root {args.root} must be the "
              "project root, which holds params.yaml"), file=sys.stderr)
        return 2
    try:
        report = audit_release(release, root=root, cfg=cfg)
    except (SourceError, StageError) as e:  # removed.jsonl edited, a held-out set gone: not audited
        print(f"prefpipe audit: {e}", file=sys.stderr)
        return 2
    print(f"audit of {release}: {counted(report['rows'], 'row')} in {counted(report['files'], 'file')}: "
          + ("passed" if report["passed"] else "FAILED"))
    for line in summary_lines(report):
        print(line)
    if args.json:  # whole or not at all: a full disk left a report cut short (or empty) in place of the last one
        try:
            write_json_atomic(report, args.json)
        except OSError as e:
            print(f"prefpipe audit: --json {args.json}: cannot write it ({os_reason(e)}); free some space or write "
                  "the report elsewhere", file=sys.stderr)
            return 2
    return 0 if report["passed"] else 1
