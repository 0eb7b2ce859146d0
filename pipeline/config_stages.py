"""params.yaml's stage sections (pugc, selfie, dove, wildfeedback, curry), one pydantic model each; the
release's ``export`` section is in ``pipeline.config_export``. Re-exported by ``pipeline.config``, which
documents the validation rules."""

from __future__ import annotations

import difflib
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    model_validator,
)

from pipeline.config_shared import (
    LLM,
    Distinct,
    LLMOverride,
    ModelName,
    Revision,
    Sampling,
    Section,
    not_on_hub,
    resolve_role,
)

# --- pugc ----------------------------------------------------------------------------------------


def _check_regex(pattern: str) -> str:
    """A pattern polars' (Rust) regex engine compiles, found before any model work, not as a traceback after
    the queries are written (no look-around, no backreferences)."""
    import polars as pl

    try:
        pl.select(pl.lit("").str.contains(pattern))
    except pl.exceptions.ComputeError as e:
        lines = [ln.strip() for ln in str(e).splitlines()]
        why = next((ln.removeprefix("error: ") for ln in lines if ln.startswith("error:")), lines[0])
        raise ValueError(f"not a regex polars can run ({why})") from None
    return pattern


# ISO 639-1 codes the language identifier answers (pipeline/langid.py): the languages of WildChat, LMSYS,
# ShareGPT and Reddit-style forums that carry more than a trace of the data. pugc.languages keeps some.
LANGUAGES = tuple("en zh ru fr es de pt it ja ko ar fa tr pl nl cs uk vi id hi sv da fi nb el he hu ro bg th".split())


def _check_language(code: str) -> str:
    """A code the identifier answers: any other (``EN``, ``english``) would silently drop every document."""
    if code not in LANGUAGES:
        close = [code.lower()] if code.lower() in LANGUAGES else difflib.get_close_matches(code.lower(), LANGUAGES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"not a language code the identifier answers; {hint}use ISO 639-1 codes: {', '.join(LANGUAGES)}")
    return code



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

    sources: Annotated[list[str], Distinct] = Field(min_length=1)  # ingest source names whose documents are used
    min_words: int = Field(ge=1)
    max_words: int = Field(ge=1)
    # ISO 639-1 codes kept (pipeline/langid.py identifies them)
    languages: Annotated[list[Annotated[str, AfterValidator(_check_language)]], Distinct] = Field(min_length=1)
    shingle_words: int = Field(ge=1)
    minhash_perms: int = Field(ge=1)
    minhash_bands: int = Field(ge=1)
    near_duplicate_threshold: float = Field(gt=0, le=1)
    queries_per_document: int = Field(ge=1)
    leak_patterns: Annotated[list[Annotated[str, AfterValidator(_check_regex)]], Distinct]  # a query matching one is dropped
    min_query_words: int = Field(ge=1)  # a shorter query ("What?", "Explain") is dropped; a CJK character is a word
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
    """Prompt counts (int) or fractions (float in (0, 1)); see ``plan_split`` in stages/selfie_split.py."""

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
    pair_sources: Annotated[list[str], Distinct] = Field(min_length=1)  # ingest pair sources (UltraFeedback-style, labelled)
    prompt_sources: Annotated[list[str], Distinct]  # ingest prompt sources added to the pools as unlabelled prompts
    iteration: int = Field(ge=1)
    policy_model: ModelName
    reference_model: ModelName
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
            if getattr(self.roles, role).sampling is not None:  # the policy samples with selfie.sampling; the
                raise ValueError(  # reference only scores: a role's own sampling was ignored without a word
                    f"set how the policy samples with selfie.sampling, not selfie.roles.{role}.sampling "
                    "(the reference model only scores the samples); remove it")
        return self

    def role(self, base: LLM, name: Literal["policy", "reference"]) -> LLM:
        """The resolved engine config of a role, with its model from ``policy_model``/``reference_model``."""
        override = getattr(self.roles, name).model_copy(update={"model": getattr(self, f"{name}_model")})
        llm = resolve_role(base, override)
        llm._keys = {**llm._keys, "model": f"selfie.{name}_model"}
        return llm


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
    pair_sources: Annotated[list[str], Distinct]  # source names selected from ``pairs``; [] reads none
    pairing: Literal["random", "similar"]
    pairs_per_instruction: int = Field(gt=0)
    embedding_model: str | None  # None: hashed char-n-gram TF-IDF; else a HF / sentence-transformers model id
    # A Hub embedding_model's branch, tag or commit, loaded exactly (pipeline/llm/identity.py); None: main.
    embedding_revision: Revision | None = None
    ngram_min: int = Field(gt=0)
    ngram_max: int = Field(gt=0)
    hash_features: int = Field(gt=0)
    max_partner_similarity: float = Field(gt=0, le=1)
    include_conditional: bool
    # "median": remove the judge's median log-odds for position a before the AB/BA agreement rule (ours).
    position_calibration: Literal["none", "median"]
    conditional_pairs_per_instruction: int = Field(gt=0)
    # A draw whose two sides are the same text (or a conditional draw its instruction already made) is redrawn
    # up to this many times, each attempt seeded by (seed, step, attempt); 0 drops it at once (ours).
    max_redraws: int = Field(ge=0)
    # Judge prompts are cut to fit this many characters (and the judge's max_model_len in tokens);
    # the cut texts are flagged in the pair's lineage (`judge_truncated`).
    max_prompt_chars: int = Field(gt=0)
    gates: DoveGates
    seed: int

    @model_validator(mode="after")
    def _ngram_range(self) -> Dove:
        if self.ngram_min > self.ngram_max:
            raise ValueError(f"ngram_min ({self.ngram_min}) must not exceed ngram_max ({self.ngram_max})")
        if self.embedding_revision is not None:
            why = ("is null (the hashed TF-IDF space, no model)" if not self.embedding_model
                   else (w := not_on_hub("transformers", self.embedding_model)) and f"{self.embedding_model!r} {w}")
            if why:
                raise ValueError(f"embedding_revision {self.embedding_revision!r} names a Hugging Face Hub revision, "
                                 f"but embedding_model {why}: remove embedding_revision (it applies to Hub model ids only)")
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


class WildfeedbackTestSet(Section):
    """The paper's held-out test set (stages/wildfeedback_testset.py): k-means over prompt + preference."""

    clusters: int = Field(ge=0)  # k-means clusters (paper: 70); 0 holds nothing out
    per_cluster: int = Field(ge=1)  # pairs nearest each centre held out (paper: 10)
    max_fraction: float = Field(ge=0, le=1)  # (ours) never hold out more than this share; clusters shrink to fit
    # (ours) k-means and the TF-IDF idf are fitted on a seeded sample of at most this many pairs, then every
    # pair is assigned in blocks: memory bounded at any log size (the paper's whole set was 20,281 pairs)
    fit_rows: int = Field(ge=1)
    seed: int


class Wildfeedback(Section):
    sources: Annotated[list[str], Distinct] = Field(min_length=1)  # ingest source names (conversations) to mine
    # kept languages, compared case-insensitively ("en", "English"); [] kept none (every tagged one dropped)
    languages: Annotated[list[str], Distinct] = Field(min_length=1)
    # Conversations without a language tag: identify it from their user turns (pipeline/langid.py)
    detect_language: bool
    keep_unknown_language: bool  # conversations whose language is still unknown (no tag, nothing detected)
    min_user_turns: int = Field(ge=1)
    # conversations carrying any of these flags are dropped: the flags ingest writes (pipeline/formats/
    # dialogues.py: WildChat's toxic / redacted, OpenAssistant's synthetic), so a misspelt one is an error,
    # not toxic conversations silently kept
    drop_flags: Annotated[list[Literal["toxic", "redacted", "synthetic"]], Distinct]
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
    summarize: Annotated[list[Literal["dsat", "sat"]], Distinct]  # which signals get a preference summary
    chosen_by: Literal["expert", "policy"]
    natural_revisions: bool  # DSAT turn whose revised answer earns SAT -> (revision, original) pair
    sat_pairs: bool  # SAT turn as chosen vs a policy sample the judge finds worse
    checklist_judge: bool  # generated pairs must win the checklist judge in both orders
    judge_natural_revisions: bool  # also put natural revision pairs through the judge
    # Conversations per partition: every step runs on one partition at a time, so memory is bounded
    # by a partition, not the log. Rule signals and natural revisions do not depend on it.
    partition_conversations: int = Field(gt=0)
    # Selected conversations per call of the rules: a call compiles the cue regexes again (~160; polars
    # keeps 32 compiled), so calls of a few thousand rows spend most of their time compiling.
    rules_batch_conversations: int = Field(gt=0)
    # Warn (console + metrics) when model steps leave less than this share of what the rules alone found.
    collapse_fraction: float = Field(ge=0, le=1)
    test_set: WildfeedbackTestSet
    gates: WildfeedbackGates
    roles: WildfeedbackRoles

    @model_validator(mode="after")
    def _options_need_what_they_use(self) -> Wildfeedback:
        if self.sat_pairs and "sat" not in self.summarize:
            raise ValueError(f"sat_pairs: true needs 'sat' in wildfeedback.summarize (got {self.summarize}): "
                             "without a SAT summary no SAT pair is made")
        if self.sat_pairs and not self.checklist_judge:  # the judge is what says the policy sample is worse
            raise ValueError("sat_pairs: true needs checklist_judge: true: a SAT pair's rejected is a policy sample "
                             "no user saw, kept only where the checklist judge finds it worse (without the judge "
                             "every sample would ship as rejected); set checklist_judge: true or sat_pairs: false")
        if self.judge_natural_revisions and not self.checklist_judge:  # it would judge nothing, without a word
            raise ValueError("judge_natural_revisions: true needs checklist_judge: true (the judge it names is off); "
                             "set checklist_judge: true or judge_natural_revisions: false")
        return self


# --- curry ---------------------------------------------------------------------------------------


class CurryInput(ResponseSet):
    # rated: human ratings, ranks or votes (any positive gap is a preference, as in the paper);
    # model: a model's continuous scores (gaps within its noise are ties, see relative_min_gap).
    scores: Literal["rated", "model"]
    # optional: this input's own tie gap on its scorer's scale, a number or the key of a number in params
    # (e.g. "pugc.min_margin": the stage that wrote the scores already calls a smaller margin noise; resolved
    # after tiny_overrides by ``resolve_params``); a gap <= max(it, the section's rule) is a tie
    min_gap: Annotated[float, Field(ge=0)] | Annotated[str, Field(pattern=r"^[a-z_]+(\.[a-z_]+)+$")] | None = None


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
