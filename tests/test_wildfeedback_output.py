"""WildFeedback's pairs table: built from columns, the same rows and bytes as validating each pair dict."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa

from pipeline.records import stable_id, to_table
from stages.wildfeedback_output import pair_frame, pairs_table

MESSAGES = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))


def _rows(**over) -> pl.DataFrame:
    base = {"conversation_id": ["c1", "c2"], "source": ["s", "s"], "target_turn": [1, 3], "user_turn": [2, 4],
            "sat_turn": [4, None], "prompt": [[{"role": "user", "content": "hi"}],
                                               [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a"},
                                                {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]],
            "chosen": ["better ünïcode \u2028", "ok"], "rejected": ["worse", "no"], "preference": ['say "less"', "x"],
            "confidence": [None, 0.75], "conversation_model": ["gpt-4-0314", None]}
    base.update(over)
    return pl.DataFrame(base, schema_overrides={"prompt": MESSAGES})


def _old_rows(df: pl.DataFrame, kind: str, models: dict, fp: str) -> list[dict]:
    """The per-row pair dicts the stage built before the columnar table (main at 765d738)."""
    rows = []
    for r in df.to_dicts():
        lineage = {"stage": "wildfeedback", "kind": kind, "conversation_id": r["conversation_id"],
                   "judged_turn": r["target_turn"], "feedback_turn": r["user_turn"], "preference": r["preference"],
                   "models": models, "fingerprint": fp}
        if r.get("sat_turn") is not None:
            lineage.update(revision_turn=r["target_turn"] + 2, sat_turn=r["sat_turn"])
        for side in ("chosen", "rejected"):
            if r.get(f"{side}_finish_reason") is not None:
                lineage[f"{side}_finish_reason"] = r[f"{side}_finish_reason"]
        # added since: who wrote the conversation's own turns, as its source says (the card lists them)
        lineage["written_by"] = {side: None if r.get(f"{side}_finish_reason") else r["conversation_model"] or "unknown"
                                 for side in ("chosen", "rejected")}
        rows.append({"pair_id": stable_id("wildfeedback", kind, r["conversation_id"], r["target_turn"]),
                     "prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["chosen"]}],
                     "rejected": [{"role": "assistant", "content": r["rejected"]}], "confidence": r.get("confidence"),
                     "method": "wildfeedback", "source": r["source"],
                     "lineage": json.dumps(lineage, sort_keys=True, ensure_ascii=False)})
    return rows


def test_pairs_table_equals_the_validated_pair_dicts():
    nat = _rows()
    gen = _rows(conversation_id=["c3", "c4"], sat_turn=[None, None], chosen_finish_reason=["stop", "length"],
                rejected_finish_reason=[None, None])
    models = {"expert": "tiny", "summarizer": "tiny"}
    table, kinds = pairs_table([pair_frame(nat, "natural_revision", {}, "fp"), pair_frame(gen, "generated", models, "fp")],
                               lambda row, e: (_ for _ in ()).throw(AssertionError(f"refused {row}: {e}")))
    old = to_table(_old_rows(nat, "natural_revision", {}, "fp") + _old_rows(gen, "generated", models, "fp"), "pairs")
    assert table.equals(old)
    assert table.schema.equals(old.schema)
    assert dict(kinds) == {"natural_revision": 2, "generated": 2}
    written = [json.loads(x)["written_by"] for x in table.column("lineage").to_pylist()]
    assert written == [{"chosen": "gpt-4-0314", "rejected": "gpt-4-0314"}, {"chosen": "unknown", "rejected": "unknown"},
                       {"chosen": None, "rejected": "gpt-4-0314"}, {"chosen": None, "rejected": "unknown"}]


def test_a_pair_the_contract_refuses_is_reported_with_pydantic_reason_and_left_out():
    bad = _rows(chosen=[None, "ok"],
                prompt=[[{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "b"}]])
    refused = []
    table, kinds = pairs_table([pair_frame(bad, "natural_revision", {}, "fp")], lambda row, e: refused.append((row, str(e))))
    assert table.num_rows == 0 and isinstance(table, pa.Table) and not kinds
    assert [json.loads(r["lineage"])["conversation_id"] for r, _ in refused] == ["c1", "c2"]
    assert "chosen.0.content" in refused[0][1] and "roles out of order" in refused[1][1]

