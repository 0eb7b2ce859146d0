"""Export, the reading side: steps 1 and 2 of ``stages/export.py``, which both of its passes run.

1. merge: ``method_inputs`` finds ``data/<method>/pairs`` for every enabled method (an absent folder is
   skipped with its reason) and ``method_batches`` streams them batch by batch in the order the stages
   wrote, each checked against its contract (``pairs``; DOVE: ``joint_pairs``). ``iter_pairs_tree``
   reads a shard set or a folder of them (Curry-DPO's ``level=N``, in level order).
2. redact: ``redacted`` runs ``pipeline.pii`` over every string the release writes (messages,
   ``lineage``, ``source``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import Export
from pipeline.dedup import turn_texts
from pipeline.errors import SourceError, StageError
from pipeline.io import iter_batches, read_manifest, shard_files
from pipeline.pii import redact
from pipeline.pii_structured import local_model_paths, redact_json, redact_messages
from pipeline.records import SCHEMAS, check_table
from stages.export_write import CONDITIONAL, JOINT

_LEVEL_DIR = re.compile(r"^level=(\d+)$")
_NUMBERED_DIR = re.compile(r"^(\w+)=(\d+)$")


class ExportError(StageError):
    """The release cannot be built; the message names the input and what to do."""


def method_dir(root: Path, method: str) -> Path:
    return root / "data" / method / "pairs"


# --- 1. merge ------------------------------------------------------------------------------------


def _folder_order(p: Path) -> tuple[int, str, int]:
    """Training order of a method's sub-folders: unnumbered ones first (Selfie's ``seed``), then ``name=N``
    by number (Curry-DPO's ``level=0, 1, ...``, Selfie's ``iteration=1, 2, ..., 10``), not by name."""
    m = _NUMBERED_DIR.match(p.name)
    return (1, m.group(1), int(m.group(2))) if m else (0, p.name, 0)


def iter_pairs_tree(path: Path, name: str, batch_rows: int = 65_536) -> Iterator[pa.Table]:
    """A shard set, or a folder of shard sets (``level=0/``, ``level=1/``...) streamed in level order,
    each batch checked against the ``name`` contract. A ``level=N`` folder fills ``level`` where its
    rows leave it null."""
    if not path.exists():
        raise SourceError(f"{path}: not found; run the stage that writes it first (`dvc repro`)")
    subdirs = sorted((d for d in path.iterdir() if d.is_dir() and not d.name.startswith((".", "_"))), key=_folder_order)
    if not subdirs or shard_files(path) or read_manifest(path) is not None:  # a bare folder: iter_batches refuses it
        for batch in iter_batches(path, batch_rows):  # a shard missing or cut short: one line naming it
            yield check_table(pa.Table.from_batches([batch]), name)
    for sub in subdirs:
        m = _LEVEL_DIR.match(sub.name)
        for t in iter_pairs_tree(sub, name, batch_rows):
            if m and "level" in t.column_names and t.num_rows:
                level = pc.fill_null(t.column("level"), int(m.group(1)))
                t = t.set_column(t.schema.get_field_index("level"), "level", level)
            yield t


def read_pairs_tree(path: Path, name: str) -> pa.Table:
    """``iter_pairs_tree`` as one table."""
    tables = list(iter_pairs_tree(path, name))
    return pa.concat_tables(tables) if tables else SCHEMAS[name].empty_table()


def method_inputs(root: Path, methods: list[str]) -> tuple[dict[str, Path], dict[str, str]]:
    """(method -> its pairs folder, for those present; skipped method -> reason)."""
    found, skipped = {}, {}
    for method in CONDITIONAL + JOINT:
        if method not in methods and method_dir(root, method).is_dir():
            skipped[method] = "present but not listed in export.methods"
    for method in methods:
        path = method_dir(root, method)
        if path.is_dir():
            found[method] = path
        else:
            skipped[method] = f"{path.relative_to(root)} not found (stage not run or not merged yet)"
    return found, skipped


def method_batches(inputs: dict[str, Path], batch_rows: int) -> Iterator[tuple[str, pl.DataFrame]]:
    """Every method's pairs, batch by batch, with ``_config`` and ``_seq`` (the row's position in the stream:
    the order the stages wrote); an unreadable folder names itself and the fix."""
    seq = 0
    for method, path in inputs.items():
        name = "joint_pairs" if method in JOINT else "pairs"
        try:
            for table in iter_pairs_tree(path, name, batch_rows):
                df = pl.from_arrow(table).with_columns(pl.lit(method).alias("_config"),
                                                       pl.int_range(seq, seq + table.num_rows).alias("_seq"))
                seq += table.num_rows
                yield method, df
        except (SourceError, ValueError) as e:
            raise ExportError(f"{path}: cannot read the {method} pairs ({e}); rerun `dvc repro {method}`") from e


# --- 2. redact -----------------------------------------------------------------------------------

PAIR_SIDES = ["prompt", "chosen", "rejected"]
JOINT_SIDES = ["chosen_prompt", "chosen", "rejected_prompt", "rejected"]


def redacted(df: pl.DataFrame, method: str, cfg: Export) -> tuple[pl.DataFrame, dict[str, int]]:
    """Every string column the release writes, redacted: messages, ``lineage`` (JSON, value by value) and
    ``source``. Ids (``pair_id``) and ``method`` are the pipeline's own. A model the lineage names by a local
    folder keeps only the folder's name (``pii_structured.model_label``), PII kinds on or off: its parents
    (``/home/alice/...``) name the user and the machine's layout, and the release is what gets published."""
    kinds, regions = cfg.pii_kinds, tuple(cfg.pii_phone_regions)
    if df.height:
        df = df.with_columns(local_model_paths(df["lineage"]).alias("lineage"))
    df, counts = redact_messages(df, JOINT_SIDES if method in JOINT else PAIR_SIDES, kinds, regions)
    if not kinds or df.height == 0:
        return df, counts
    lineage, c2 = redact_json(df["lineage"], kinds, regions)
    df = df.with_columns(lineage.alias("lineage"))
    parts = [counts, c2]
    if "source" in df.columns:
        source, c3 = redact(df["source"], kinds, regions)
        df = df.with_columns(source.alias("source"))
        parts.append(c3)
    return df, {k: sum(p.get(k, 0) for p in parts) for k in kinds}


def prompt_turns(inputs: dict[str, Path], batch_rows: int, cfg: Export) -> Iterator[pl.DataFrame]:
    """The user turns (``_turn``, ``_text``: ``pipeline.dedup.turn_texts``) of every method's prompts, read and
    redacted again as pass 1 redacts them: what step 6 compares with the test prompts' turns once the split is
    known (a quote of a test prompt has a key of its own). Only the prompt columns are redacted."""
    for method, df in method_batches(inputs, batch_rows):
        cols = ["chosen_prompt", "rejected_prompt"] if method in JOINT else ["prompt"]
        df, _ = redact_messages(df.select(cols), cols, cfg.pii_kinds, tuple(cfg.pii_phone_regions))
        for c in cols:
            yield turn_texts(df, c, cfg.decontamination.min_words).select("_turn", "_text")
