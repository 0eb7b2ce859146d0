"""ingest -> wildfeedback -> export end to end on the real WildChat sample (../shared/data/real/wildchat_sample,
589 conversations), as a user would configure it: a `wildchat` source read with no mapping, params.yaml's
rules detector and natural revisions, `summarize: []` so no model writes a pair (the tiny model's generated
pairs mean nothing; the run takes a few seconds). The release's invariants are checked on what it holds, and
the counts by reason pin down what the stage keeps and drops on real logs (read by hand: the two kept
revision answers its prompt; of the four dropped, two open with an apology, one only adds to the earlier answer,
and one opens on a wish only the feedback voiced)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from pipeline.checks import unprompted_acknowledgement
from pipeline.cli import main as cli
from pipeline.io import read_table
from pipeline.pii import KINDS, find
from pipeline.yaml12 import load_yaml_file

ROOT = Path(__file__).resolve().parents[1]


def _params(tmp: Path, real: Path) -> Path:
    p = load_yaml_file(ROOT / "params.yaml")
    samples = [{**s, "path": str(ROOT / s["path"])} for s in p["ingest"]["sources"] if s["kind"] != "conversations"]
    p["ingest"]["sources"] = [{"name": "wildchat", "kind": "conversations", "format": "wildchat", "mapping": {},
                               "path": str(real / "wildchat_sample/conversations.jsonl"), "limit": None}, *samples]
    p["wildfeedback"].update(sources=["wildchat"], summarize=[])
    p["export"].update(methods=["wildfeedback"], held_out=["data/wildfeedback/test"], summary_png=False)
    path = tmp / "params.yaml"
    path.write_text(json.dumps(p))  # JSON is YAML 1.2
    return path


@pytest.fixture(scope="module")
def run(real, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wildchat_release")
    params = _params(tmp, real)
    mp = pytest.MonkeyPatch()
    mp.chdir(tmp)
    try:
        for stage in ("ingest", "wildfeedback", "export"):
            assert cli(["run", stage, "--params", str(params)]) == 0
    finally:
        mp.undo()
    return tmp


def _details(run: Path, stage: str) -> dict:
    return json.loads((run / "data" / stage / "details.json").read_text())


def test_counts_by_reason(run):
    src = _details(run, "ingest")["sources"]["wildchat"]
    assert (src["rows_in"], src["accepted"], src["rejected"]) == (589, 568, 21)
    d = _details(run, "wildfeedback")["details"]
    # the 4 redacted conversations (flags nested under `metadata`) are dropped, not mined
    assert d["conversations"] == {"in": 568, "selected": 202, "dropped_flagged": 4, "dropped_language": 220,
                                  "dropped_min_user_turns": 142}
    assert d["pairs"]["natural_revision_found"] == 5 and d["pairs"]["out_by_kind"]["natural_revision"] == 1
    assert d["pairs"]["generated_attempted"] == 0
    assert {k: v for k, v in d["dropped"].items() if k.startswith("natural_revision")} == {
        # 78021723b92afa60, 6db018609f9372f7: each "confirmed" by an "ok" opening a long new request (the chosen
        # of the first also opens "I apologize for the confusion", which acknowledges_feedback caught before)
        "natural_revision_ack_opens_request": 2,
        "natural_revision_continues_answer": 1,        # d8c9d888301ec385 (the notary block alone)
        "natural_revision_refers_to_feedback": 1}      # fa5c61f7f04d2fff ("If you would like to keep the casual tone")
    audit = json.loads((run / "data/release/audit.json").read_text())
    assert audit["passed"] is True


def test_release_holds_no_flagged_conversation_pii_or_off_context_chosen(run):
    pairs = pl.read_parquet(run / "data/release/wildfeedback/*.parquet")
    assert pairs.height == 1
    lineage = [json.loads(x) for x in pairs["lineage"]]
    assert [x["kind"] for x in lineage] == ["natural_revision"]
    convs = pl.from_arrow(read_table(run / "data/ingest/conversations", "conversations"))
    flagged = set(convs.filter(pl.col("flags").list.len() > 0)["conversation_id"])
    assert len(flagged) == 4 and not flagged & {x["conversation_id"] for x in lineage}
    texts = pl.concat([pairs[c].list.eval(pl.element().struct.field("content")).explode()
                       for c in ("prompt", "chosen", "rejected")])
    hits, _ = find(texts, list(KINDS))
    assert not hits.any()
    assert not pairs.select(unprompted_acknowledgement("chosen", "prompt")).to_series().any()
    assert read_table(run / "data/wildfeedback/test").num_rows == 0  # max_fraction holds nothing out of 1 pair: no held-out prompt can leak
