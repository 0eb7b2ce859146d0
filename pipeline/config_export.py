"""params.yaml's ``export`` section (the release: methods, dedup, decontamination, PII, splits, card), one
pydantic model with its sub-sections. Re-exported by ``pipeline.config``, which documents the validation rules."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config_shared import Distinct, Section

# --- export --------------------------------------------------------------------------------------

ExportMethod = Literal["wildfeedback", "pugc", "selfie", "curry", "dove"]
# method -> `source` of the pairs its paper trains on before the rest (Selfie/SPA's gold seed): export pins
# their openings to train (stages/export_split.py) and the audit fails a release with one in a test split
# (`seed_in_test`). A constant here, not in stages/, so that pipeline/audit.py reads it without importing a stage.
TRAIN_FIRST: dict[ExportMethod, str] = {"selfie": "seed"}
PiiKind = Literal[  # pipeline/pii.py DETECTORS
    "email", "phone", "ipv4", "ipv6", "credit_card", "openai_key", "hf_token", "aws_access_key", "aws_secret_key",
    "github_token", "bearer_token", "jwt", "slack_token", "google_api_key", "stripe_key", "private_key",
    "basic_auth", "gitlab_token", "npm_token", "pypi_token", "sendgrid_key", "url_password", "iban",
    "home_path", "cn_resident_id",
]


class EvalSet(Section):
    """An evaluation prompt set the release must not overlap with."""

    name: str
    path: str = Field(min_length=1)  # file/folder/glob read by pipeline.io.iter_records, or "hf://org/name[:split]"
    text_field: str  # a string, a list of strings (MT-Bench `turns`) or a list of {content} messages
    id_field: str
    optional: bool  # true: an unreadable set is reported in details.json and the card instead of failing


class Decontamination(Section):
    ngram: int = Field(gt=0)  # words per n-gram (13: GPT-3 / Llama 2 practice)
    threshold: float = Field(gt=0, le=1)  # shared n-grams / n-grams of the shorter text
    # a text shorter than `ngram` words matches when it appears whole in the other, from this many words
    min_words: int = Field(gt=0)
    sets: list[EvalSet]


class Dedup(Section):
    near_threshold: float = Field(gt=0, le=1)  # estimated Jaccard of word shingles
    shingle: int = Field(gt=0)
    num_perm: int = Field(gt=0)
    bands: int = Field(gt=0)
    # `all` config: a prompt several methods share goes to the first of these (no score is compared)
    priority: Annotated[list[ExportMethod], Distinct] = Field(min_length=1)

    @model_validator(mode="after")
    def _bands_divide(self) -> Dedup:
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")
        return self


class Card(Section):
    pretty_name: str
    description: str
    language: Annotated[list[str], Distinct]
    task_categories: Annotated[list[str], Distinct]
    tags: Annotated[list[str], Distinct]
    repo_id: str | None  # the Hub dataset repo the card's snippets load (None: the placeholder ORG/NAME)

    @field_validator("repo_id")
    @classmethod
    def _hub_repo_id(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(value)
        except HFValidationError as e:
            raise ValueError(f"{e} Give the dataset repo as ORG/NAME, as `prefpipe publish --repo-id` takes it") from None
        if value.count("/") != 1:
            raise ValueError("give the dataset repo as ORG/NAME, as `prefpipe publish --repo-id` takes it")
        return value


class Export(Section):
    methods: Annotated[list[ExportMethod], Distinct] = Field(min_length=1)
    license: str = Field(min_length=1)
    dedup: Dedup
    decontamination: Decontamination
    pii_kinds: Annotated[list[PiiKind], Distinct]
    pii_phone_regions: Annotated[list[str], Distinct]  # ISO 3166 regions whose national phone formats are recognised
    # shard sets (pairs, joint pairs or prompts) whose prompts never reach a train split
    held_out: Annotated[list[str], Distinct]
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
