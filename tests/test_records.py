"""Data contracts: Message is exactly {role, content}; dialogue rules; schema checks name the column."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pydantic import ValidationError

from pipeline.records import (
    MESSAGE_TYPE,
    SCHEMAS,
    Conversation,
    Message,
    Pair,
    SchemaError,
    check_table,
    stable_id,
    to_table,
)


def test_message_is_exactly_role_and_content():
    assert MESSAGE_TYPE.names == ["role", "content"]
    with pytest.raises(ValidationError):
        Message(role="user", content="hi", name="bob")
    with pytest.raises(ValidationError):
        Message(role="human", content="hi")
    with pytest.raises(ValidationError):
        Message(role="user", content=None)


@pytest.mark.parametrize(
    "roles, problem",
    [
        ([], "empty"),
        (["assistant", "user"], "out of order"),
        (["user", "user"], "out of order"),
        (["user", "system"], "system message may only come first"),
    ],
)
def test_conversation_dialogue_rules(roles, problem):
    with pytest.raises(ValidationError, match=problem):
        Conversation(conversation_id="c", source="s", messages=[{"role": r, "content": "x"} for r in roles])


def test_pair_prompt_ends_with_user_and_completions_are_assistant():
    ok = dict(pair_id="p", method="m", source="s", lineage="{}", chosen=[{"role": "assistant", "content": "a"}],
              rejected=[{"role": "assistant", "content": "b"}])
    Pair(prompt=[{"role": "system", "content": "be kind"}, {"role": "user", "content": "q"}], **ok)
    with pytest.raises(ValidationError, match="end with a user"):
        Pair(prompt=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], **ok)
    with pytest.raises(ValidationError, match="assistant messages"):
        Pair(prompt=[{"role": "user", "content": "q"}], **{**ok, "chosen": [{"role": "user", "content": "a"}]})


def test_to_table_matches_schema_and_check_table_conforms():
    t = to_table([{"doc_id": "d1", "text": "hello", "source": "s"}], "documents")
    assert t.schema.equals(SCHEMAS["documents"])
    # Column order and missing nullable columns are fixed up; types are cast.
    raw = pa.table({"source": ["s"], "text": ["x"], "doc_id": ["d"], "score": pa.array([3], pa.int32())})
    fixed = check_table(raw, "documents")
    assert fixed.schema.equals(SCHEMAS["documents"]) and fixed["title"].null_count == 1


@pytest.mark.parametrize(
    "table, message",
    [
        (pa.table({"doc_id": ["d"], "text": ["x"], "source": ["s"], "oops": [1]}), "unexpected column"),
        (pa.table({"doc_id": ["d"], "text": ["x"]}), "missing required column 'source'"),
        (pa.table({"doc_id": ["d"], "text": [None], "source": ["s"]}, schema=pa.schema({"doc_id": pa.string(), "text": pa.string(), "source": pa.string()})), "null value"),
        (pa.table({"doc_id": ["d"], "text": ["x"], "source": ["s"], "score": ["high"]}), "documents.score"),
    ],
)
def test_check_table_errors_name_the_column(table, message):
    with pytest.raises(SchemaError, match=message):
        check_table(table, "documents")


def test_stable_id_is_content_hash():
    assert stable_id("a", 1) == stable_id("a", 1) != stable_id("a", 2)
    assert len(stable_id("x")) == 16
