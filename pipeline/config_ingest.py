"""params.yaml's ``ingest`` section: the sources, each a format feeding one kind of table, with the fields a
format reads (what ``mapping`` may rename). Re-exported by ``pipeline.config``, which documents the validation rules."""

from __future__ import annotations

import difflib
from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipeline.config_shared import Section

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

# The canonical fields each format's adapter reads, the keys ``mapping`` may rename (tests/test_input_boundaries.py
# checks this against the adapters' code).
FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "wildchat": ("id", "messages", "language", "model", "toxic", "redacted"),
    "sharegpt": ("id", "messages", "system", "model"),
    "oasst": ("id", "prompt"),
    "hh_rlhf": ("id", "chosen", "rejected"),
    "ultrafeedback": ("id", "prompt", "completions", "chosen", "rejected", "score_chosen", "score_rejected"),
    "documents": ("id", "text", "title", "score"),
    "prompts": ("id", "text", "input"),
    "stackexchange": ("Id", "PostTypeId", "ParentId", "AcceptedAnswerId", "Title", "Body", "Score"),
    "wildfeedback": ("id", "conversations", "chosen", "rejected"),
    "arena_answers": ("uid", "messages", "model", "ans_id"),
}


class Source(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: SourceKind
    path: str = Field(min_length=1)  # a file, a glob, a folder, or "hf://<dataset id>[:split]" ("" would be the project root)
    format: SourceFormat
    mapping: dict[str, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)  # canonical field -> source field
    limit: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _format_feeds_kind(self) -> Source:
        if self.kind not in FORMAT_KINDS[self.format]:
            raise ValueError(
                f"format {self.format!r} cannot feed kind {self.kind!r}; it feeds {list(FORMAT_KINDS[self.format])}"
            )
        fields = FORMAT_FIELDS[self.format]
        for key in self.mapping:
            if key not in fields:  # a typo would be ignored, and the field it names never read
                close = difflib.get_close_matches(key, fields, n=1)
                raise ValueError(f"mapping.{key}: the {self.format} format reads no field {key!r} (mapping is canonical "
                                 f"field -> your field); it reads {list(fields)}"
                                 + (f"; did you mean {close[0]!r}?" if close else ""))
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
