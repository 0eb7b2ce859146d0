"""The console lines a user reads: counts agree with their nouns ("1 row", not "1 rows"), and every model
stage announces its applied ``tiny_overrides`` in one wording (pipeline/metrics.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import MODEL_SECTIONS, load_params
from pipeline.metrics import OVERRIDES_NOTE, announce_overrides, counted
from stages.dove_judge import calibration_warning
from stages.export import summary_line
from stages.selfie_output import console_line as selfie_line
from stages.wildfeedback_report import console_line as wildfeedback_line
from tests.conftest import ROOT


def test_counted_is_singular_for_one_only():
    assert [counted(n, "row") for n in (0, 1, 2)] == ["0 rows", "1 row", "2 rows"]
    assert counted(1, "query", "queries") == "1 query" and counted(5, "query", "queries") == "5 queries"


def _wildfeedback_summary(n: int) -> dict:
    details = {"conversations": {"in": n}, "signals": {"turns_with_signal": n}, "detector_used": "rules"}
    return {"details": details, "conversations_selected": n, "signals_sat": 0, "signals_dsat": n, "pairs": n,
            "pairs_natural_revision": n, "pairs_generated": 0, "gates_passed": 0, "gates_run": 0}


@pytest.mark.parametrize("line,one,two", [
    (lambda n: summary_line({"rows": {"selfie": {"train": n}}, "total": n, "drops_from_release": {},
                                "drops_from_all_only": {}}, Path("data/release")),
     "export: 1 pair in data/release (selfie 1)", "export: 2 pairs in data/release (selfie 2)"),
    (lambda n: selfie_line(1, n, n, n, n, n, {}, 300),
     "selfie: iteration 1: 1 pool prompt -> 1 sample -> 1 scored response -> 1 pair, plus 1 seed pair;",
     "selfie: iteration 1: 2 pool prompts -> 2 samples -> 2 scored responses -> 2 pairs, plus 2 seed pairs;"),
    (lambda n: wildfeedback_line(_wildfeedback_summary(n)),
     "wildfeedback: 1 conversation -> 1 selected -> 1 turn with a signal (SAT 0, DSAT 1; detector rules) -> 1 pair ",
     "wildfeedback: 2 conversations -> 2 selected -> 2 turns with a signal (SAT 0, DSAT 2; detector rules) -> 2 pairs "),
    (lambda n: calibration_warning({"raw_position_consistency_rate": 0.0, "consistent": n, "position_a_rate": 1.0},
                                   "median"),
     "dove: position_calibration=median made 1 label from", "dove: position_calibration=median made 2 labels from"),
])
def test_a_count_of_one_takes_the_singular(line, one, two):
    assert line(1).startswith(one), line(1)
    assert line(2).startswith(two), line(2)


def test_every_model_stage_announces_its_tiny_overrides_in_one_wording(capsys):
    params = load_params(ROOT / "params.yaml")
    said = []
    for stage in MODEL_SECTIONS:
        applied = announce_overrides(params, stage)
        assert applied == params.applied_overrides(stage)
        lines = capsys.readouterr().out.splitlines()
        if applied:
            assert lines == [f"{stage}: {OVERRIDES_NOTE}: {applied}"]
            said.append(stage)
        else:
            assert lines == []
    assert len(said) >= 3  # the samples' params set tiny_overrides for most model stages
    assert OVERRIDES_NOTE == "tiny_overrides applied (every model it uses is the random-weights tiny model)"


def test_ingest_counts_take_the_singular_for_one():
    from stages.ingest import over_threshold

    one = {"s": {"reject_fraction": 1.0, "rejected": 1, "rows_in": 1, "top_reasons": [("bad", 1)]}}
    lines = over_threshold(one, 0.5, Path("out")).splitlines()
    assert lines[0].startswith("ingest: 1 source rejected more than max_reject_fraction=0.5"), lines[0]
    assert lines[1] == "  source 's': 1 of 1 row rejected; top reasons:"
