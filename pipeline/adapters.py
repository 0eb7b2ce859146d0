"""Format adapters: one raw source record -> rows of the canonical tables.

Each adapter is a small function ``adapter(record, ctx) -> Adapted`` (``ctx.kind`` says which
tables the source feeds). A record the adapter cannot use raises ``BadRecord`` with a reason a user
can act on; the ingest stage turns that into a row of ``rejects``. Parts of a good record that are
left out on purpose (a deleted OpenAssistant message, an answer in a documents-only source) are
counted in ``Adapted.skipped`` instead, so every input row is either accepted or rejected.

``Source.mapping`` renames fields: ``{"text": "instruction", "id": "instruction_id"}`` reads the
canonical ``text`` from the source's ``instruction`` field. Dotted names reach into nested objects
(``"score_chosen": "metadata.score_chosen"``).

This module is the registry; the adapters live by family in ``pipeline/formats/``: ``dialogues.py``
(wildchat, sharegpt, hh_rlhf, oasst), ``pairs.py`` (ultrafeedback, wildfeedback, arena_answers),
``web.py`` (documents, prompts, stackexchange), with what they share in ``common.py``.

>>> from pipeline.config import Source
>>> src = Source(name="demo", kind="prompts", path="x.jsonl", format="prompts", mapping={})
>>> out = adapt({"id": "q1", "prompt": "Hi there"}, Ctx.for_source(src, "x.jsonl", 1))
>>> out.rows["prompts"][0]["messages"]
[{'role': 'user', 'content': 'Hi there'}]
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pipeline.formats.common import (  # noqa: F401  (re-exported: the adapter API)
    ROLES,
    Adapted,
    BadRecord,
    Ctx,
    to_messages,
)
from pipeline.formats.dialogues import hh_rlhf, oasst, parse_hh, sharegpt, wildchat  # noqa: F401
from pipeline.formats.markup import html_to_text  # noqa: F401  (re-exported)
from pipeline.formats.pairs import arena_answers, ultrafeedback, wildfeedback
from pipeline.formats.web import documents, prompts, stackexchange

ADAPTERS: dict[str, Callable[[dict[str, Any], Ctx], Adapted]] = {
    "wildchat": wildchat,
    "sharegpt": sharegpt,
    "oasst": oasst,
    "hh_rlhf": hh_rlhf,
    "ultrafeedback": ultrafeedback,
    "documents": documents,
    "prompts": prompts,
    "stackexchange": stackexchange,
    "wildfeedback": wildfeedback,
    "arena_answers": arena_answers,
}


def adapt(rec: Any, ctx: Ctx) -> Adapted:
    """Run the source's adapter on one record."""
    if isinstance(rec, list) and rec and all(isinstance(r, dict) for r in rec):  # it hid its records under one reject
        raise BadRecord(f"record is a list of {len(rec)} objects, expected a JSON object: a line (or element) that holds "
                        "an array of records; write one record per line (`jq -c '.[]'`)")
    if not isinstance(rec, dict):
        raise BadRecord(f"record is {type(rec).__name__}, expected a JSON object")
    return ADAPTERS[ctx.format](rec, ctx)


def finish(fmt: str, rows: dict[str, list[dict[str, Any]]], facts: dict[str, set[str]]) -> None:
    """Apply cross-record facts in place once a whole source has been adapted."""
    accepted = facts.get("accepted_response_ids", set())
    if fmt == "stackexchange":
        for r in rows.get("responses", []):
            detail = json.loads(r["detail"])
            detail["accepted"] = r["response_id"] in accepted
            r["detail"] = json.dumps(detail, sort_keys=True, ensure_ascii=False)
