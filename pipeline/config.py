"""params.yaml as pydantic models: one model per section, unknown keys are errors.

Everything is validated before any work starts; an error names the file, the key path and what
was expected::

    params.yaml: ingest.max_reject_fraction: Input should be a valid number (got 'lots')

Stage sections are registered in ``Params``; every knob lives in params.yaml (no hidden defaults),
except the optional per-role engine overrides, where a missing key means "inherit from ``llm``".
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- shared sections -----------------------------------------------------------------------------


class Execution(Section):
    backend: Literal["local", "ray"]
    batch_size: int = Field(gt=0)
    # Rows per resumable chunk: a killed stage restarts from its last finished chunk.
    checkpoint_rows: int = Field(gt=0)
    max_reject_fraction: float = Field(ge=0, le=1)
    ray_address: str | None  # None: honour RAY_ADDRESS, else start a local Ray instance
    num_cpus_per_task: float = Field(gt=0)
    target_shard_bytes: int = Field(gt=0)
    row_group_bytes: int = Field(gt=0)
    # Rows a streaming shard writer holds before it spills a sorted run to disk: bounds memory
    # and never changes a byte of output (tested), so ingest does not list it as a DVC parameter.
    spill_bytes: int = Field(gt=0)
    # A judge below its gate (pipeline/gates.py): fail the stage, or withhold that judge's labels.
    on_gate_failure: Literal["error", "withhold"]


class Sampling(Section):
    temperature: float = Field(ge=0)
    top_p: float = Field(gt=0, le=1)
    max_new_tokens: int = Field(gt=0)
    stop: list[str]
    seed: int


class LLM(Section):
    backend: Literal["transformers", "vllm"]
    model: str  # "tiny", a Hugging Face model id, or a local folder
    dtype: Literal["auto", "float32", "float16", "bfloat16"]
    batch_size: int = Field(gt=0)
    replicas: int = Field(gt=0)
    gpus_per_replica: float = Field(ge=0)
    tensor_parallel_size: int = Field(gt=0)
    max_model_len: int = Field(gt=0)
    gpu_memory_utilization: float = Field(gt=0, le=1)
    enable_prefix_caching: bool
    structured_retries: int = Field(ge=0)
    sampling: Sampling
    # transformers engine: padded tokens per forward pass (rows sorted by length; see pipeline/llm/hf.py).
    batch_tokens: int = Field(default=16384, gt=0)
    # transformers engine on CPU: intra-op threads, "auto" = measured when the engine starts (pipeline/llm/cpu.py).
    cpu_threads: Literal["auto"] | Annotated[int, Field(ge=1)] = "auto"


class SamplingOverride(Section):
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_new_tokens: int | None = Field(default=None, gt=0)
    stop: list[str] | None = None
    seed: int | None = None


class LLMOverride(Section):
    """A model role (policy, reference, judge, expert): keys left out inherit from ``llm``."""

    backend: Literal["transformers", "vllm"] | None = None
    model: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] | None = None
    batch_size: int | None = Field(default=None, gt=0)
    replicas: int | None = Field(default=None, gt=0)
    gpus_per_replica: float | None = Field(default=None, ge=0)
    tensor_parallel_size: int | None = Field(default=None, gt=0)
    max_model_len: int | None = Field(default=None, gt=0)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    enable_prefix_caching: bool | None = None
    structured_retries: int | None = Field(default=None, ge=0)
    sampling: SamplingOverride | None = None
    batch_tokens: int | None = Field(default=None, gt=0)
    cpu_threads: Literal["auto"] | Annotated[int, Field(ge=1)] | None = None


def resolve_role(base: LLM, override: LLMOverride | None) -> LLM:
    """The ``llm`` section with a role's overrides applied.

    >>> base = load_params("params.yaml").llm  # doctest: +SKIP
    >>> resolve_role(base, LLMOverride(model="gpt2")).model  # doctest: +SKIP
    'gpt2'
    """
    if override is None:
        return base
    data = base.model_dump()
    for key, value in override.model_dump(exclude_none=True).items():
        if key == "sampling":
            data["sampling"] = {**data["sampling"], **value}
        else:
            data[key] = value
    return LLM.model_validate(data)


# --- ingest --------------------------------------------------------------------------------------

SourceKind = Literal["conversations", "documents", "prompts", "rated", "pairs"]
SourceFormat = Literal[
    "wildchat",  # WildChat / LMSYS: `conversation` (or `messages`) of {role, content}
    "sharegpt",  # `conversations` of {from, value}
    "oasst",  # OpenAssistant message trees
    "hh_rlhf",  # "\n\nHuman: ... \n\nAssistant: ..." transcripts (chosen/rejected)
    "ultrafeedback",  # prompt/chosen/rejected pairs with scores, or prompt + completions with ratings
    "documents",  # plain documents: text/title fields
    "prompts",  # plain prompts: a text field, or a list of turns
    "stackexchange",  # Posts.xml
    "wildfeedback",  # released WildFeedback pairs: conversations + chosen/rejected in from/value form
    "arena_answers",  # arena-hard model answers: several models' answers to the same uid
]


# Which tables each format can feed (the adapters in pipeline/adapters.py implement these).
FORMAT_KINDS: dict[str, tuple[str, ...]] = {
    "wildchat": ("conversations", "prompts"),
    "sharegpt": ("conversations", "prompts"),
    "oasst": ("conversations", "rated"),
    "hh_rlhf": ("conversations", "pairs"),
    "ultrafeedback": ("pairs", "rated"),
    "documents": ("documents",),
    "prompts": ("prompts",),
    "stackexchange": ("documents", "prompts", "rated"),
    "wildfeedback": ("pairs",),
    "arena_answers": ("rated",),
}


class Source(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: SourceKind
    path: str  # a file, a glob, a folder, or "hf://<dataset id>[:split]"
    format: SourceFormat
    mapping: dict[str, str] = Field(default_factory=dict)  # canonical field -> source field
    limit: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _format_feeds_kind(self) -> Source:
        if self.kind not in FORMAT_KINDS[self.format]:
            raise ValueError(
                f"format {self.format!r} cannot feed kind {self.kind!r}; it feeds {list(FORMAT_KINDS[self.format])}"
            )
        return self


class Ingest(Section):
    sources: list[Source]
    max_reject_fraction: float = Field(ge=0, le=1)
    max_record_bytes: int = Field(gt=0)

    @model_validator(mode="after")
    def _unique_names(self) -> Ingest:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique, repeated: {dupes}")
        return self


# --- pugc ----------------------------------------------------------------------------------------


class PugcRoles(Section):
    generator: LLMOverride  # writes one reader query per document
    policy: LLMOverride  # samples the K responses per query
    judge: LLMOverride  # query filter (True/False) and reference-guided 1-5 scores


class Pugc(Section):
    """PUGC (METHODS.md §2): documents -> queries -> K responses -> reference-guided scores -> pairs."""

    sources: list[str] = Field(min_length=1)  # ingest source names whose documents are used
    min_words: int = Field(ge=1)
    max_words: int = Field(ge=1)
    min_english_stopword_ratio: float = Field(ge=0, le=1)
    min_ascii_letter_ratio: float = Field(ge=0, le=1)
    shingle_words: int = Field(ge=1)
    minhash_perms: int = Field(ge=1)
    minhash_bands: int = Field(ge=1)
    near_duplicate_threshold: float = Field(gt=0, le=1)
    queries_per_document: int = Field(ge=1)
    leak_patterns: list[str]
    query_filter_threshold: float = Field(ge=0, le=1)
    responses_per_query: int = Field(ge=2)
    temperature: float = Field(ge=0)
    top_p: float = Field(gt=0, le=1)
    scoring: Literal["expected", "sampled"]
    n_judgments: int = Field(ge=1)
    min_margin: float = Field(gt=0)
    roles: PugcRoles

    @model_validator(mode="after")
    def _consistent(self) -> Pugc:
        if self.max_words < self.min_words:
            raise ValueError(f"max_words ({self.max_words}) is below min_words ({self.min_words})")
        if self.minhash_perms % self.minhash_bands:
            raise ValueError(f"minhash_bands ({self.minhash_bands}) must divide minhash_perms ({self.minhash_perms})")
        sampling = self.roles.policy.sampling
        if sampling is not None and (sampling.temperature is not None or sampling.top_p is not None):
            raise ValueError("set the policy's temperature/top_p as pugc.temperature/pugc.top_p, not in roles.policy")
        return self


# --- selfie (METHODS.md §3) ---------------------------------------------------------------------

# Like scikit-learn's train_test_split: an int counts prompts, a float in (0, 1) is a fraction.
SplitSize = int | float


def _check_size(v: SplitSize, key: str) -> SplitSize:
    if isinstance(v, bool):
        raise ValueError(f"{key}: expected a count or a fraction, got {v!r}")
    if isinstance(v, float) and not 0 < v < 1:
        raise ValueError(f"{key}: a fraction must lie in (0, 1), got {v!r}; write a whole number for a count")
    if isinstance(v, int) and v < 0:
        raise ValueError(f"{key}: a count must be >= 0, got {v!r}")
    return v


class SelfieSplit(Section):
    """Prompt counts (int) or fractions (float in (0, 1)); see ``plan_split`` in stages/selfie.py."""

    seed: SplitSize  # labelled prompts kept with their gold pairs (fraction of the labelled prompts)
    pools: list[SplitSize] = Field(min_length=1)  # prompt pools, one per iteration (fraction of all prompts)
    test: SplitSize  # held-out labelled prompts (fraction of the labelled prompts)
    shuffle_seed: int

    @model_validator(mode="after")
    def _sizes(self) -> SelfieSplit:
        _check_size(self.seed, "seed")
        _check_size(self.test, "test")
        for i, v in enumerate(self.pools):
            _check_size(v, f"pools[{i}]")
        return self


class SelfieRoles(Section):
    policy: LLMOverride  # the model is set by selfie.policy_model, not here
    reference: LLMOverride  # the model is set by selfie.reference_model, not here


class Selfie(Section):
    pair_sources: list[str] = Field(min_length=1)  # ingest pair sources (UltraFeedback-style, labelled)
    prompt_sources: list[str]  # ingest prompt sources added to the pools as unlabelled prompts
    iteration: int = Field(ge=1)
    policy_model: str
    reference_model: str
    roles: SelfieRoles
    samples_per_prompt: int = Field(ge=2)
    sampling: Sampling
    beta: float = Field(gt=0)
    length_normalize: bool
    refine_fraction: float = Field(ge=0, le=1)
    alpha: float = Field(ge=0, le=0.5)
    drop_noisy: bool
    split: SelfieSplit

    @model_validator(mode="after")
    def _check(self) -> Selfie:
        if self.iteration > len(self.split.pools):
            raise ValueError(
                f"iteration {self.iteration} has no prompt pool: split.pools lists {len(self.split.pools)}; "
                "add a pool size or lower iteration"
            )
        for role in ("policy", "reference"):
            if getattr(self.roles, role).model is not None:
                raise ValueError(
                    f"set the {role} model with selfie.{role}_model, not selfie.roles.{role}.model"
                )
        return self

    def role(self, base: LLM, name: Literal["policy", "reference"]) -> LLM:
        """The resolved engine config of a role, with its model from ``policy_model``/``reference_model``."""
        override = getattr(self.roles, name).model_copy(update={"model": getattr(self, f"{name}_model")})
        return resolve_role(base, override)


# --- dove ----------------------------------------------------------------------------------------


class DoveRoles(Section):
    judge: LLMOverride


class ResponseSet(Section):
    """A scored-response input set: a prompts shard set and the responses that join it on prompt_id
    (ingest's rated sources, PUGC's queries + responses, Selfie's prompts + responses)."""

    prompts: str
    responses: str


class Dove(Section):
    roles: DoveRoles
    inputs: list[ResponseSet]
    pairs: str  # folder of labelled pairs (pairs contract) whose prompt+chosen / prompt+rejected become items
    pair_sources: list[str]  # source names selected from ``pairs``; [] reads none
    pairing: Literal["random", "similar"]
    pairs_per_instruction: int = Field(gt=0)
    embedding_model: str | None  # None: hashed char-n-gram TF-IDF; else a HF / sentence-transformers model id
    ngram_min: int = Field(gt=0)
    ngram_max: int = Field(gt=0)
    hash_features: int = Field(gt=0)
    max_partner_similarity: float = Field(gt=0, le=1)
    include_conditional: bool
    # "median": remove the judge's median log-odds for position a before the AB/BA agreement rule (ours).
    position_calibration: Literal["none", "median"]
    conditional_pairs_per_instruction: int = Field(gt=0)
    max_prompt_chars: int = Field(gt=0)
    seed: int

    @model_validator(mode="after")
    def _ngram_range(self) -> Dove:
        if self.ngram_min > self.ngram_max:
            raise ValueError(f"ngram_min ({self.ngram_min}) must not exceed ngram_max ({self.ngram_max})")
        return self


# --- export --------------------------------------------------------------------------------------

ExportMethod = Literal["wildfeedback", "pugc", "selfie", "curry", "dove"]
PiiKind = Literal[
    "email", "phone", "ipv4", "ipv6", "credit_card", "openai_key", "hf_token", "aws_access_key", "github_token",
    "bearer_token",
]


class EvalSet(Section):
    """An evaluation prompt set the release must not overlap with."""

    name: str
    path: str  # file/folder/glob read by pipeline.io.iter_records, or "hf://org/name[:split]"
    text_field: str  # a string, a list of strings (MT-Bench `turns`) or a list of {content} messages
    id_field: str
    optional: bool  # true: an unreadable set is reported in stats.json and the card instead of failing


class Decontamination(Section):
    ngram: int = Field(gt=0)  # words per n-gram (13: GPT-3 / Llama 2 practice)
    threshold: float = Field(gt=0, le=1)  # shared n-grams / n-grams of the shorter text
    sets: list[EvalSet]


class Dedup(Section):
    near_threshold: float = Field(gt=0, le=1)  # estimated Jaccard of word shingles
    shingle: int = Field(gt=0)
    num_perm: int = Field(gt=0)
    bands: int = Field(gt=0)

    @model_validator(mode="after")
    def _bands_divide(self) -> Dedup:
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")
        return self


class Card(Section):
    pretty_name: str
    description: str
    language: list[str]
    task_categories: list[str]
    tags: list[str]


class Export(Section):
    methods: list[ExportMethod] = Field(min_length=1)
    license: str = Field(min_length=1)
    dedup: Dedup
    decontamination: Decontamination
    pii_kinds: list[PiiKind]
    test_fraction: float = Field(ge=0, lt=1)
    split_salt: str
    row_group_rows: int = Field(gt=0)
    row_group_bytes: int = Field(gt=0)
    shard_bytes: int = Field(gt=0)
    histogram_bins: int = Field(gt=0)
    summary_png: bool  # a matplotlib summary figure for the card (skipped with a note if matplotlib is absent)
    card: Card


# --- wildfeedback --------------------------------------------------------------------------------


class WildfeedbackRoles(Section):
    detector: LLMOverride  # the `llm` feedback detector
    summarizer: LLMOverride  # writes the preference summary from the feedback turn(s)
    expert: LLMOverride  # writes chosen responses when chosen_by == "expert"
    policy: LLMOverride  # writes chosen responses when chosen_by == "policy" (on-policy), rejected for SAT pairs
    judge: LLMOverride  # checklist judge (choose A/B)


class Wildfeedback(Section):
    sources: list[str]  # ingest source names (conversations) to mine
    languages: list[str]  # kept languages, compared case-insensitively ("en", "English")
    keep_unknown_language: bool  # conversations without a language tag
    min_user_turns: int = Field(ge=1)
    drop_flags: list[str]  # conversations carrying any of these flags are dropped
    detector: Literal["rules", "llm", "rules+llm"]
    recall_sample: float = Field(ge=0, le=1)  # rules+llm: share of rule-unflagged turns also sent to the model
    seed: int
    paste_min_chars: int = Field(ge=1)  # rules: shortest sentence checked for being pasted from the assistant
    window_chars: int = Field(ge=1)  # rules: chars of the cleaned turn the patterns see
    context_messages: int = Field(ge=1)  # model prompts: dialogue messages shown before the judged turn
    max_message_chars: int = Field(ge=1)  # model prompts: each shown message is cut to this many chars
    summarize: list[Literal["dsat", "sat"]]  # which signals get a preference summary
    chosen_by: Literal["expert", "policy"]
    natural_revisions: bool  # DSAT turn whose revised answer earns SAT -> (revision, original) pair
    sat_pairs: bool  # SAT turn as chosen vs a policy sample the judge finds worse
    checklist_judge: bool  # generated pairs must win the checklist judge in both orders
    judge_natural_revisions: bool  # also put natural revision pairs through the judge
    # Conversations per partition: every step runs on one partition at a time, so memory is bounded
    # by a partition, not the log. Rule signals and natural revisions do not depend on it.
    partition_conversations: int = Field(gt=0)
    roles: WildfeedbackRoles


# --- curry ---------------------------------------------------------------------------------------


class Curry(Section):
    inputs: list[ResponseSet] = Field(min_length=1)
    pairing: Literal["best_vs_rest", "all"]
    min_gap: float = Field(ge=0)
    levels: Literal["per_prompt", "quantile"]
    n_levels: int = Field(gt=0)
    seed: int
    histogram_bins: int = Field(gt=0)


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
    def _override_sections(self) -> Params:
        unknown = sorted(set(self.tiny_overrides) - set(_MODEL_SECTIONS))
        if unknown:
            raise ValueError(f"tiny_overrides: {unknown} are not stage sections with models; use {list(_MODEL_SECTIONS)}")
        return self

    def applied_overrides(self, section: str) -> dict[str, Any]:
        """The ``tiny_overrides`` applied to ``section`` ({dotted key: value}), for metrics and the console."""
        return dict(self._applied.get(section, {}))


# Sections that run models, and so may carry tiny_overrides.
_MODEL_SECTIONS = ("wildfeedback", "pugc", "selfie", "dove")


def section_models(params: Params, name: str) -> list[str]:
    """Every model a stage section's roles resolve to."""
    section = getattr(params, name)
    roles = type(section.roles).model_fields
    if isinstance(section, Selfie):
        return [section.role(params.llm, r).model for r in roles]
    return [resolve_role(params.llm, getattr(section.roles, r)).model for r in roles]


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


def resolve_params(data: dict[str, Any]) -> Params:
    """Validate params, then apply ``tiny_overrides[section]`` to each section whose models are all the
    built-in tiny model (``tiny`` / ``tiny@N``): a user who points a stage at a real model gets the
    papers' defaults, the samples run keeps working with random weights, and both say which applied."""
    from pipeline.llm.tiny import tiny_seed

    params = Params.model_validate(data)
    merged, applied = dict(data), {}
    for name, over in params.tiny_overrides.items():
        if all(tiny_seed(m) is not None for m in section_models(params, name)):
            merged[name], applied[name] = _merge(data[name], over)
    if not applied:
        return params
    params = Params.model_validate(merged)
    params._applied = applied
    return params


class ParamsError(ValueError):
    """params.yaml is invalid; the message names the file and every bad key path."""


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def format_validation_error(err: ValidationError, file: str | Path) -> str:
    lines = []
    for e in err.errors():
        path = _key_path(tuple(p for p in e["loc"] if not str(p).startswith("function-")))
        if e["type"] == "extra_forbidden":
            msg = "unknown key (remove it or check its spelling)"
        elif e["type"] == "missing":
            msg = "missing required key"
        else:
            msg = e["msg"]
            if "input" in e and not isinstance(e["input"], dict | list):
                msg += f" (got {e['input']!r})"
        lines.append(f"{file}: {path}: {msg}")
    return "invalid parameters:\n  " + "\n  ".join(lines)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: no such file; run from the project root or pass --params")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    try:
        return resolve_params(data)
    except ValidationError as e:
        raise ParamsError(format_validation_error(e, path)) from None


def fingerprint(*sections: BaseModel | dict[str, Any]) -> str:
    """A short stable hash of parameter sections, recorded in manifests and lineage."""
    payload = [s.model_dump(mode="json") if isinstance(s, BaseModel) else s for s in sections]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
