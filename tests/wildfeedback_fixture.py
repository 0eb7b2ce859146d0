"""Load the hand-labelled real feedback turns of tests/fixtures/wildfeedback_labels.jsonl with their texts.

The fixture holds labels only; texts are looked up by id in the shared real data:
- ``oasst_en100``: ``tree_id`` + ``message_id`` of a prompter message whose parent is an assistant message
  (``oasst_en100/model/model_eval/manual/data/en_100_tree.jsonl``); ``prev`` is that parent's text.
- ``hh_rlhf_harmless_test``: ``transcript`` = 0-based record of ``hh_rlhf/harmless-base/test.jsonl.gz``
  (the ``chosen`` transcript), ``human_turn`` = 0-based index among its Human turns; ``prev`` is the
  Assistant turn just before it.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "wildfeedback_labels.jsonl"
OASST = "oasst_en100/model/model_eval/manual/data/en_100_tree.jsonl"
HH = "hh_rlhf/harmless-base/test.jsonl.gz"


def _oasst_turns(path: Path) -> dict[tuple[str, str], tuple[str, str]]:
    out = {}
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        tree = json.loads(line)
        stack = [(tree["prompt"], None)]
        while stack:
            msg, parent = stack.pop()
            if msg["role"] == "prompter" and parent is not None and parent["role"] == "assistant":
                out[(tree["message_tree_id"], msg["message_id"])] = (msg["text"], parent["text"])
            stack.extend((r, msg) for r in msg.get("replies", []))
    return out


def _hh_turns(path: Path) -> dict[tuple[int, int], tuple[str, str]]:
    out = {}
    records = [json.loads(x) for x in gzip.decompress(path.read_bytes()).split(b"\n") if x.strip()]
    for ri, rec in enumerate(records):
        parts = re.split(r"\n\n(Human|Assistant): ", rec["chosen"])
        msgs = list(zip(parts[1::2], parts[2::2], strict=True))
        human = [i for i, (role, _) in enumerate(msgs) if role == "Human"]
        for k, i in enumerate(human):
            if k and msgs[i - 1][0] == "Assistant":
                out[(ri, k)] = (msgs[i][1], msgs[i - 1][1])
    return out


def load_labelled(real: Path) -> list[dict]:
    """Fixture rows with ``text`` and ``prev`` filled in from the real data (KeyError if an id is gone)."""
    oasst, hh = _oasst_turns(real / OASST), _hh_turns(real / HH)
    rows = []
    for line in FIXTURE.read_text().splitlines():
        row = json.loads(line)
        if row["source"] == "oasst_en100":
            row["text"], row["prev"] = oasst[(row["tree_id"], row["message_id"])]
        else:
            row["text"], row["prev"] = hh[(row["transcript"], row["human_turn"])]
        rows.append(row)
    return rows
