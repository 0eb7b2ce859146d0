"""What the WildFeedback modules share: paths, the output fingerprint, prompts, dialogue rendering and reject
rows (model calls that survive an over-long prompt are ``pipeline.llm.chat.per_prompt``).

``stages/wildfeedback.py`` (the driver) imports the detector (``wildfeedback_detect``) and the pair
builder (``wildfeedback_pairs``, with its model steps ``wildfeedback_models``); they import this module,
never the driver, so there is no import cycle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.config import Params, fingerprint
from pipeline.execute import CHECKPOINT_ROOT
from pipeline.prompt import template

IN = Path("data/ingest/conversations")
OUT = Path("data/wildfeedback")
CHECKPOINTS = CHECKPOINT_ROOT / "wildfeedback"
METHOD = "wildfeedback"
PAIRS_STREAM = "_pairs_stream"  # the partitions' pairs, before the test set is held out (staging only)


def output_fingerprint(params: Params) -> str:
    """The params the outputs depend on (in lineage and manifests), less the partition and rules batch sizes:
    rule signals and natural revisions do not depend on them (tested), nor do model answers from an engine
    that answers each prompt on its own (greedy, or vLLM's per-request seeds). Checkpoints include them."""
    sizes = {"partition_conversations", "rules_batch_conversations"}
    return fingerprint(params.wildfeedback.model_dump(mode="json", exclude=sizes), params.llm)


def prompt(name: str) -> str:
    """The text of ``pipeline/prompts/wildfeedback_<name>.txt`` (fill it with ``pipeline.prompt.fill``)."""
    return template(f"wildfeedback_{name}")


def window(messages: list[dict], n: int | None) -> list[dict]:
    """The last ``n`` messages (all of them when ``n`` is None: the paper's window)."""
    return list(messages) if n is None else list(messages)[-n:]


def render(messages: list[dict], max_chars: int) -> str:
    """A dialogue as ``ROLE: text`` blocks, each message cut to ``max_chars`` (escaped later by ``fill``)."""
    return "\n\n".join(f"{m['role'].upper()}: {m['content'][:max_chars]}" for m in messages)


def reject(source: str, turn: int, conversation_id: str, reason: str, **texts: Any) -> dict:
    """A rejects row: ``source`` = the conversation's ingest source, ``raw`` holds its key (conversation_id),
    the feedback turn (user_turn, a message index) and every text that was dropped (summary, chosen,
    rejected...), so a user can find and audit what left, not only count it. ``row`` is null: a turn is no
    row of the source (docs/wildfeedback.md)."""
    raw = {"conversation_id": conversation_id, "user_turn": int(turn), **{k: v for k, v in texts.items()}}
    return {"source": source, "row": None, "reason": reason,
            "raw": json.dumps(raw, ensure_ascii=False, default=str)}


def reject_order(r: dict) -> tuple:
    """Rejects in (source, conversation_id, user_turn, raw) order."""
    raw = json.loads(r["raw"])
    return r["source"], raw["conversation_id"], raw["user_turn"], r["raw"]
