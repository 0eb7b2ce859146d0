"""Export, the writing side: row order per config, the streaming shard writers, stats, plot data and the
judge-gate reports the card shows. ``stages/export.py`` decides which pairs go where; this module
writes them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from pipeline.config import Export
from pipeline.io import ShardWriter, read_table
from pipeline.metrics import DETAILS
from pipeline.pii_structured import model_label
from pipeline.records import SCHEMAS

CONDITIONAL = ["wildfeedback", "pugc", "selfie", "curry"]
JOINT = ["dove"]
SIGNALS_DIR = Path("data/wildfeedback/signals")


# --- order ---------------------------------------------------------------------------------------


def release_order(kept: pl.DataFrame, configs: list[str]) -> pl.DataFrame:
    """Each kept row's position in every file set it goes to: ``_order_<config>`` per config it is in.

    A method's config keeps its stage's row order (``_seq``: the order the stage wrote, e.g. Curry-DPO's
    levels with their seeded shuffle within each level) within each split. ``all`` holds the conditional
    rows marked ``_primary`` (one method per prompt), sorted by ``level`` then ``pair_id`` (nulls last).
    """
    out = kept.select("pair_id", "_config", "_split", "_seq", *(c for c in ("level", "_primary") if c in kept.columns))
    for config in configs:
        if config == "all":
            rows, order = out.filter(pl.col("_primary")), ["_split", "level", "pair_id"]
        else:
            rows, order = out.filter(pl.col("_config") == config), ["_split", "_seq"]
        ranked = rows.sort(order, nulls_last=True).with_columns(
            pl.int_range(pl.len()).over("_split").alias(f"_order_{config}"))
        out = out.join(ranked.select("pair_id", "_config", f"_order_{config}"), on=["pair_id", "_config"],
                       how="left", maintain_order="left")
    return out


def row_counts(order: pl.DataFrame, configs: list[str]) -> dict[str, dict[str, int]]:
    """config -> split -> rows (only splits with rows)."""
    out = {}
    for c in configs:
        n = order.filter(pl.col(f"_order_{c}").is_not_null()).group_by("_split").len()
        counts = dict(n.iter_rows())
        out[c] = {s: int(counts[s]) for s in ("train", "test") if counts.get(s)}
    return out


class ReleaseWriter:
    """One streaming ``ShardWriter`` per (config, split) with rows; files ``<split>-0000i-of-0000N.parquet``
    with row groups capped by rows and bytes for the Hub viewer, no per-folder manifest."""

    def __init__(self, tmp: Path, cfg: Export, counts: dict[str, dict[str, int]], spill_bytes: int) -> None:
        self.tmp = tmp
        self.writers: dict[tuple[str, str], ShardWriter] = {}
        for config, splits in counts.items():
            name = "joint_pairs" if config in JOINT else "pairs"
            for split in splits:
                self.writers[config, split] = ShardWriter(
                    tmp / f".{config}-{split}", name=name, prefix=split, order_column="_order",
                    target_shard_bytes=cfg.shard_bytes, row_group_bytes=cfg.row_group_bytes,
                    row_group_rows=cfg.row_group_rows, spill_bytes=spill_bytes, write_manifest=False)

    def write(self, df: pl.DataFrame, name: str) -> None:
        """Route one redacted batch (with ``_split`` and ``_order_<config>`` columns) to its writers."""
        for (config, split), writer in self.writers.items():
            col = f"_order_{config}"
            if col not in df.columns:
                continue
            rows = df.filter((pl.col("_split") == split) & pl.col(col).is_not_null())
            if rows.height:
                writer.write(rows.select(*SCHEMAS[name].names, pl.col(col).alias("_order")).to_arrow())

    def close(self) -> list[dict[str, Any]]:
        """Close every writer, move its files into ``<config>/`` and return the manifest's file entries."""
        files = []
        for config in CONDITIONAL + ["all"] + JOINT:  # every config folder exists (DVC outs), empty when unused
            (self.tmp / config).mkdir()
            for split in ("train", "test"):
                writer = self.writers.get((config, split))
                if writer is None:
                    continue
                manifest = writer.close()
                for f in manifest["files"]:
                    os.rename(writer.out_dir / f["path"], self.tmp / config / f["path"])
                    files.append({**f, "path": f"{config}/{f['path']}"})
                writer.out_dir.rmdir()
        return files

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()


def split_sizes(folder: Path, files: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
    """config -> split -> ``{"num_bytes", "download_size"}`` of its shards in ``folder`` (``close``'s file entries):
    their uncompressed and their file bytes, as the card's ``dataset_info`` gives them."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for f in files:
        config, name = f["path"].split("/")
        size = out.setdefault(config, {}).setdefault(name.split("-")[0], {"num_bytes": 0, "download_size": 0})
        meta = pq.read_metadata(folder / f["path"])
        size["num_bytes"] += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        size["download_size"] += (folder / f["path"]).stat().st_size
    return out



# --- stats, gates and plots ------------------------------------------------------------------------


def _histogram(df: pl.DataFrame, col: str, bins: int, lo: float | None, hi: float | None) -> list[dict[str, Any]]:
    vals = df.filter(pl.col(col).is_not_null() & pl.col(col).is_finite())
    if vals.height == 0:
        return []
    lo = float(vals[col].min()) if lo is None else lo
    hi = float(vals[col].max()) if hi is None else hi
    hi = hi if hi > lo else lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    rows = [{"bin": round(float(e), 6)} for e in edges[:-1]]
    groups = {"all": vals} | {m: vals.filter(pl.col("_config") == m) for m in sorted(set(vals["_config"]))}
    for name, g in groups.items():
        counts, _ = np.histogram(g[col].to_numpy(), bins=edges)
        for r, c in zip(rows, counts, strict=True):
            r[name] = int(c)
    return rows


def _counts(df: pl.DataFrame, *keys: str) -> dict:
    """Nested ``{key1: {key2: n}}`` (or ``{key1: n}``) counts of ``df`` rows."""
    out: dict = {}
    for r in df.group_by(*keys).len().sort(*keys).iter_rows():
        node = out
        for k in r[:-2]:
            node = node.setdefault(str(k), {})
        node[str(r[-2])] = int(r[-1])
    return out


def build_stats(pairs: pl.DataFrame, joint: pl.DataFrame, rows: dict[str, dict[str, int]], drops: pl.DataFrame,
                pii: dict[str, int], inputs: dict[str, int], skipped: dict[str, str], evals: dict[str, dict],
                held_out: dict[str, dict]) -> dict[str, Any]:
    levels = pairs.filter(pl.col("level").is_not_null())
    by_config = drops.explode("configs").filter(pl.col("configs").is_not_null())
    from_release = pl.col("configs").list.eval(pl.element() != "all").list.any().fill_null(False)
    decon = drops.filter(pl.col("reason") == "contaminated").with_columns(
        pl.col("detail").str.json_path_match("$.eval_set").alias("eval_set"))
    held = drops.filter(pl.col("reason") == "held_out").with_columns(
        pl.col("detail").str.json_path_match("$.set").alias("set"))
    in_all = pairs.filter(pl.col("_primary")).group_by("_config").len() if pairs.height else pl.DataFrame()
    in_all = dict(in_all.iter_rows()) if in_all.height else {}
    methods = {}
    for m, n in inputs.items():
        methods[m] = {"input": n, "output": sum(rows.get(m, {}).values())}
        if m in CONDITIONAL:
            methods[m]["in_all"] = int(in_all.get(m, 0))
    return {
        "rows": rows,
        "total": sum(n for c, splits in rows.items() if c != "all" for n in splits.values()),
        "methods": methods,
        "levels": _counts(levels, "_config", "level"),
        "levels_by_split": _counts(levels, "_config", "_split", "level"),
        # joint rows whose two prompts hold the same text: the ones the card hands to DPOTrainer as conditional pairs
        "same_prompt": _counts(joint.filter(pl.col("_cph") == pl.col("_rph")), "_config", "_split"),
        "drops": _counts(drops, "reason"),
        "drops_from_release": _counts(drops.filter(from_release), "reason"),
        "drops_from_all_only": _counts(drops.filter(~from_release), "reason"),
        "drops_by_config": _counts(by_config, "configs", "reason"),
        "drops_by_method": _counts(drops, "method", "reason"),
        "decontamination": {s: {**v, "removed": int(decon.filter(pl.col("eval_set") == s).height)}
                            for s, v in evals.items()},
        "held_out": {p: {**v, "removed": int(held.filter(pl.col("set") == p).height)} for p, v in held_out.items()},
        "pii": pii,
        "skipped": skipped,
    }


def release_headline(stats: dict[str, Any]) -> dict[str, Any]:
    """stats.json, what ``dvc metrics show`` prints for the release: pairs read from the methods (``rows_in``),
    pairs released (``pairs``: each in its method's config), the pairs removed from the release (they left their
    method's config; ``rows_in`` = ``pairs`` + ``removed_from_release``) and why, the pairs left out of the
    cross-method ``all`` config only (a prompt another method kept there; they stay in their own config) and why,
    and the methods' judges whose labels were withheld or whose gates were lowered. ``removed.jsonl`` holds a
    record for each of both kinds. Every figure is in details.json."""
    reports = [r for g in stats["gates"].values() if isinstance(g, dict) for r in g.values()
               if isinstance(r, dict) and "from" not in r]  # Curry-DPO's copies of its scorers' gates: counted once
    return {"rows_in": sum(m["input"] for m in stats["methods"].values()), "pairs": stats["total"],
            "removed_from_release": sum(stats["drops_from_release"].values()),
            "removed_from_release_by_reason": dict(sorted(stats["drops_from_release"].items())),
            "left_out_of_all_only": sum(stats["drops_from_all_only"].values()),
            "left_out_of_all_only_by_reason": dict(sorted(stats["drops_from_all_only"].items())),
            "gates_withheld": sum(r.get("passed") is False for r in reports),
            "gates_lowered": sum(bool(r.get("lowered")) for r in reports)}


GATE_FIELDS = ["model", "probes", "correct", "accuracy", "weakest", "min_accuracy", "passed", "lowered", "labels", "from",
               "pairs_ranked"]


def gate_reports(root: Path, methods: list[str]) -> dict[str, Any]:
    """Per method: the judge-gate reports its stage recorded under ``gates`` in ``data/<method>/details.json``,
    or a sentence saying there is none."""
    out: dict[str, Any] = {}
    for m in methods:
        path = root / "data" / m / DETAILS
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError):
            out[m] = f"no gate recorded ({path.relative_to(root)} not readable)"
            continue
        gates = metrics.get("gates") if isinstance(metrics, dict) else None
        if not isinstance(gates, dict) or not gates:
            out[m] = "no gate recorded"
            continue
        # a local folder's parents (/home/alice/...) stay off the card: the model by its folder's name
        out[m] = {role: {k: model_label(r[k]) if k == "model" else r[k] for k in GATE_FIELDS if k in r}
                  if isinstance(r, dict) else str(r) for role, r in sorted(gates.items())}
    return out


def model_reports(root: Path, methods: list[str]) -> dict[str, dict[str, dict[str, str]]]:
    """Per method: ``{role: {"model", "identity"}}``, the weights each of its model roles ran
    (``models`` in ``data/<method>/details.json``, ``pipeline.llm.identity``); a method without models is left out."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for m in methods:
        try:
            models = json.loads((root / "data" / m / DETAILS).read_text()).get("models")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(models, dict) and models:
            out[m] = {role: {"model": model_label(r.get("model")), "identity": r.get("identity")}
                      for role, r in sorted(models.items()) if isinstance(r, dict)}
    return out


def signal_categories(root: Path) -> list[dict[str, Any]]:
    """SAT/DSAT category counts from WildFeedback's signals table, when it exists."""
    path = root / SIGNALS_DIR
    if not path.is_dir():
        return []
    s = pl.from_arrow(read_table(path, columns=["sat_categories", "dsat_categories"]))  # not the texts
    rows = []
    for kind, col in (("SAT", "sat_categories"), ("DSAT", "dsat_categories")):
        counts = s.select(pl.col(col).explode().drop_nulls()).group_by(col).len().sort(col)
        rows += [{"category": f"{kind}:{r[col]}", "count": r["len"]} for r in counts.iter_rows(named=True)]
    return rows


def write_plots(folder: Path, pairs: pl.DataFrame, stats: dict, bins: int, categories: list[dict]) -> dict[str, list]:
    """CSV files for `dvc plots` (one row per bin/level/category); returns what was written, for the PNG."""
    data = {
        "confidence": _histogram(pairs, "confidence", bins, 0.0, 1.0),
        "margin": _histogram(pairs, "margin", bins, None, None),
        "levels": [{"level": int(lv), "pairs": n} for m in sorted(stats["levels"]) for lv, n in stats["levels"][m].items()],
        "categories": categories,
    }
    header = {"confidence": ["bin", "all"], "margin": ["bin", "all"], "levels": ["level", "pairs"],
              "categories": ["category", "count"]}
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in data.items():
        df = pl.DataFrame(rows) if rows else pl.DataFrame({c: [] for c in header[name]})
        df.fill_null(0).write_csv(folder / f"{name}.csv")
    return data


def write_png(path: Path, stats: dict, plots: dict[str, list]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(10, 7))
    names = [f"{c}/{s}" for c, sp in stats["rows"].items() for s in sp]
    ax[0, 0].barh(names, [n for sp in stats["rows"].values() for n in sp.values()])
    ax[0, 0].set_title("pairs per config/split")
    for a, key in ((ax[0, 1], "confidence"), (ax[1, 0], "margin")):
        rows = plots[key]
        for series in (k for k in (rows[0] if rows else {}) if k != "bin"):
            a.plot([r["bin"] for r in rows], [r[series] for r in rows], label=series, drawstyle="steps-post")
        a.set_title(f"{key} histogram")
        if rows:
            a.legend(fontsize=7)
    ax[1, 1].bar([str(r["level"]) for r in plots["levels"]], [r["pairs"] for r in plots["levels"]])
    ax[1, 1].set_title("pairs per curriculum level")
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)

