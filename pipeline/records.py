"""Data contracts: one pydantic model and one Arrow schema per table, defined once.

Every table a stage reads or writes is one of these. The Arrow schema is derived from the
pydantic model, so the two can never disagree.

>>> from pipeline.records import Message, SCHEMAS
>>> Message(role="user", content="hi").model_dump()
{'role': 'user', 'content': 'hi'}
>>> SCHEMAS["pairs"].field("chosen").type
ListType(list<item: struct<role: string not null, content: string not null>>)
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from json.encoder import encode_basestring
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["system", "user", "assistant"]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class Message(Record):
    """A chat message: exactly ``{role, content}`` (TRL rejects extra keys and nulls)."""

    role: Role
    content: str


def _check_dialogue(messages: list[Message], *, must_end_with: str | None) -> list[Message]:
    if not messages:
        raise ValueError("messages is empty")
    roles = [m.role for m in messages]
    body = roles[1:] if roles[0] == "system" else roles
    if "system" in body:
        raise ValueError("a system message may only come first")
    if not body:
        raise ValueError("messages hold only a system message")
    for i, role in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(
                f"roles out of order at message {i + (len(roles) - len(body))}: "
                f"expected {expected!r}, got {role!r} (turns must alternate user/assistant, starting with user)"
            )
    if must_end_with and body[-1] != must_end_with:
        raise ValueError(f"messages must end with a {must_end_with} turn, got {body[-1]!r}")
    return messages


class Conversation(Record):
    conversation_id: str
    messages: list[Message]
    source: str
    language: str | None = None
    model: str | None = None
    flags: list[str] = Field(default_factory=list)

    @field_validator("messages")
    @classmethod
    def _dialogue(cls, v: list[Message]) -> list[Message]:
        return _check_dialogue(v, must_end_with=None)


class Document(Record):
    doc_id: str
    text: str
    title: str | None = None
    source: str
    score: float | None = None

    @field_validator("text")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text is empty")
        return v


class Prompt(Record):
    prompt_id: str
    messages: list[Message]
    source: str
    origin_id: str
    reference: str | None = None
    preference: str | None = None

    @field_validator("messages")
    @classmethod
    def _dialogue(cls, v: list[Message]) -> list[Message]:
        return _check_dialogue(v, must_end_with="user")


class Signal(Record):
    conversation_id: str
    user_turn: int
    target_turn: int
    sat: bool
    dsat: bool
    sat_categories: list[str]
    dsat_categories: list[str]
    detector: str
    confidence: float | None = None
    rationale: str | None = None


class Response(Record):
    prompt_id: str
    response_id: str
    text: str
    generator: str
    score: float | None = None
    scorer: str | None = None
    detail: str | None = None  # JSON


class Pair(Record):
    pair_id: str
    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    score_chosen: float | None = None
    score_rejected: float | None = None
    margin: float | None = None
    confidence: float | None = None
    label_smoothing: float = 0.0
    noisy: bool = False
    level: int | None = None
    method: str
    source: str
    lineage: str  # JSON

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: list[Message]) -> list[Message]:
        return _check_dialogue(v, must_end_with="user")

    @field_validator("chosen", "rejected")
    @classmethod
    def _completion(cls, v: list[Message]) -> list[Message]:
        if not v or any(m.role != "assistant" for m in v):
            raise ValueError("chosen/rejected must be a non-empty list of assistant messages")
        return v


class JointPair(Record):
    pair_id: str
    chosen_prompt: list[Message]
    chosen: list[Message]
    rejected_prompt: list[Message]
    rejected: list[Message]
    confidence: float | None = None
    method: Literal["dove"] = "dove"
    lineage: str


class Reject(Record):
    """A row that failed validation, kept with the reason instead of crashing or vanishing.

    ``source`` names where the record came from and ``row`` its row number there (an ingest source's
    file line or record, a folder's row); ``row`` is null when the record is no row of a source (a
    WildFeedback turn: ``raw`` names its conversation_id and user_turn). ``raw`` holds the record, or its key."""

    source: str
    row: int | None
    reason: str
    raw: str


MODELS: dict[str, type[Record]] = {
    "conversations": Conversation,
    "documents": Document,
    "prompts": Prompt,
    "signals": Signal,
    "responses": Response,
    "pairs": Pair,
    "joint_pairs": JointPair,
    "rejects": Reject,
}

ID_COLUMNS: dict[str, list[str]] = {
    "conversations": ["conversation_id"],
    "documents": ["doc_id"],
    "prompts": ["prompt_id"],
    "signals": ["conversation_id", "user_turn"],
    "responses": ["prompt_id", "response_id"],
    "pairs": ["pair_id"],
    "joint_pairs": ["pair_id"],
    "rejects": ["source", "row"],
}

# --- Arrow schemas derived from the models -------------------------------------------------------

MESSAGE_TYPE = pa.struct([pa.field("role", pa.string(), nullable=False), pa.field("content", pa.string(), nullable=False)])
MESSAGES_TYPE = pa.list_(MESSAGE_TYPE)


def one_message(role: Role, content: str | pl.Expr) -> pl.Expr:
    """A message-list column of one ``{role, content}`` message per row (a one-turn prompt, an answer), its
    content the column named ``content`` or an expression.

    >>> pl.DataFrame({"q": ["hi"]}).select(one_message("user", "q").alias("m"))["m"].to_list()
    [[{'role': 'user', 'content': 'hi'}]]
    """
    text = pl.col(content) if isinstance(content, str) else content
    return pl.concat_list(pl.struct(role=pl.lit(role), content=text))


# A pair's lineage names, under ``written_by``, who wrote each side that came from an input dataset (not from
# a model of this pipeline, which its ``models`` and role keys name): the model its source names (a
# Response's ``generator``, a Conversation's ``model``), ``unknown`` where the source names none. The
# release card counts them (stages/export_card.py): a dataset's model outputs carry that model's terms.
UNKNOWN_WRITER = "unknown"


def written_by(chosen: pl.Expr, rejected: pl.Expr) -> pl.Expr:
    """The lineage member ``,"written_by":{"chosen":..,"rejected":..}`` (a side null: this pipeline wrote
    it), or ``""`` when this pipeline wrote both sides.

    >>> df = pl.DataFrame({"c": ["gpt-4", None], "r": ["unknown", None]}, schema={"c": pl.String, "r": pl.String})
    >>> df.select(written_by(pl.col("c"), pl.col("r"))).to_series().to_list()
    [',"written_by":{"chosen":"gpt-4","rejected":"unknown"}', '']
    """
    member = pl.lit(',"written_by":') + pl.struct(chosen.alias("chosen"), rejected.alias("rejected")).struct.json_encode()
    return pl.when(chosen.is_null() & rejected.is_null()).then(pl.lit("")).otherwise(member)


_SCALARS: dict[Any, pa.DataType] = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """(type, nullable) for a model field annotation."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _arrow_type(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        (inner,) = args
        return _arrow_type(inner)[0], True
    if origin is Literal:
        return _SCALARS[type(get_args(annotation)[0])], False
    if origin is list:
        (item,) = get_args(annotation)
        if item is Message:
            return MESSAGES_TYPE, False
        return pa.list_(_arrow_type(item)[0]), False
    if annotation in _SCALARS:
        return _SCALARS[annotation], False
    if isinstance(annotation, type) and issubclass(annotation, str):
        return pa.string(), False
    if typing.get_origin(annotation) is None and annotation is Role:
        return pa.string(), False
    raise TypeError(f"no Arrow type for {annotation!r}")


def schema_for(model: type[Record]) -> pa.Schema:
    fields = []
    for name, info in model.model_fields.items():
        typ, nullable = _arrow_type(info.annotation)
        fields.append(pa.field(name, typ, nullable=nullable))
    return pa.schema(fields)


SCHEMAS: dict[str, pa.Schema] = {name: schema_for(model) for name, model in MODELS.items()}


class SchemaError(ValueError):
    pass


def check_table(table: pa.Table, name: str) -> pa.Table:
    """Return ``table`` conformed to the ``name`` contract (column order, types), or raise SchemaError.

    Missing nullable columns are added as nulls; extra columns, missing required columns, nulls in
    non-nullable columns and uncastable types are errors that name the column.
    """
    schema = SCHEMAS[name]
    extra = [c for c in table.column_names if c not in schema.names]
    if extra:
        raise SchemaError(f"{name}: unexpected column(s) {extra}; the contract has {schema.names}")
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            if not field.nullable:
                raise SchemaError(f"{name}: missing required column {field.name!r} ({field.type})")
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        col = table.column(field.name)
        if not col.type.equals(field.type):
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise SchemaError(f"{name}.{field.name}: expected {field.type}, got {col.type}: {e}") from e
        if not field.nullable and col.null_count:
            raise SchemaError(f"{name}.{field.name}: {col.null_count} null value(s) in a required column")
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=schema)


def to_table(rows: list[dict[str, Any]] | list[Record], name: str) -> pa.Table:
    """Build a contract table from validated records or plain dicts (validated here)."""
    model = MODELS[name]
    dicts = [r.model_dump() if isinstance(r, BaseModel) else model.model_validate(r).model_dump() for r in rows]
    return pa.Table.from_pylist(dicts, schema=SCHEMAS[name])


def empty_table(name: str) -> pa.Table:
    return SCHEMAS[name].empty_table()


# --- sizes ---------------------------------------------------------------------------------------


def row_bits(table: pa.Table) -> int:
    """The in-memory size of ``table``'s rows in bits, as one contiguous chunk lays them out (values, offsets,
    a validity bit per value), summed value by value, so that it adds up exactly over any split of the rows
    into pieces. pyarrow's ``nbytes`` does not: each piece carries one more offset per variable-length column
    and rounds its bitmaps up to a byte, so a shard set sized by it followed how its rows were batched.

    >>> t = pa.table({"s": ["ab", None, "cde"], "x": [1.0, 2.0, None]})
    >>> row_bits(t) == row_bits(t.slice(0, 1)) + row_bits(t.slice(1)) == 3 * (1 + 32) + 5 * 8 + 3 * (1 + 64)
    True
    """
    return sum(_values_bits(table.column(i), f.type) for i, f in enumerate(table.schema))


def _values_bits(col: pa.ChunkedArray, t: pa.DataType) -> int:
    n = len(col)
    if pa.types.is_null(t):
        return 0
    if pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        offset = 64 if pa.types.is_large_string(t) or pa.types.is_large_binary(t) else 32
        return n * (1 + offset) + 8 * (pc.sum(pc.binary_length(col)).as_py() or 0)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        offset = 64 if pa.types.is_large_list(t) else 32
        return n * (1 + offset) + _values_bits(pc.list_flatten(col), t.value_type)
    if pa.types.is_struct(t):
        return n + sum(_values_bits(child, t.field(i).type) for i, child in enumerate(col.flatten()))
    if t.bit_width:  # fixed width: numbers, booleans, dates and times
        return n * (1 + t.bit_width)
    return 8 * col.nbytes  # another layout (none of the contracts): pyarrow's figure


# --- ids -----------------------------------------------------------------------------------------


def stable_id(*parts: Any, length: int = 16) -> str:
    """A content hash that is the same on every run and machine.

    >>> stable_id("oasst", "abc")
    '972e034cdfdf94bc'
    """
    h = hashlib.sha1()
    for p in parts:
        # A string or an integer as json.dumps writes it, without its per-call set-up (ingest hashes every record).
        text = encode_basestring(p) if type(p) is str else str(p) if type(p) is int else json.dumps(
            p, sort_keys=True, ensure_ascii=False, default=str)
        h.update(text.encode())
        h.update(b"\x1f")
    return h.hexdigest()[:length]
