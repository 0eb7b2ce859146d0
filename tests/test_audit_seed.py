"""`prefpipe audit`'s ``seed_in_test``: a pair its method trains on first (``TRAIN_FIRST``: Selfie/SPA's gold seed,
``source`` "seed") in a test split of any config is a hard violation, as export pins them to train."""

from __future__ import annotations

import json

from pipeline.audit import audit_release, summary_lines
from pipeline.config_export import TRAIN_FIRST
from pipeline.io import write_parquet
from pipeline.records import to_table
from tests.export_fixtures import TOPICS, build, pair
from tests.test_audit import audit, put
from tests.test_export_split import FRACTION, hashed_test, seed_fixture, splits

TEST_FILE = "test-00000-of-00001.parquet"


def seed(pid: str, topic: str, method: str = "selfie") -> dict:
    return pair(pid, topic, method) | {"source": "seed"}


def test_a_seed_pair_in_a_test_split_fails_the_audit_naming_file_row_and_pair_id(tmp_path):
    """Main's audit passed a release holding a Selfie seed pair in the test split of `selfie` and of `all`: SPA,
    training on the train split, lost it. A "seed" source of another method, and Selfie's iteration pairs, may
    be tested on; the seed in train is where it belongs. Rows count from 0 across the file's batches."""
    rel = tmp_path / "release"
    put(rel, "selfie", "train", [seed("s-train", TOPICS[0])])
    put(rel, "selfie", "test", [pair("it1", TOPICS[1], "selfie") | {"source": "iteration_1"},
                                pair("it2", TOPICS[2], "selfie"), seed("s-test", TOPICS[3])])
    put(rel, "pugc", "test", [seed("pugc-seed", TOPICS[4], "pugc")])
    put(rel, "all", "test", [seed("s-test", TOPICS[3]), seed("pugc-seed", TOPICS[4], "pugc")])
    report, counts = audit(rel, batch_rows=2)
    assert not report["passed"] and counts == {"seed_in_test": 2}
    check = report["checks"]["seed_in_test"]
    assert check["by_config"] == {"all": 1, "selfie": 1}
    assert check["examples"] == [f"all/{TEST_FILE}:row 0 pair_id s-test", f"selfie/{TEST_FILE}:row 2 pair_id s-test"]
    assert any(line.startswith("FAIL  seed_in_test: 2 (all: 1, selfie: 1)") and "selfie/test-" in line
               for line in summary_lines(report))


def test_a_release_without_method_column_is_checked_by_its_config(tmp_path):
    """A config's rows are its method's pairs: without a ``method`` column the config names it."""
    (tmp_path / "rel" / "selfie").mkdir(parents=True)
    table = to_table([seed("s", TOPICS[0]), pair("p", TOPICS[1], "selfie")], "pairs").drop_columns(["method"])
    write_parquet(table, tmp_path / "rel" / "selfie" / TEST_FILE)
    report, counts = audit(tmp_path / "rel")
    assert counts == {"seed_in_test": 1} and report["checks"]["seed_in_test"]["examples"] == [
        f"selfie/{TEST_FILE}:row 0 pair_id s"]


def test_the_release_export_writes_passes_with_seed_openings_hashed_to_test(tmp_path):
    """A built release whose seed prompts the hash alone would put in test (export pins them to train) passes,
    `prefpipe audit` agrees with the `audit.json` export wrote, and the seed pairs are in train of `selfie` and
    `all`. The audit reads the rule from where export reads it."""
    from pipeline import train_first
    from stages import export

    assert export.trained_first is train_first.trained_first and TRAIN_FIRST == {"selfie": "seed"}
    seeds, _ = seed_fixture(tmp_path)
    assert any(hashed_test(seeds).values())  # the check has something to find if export did not pin them
    release, _ = build(tmp_path, methods=["pugc", "selfie", "dove"], test_fraction=FRACTION)
    got = splits(release)
    assert {got[c].get(f"selfie-seed-{i}") for i in range(len(seeds)) for c in ("selfie", "all")} <= {"train", None}
    assert got["selfie"]["selfie-seed-0"] == "train"
    saved = json.loads((release / "audit.json").read_text())
    assert saved["passed"] and saved["checks"]["seed_in_test"]["violations"] == 0
    report = audit_release(release)
    assert report["passed"] and report["checks"]["seed_in_test"]["violations"] == 0
