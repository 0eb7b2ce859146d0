"""params.yaml as pydantic models: one model per section, unknown keys are errors.

Everything is validated before any work starts; an error names the file, the key path and what
was expected::

    params.yaml: ingest.max_reject_fraction: Input should be a valid number (got 'lots')

Validation is strict: nothing is coerced (``checkpoint_rows: true``, ``'2048'`` or ``'yes'`` where a
number or a boolean belongs are errors, not 1, 2048 and True); a whole number is accepted where a
float belongs. The file is read with YAML 1.2's booleans and floats, as DVC reads it (``yes``/``no``/
``on``/``off`` are strings, ``1e-5`` is a float), and a key repeated in one mapping is an error naming
the key and both lines. ``load_params`` also checks that every source name a stage selects
(``SOURCE_KEYS``) is an ``ingest.sources`` name, with a did-you-mean.

Stage sections are registered in ``Params``; every knob lives in params.yaml (no hidden defaults),
except the optional per-role engine overrides, where a missing key means "inherit from ``llm``".
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from pipeline.yaml12 import DuplicateKey, load_yaml


class Section(BaseModel):
    # Inputs stay out of str(ValidationError): a key pasted into api_key_env must not reach a log.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, hide_input_in_errors=True)


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


def _check_api_key_env(name: str | None) -> str | None:
    """The name of an environment variable; errors never repeat the value (it may be a pasted key)."""
    if name is None:
        return None
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,99}", name) or name.lower().startswith(("sk_", "hf_", "key_")):
        raise ValueError(
            "expected the NAME of the environment variable that holds the key (e.g. OPENAI_API_KEY), not the "
            "key itself; if you pasted a key here, remove it from params.yaml and rotate it"
        )
    return name


Backend = Literal["transformers", "vllm", "openai"]
# An http(s) URL up to the API root, e.g. http://node1:8000/v1 (what `vllm serve` prints).
BaseUrl = Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")]
# The NAME of an environment variable (never the key itself).
EnvName = Annotated[str, AfterValidator(_check_api_key_env)]
OptionScoring = Literal["sequence", "first_token"]




class LLM(Section):
    backend: Backend
    model: str  # "tiny", a Hugging Face model id, or a local folder; with openai: the served model name
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
    # backend: openai (pipeline/llm/openai_engine.py; README "OpenAI-compatible servers"). The defaults
    # are params.yaml's, so an in-process config built in code need not spell them out.
    base_url: BaseUrl | list[BaseUrl] | None = None  # one server, or a pool (one `vllm serve` per node)
    api_key_env: EnvName | None = None  # environment variable holding the key; null: no key
    concurrency: int = Field(default=64, gt=0)  # requests in flight, all servers together
    timeout_s: float = Field(default=600, gt=0)  # per request attempt
    max_retries: int = Field(default=6, ge=0)  # more attempts on 429/5xx/timeouts/dropped connections
    max_requests: int | None = Field(default=None, gt=0)  # cost guard: requests one engine may send
    option_scoring: OptionScoring = "sequence"  # how `choose` scores options (see the README)

    @model_validator(mode="after")
    def _openai(self) -> LLM:
        if self.backend == "openai" and not self.base_url:
            raise ValueError(
                f"backend openai needs base_url (e.g. http://localhost:8000/v1) for model {self.model!r}"
            )
        return self


class SamplingOverride(Section):
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_new_tokens: int | None = Field(default=None, gt=0)
    stop: list[str] | None = None
    seed: int | None = None


class LLMOverride(Section):
    """A model role (policy, reference, judge, expert): keys left out inherit from ``llm``."""

    backend: Backend | None = None
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
    base_url: BaseUrl | list[BaseUrl] | None = None
    api_key_env: EnvName | None = None
    concurrency: int | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    max_retries: int | None = Field(default=None, ge=0)
    max_requests: int | None = Field(default=None, gt=0)
    option_scoring: OptionScoring | None = None


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


class PugcGates(Section):
    """Minimum probe accuracy of each PUGC judge use (pipeline/gates.py; chance is 0.5)."""

    query_filter: float = Field(ge=0, le=1)  # p(True) "the document answers the query" vs the threshold
    scorer: float = Field(ge=0, le=1)  # reference-guided 1-5 scores: a good answer beats a bad one


class Pugc(Section):
    """PUGC (METHODS.md §2): documents -> queries -> K responses -> reference-guided scores -> pairs."""

    sources: list[str] = Field(min_length=1)  # ingest source names whose documents are used
    min_words: int = Field(ge=1)
    max_words: int = Field(ge=1)
    languages: list[str] = Field(min_length=1)  # ISO 639-1 codes kept (pipeline/langid.py identifies them)
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
    gates: PugcGates
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


class SelfieGates(Section):
    """Minimum probe accuracy of the implicit reward (pipeline/gates.py; chance is 0.5)."""

    reward: float = Field(ge=0, le=1)  # r(good) > r(bad) on pipeline/probes/selfie_reward.jsonl


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
    gates: SelfieGates
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


class DoveGates(Section):
    """Minimum accuracy of each judge role on its built-in probe set (pipeline/gates.py)."""

    judge: float = Field(ge=0, le=1)


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
    # Judge prompts are cut to fit this many characters (and the judge's max_model_len in tokens);
    # the cut texts are flagged in the pair's lineage (`judge_truncated`).
    max_prompt_chars: int = Field(gt=0)
    gates: DoveGates
    seed: int

    @model_validator(mode="after")
    def _ngram_range(self) -> Dove:
        if self.ngram_min > self.ngram_max:
            raise ValueError(f"ngram_min ({self.ngram_min}) must not exceed ngram_max ({self.ngram_max})")
        return self


# --- export --------------------------------------------------------------------------------------

ExportMethod = Literal["wildfeedback", "pugc", "selfie", "curry", "dove"]
PiiKind = Literal[  # pipeline/pii.py DETECTORS
    "email", "phone", "ipv4", "ipv6", "credit_card", "openai_key", "hf_token", "aws_access_key", "aws_secret_key",
    "github_token", "bearer_token", "jwt", "slack_token", "google_api_key", "stripe_key", "private_key",
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
    # `all` config: a prompt several methods share goes to the first of these (no score is compared)
    priority: list[ExportMethod] = Field(min_length=1)

    @model_validator(mode="after")
    def _bands_divide(self) -> Dedup:
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")
        if len(set(self.priority)) != len(self.priority):
            raise ValueError(f"priority lists a method twice: {self.priority}")
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
    pii_phone_regions: list[str]  # ISO 3166 regions whose national phone formats are recognised
    # shard sets (pairs, joint pairs or prompts) whose prompts never reach a train split
    held_out: list[str]
    test_fraction: float = Field(ge=0, lt=1)
    split_salt: str
    row_group_rows: int = Field(gt=0)
    row_group_bytes: int = Field(gt=0)
    shard_bytes: int = Field(gt=0)
    histogram_bins: int = Field(gt=0)
    summary_png: bool  # a matplotlib summary figure for the card (skipped with a note if matplotlib is absent)
    card: Card

    @model_validator(mode="after")
    def _priority_and_regions(self) -> Export:
        missing = [m for m in self.methods if m != "dove" and m not in self.dedup.priority]
        if missing:
            raise ValueError(f"dedup.priority must list every conditional method in methods; add {missing}")
        import phonenumbers

        unknown = [r for r in self.pii_phone_regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"pii_phone_regions: unknown region code(s) {unknown} (ISO 3166 alpha-2, e.g. US, GB, DE)")
        return self


# --- wildfeedback --------------------------------------------------------------------------------


class WildfeedbackRoles(Section):
    detector: LLMOverride  # the `llm` feedback detector
    summarizer: LLMOverride  # writes the preference summary from the feedback turn(s)
    expert: LLMOverride  # writes chosen responses when chosen_by == "expert"
    policy: LLMOverride  # writes chosen responses when chosen_by == "policy" (on-policy), rejected for SAT pairs
    judge: LLMOverride  # checklist judge (choose A/B)


class WildfeedbackGates(Section):
    """Min probe accuracy per judge role (pipeline/gates.py); chance is 0.5."""

    detector: float = Field(ge=0, le=1)  # the `llm` detector (only when detector is llm or rules+llm)
    judge: float = Field(ge=0, le=1)  # the checklist judge (only when checklist_judge is on)


class Wildfeedback(Section):
    sources: list[str]  # ingest source names (conversations) to mine
    languages: list[str]  # kept languages, compared case-insensitively ("en", "English")
    # Conversations without a language tag: identify it from their user turns (pipeline/langid.py)
    detect_language: bool
    keep_unknown_language: bool  # conversations whose language is still unknown (no tag, nothing detected)
    min_user_turns: int = Field(ge=1)
    drop_flags: list[str]  # conversations carrying any of these flags are dropped
    detector: Literal["rules", "llm", "rules+llm"]
    # rules+llm: add_recall (confident rule verdicts stand; the model decides uncertain turns and the
    # recall sample) | llm_overrides (the model's verdict replaces the rules' on every turn it sees) |
    # agree (a rule signal is kept only where the model agrees)
    combine: Literal["add_recall", "llm_overrides", "agree"]
    rule_confidence: float = Field(ge=0, le=1)  # add_recall: rule verdicts at least this confident stand
    recall_sample: float = Field(ge=0, le=1)  # rules+llm: share of rule-unflagged turns also sent to the model
    seed: int
    paste_min_chars: int = Field(ge=1)  # rules: shortest sentence checked for being pasted from the assistant
    window_chars: int = Field(ge=1)  # rules: chars of the cleaned turn the patterns see
    # model prompts: dialogue messages shown before the judged turn; None = all of them (the paper)
    context_messages: int | None = Field(ge=1)
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
    # Warn (console + metrics) when model steps leave less than this share of what the rules alone found.
    collapse_fraction: float = Field(ge=0, le=1)
    gates: WildfeedbackGates
    roles: WildfeedbackRoles


# --- curry ---------------------------------------------------------------------------------------


class CurryInput(ResponseSet):
    # rated: human ratings, ranks or votes (any positive gap is a preference, as in the paper);
    # model: a model's continuous scores (gaps within its noise are ties, see relative_min_gap).
    scores: Literal["rated", "model"]


class Curry(Section):
    inputs: list[CurryInput] = Field(min_length=1)
    pairing: Literal["best_vs_rest", "all"]
    min_gap: float = Field(ge=0)  # every input: a gap <= this is a tie
    # model-scored inputs: a gap <= this fraction of the scorer's score spread (5th..95th percentile of
    # its scores in that input set) is a tie as well
    relative_min_gap: float = Field(ge=0, lt=1)
    levels: Literal["per_prompt", "quantile"]
    n_levels: int = Field(gt=0)
    seed: int = Field(ge=0, lt=2**64)
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
    def _roles_resolve(self) -> Params:
        """Every role's engine config, with ``llm`` filled in, is valid (e.g. an openai role has a base_url)."""
        for name in _MODEL_SECTIONS:
            section = getattr(self, name)
            for role in type(section.roles).model_fields:
                try:
                    _resolve(self, section, role)
                except ValidationError as e:
                    why = "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())
                    raise ValueError(f"{name}.roles.{role}: {why}") from None
        return self

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


def _resolve(params: Params, section: BaseModel, role: str) -> LLM:
    if isinstance(section, Selfie):
        return section.role(params.llm, role)
    return resolve_role(params.llm, getattr(section.roles, role))


def section_models(params: Params, name: str) -> list[str]:
    """Every model a stage section's roles resolve to."""
    section = getattr(params, name)
    return [_resolve(params, section, r).model for r in type(section.roles).model_fields]


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
            # api_key_env may hold a pasted key: never echo it.
            if "input" in e and not isinstance(e["input"], dict | list) and "api_key_env" not in e["loc"]:
                msg += f" (got {e['input']!r})"
        lines.append(f"{file}: {path}: {msg}")
    return "invalid parameters:\n  " + "\n  ".join(lines)


# Params keys that name ingest sources, as (section, field): each is checked against ingest.sources.
# A stage that selects sources by name adds its key here.
SOURCE_KEYS = [("wildfeedback", "sources"), ("pugc", "sources"), ("selfie", "pair_sources"),
               ("selfie", "prompt_sources"), ("dove", "pair_sources")]
INGEST_PAIRS = "data/ingest/pairs"  # dove.pair_sources name ingest sources only when dove.pairs reads these


def source_name_errors(params: Params) -> list[str]:
    """``key[i]: 'name' is not an ingest source; did you mean ...`` for every unknown source name."""
    names = [s.name for s in params.ingest.sources]
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
    return errors


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: no such file; run from the project root or pass --params")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except DuplicateKey as e:
        raise ParamsError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    try:
        params = resolve_params(data)
    except ValidationError as e:
        raise ParamsError(format_validation_error(e, path)) from None
    errors = source_name_errors(params)
    if errors:
        raise ParamsError("invalid parameters:\n  " + "\n  ".join(f"{path}: {e}" for e in errors))
    return params


def fingerprint(*sections: BaseModel | dict[str, Any]) -> str:
    """A short stable hash of parameter sections, recorded in manifests and lineage."""
    payload = [s.model_dump(mode="json") if isinstance(s, BaseModel) else s for s in sections]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
