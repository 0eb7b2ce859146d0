"""params.yaml as pydantic models: one model per section, unknown keys are errors.

Everything is validated before any work starts; an error names the file, the key path and what
was expected::

    params.yaml: ingest.max_reject_fraction: Input should be a valid number (got 'lots')

Validation is strict: nothing is coerced (``checkpoint_rows: true``, ``'2048'`` or ``'yes'`` where a
number or a boolean belongs are errors, not 1, 2048 and True); a whole number is accepted where a
float belongs. The file is read with YAML 1.2's booleans and floats, as DVC reads it (``yes``/``no``/
``on``/``off`` are strings, ``1e-5`` is a float), and a key repeated in one mapping is an error naming
the key and both lines, as is a value repeated in a list where a repeat means nothing (``export.methods:
[pugc, pugc]``, a source name, a language: ``Distinct``); a YAML syntax error is one line naming
``file:line:column``, and an unknown key gets a did-you-mean among the keys allowed where it stands. ``load_params`` also checks that every source
name a stage selects (``SOURCE_KEYS``) is an ``ingest.sources`` name, with a did-you-mean.

Stage sections are registered in ``Params``; every knob lives in params.yaml (no hidden defaults),
except the optional per-role engine overrides, where a missing key means "inherit from ``llm``".
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from pipeline.config_errors import ParamsError, format_validation_error

# Every section is importable from here (``from pipeline.config import LLM, Pugc``): the names below are re-exported.
from pipeline.config_export import Card, Decontamination, Dedup, EvalSet, Export, ExportMethod, PiiKind
from pipeline.config_ingest import FORMAT_FIELDS, FORMAT_KINDS, Ingest, Source, SourceFormat, SourceKind
from pipeline.config_shared import (
    LLM,
    Backend,
    BaseUrl,
    EnvName,
    Execution,
    LLMOverride,
    OptionScoring,
    Sampling,
    SamplingOverride,
    Section,
    resolve_role,
)
from pipeline.config_stages import (
    Curry,
    CurryInput,
    Dove,
    DoveGates,
    DoveRoles,
    Pugc,
    PugcGates,
    PugcRoles,
    ResponseSet,
    Selfie,
    SelfieGates,
    SelfieRoles,
    SelfieSplit,
    SplitSize,
    Wildfeedback,
    WildfeedbackGates,
    WildfeedbackRoles,
    WildfeedbackTestSet,
)
from pipeline.yaml12 import YamlFileError, load_yaml_file

__all__ = [
    "FORMAT_FIELDS",
    "FORMAT_KINDS",
    "Backend",
    "BaseUrl",
    "Card",
    "Curry",
    "CurryInput",
    "Decontamination",
    "Dedup",
    "Dove",
    "DoveGates",
    "DoveRoles",
    "EnvName",
    "EvalSet",
    "Execution",
    "Export",
    "ExportMethod",
    "INGEST_PAIRS",
    "Ingest",
    "LLM",
    "LLMOverride",
    "OptionScoring",
    "Params",
    "ParamsError",
    "PiiKind",
    "Pugc",
    "PugcGates",
    "PugcRoles",
    "ResponseSet",
    "SOURCE_KEYS",
    "Sampling",
    "SamplingOverride",
    "Section",
    "Selfie",
    "SelfieGates",
    "SelfieRoles",
    "SelfieSplit",
    "Source",
    "SourceFormat",
    "SourceKind",
    "SplitSize",
    "Wildfeedback",
    "WildfeedbackGates",
    "WildfeedbackRoles",
    "WildfeedbackTestSet",
    "fingerprint",
    "load_params",
    "resolve_params",
    "resolve_role",
    "section_models",
    "source_name_errors",
]


# --- root ----------------------------------------------------------------------------------------


class Params(Section):
    execution: Execution
    llm: LLM
    ingest: Ingest
    pugc: Pugc
    selfie: Selfie
    dove: Dove
    export: Export
    wildfeedback: Wildfeedback
    curry: Curry
    # Settings that exist only so the random-weights `tiny` model produces output on the samples:
    # {section: {key: value}}, applied by ``resolve_params`` to a section whose models are all tiny.
    tiny_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    _applied: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _roles_resolve(self) -> Params:
        """Every role's engine config, with ``llm`` filled in, is valid (e.g. an openai role has a base_url)."""
        for name in MODEL_SECTIONS:
            section = getattr(self, name)
            for role in type(section.roles).model_fields:
                getattr(section.roles, role)._key = f"{name}.roles.{role}"  # for the keys its errors name
                try:
                    _resolve(self, section, role)
                except ValidationError as e:
                    why = "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())
                    raise ValueError(f"{name}.roles.{role}: {why}") from None
        return self

    @model_validator(mode="after")
    def _override_sections(self) -> Params:
        unknown = sorted(set(self.tiny_overrides) - set(MODEL_SECTIONS))
        if unknown:
            raise ValueError(f"tiny_overrides: {unknown} are not stage sections with models; use {list(MODEL_SECTIONS)}")
        return self

    @model_validator(mode="after")
    def _curry_gap_keys(self) -> Params:
        for i, spec in enumerate(self.curry.inputs):
            if isinstance(spec.min_gap, str) and _number_at(self, spec.min_gap) is None:
                raise ValueError(f"curry.inputs[{i}].min_gap: {spec.min_gap!r} names no non-negative number in "
                                 "params; give a number or a key such as pugc.min_margin")
        return self

    def applied_overrides(self, section: str) -> dict[str, Any]:
        """The ``tiny_overrides`` applied to ``section`` ({dotted key: value}), for metrics and the console."""
        return dict(self._applied.get(section, {}))


# Stage sections that run models: they may carry tiny_overrides, and their stages keep resumable checkpoints.
MODEL_SECTIONS = ("wildfeedback", "pugc", "selfie", "dove")


def _resolve(params: Params, section: BaseModel, role: str) -> LLM:
    if isinstance(section, Selfie):
        return section.role(params.llm, role)
    return resolve_role(params.llm, getattr(section.roles, role))


def section_roles(params: Params, name: str) -> dict[str, LLM]:
    """Every role of a stage section, resolved against ``llm``: {role: its engine config}."""
    section = getattr(params, name)
    return {r: _resolve(params, section, r) for r in type(section.roles).model_fields}


def section_models(params: Params, name: str) -> list[str]:
    """Every model a stage section's roles resolve to."""
    return [llm.model for llm in section_roles(params, name).values()]


def _merge(base: dict[str, Any], over: dict[str, Any], prefix: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """(``over`` merged into ``base``: nested mappings merge, other values replace; {dotted key: value} set)."""
    out, applied = dict(base), {}
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key], sub = _merge(out[key], value, f"{prefix}{key}.")
            applied.update(sub)
        else:
            out[key] = value
            applied[f"{prefix}{key}"] = value
    return out, applied


def _override_errors(name: str, section: dict[str, Any]) -> list[dict[str, Any]]:
    """Why ``tiny_overrides[name]`` merged into its section is not a valid section, each error located
    under ``tiny_overrides`` (``tiny_overrides.pugc.min_margn``), not in the stage section (spelt right)."""
    try:
        Params.model_fields[name].annotation.model_validate(section)
    except ValidationError as e:
        return [{"type": x["type"], "loc": ("tiny_overrides", name, *x["loc"]), "input": x["input"],
                 **({"ctx": x["ctx"]} if "ctx" in x else {})} for x in e.errors()]
    return []


def resolve_params(data: dict[str, Any]) -> Params:
    """Validate params, then apply ``tiny_overrides[section]`` to each section whose models are all the
    built-in tiny model (``tiny`` / ``tiny@N``) in a run whose ``llm.model`` is tiny too: a user who points
    a stage, or the run, at a real model gets the papers' defaults, the samples run keeps working with
    random weights, and both say which applied. A section left on tiny in a real-model run (Selfie's own
    ``tiny@1``/``tiny`` under ``llm.model: smollm2``) keeps its gates, so its chance-level judge is withheld
    instead of mixing random-weights labels into the release."""
    from pipeline.llm.tiny import tiny_seed

    params = Params.model_validate(data)
    merged, applied, errors = dict(data), {}, []
    tiny_run = tiny_seed(params.llm.model) is not None
    for name, over in params.tiny_overrides.items():
        section, keys = _merge(data[name], over)
        errors += _override_errors(name, section)  # whether it applies or not, named where it is written
        if tiny_run and all(tiny_seed(m) is not None for m in section_models(params, name)):
            merged[name], applied[name] = section, keys
    if errors:
        raise ValidationError.from_exception_data("Params", errors)
    if applied:
        params = Params.model_validate(merged)
        params._applied = applied
    return _with_curry_gaps(params)


def _number_at(params: Params, key: str) -> float | None:
    """The non-negative number at dotted ``key`` of ``params`` (e.g. ``pugc.min_margin``), else None."""
    node: Any = params
    for part in key.split("."):
        node = getattr(node, part, None) if isinstance(node, BaseModel) else None
    ok = isinstance(node, int | float) and not isinstance(node, bool) and node >= 0
    return float(node) if ok else None


def _with_curry_gaps(params: Params) -> Params:
    """``params`` with each Curry input's ``min_gap`` given as a params key replaced by that key's number
    (after tiny_overrides: the samples' PUGC margin is then the tiny one), so the stage and its
    fingerprint see the number."""
    inputs = [spec.model_copy(update={"min_gap": _number_at(params, spec.min_gap)})
              if isinstance(spec.min_gap, str) else spec for spec in params.curry.inputs]
    if inputs == params.curry.inputs:
        return params
    return params.model_copy(update={"curry": params.curry.model_copy(update={"inputs": inputs})})


# Params keys that name ingest sources, as (section, field): each is checked against ingest.sources.
# A stage that selects sources by name adds its key here.
SOURCE_KEYS = [("wildfeedback", "sources"), ("pugc", "sources"), ("selfie", "pair_sources"),
               ("selfie", "prompt_sources"), ("dove", "pair_sources")]
# The ingest table each key's stage reads, and the source kinds that write rows to it.
SOURCE_TABLES = {("wildfeedback", "sources"): ("conversations", ("conversations",)),
                 ("pugc", "sources"): ("documents", ("documents",)),
                 ("selfie", "pair_sources"): ("pairs", ("pairs",)),
                 ("selfie", "prompt_sources"): ("prompts", ("prompts", "rated")),
                 ("dove", "pair_sources"): ("pairs", ("pairs",))}
INGEST_PAIRS = "data/ingest/pairs"  # dove.pair_sources name ingest sources only when dove.pairs reads these


def source_name_errors(params: Params) -> list[str]:
    """``key[i]: 'name' is not an ingest source; did you mean ...`` for every unknown source name, and a line for
    every source of a kind that writes none of the rows that key's stage reads."""
    names = [s.name for s in params.ingest.sources]
    kinds = {s.name: s.kind for s in params.ingest.sources}
    errors = []
    for section, field in SOURCE_KEYS:
        cfg = getattr(params, section, None)
        if cfg is None or (section == "dove" and Path(cfg.pairs).as_posix().rstrip("/") != INGEST_PAIRS):
            continue
        for i, name in enumerate(getattr(cfg, field)):
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                errors.append(f"{section}.{field}[{i}]: {name!r} is not an ingest source{hint} "
                              f"(ingest.sources: {', '.join(names) or 'none'})")
                continue
            table, takes = SOURCE_TABLES[(section, field)]
            if kinds[name] not in takes:  # the stage found none of its rows, and blamed ingest.sources
                errors.append(f"{section}.{field}[{i}]: {name!r} is an ingest source of kind {kinds[name]!r}; "
                              f"{section}.{field} reads {table} (sources of kind {' or '.join(takes)})")
    return errors


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: no such file; run from the project root or pass --params")
    if path.is_dir():
        raise ParamsError(f"{path}: is a folder; pass the params file itself (e.g. {path / 'params.yaml'})")
    try:
        data = load_yaml_file(path)
    except YamlFileError as e:
        raise ParamsError(str(e)) from None
    if not isinstance(data, dict):  # an empty file, a list, a lone value: said so, with what the file must hold
        got = "is empty" if data is None else f"holds a {type(data).__name__} at the top level"
        raise ParamsError(f"{path}: {got}; expected a mapping of sections (execution:, llm:, ingest:, ...): start "
                          "from the project's params.yaml")
    try:
        params = resolve_params(data)
    except ValidationError as e:
        raise ParamsError(format_validation_error(e, path, Params)) from None
    errors = source_name_errors(params)
    if errors:
        raise ParamsError("invalid parameters:\n  " + "\n  ".join(f"{path}: {e}" for e in errors))
    return params


# Where an engine runs, not what it computes (``llm`` and every role): more or fewer Ray replicas or GPUs
# change no output byte, so no fingerprint either, and a rerun on a resized cluster keeps its checkpoints.
# The model stages' DVC params (dvc.yaml) leave them out too; every other ``llm`` key is listed there.
PLACEMENT_KEYS = frozenset({"replicas", "gpus_per_replica"})
# ``execution`` keys that change no output byte, only where the work runs and how it is checkpointed: the
# model stages' DVC params leave them out (tests/test_dvc_deps.py checks every other key is listed), so
# moving the DAG onto a Ray cluster or resizing it reruns nothing. The other keys stay deps:
# max_reject_fraction (DOVE's only: the other model stages never read it, tests/test_dvc_deps.py READ_BY) and
# on_gate_failure (whether labels are written), the shard and row group sizes.
EXECUTION_PLACEMENT_KEYS = frozenset({
    "backend",  # local or Ray: the same bytes (docs/reliability.md "Deterministic outputs"; tests/test_execute.py)
    "ray_address",  # which Ray cluster
    "num_cpus_per_task",  # CPUs Ray reserves per task and replica (thread counts: llm.cpu_threads, a dep)
    "batch_size",  # rows per CPU batch: CPU steps work row by row; WildFeedback's partitions and export's
    # removed.jsonl do not depend on it (tests/test_wildfeedback_stage.py, tests/test_export.py)
    "checkpoint_rows",  # when checkpoint files are written (and Ray task sizes, in whole engine batches)
    "spill_bytes",  # when a shard writer spills a sorted run: the same bytes (tests/test_io.py)
})


# ``llm`` (and role) keys, and dove's embedding_revision, added after outputs were released, fingerprinted only
# when set off their default (or, in a role, set at all): outputs made before a key existed, or with it at its
# default, keep their fingerprints, and the stages that record them their bytes.
LATER_KEYS: dict[str, Any] = {"prompt_logprobs_via": "prompt_logprobs", "revision": None,
                             "embedding_revision": None}


def _without_placement(v: Any) -> Any:
    if isinstance(v, (dict, list)):
        items = v.items() if isinstance(v, dict) else enumerate(v)
        kept = [(k, _without_placement(x)) for k, x in items if k not in PLACEMENT_KEYS
                and not (k in LATER_KEYS and x in (None, LATER_KEYS[k]))]
        return dict(kept) if isinstance(v, dict) else [x for _, x in kept]
    return v


def fingerprint(*sections: BaseModel | dict[str, Any]) -> str:
    """A short stable hash of parameter sections (less ``PLACEMENT_KEYS``), recorded in manifests and lineage."""
    payload = [s.model_dump(mode="json") if isinstance(s, BaseModel) else s for s in sections]
    return hashlib.sha256(json.dumps(_without_placement(payload), sort_keys=True).encode()).hexdigest()[:16]
