"""Text fields of structured output schemas refuse control characters and bidi overrides.

A grammar-constrained answer can spell any character through a JSON escape; with the ``tiny`` model two of the
samples' PUGC queries held ``"\\b"`` / ``"\\u0088"`` and the pairs built on them were only dropped at export
(``unprintable_text``). Such an answer is now schema-invalid: re-asked, then a failure row with the reason.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
from pydantic import BaseModel

from pipeline.llm.base import GenerationFailure
from pipeline.llm.structured import PrintableStr, generate_validated, refuse_unprintable, schema_json
from stages.pugc import Query
from stages.wildfeedback_detect import FeedbackJudgment
from stages.wildfeedback_models import PreferenceSummary

ROOT = Path(__file__).resolve().parents[1]


def _stage_schemas() -> list[type[BaseModel]]:
    """Every pydantic model defined in a stage module (the structured output schemas)."""
    found = []
    for path in sorted(ROOT.joinpath("stages").glob("*.py")):
        module = importlib.import_module(f"stages.{path.stem}")
        found += [c for _, c in inspect.getmembers(module, inspect.isclass)
                  if issubclass(c, BaseModel) and c.__module__ == module.__name__]
    return found


def test_every_text_field_of_a_stage_schema_is_printable_str():
    schemas = _stage_schemas()
    assert {Query, FeedbackJudgment, PreferenceSummary} <= set(schemas)
    for schema in schemas:
        for name, field in schema.model_fields.items():
            if field.annotation is str:
                assert any(getattr(m, "func", None) is refuse_unprintable for m in field.metadata), \
                    f"{schema.__name__}.{name} is a plain str: make it pipeline.llm.structured.PrintableStr"


@pytest.mark.parametrize("escaped", [r"\b", r"\u0088", r"\u0000", r"\u007f", r"\u202e"])
def test_a_query_spelling_an_unprintable_character_by_json_escape_is_invalid(escaped):
    assert isinstance(Query.model_validate_json('{"query": "What is it?"}'), Query)
    assert Query.model_validate_json(r'{"query": "tab\tand\nnew line"}').query == "tab\tand\nnew line"
    with pytest.raises(ValueError, match="control or bidi-override character U"):
        Query.model_validate_json(f'{{"query": "What{escaped} is it?"}}')


def test_the_json_schema_sent_to_the_decoders_is_that_of_a_plain_str():
    class Plain(BaseModel):
        query: str

    class Checked(BaseModel):
        query: PrintableStr

    assert Checked.model_json_schema() == {**Plain.model_json_schema(), "title": "Checked"}
    assert "pattern" not in schema_json(FeedbackJudgment) + schema_json(PreferenceSummary)


def test_an_unprintable_answer_is_re_asked_then_a_failure_row():
    bad, good = r'{"query": "a\bc"}', '{"query": "abc"}'
    calls = []

    def sample(prompts, indices, attempt):
        calls.append((len(prompts), attempt))
        # prompt "p0" answers well on its retry, "p1" never does
        return [[(good if p == "p0" and attempt else bad, False) for _ in idx] for p, idx in zip(prompts, indices, strict=True)]

    out = generate_validated(sample, ["p0", "p1"], 1, Query, retries=2)
    assert calls == [(2, 0), (2, 1), (1, 2)]
    assert out[0] == [Query(query="abc")]
    [failure] = out[1]
    assert isinstance(failure, GenerationFailure) and failure.attempts == 3 and failure.raw == bad
    assert "U+0008 at offset 1" in failure.error
