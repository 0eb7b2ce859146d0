"""The whole DAG on the samples under other batch sizes and backends, every output under data/ compared with
the shipped settings' run: Parquet by its rows and columns in the order written, JSON by content.

Each run is a fresh copy of the project (`bench/repro.py`); the first two runs are the shipped settings, back to
back. Left out of the comparison, as they encode the params: every `fingerprint` key (in `_manifest.json`,
`curry/pairs/_levels.json`, `details.json` and each pair's `lineage`), the fingerprints the release card quotes,
and a manifest's `sha256` of a file (the file itself is compared). A differing number is reported as drift
(largest absolute difference per column); anything else (an id, a text, a label, a row order) as a change.

    python bench/determinism.py          # shipped x2, execution.batch_size 1 and 7, llm.batch_size 1 and 3
    python bench/determinism.py --ray    # + execution.backend: ray (a local Ray instance, or RAY_ADDRESS)
    python bench/determinism.py --smoke  # ingest only, shipped vs execution.batch_size 1 (checks the bench runs)

A copy under the system's temporary folder finds no `../shared`: export reports the shipped decontamination sets
unavailable in every run alike.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from repro import copy_project, run_dag, stage_order  # noqa: E402

IGNORED = {"fingerprint", "sha256"}
ROW_IDS = ("pair_id", "id", "response_id", "prompt_id", "conversation_id")


def setting(path: str, value):
    """An edit of params.yaml setting the dotted key ``path`` to ``value``."""
    *parents, last = path.split(".")

    def edit(params: dict) -> None:
        for key in parents:
            params = params[key]
        params[last] = value
    return edit


def load(path: Path, fingerprints: set[str]):
    """A file's content: Parquet rows in order, JSON, JSON lines, CSV cells (numbers as floats), Markdown lines
    (fingerprints masked), or bytes."""
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix not in {".json", ".jsonl", ".csv", ".md"}:
        return path.read_bytes()  # summary.png: bytes only
    text = path.read_text()
    if path.suffix == ".json":
        return json.loads(text)
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if path.suffix == ".csv":
        return [[number(cell) for cell in row] for row in csv.reader(io.StringIO(text))]
    pattern = re.compile("|".join(map(re.escape, sorted(fingerprints))) or r"(?!)")
    return [pattern.sub("<fingerprint>", line) for line in text.splitlines()]


def number(cell: str) -> float | str:
    try:
        return float(cell)
    except ValueError:
        return cell


def fingerprints_of(data: Path) -> set[str]:
    return {json.loads(m.read_text()).get("fingerprint") for m in data.rglob("_manifest.json")} - {None}


def diff(a, b, where: str, drift: dict[str, float], changes: list[str]) -> None:
    """Walk two values: numbers that differ go to ``drift`` (per column path), anything else to ``changes``."""
    if isinstance(a, str) and isinstance(b, str) and a != b and a[:1] in "[{":
        try:  # lineage, detail and raw columns hold JSON
            a, b = json.loads(a), json.loads(b)
        except ValueError:
            pass
    if isinstance(a, dict) and isinstance(b, dict):
        moved = [k for k in ROW_IDS if k in a and k in b and a[k] != b[k]]
        if moved:  # another row here: its numbers are not drift
            changes.append(f"{where}: {moved[0]} {a[moved[0]]} vs {b[moved[0]]}")
            return
        for key in sorted(set(a) | set(b), key=str):
            if key in IGNORED:
                continue
            if key not in a or key not in b:
                changes.append(f"{where}.{key}: on one side only")
            else:
                diff(a[key], b[key], f"{where}.{key}", drift, changes)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            changes.append(f"{where}: {len(a)} vs {len(b)} items")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            diff(x, y, f"{where}[{i}]", drift, changes)
    elif isinstance(a, bytes):
        if a != b:
            changes.append(f"{where}: other bytes")
    elif a != b:
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        if numbers:
            column = re.sub(r"\[\d+\]", "", where)
            drift[column] = max(drift.get(column, 0.0), abs(a - b))
        else:
            changes.append(f"{where}: {str(a)[:60]!r} vs {str(b)[:60]!r}")


def compare(base: Path, other: Path) -> dict:
    """Every file under ``base`` against ``other``'s: counts, drift per column, changes."""
    masks = fingerprints_of(base) | fingerprints_of(other)
    files = sorted(p.relative_to(base) for p in base.rglob("*") if p.is_file())
    extra = sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file() and not (base / p.relative_to(other)).exists())
    report = {"files": len(files), "bytes": 0, "drift": {}, "changes": [f"{f}: only in this run" for f in extra]}
    for rel in files:
        a, b = base / rel, other / rel
        if not b.exists():
            report["changes"].append(f"{rel}: missing")
        elif a.read_bytes() == b.read_bytes():
            report["bytes"] += 1
        else:
            drift: dict[str, float] = {}
            diff(load(a, masks), load(b, masks), str(rel), drift, report["changes"])
            report["drift"].update(drift)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ray", action="store_true", help="also run the DAG with execution.backend: ray")
    ap.add_argument("--smoke", action="store_true", help="the ingest stage only (checks the bench runs)")
    args = ap.parse_args()
    stages = ["ingest"] if args.smoke else stage_order()
    runs = [("shipped", lambda p: None), ("shipped, again", lambda p: None),
            ("execution.batch_size 1", setting("execution.batch_size", 1))]
    if not args.smoke:
        runs += [("execution.batch_size 7", setting("execution.batch_size", 7)),
                 ("llm.batch_size 1", setting("llm.batch_size", 1)),
                 ("llm.batch_size 3", setting("llm.batch_size", 3))]
    if args.ray:
        runs.append(("execution.backend ray", setting("execution.backend", "ray")))
    with tempfile.TemporaryDirectory() as tmp:
        data = {}
        for i, (name, edit) in enumerate(runs):
            repo = copy_project(Path(tmp) / f"run{i}")
            run_dag(repo, edit, stages)
            data[name] = repo / "data"
        base = data.pop("shipped")
        print("| setting | files | byte-identical | largest drift per stage folder (max abs difference) | other differences |")
        print("|---|---|---|---|---|")
        for name, path in data.items():
            r = compare(base, path)
            per_stage: dict[str, float] = {}
            for column, d in r["drift"].items():
                per_stage[column.split("/")[0]] = max(per_stage.get(column.split("/")[0], 0.0), d)
            top = ", ".join(f"{s} {d:.2g}" for s, d in sorted(per_stage.items())) or "none"
            changes = f"{len(r['changes'])}, first: {r['changes'][0]}" if r["changes"] else "none"
            print(f"| {name} | {r['files']} | {r['bytes']} | {top} | {changes} |")


if __name__ == "__main__":
    main()
