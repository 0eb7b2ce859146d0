"""The dataset card of a release: the ``README.md`` that the Hub and ``datasets`` read (YAML front matter
with one ``configs`` entry per config and ``data_files`` per split, and each config's ``dataset_info``) and a
body describing the configs, how they were built, how to train on them with TRL, and their limits.
``render_card`` writes it; ``pipeline.hub`` publishes the release it describes."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import pyarrow as pa
import yaml

from pipeline.dedup import REASONS
from pipeline.metrics import counted
from pipeline.pii import DETECTORS
from pipeline.pii_structured import MODEL_KEYS
from pipeline.records import SCHEMAS
from stages.export_card_trl import training_part
from stages.export_write import JOINT

CONFIG_DOC = {
    "all": "the conditional pairs (WildFeedback, PUGC, Selfie/SPA, Curry-DPO) in one table, each prompt from one method",
    "wildfeedback": "pairs mined from dissatisfaction signals in real conversations (WildFeedback)",
    "pugc": "queries written from user-generated documents, responses judged against the document (PUGC)",
    "selfie": "pairs the policy labelled itself from its implicit DPO reward (Selfie/SPA)",
    "curry": "several pairs per prompt ranked by score gap, `level` 0 = easiest (Curry-DPO)",
    "dove": "joint pairs: two different instructions, each with a response (DOVE/JPO)",
}


# --- card ----------------------------------------------------------------------------------------


def size_category(n: int) -> str:
    """The Hub's size bucket for ``n`` rows (its ``size_categories`` values: n<1K ... 100B<n<1T, n>1T).

    >>> size_category(999), size_category(1000), size_category(2_500_000), size_category(10**12)
    ('n<1K', '1K<n<10K', '1M<n<10M', 'n>1T')
    """
    names = ["1K", "10K", "100K", "1M", "10M", "100M", "1B", "10B", "100B", "1T"]
    if n < 1000:
        return "n<1K"
    for lo, hi in zip(names, names[1:], strict=False):
        if n < 10 ** (3 + names.index(hi)):
            return f"{lo}<n<{hi}"
    return "n>1T"


# MODEL_KEYS: lineage keys whose value is the model that played an engine role; ``models`` maps roles to models.


def _models(lineage: pl.Series) -> list[str]:
    named = pl.concat([lineage.str.json_path_match(f"$.{k}") for k in MODEL_KEYS]).drop_nulls().to_list()
    roles = []
    for found in lineage.str.json_path_match("$.models").drop_nulls().unique().to_list():
        try:
            value = json.loads(found)  # {role: model}, or a list of models
        except ValueError:
            value = found  # a plain string
        values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
        roles += [v for v in values if isinstance(v, str)]
    return sorted(set(named + roles))


def lineage_summary(pairs: pl.DataFrame) -> dict[str, dict[str, list[str]]]:
    """Per method (``_config``): the distinct models (the values of ``MODEL_KEYS`` and of the ``models``
    role map) and params fingerprints named in its ``lineage`` JSON."""
    out: dict[str, dict[str, list[str]]] = {}
    for method in sorted(set(pairs["_config"])) if pairs.height else []:
        lin = pairs.filter(pl.col("_config") == method)["lineage"]
        prints = pl.concat([lin.str.json_path_match(p) for p in ("$.fingerprint", "$.params_fingerprint")])
        out[method] = {"models": _models(lin), "fingerprints": prints.drop_nulls().unique().sort().to_list()}
    return out


def response_writers(pairs: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Per method (``_config``): how many of its responses (chosen and rejected sides) came from an input dataset,
    by the writer its source names (lineage ``written_by``, ``pipeline.records.written_by``), most first."""
    out: dict[str, dict[str, int]] = {}
    for method in sorted(set(pairs["_config"]) - {"all"}) if pairs.height else []:
        lin = pairs.filter(pl.col("_config") == method)["lineage"]
        sides = pl.concat([lin.str.json_path_match(f"$.written_by.{side}") for side in ("chosen", "rejected")])
        counts = sides.drop_nulls().value_counts(sort=True, name="n").sort(["n", sides.name], descending=[True, False])
        if counts.height:
            out[method] = dict(counts.iter_rows())
    return out


_DTYPES = {pa.string(): "string", pa.float64(): "float64", pa.int64(): "int64", pa.bool_(): "bool"}


def features(schema: pa.Schema | pa.StructType) -> list[dict[str, Any]]:
    """A release schema as a card's ``dataset_info.features``, in the form ``datasets`` writes (a message list:
    ``list`` of its struct's fields).

    >>> features(SCHEMAS["pairs"])[1]
    {'name': 'prompt', 'list': [{'name': 'role', 'dtype': 'string'}, {'name': 'content', 'dtype': 'string'}]}
    """
    out = []
    for f in schema:
        if pa.types.is_list(f.type):
            out.append({"name": f.name, "list": features(f.type.value_type)})
        elif f.type in _DTYPES:
            out.append({"name": f.name, "dtype": _DTYPES[f.type]})
        else:
            raise TypeError(f"release column {f.name!r} has Arrow type {f.type}, which the card's features do not name "
                            f"yet: add it to stages/export_card.py _DTYPES")
    return out


def dataset_info(config: str, splits: dict[str, int], sizes: dict[str, dict[str, int]]) -> dict[str, Any]:
    """A config's ``dataset_info`` entry: its features and each split's rows and bytes (``split_sizes``).
    ``datasets`` keys its cache of a local folder on the card alone, so these figures make it read afresh a
    rebuilt release whose counts or sizes changed (docs/training.md), and it checks each split's rows against
    them when it reads the shards."""
    split_info = [{"name": s, "num_bytes": sizes[s]["num_bytes"], "num_examples": n} for s, n in splits.items()]
    return {"config_name": config, "features": features(SCHEMAS["joint_pairs" if config in JOINT else "pairs"]),
            "splits": split_info, "download_size": sum(sizes[s]["download_size"] for s in splits),
            "dataset_size": sum(sizes[s]["num_bytes"] for s in splits)}


def front_matter(cfg: Any, stats: dict[str, Any], sizes: dict[str, dict[str, dict[str, int]]] | None = None) -> dict[str, Any]:
    """The card's YAML: one ``configs`` entry per config with rows (an empty config is left out, so every listed
    config loads) and, given ``sizes`` (``split_sizes``), their ``dataset_info``."""
    configs = []
    for i, (config, splits) in enumerate(stats["rows"].items()):
        if not splits:
            continue
        entry: dict[str, Any] = {"config_name": config}
        if config == "all" or (i == 0 and "all" not in stats["rows"]):
            entry["default"] = True
        entry["data_files"] = [{"split": s, "path": f"{config}/{s}-*.parquet"} for s in splits]
        configs.append(entry)
    front = {
        "license": cfg.license,
        "pretty_name": cfg.card.pretty_name,
        "language": list(cfg.card.language),
        "task_categories": list(cfg.card.task_categories),
        "tags": list(dict.fromkeys(["trl", "dpo", *cfg.card.tags])),
        "size_categories": [size_category(stats["total"])],
        "configs": configs,
    }
    if sizes is not None:
        front["dataset_info"] = [dataset_info(c["config_name"], stats["rows"][c["config_name"]], sizes[c["config_name"]])
                                 for c in configs]
    return front


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


PLACEHOLDER_REPO = "ORG/NAME"  # the snippets' repo id while export.card.repo_id is unset

def _accuracy_cell(r: dict[str, Any]) -> str:
    """A gate's probe accuracy as the card shows it: "0.83 (20/24)"; a judge gated on contrasts is scored by its
    weakest one, so its cell names it beside the probes right overall."""
    if "accuracy" not in r:
        return "—"
    overall = f"{r.get('correct', '?')}/{r.get('probes', '?')}"
    if r.get("weakest"):
        return f"{r['accuracy']:.2f} (weakest: `{r['weakest']}`; {overall} overall)"
    return f"{r['accuracy']:.2f} ({overall})"


def _gate_rows(gates: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for method, roles in gates.items():
        if not isinstance(roles, dict):
            rows.append([method, "—", "—", "—", "—", roles])
            continue
        for role, r in roles.items():
            r = r if isinstance(r, dict) else {"labels": r}
            acc = _accuracy_cell(r)
            # Curry-DPO's copy of another stage's judge: how many of its input pairs came from that judge's scores
            behind = f"; behind {r['pairs_ranked']} of {method}'s input pairs" if "pairs_ranked" in r else ""
            rows.append([method, role, r.get("model", "—"), acc, r.get("min_accuracy", "—"),
                         r.get("labels", "—") + ("" if r.get("passed", True) else " (failed)") + behind])
    return rows


def _audit_part(audit: dict[str, Any] | None) -> str:
    if audit is None:
        return ""
    from pipeline.audit import summary_lines

    verdict = "passed" if audit["passed"] else "FAILED"
    lines = "\n".join(f"    {line}" for line in summary_lines(audit))
    checks = _table(["check", "what it checks", "violations"],
                    [[f"`{name}`", c["description"], c["violations"]] for name, c in audit["checks"].items()])
    # export scans this card after rendering it (``audit.add_text_check``): it is one of the files counted
    return (f"## Audit\n\n`prefpipe audit` re-read every file of this release ({audit['rows']} rows, "
            f"{audit['files'] + 1} files with this card): **{verdict}** (details in `audit.json`).\n\n{lines}\n\n"
            f"{checks}\n")


def removal_counts(stats: dict[str, Any]) -> str:
    """The card's sentence telling the pairs removed from the release from those left out of ``all`` only."""
    def listed(counts: dict[str, int]) -> str:
        return f" ({', '.join(f'`{r}` {n}' for r, n in counts.items())})" if counts else ""
    gone, all_only = stats.get("drops_from_release", {}), stats.get("drops_from_all_only", {})
    return (f"Removed from the release: {counted(sum(gone.values()), 'pair')}{listed(gone)}. Left out of `all` only: "
            f"{counted(sum(all_only.values()), 'pair')}{listed(all_only)}, each kept in its own method's config for a "
            "prompt another method holds in `all`.\n")


def render_card(cfg: Any, stats: dict[str, Any], lineage: dict[str, dict[str, list[str]]], *, png: bool,
                audit: dict[str, Any] | None = None, writers: dict[str, dict[str, int]] | None = None,
                sizes: dict[str, dict[str, dict[str, int]]] | None = None) -> str:
    """The release's README.md: YAML front matter + a body describing configs, provenance, training, limits;
    ``writers``: ``response_writers`` of its pairs; ``sizes``: ``split_sizes`` of its shards."""
    fm = yaml.safe_dump(front_matter(cfg, stats, sizes), sort_keys=False, allow_unicode=True)
    rows = [[f"`{c}`", CONFIG_DOC.get(c, ""), sp.get("train", 0), sp.get("test", 0)] for c, sp in stats["rows"].items() if sp]
    methods = [[m, v["input"], v["output"], v.get("in_all", "—"), ", ".join(lineage.get(m, {}).get("models", [])) or "—",
                ", ".join(lineage.get(m, {}).get("fingerprints", [])) or "—"] for m, v in stats["methods"].items()]
    drops = [[f"`{c}`", f"`{r}`", n, REASONS.get(r, "")] for c, reasons in stats.get("drops_by_config", {}).items() for r, n in reasons.items()]
    held = [[f"`{p}`", v.get("prompts", 0), v.get("removed", 0)] for p, v in stats.get("held_out", {}).items()]
    gates = _gate_rows(stats.get("gates", {}))
    models = [[m, role, r.get("model", "—"), f"`{r.get('identity')}`"] for m, roles in stats.get("models", {}).items()
              for role, r in roles.items()]
    written = [[m, f"`{w}`", n] for m, by in (writers or {}).items() for w, n in by.items()]
    decon = [[s, v["prompts"], f"`{v['prompts_sha256'][:12]}`" if "prompts_sha256" in v else "—", v["removed"], v["status"]]
             for s, v in stats["decontamination"].items()]
    marker = {d.kind: d.marker for d in DETECTORS}
    pii = [[k, f"`{marker[k]}`", n] for k, n in stats["pii"].items()]
    skipped = "".join(f"\n- `{m}`: {why}" for m, why in stats["skipped"].items())
    parts = [
        f"---\n{fm}---\n",
        f"# {cfg.card.pretty_name}\n\n{cfg.card.description}\n",
        "![summary](plots/summary.png)\n" if png else "",
        "## Configs\n",
        "Splits are made by a hash of the prompt's normalised first user turn, so no prompt is in both `train` and "
        "`test`, and the prompts of one conversation (a dialogue and its opening request) share a split; a config "
        "lists a `test` split when prompts fell there. A `dove` row is in `test` only when both of its prompts "
        "are test prompts (rows whose prompts straddle the splits are dropped). A train row whose prompt holds a "
        f"user turn of a test prompt ({cfg.decontamination.min_words} words or more), as a later turn of another "
        "conversation or quoted inside a longer user turn, or whose user turn lies inside a longer test turn (word "
        "n-grams, as for the evaluation sets), is dropped (`test_prompt_in_train`).\n",
        _table(["config", "holds", "train", "test"], rows) + "\n",
        "Conditional configs follow TRL's conversational preference format: `prompt`, `chosen`, `rejected` are "
        "lists of `{role, content}` messages. Every row also carries `pair_id`, `method`, `source`, `level` "
        "(Curry-DPO curriculum level, 0 = easiest), `score_chosen`, `score_rejected`, `margin`, `confidence`, "
        "`label_smoothing`, `noisy` (Selfie/SPA's low-confidence flag) and `lineage` (JSON: input ids, stage, "
        "models, params fingerprint). The `dove` config has `pair_id`, `chosen_prompt`, `chosen`, `rejected_prompt`, "
        "`rejected`, `confidence`, `method`, `lineage`.\n",
        "## How it was built\n",
        "Built by prefpipe (`dvc repro`): per-method stages produce pairs, then `export` "
        "merges them, redacts PII in every string (messages, lineage, source), drops pairs whose chosen equals "
        "rejected (whitespace normalised, case folded, sentence punctuation aside) and pairs whose chosen reacts to feedback nobody gave, loops or stops "
        "mid-sentence, removes duplicate pairs and near-duplicate prompts within each method "
        f"(MinHash, Jaccard >= {cfg.dedup.near_threshold}), removes prompts overlapping evaluation sets "
        f"({cfg.decontamination.ngram}-gram overlap >= {cfg.decontamination.threshold}, or a text shorter than "
        f"{cfg.decontamination.ngram} words, of at least {cfg.decontamination.min_words}, found whole in the other), "
        "splits train/test "
        f"({cfg.test_fraction:.0%} of prompts to test, by a hash of their first user turn, except Selfie's seed pairs and every "
        "pair opening the same way or sharing (or quoting) a user turn with one, which stay in train: "
        f"{stats['split']['pinned_by_seed']} openings moved to train for a seed pair's turn; "
        "a DOVE row whose prompts fall in different splits is dropped) "
        "and keeps held-out prompts out of every train split. Each "
        "method's config holds all its surviving pairs; in `all`, a prompt several methods share is kept for the "
        f"first of {', '.join(cfg.dedup.priority)} (a fixed order; scores of different methods are never compared). "
        f"Export params fingerprint: `{stats['fingerprint']}`.\n",
        _table(["method", "input pairs", "in its config", "in `all`", "models", "params fingerprints"], methods) + "\n",
        (f"Methods not in this release:{skipped}\n" if skipped else ""),
        removal_counts(stats),
        "Pairs that left a config, by config and reason (each one is listed in `removed.jsonl` with its details, its texts "
        "and the configs it left; that file stays with the builder, `prefpipe publish` does not upload it):\n",
        _table(["config", "reason", "pairs", "why"], drops or [["(none)", "—", 0, "—"]]) + "\n",
        "Decontamination sets:\n",
        _table(["set", "prompts", "prompts sha256", "pairs removed", "status"],
               decon or [["(none configured)", 0, "—", 0, "—"]]) + "\n",
        "Held-out prompts (kept out of every train split):\n",
        _table(["held-out set", "prompts", "train pairs removed"], held or [["(none configured)", 0, 0]]) + "\n",
        "Judge gates each stage recorded (a judge labels data only after it scores its probe set; a judge probed "
        "on several contrasts is scored by its weakest; a gate at or below 0.5 is lowered and lets a chance-level "
        "judge through):\n",
        _table(["method", "judge role", "model", "probe accuracy", "gate", "labels"], gates or [["(none)", "—", "—", "—", "—", "—"]]) + "\n",
        "Model weights behind each stage's roles, as its settings named them (a role those settings left unused, "
        "e.g. WildFeedback's detector under `detector: rules`, is listed too; a `<stage>.<role>` row, e.g. curry's "
        "`pugc.judge`, is a role of the stage whose responses that method re-read (Curry-DPO ranking their scores, "
        "DOVE judging them) into at least one of its pairs; `tiny:`/`smollm2:` the built-in "
        "model's build hash, `local:` a hash of the folder's files, `hub:` the cached snapshot's commit, `openai:` "
        "the served name):\n",
        _table(["method", "role", "model", "weights identity"], models or [["(none)", "—", "—", "—"]]) + "\n",
        "Responses taken from the input datasets (the other responses were written by the models above), by the "
        "model their source names as the writer (`unknown`: the source names none, as pair datasets and rated sets "
        "without a model field do; each pair's `lineage` names them under `written_by`). A model's outputs can carry "
        "its provider's terms of use: check them for each writer before publishing:\n",
        _table(["method", "written by", "responses (chosen and rejected)"], written or [["(none)", "—", 0]]) + "\n",
        "PII replaced, each match by its kind's marker:\n",
        _table(["kind", "marker", "replacements"], pii or [["(redaction off)", "—", 0]]) + "\n",
        *training_part(stats, cfg.card.repo_id or PLACEHOLDER_REPO),
        _audit_part(audit),
        "## Limitations\n",
        "- Responses are generated and judged by models; labels are noisy (see `confidence`, `noisy`).\n"
        "- PII redaction is pattern based (phone numbers validated with libphonenumber, cards with Luhn): names, "
        "street addresses, national ids and national phone numbers outside the configured regions can remain.\n"
        "- Decontamination checks word n-gram overlap (a Chinese or Japanese character counts as a word) with the listed sets only; "
        "paraphrases are not caught.\n"
        "- Near-duplicate removal is approximate (MinHash); the train/test split is by prompt, not by topic.\n"
        "- The license applies to this compilation; inputs keep their own terms.\n",
    ]
    return "\n".join(p for p in parts if p)
