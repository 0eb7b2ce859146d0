"""Export rules of issue #14: held-out prompts, redaction of every string, whitespace-equal sides, Curry-DPO's
order, judge gates in the card."""

from __future__ import annotations

import json
import re

import polars as pl
import pyarrow.parquet as pq

from pipeline.config import Curry
from pipeline.io import write_shards
from pipeline.pii import KINDS, find
from pipeline.records import check_table, to_table
from stages.curry import curriculum_files
from stages.curry import run as run_curry
from stages.export import build_release
from tests.export_fixtures import (
    TOPICS,
    build,
    export_cfg,
    joint,
    pair,
    removed,
    standard_methods,
    write_held_out,
    write_method,
)
from tests.llm_configs import execution_config


def ids(release, config, split="train") -> set[str]:
    return {r for f in sorted((release / config).glob(f"{split}-*.parquet")) for r in pl.read_parquet(f)["pair_id"]}


# --- held-out prompts (#14.4) ---------------------------------------------------------------------


def test_held_out_prompts_never_reach_a_train_split(tmp_path):
    held = TOPICS[0]
    write_held_out(tmp_path, [held, TOPICS[1]])
    # the same prompts come back through other methods reading the same source (normalisation: case, punctuation)
    write_method(tmp_path, "curry", [pair("curry-held", held.upper() + "!!", "curry", level=0),
                                     pair("curry-ok", TOPICS[5], "curry", level=0)], sub="level=0")
    write_method(tmp_path, "pugc", [pair("pugc-held", TOPICS[1], "pugc"), pair("pugc-ok", TOPICS[6], "pugc")])
    write_method(tmp_path, "dove", [joint("dove-held", TOPICS[7], held), joint("dove-ok", TOPICS[8], TOPICS[9])])
    release, stats = build(tmp_path, methods=["pugc", "curry", "dove"], test_fraction=0.0,
                           held_out=["data/selfie/test"])
    trained = ids(release, "all") | ids(release, "pugc") | ids(release, "curry") | ids(release, "dove")
    assert trained == {"curry-ok", "pugc-ok", "dove-ok"}
    gone = removed(release).filter(pl.col("reason") == "held_out")
    assert dict(gone.select("pair_id", "configs").rows()) == {
        "curry-held": ["curry", "all"], "pugc-held": ["pugc", "all"], "dove-held": ["dove"]}
    assert {json.loads(d)["set"] for d in gone["detail"]} == {"data/selfie/test"}
    assert stats["held_out"] == {"data/selfie/test": {"rows": 2, "prompts": 2, "removed": 3}}
    assert stats["drops_by_config"]["all"] == {"held_out": 2}
    assert "| `data/selfie/test` | 2 | 3 |" in (release / "README.md").read_text()


def test_both_prompts_of_a_held_out_joint_pairs_set_are_held_out(tmp_path):
    """export.held_out takes joint pairs (chosen_prompt / rejected_prompt) too: the rejected side's prompt is as
    much a held-out prompt as the chosen side's."""
    write_shards(to_table([joint("test0", TOPICS[0], TOPICS[1])], "joint_pairs"), tmp_path / "data" / "dove" / "test",
                 name="joint_pairs")
    write_method(tmp_path, "pugc", [pair("pugc-chosen-side", TOPICS[0], "pugc"),
                                    pair("pugc-rejected-side", TOPICS[1], "pugc"), pair("pugc-ok", TOPICS[2], "pugc")])
    release, stats = build(tmp_path, methods=["pugc"], test_fraction=0.0, held_out=["data/dove/test"])
    assert ids(release, "pugc") == ids(release, "all") == {"pugc-ok"}
    gone = removed(release).filter(pl.col("reason") == "held_out")
    assert sorted(gone["pair_id"]) == ["pugc-chosen-side", "pugc-rejected-side"]
    assert stats["held_out"] == {"data/dove/test": {"rows": 1, "prompts": 2, "removed": 2}}


def test_a_chosen_that_acknowledges_feedback_nobody_gave_is_removed_not_fatal(tmp_path):
    """SmolLM2's PUGC answers ("Here's a revised version of the answer...", "You're right, ...") became
    chosen answers of Curry-DPO and DOVE pairs; the audit found them and the whole export failed. Export
    drops such pairs (counted, in removed.jsonl) and the release passes its audit; a prompt that does
    give feedback keeps its acknowledging chosen."""
    revised = "Here's a revised version of the answer with a few tweaks: grind finer."
    write_method(tmp_path, "curry", [
        pair("c-ack", TOPICS[0], "curry", chosen=revised, level=0),
        pair("c-ok", TOPICS[1], "curry", level=0),
        pair("c-fed", TOPICS[2] + " That's wrong, try again.", "curry", chosen="You're right, here it is.", level=0),
    ], sub="level=0")
    write_method(tmp_path, "dove", [joint("d-ack", TOPICS[3], TOPICS[4]), joint("d-ok", TOPICS[5], TOPICS[6])])
    rows = pq.read_table(tmp_path / "data/dove/pairs/part-00000-of-00001.parquet").to_pylist()
    rows[0]["chosen"] = [{"role": "assistant", "content": "You're right, I apologize for the error. It is 42."}]
    write_method(tmp_path, "dove", rows)
    release, stats = build(tmp_path, methods=["curry", "dove"], test_fraction=0.0)
    assert ids(release, "curry") == ids(release, "all") == {"c-ok", "c-fed"} and ids(release, "dove") == {"d-ok"}
    gone = removed(release).filter(pl.col("reason") == "unprompted_acknowledgement")
    assert dict(gone.select("pair_id", "configs").rows()) == {"c-ack": ["curry", "all"], "d-ack": ["dove"]}
    assert json.loads((release / "audit.json").read_text())["passed"] is True


def test_a_chosen_that_revises_a_version_its_prompt_does_not_hold_is_removed(tmp_path):
    """\"Of course, I've made it more formal:" and "Here's a version that ..." answer feedback or an earlier
    version; to a fresh prompt that asks for no rewrite they go as unprompted_acknowledgement (any method),
    while the same opener to a prompt that asks for the rewrite stays, and the release passes its audit."""
    write_method(tmp_path, "pugc", [
        pair("p-formal", TOPICS[0], "pugc", chosen="Of course, I've made it more formal: keep it in the fridge."),
        pair("p-version", TOPICS[1], "pugc", chosen="Here's a version that ignores threads: a process owns memory."),
        pair("p-asked", "Rewrite this note more formally: " + TOPICS[2], "pugc",
             chosen="Of course, I've made it more formal: snow falls softly."),
        pair("p-sure", TOPICS[3], "pugc", chosen="Sure! Here is a routine: calf raises, then a wall stretch."),
    ])
    release, _ = build(tmp_path, methods=["pugc"], test_fraction=0.0)
    assert ids(release, "pugc") == {"p-asked", "p-sure"}
    gone = removed(release).filter(pl.col("reason") == "unprompted_acknowledgement")
    assert set(gone["pair_id"]) == {"p-formal", "p-version"}
    assert json.loads((release / "audit.json").read_text())["passed"] is True


def test_a_looping_chosen_is_removed_not_fatal_and_explains_an_emptied_config(tmp_path):
    """A chosen answer that loops (a sampling failure that stopped before the token limit) is dropped,
    counted as looping_chosen and listed in removed.jsonl; the same loop as a rejected answer stays. A config
    emptied by such drops alone is explained, not an empty_config violation."""
    loop = "Here is my answer. " + "I am here to listen to you. " * 8
    write_method(tmp_path, "pugc", [pair("p-loop", TOPICS[0], "pugc", chosen=loop),
                                    pair("p-ok", TOPICS[1], "pugc", rejected=loop)])
    write_method(tmp_path, "dove", [joint("d-loop", TOPICS[2], TOPICS[3])])
    rows = pq.read_table(tmp_path / "data/dove/pairs/part-00000-of-00001.parquet").to_pylist()
    rows[0]["chosen"] = [{"role": "assistant", "content": loop}]
    write_method(tmp_path, "dove", rows)
    release, stats = build(tmp_path, methods=["pugc", "dove"], test_fraction=0.0)
    assert ids(release, "pugc") == ids(release, "all") == {"p-ok"} and ids(release, "dove") == set()
    gone = removed(release).filter(pl.col("reason") == "looping_chosen")
    assert dict(gone.select("pair_id", "configs").rows()) == {"p-loop": ["pugc", "all"], "d-loop": ["dove"]}
    assert stats["drops"] == {"looping_chosen": 2}
    assert json.loads((release / "audit.json").read_text())["passed"] is True


def test_a_chosen_cut_off_mid_sentence_is_removed_and_audited(tmp_path):
    """External answers truncated upstream carry no finish reason (UltraFeedback's "... Venus flytraps, pitcher
    plants,"): such a chosen is dropped as cut_off_chosen, listed in removed.jsonl; as a rejected it stays."""
    cut = "This comparative analysis highlights the diverse adaptations of Venus flytraps, pitcher plants,"
    write_method(tmp_path, "selfie", [pair("s-cut", TOPICS[0], "selfie", chosen=cut),
                                      pair("s-ok", TOPICS[1], "selfie", rejected=cut)])
    release, stats = build(tmp_path, methods=["selfie"], test_fraction=0.0)
    assert ids(release, "selfie") == {"s-ok"}
    gone = removed(release).filter(pl.col("reason") == "cut_off_chosen")
    assert dict(gone.select("pair_id", "configs").rows()) == {"s-cut": ["selfie", "all"]}
    assert stats["drops"] == {"cut_off_chosen": 1}
    assert json.loads((release / "audit.json").read_text())["passed"] is True


def test_a_paraphrased_or_prefixed_held_out_prompt_leaves_train(tmp_path):
    """Held-out prompts were matched on their exact normalised key: the same prompt with a prefix, or a long one
    with a word changed, reached train beside its held-out copy. They now go as `held_out` when they overlap a
    held-out prompt as decontamination measures it (13-grams, or a short prompt found whole); others stay."""
    short = "What's a healthy breakfast I can make in five minutes?"
    long_ = ("Explain how vaccines train the immune system to recognise a virus, what memory cells do afterwards, "
             "and why some vaccines need a booster dose after a few years.")
    write_held_out(tmp_path, [short, long_])
    write_method(tmp_path, "curry", [
        pair("prefixed", "Quick question: " + short.lower(), "curry"),
        pair("reworded", long_.replace("a few years", "several years"), "curry"),
        pair("other", "What's a healthy lunch I can pack for work?", "curry"),
    ])
    release, stats = build(tmp_path, methods=["curry"], test_fraction=0.0, held_out=["data/selfie/test"])
    assert ids(release, "curry") == {"other"}
    gone = removed(release).filter(pl.col("reason") == "held_out")
    assert sorted(gone["pair_id"]) == ["prefixed", "reworded"]
    assert {json.loads(d)["set"] for d in gone["detail"]} == {"data/selfie/test"}
    assert stats["held_out"]["data/selfie/test"]["removed"] == 2


def test_a_held_out_prompt_with_personal_data_is_still_held_out(tmp_path):
    """The release's prompts are redacted before their keys are taken: the held-out set's keys must be taken
    from its prompts redacted the same way, or a held-out prompt holding an email or a phone number leaks
    into train (and the audit, which reads the redacted release, cannot see it either)."""
    held = "Write a polite reminder to jane.doe@example.com about the invoice, or call +44 20 7946 0958."
    write_held_out(tmp_path, [held])
    write_method(tmp_path, "pugc", [pair("pugc-held", held, "pugc"), pair("pugc-ok", TOPICS[6], "pugc")])
    release, stats = build(tmp_path, methods=["pugc"], test_fraction=0.0, held_out=["data/selfie/test"])
    assert ids(release, "pugc") == ids(release, "all") == {"pugc-ok"}
    assert removed(release).filter(pl.col("reason") == "held_out")["pair_id"].to_list() == ["pugc-held"]
    assert stats["held_out"]["data/selfie/test"]["removed"] == 1


def test_a_held_out_prompt_may_stay_in_the_test_split(tmp_path):
    write_held_out(tmp_path, [TOPICS[2]])
    write_method(tmp_path, "pugc", [pair("pugc-held", TOPICS[2], "pugc")])
    # test_fraction just under 1: every prompt hashes into test
    release, stats = build(tmp_path, methods=["pugc"], test_fraction=0.999999, held_out=["data/selfie/test"])
    assert ids(release, "pugc", "test") == {"pugc-held"} and stats["drops"] == {}


def test_a_missing_held_out_set_names_the_param(tmp_path):
    import pytest

    from pipeline.io import StageError

    write_method(tmp_path, "pugc", [pair("p", TOPICS[0], "pugc")])
    with pytest.raises(StageError, match="export.held_out lists data/selfie/test.*dvc repro"):
        build(tmp_path, methods=["pugc"], held_out=["data/selfie/test"])


# --- every string redacted (#14.5) -----------------------------------------------------------------

PLANTED = {
    "email": "ann.lee@example.org",
    "phone": "+44 20 7946 0958",
    "ipv4": "81.2.69.160",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "unicode_email": "m\u00fcller@beispiel.de",
}


def test_every_column_of_every_released_file_is_free_of_planted_pii(tmp_path):
    secrets = " / ".join(PLANTED.values())
    rows = []
    for i, t in enumerate(TOPICS[:6]):
        p = pair(f"wf{i}", f"{t} Reach me: {secrets}", "wildfeedback", chosen=f"Sure, I will write to {PLANTED['email']}.")
        # WildFeedback's lineage carries the user's words verbatim (json.dumps escapes the umlaut)
        p["lineage"] = json.dumps({"stage": "wildfeedback", "preference": f"user wants replies at {secrets}",
                                   "conversation_id": f"c{i}", "nested": [{"turn": f"call {PLANTED['phone']}"}]})
        p["source"] = f"logs of {PLANTED['email']}"
        rows.append(p)
    write_method(tmp_path, "wildfeedback", rows)
    write_method(tmp_path, "dove", [joint("d0", f"{TOPICS[7]} {secrets}", TOPICS[8])])
    # one pair whose sides differ only by an e-mail: it becomes identical after redaction and is removed
    write_method(tmp_path, "pugc", [pair("dup", TOPICS[9], "pugc", chosen=f"Mail {PLANTED['email']}",
                                         rejected="Mail other@example.com")])
    release, stats = build(tmp_path, methods=["wildfeedback", "pugc", "dove"], test_fraction=0.3)
    files = sorted(release.rglob("*.parquet"))
    assert files
    for f in files:
        table = pq.read_table(f)
        for name in table.column_names:
            text = json.dumps(table.column(name).to_pylist(), ensure_ascii=False)
            for kind, value in PLANTED.items():
                assert value not in text, (f, name, kind)
    for f in [release / "removed.jsonl", release / "stats.json", release / "README.md", release / "audit.json"]:
        text = f.read_text(encoding="utf-8")
        assert not any(v in text for v in PLANTED.values()), f
    lineage = pl.read_parquet(release / "wildfeedback").row(0, named=True)["lineage"]
    assert json.loads(lineage)["preference"].startswith("user wants replies at [REDACTED_EMAIL]")
    assert stats["pii"]["email"] >= 6 * 5 and stats["pii"]["phone"] >= 6 * 2  # prompt, lineage (x2), source, chosen
    card = (release / "README.md").read_text()  # the card names each kind's marker, as the rows carry it
    assert f"| email | `[REDACTED_EMAIL]` | {stats['pii']['email']} |" in card and "| ipv6 | `[REDACTED_IP]` |" in card
    assert removed(release).filter(pl.col("reason") == "identical")["pair_id"].to_list() == ["dup"]
    audit = json.loads((release / "audit.json").read_text())
    assert audit["passed"] and audit["checks"]["pii"]["violations"] == 0


def test_the_detectors_find_the_planted_pii_before_redaction():
    """The scan above would pass trivially if the detector missed the planted values."""
    found, counts = find(pl.Series(list(PLANTED.values())), KINDS)
    assert found.all()


# --- whitespace-equal sides (#14.8 backstop) -------------------------------------------------------


def test_sides_equal_after_whitespace_normalisation_are_dropped(tmp_path):
    write_method(tmp_path, "selfie", [
        pair("spaces", TOPICS[0], "selfie", chosen="The answer is  42.\nDone.", rejected=" The answer is 42. Done.\n"),
        pair("diff", TOPICS[1], "selfie", chosen="The answer is 42.", rejected="The answer is 41."),
        pair("case", TOPICS[3], "selfie", chosen="The answer is 42.", rejected="the ANSWER is 42."),
        # HH-RLHF harmless-base ships this pair: one answer, its final mark aside (it reached the release)
        pair("punct", TOPICS[4], "selfie", chosen="You're welcome!", rejected="You're welcome."),
    ])
    write_method(tmp_path, "dove", [joint("j", TOPICS[2], TOPICS[2])])  # same prompt, answers differ: kept
    release, stats = build(tmp_path, methods=["selfie", "dove"], test_fraction=0.0)
    assert stats["drops"] == {"identical": 3}
    assert sorted(removed(release).select("pair_id", "reason", "configs").rows()) == [
        ("case", "identical", ["selfie", "all"]), ("punct", "identical", ["selfie", "all"]),
        ("spaces", "identical", ["selfie", "all"])]
    assert ids(release, "selfie") == {"diff"} and ids(release, "dove") == {"j"}



def test_a_joint_row_is_identical_only_when_both_prompts_and_both_answers_match(tmp_path):
    """A DOVE row compares two (prompt, answer) sides: the same answer to two different prompts is a real
    preference (it fits one prompt better), so only a row whose prompts *and* answers match is dropped."""
    rows = [joint("same-both", TOPICS[0], TOPICS[0]), joint("same-answer", TOPICS[1], TOPICS[2])]
    rows[0]["rejected"] = rows[0]["chosen"]
    rows[1]["rejected"] = rows[1]["chosen"]
    write_method(tmp_path, "dove", rows)
    release, stats = build(tmp_path, methods=["dove"], test_fraction=0.0)
    assert stats["drops"] == {"identical": 1} and removed(release)["pair_id"].to_list() == ["same-both"]
    assert ids(release, "dove") == {"same-answer"}


def test_a_joint_rows_acknowledgement_is_judged_against_its_chosen_prompt(tmp_path):
    """The chosen answer of a DOVE row answers ``chosen_prompt``: feedback given only in the rejected
    prompt does not license an apology, and feedback given in the chosen prompt does."""
    sorry = [{"role": "assistant", "content": "You're right, I apologize for the error. It is 42."}]
    fed = joint("fed", TOPICS[0] + " That's wrong, try again.", TOPICS[1])
    other = joint("other-fed", TOPICS[2], TOPICS[3] + " That's wrong, try again.")
    fed["chosen"] = other["chosen"] = sorry
    write_method(tmp_path, "dove", [fed, other])
    release, stats = build(tmp_path, methods=["dove"], test_fraction=0.0)
    assert ids(release, "dove") == {"fed"}
    assert removed(release).select("pair_id", "reason").rows() == [("other-fed", "unprompted_acknowledgement")]


def test_joint_rows_differing_only_in_the_rejected_answer_are_both_kept(tmp_path):
    """A joint row is a duplicate only when all four texts repeat; another rejected answer is another pair."""
    a, b, c = joint("a", TOPICS[0], TOPICS[1]), joint("b", TOPICS[0], TOPICS[1]), joint("c", TOPICS[0], TOPICS[1], 0.9)
    b["rejected"] = [{"role": "assistant", "content": "A different weak answer."}]
    write_method(tmp_path, "dove", [a, b, c])
    release, stats = build(tmp_path, methods=["dove"], test_fraction=0.0)
    assert ids(release, "dove") == {"b", "c"}  # a repeats c (less confident): one of them goes
    assert removed(release).select("pair_id", "reason").rows() == [("a", "duplicate_pair")]

# --- Curry-DPO's within-level shuffle (#14.11) ------------------------------------------------------


def test_curry_config_keeps_the_stage_order(tmp_path):
    prompts = [{"prompt_id": f"p{i:02d}", "messages": [{"role": "user", "content": f"Question number {i}: {TOPICS[i % 12]}"}],
                "source": "hand", "origin_id": f"p{i}"} for i in range(30)]
    responses = [{"prompt_id": f"p{i:02d}", "response_id": f"p{i:02d}-{k}", "text": f"answer {k} to {i}", "generator": "human",
                  "score": float(s), "scorer": "hand", "detail": None} for i in range(30) for k, s in enumerate([4, 3, 2, 1])]
    src = tmp_path / "in"
    write_shards(to_table(prompts, "prompts"), src / "prompts", name="prompts")
    write_shards(check_table(pl.DataFrame(responses, schema_overrides={"detail": pl.String}).to_arrow(), "responses"),
                 src / "responses", name="responses")
    cfg = Curry(inputs=[{"prompts": str(src / "prompts"), "responses": str(src / "responses"), "scores": "rated"}],
                pairing="best_vs_rest", min_gap=0.0, relative_min_gap=0.05, levels="per_prompt", n_levels=3, seed=7,
                histogram_bins=4)
    ex = execution_config(row_group_bytes=1 << 26, on_gate_failure="error")
    run_curry(cfg, ex, tmp_path / "data" / "curry")
    stage_order = pl.concat([pl.read_parquet(f) for f in curriculum_files(tmp_path / "data" / "curry" / "pairs")])
    assert stage_order["pair_id"].to_list() != stage_order.sort("level", "pair_id")["pair_id"].to_list()  # shuffled
    # batch_rows=7: the order must not depend on how the stage output is read
    stats = build_release(export_cfg(methods=["curry"], test_fraction=0.0), tmp_path, tmp_path / "data" / "release",
                          "fp", batch_rows=7)
    released = pl.read_parquet(tmp_path / "data" / "release" / "curry" / "train-00000-of-00001.parquet")
    assert released["pair_id"].to_list() == stage_order["pair_id"].to_list()
    assert stats["rows"]["curry"] == {"train": 90}


# --- judge gates in the card ------------------------------------------------------------------------


def test_card_shows_recorded_judge_gates_or_says_none(tmp_path):
    standard_methods(tmp_path)
    report = {"stage": "pugc", "role": "judge", "model": "tiny", "key": "pugc.gates.judge", "probes": 16, "correct": 8,
              "accuracy": 0.5, "min_accuracy": 0.0, "passed": True, "lowered": True, "labels": "used, gate lowered"}
    failed = {**report, "role": "reference", "correct": 3, "probes": 10, "accuracy": 0.3, "min_accuracy": 0.6,
              "passed": False, "lowered": False, "labels": "withheld"}
    (tmp_path / "data" / "pugc" / "details.json").write_text(json.dumps({"gates": {"judge": report, "reference": failed},
                                                                         "pairs": 8}))
    (tmp_path / "data" / "selfie" / "details.json").write_text(json.dumps({"pairs": 4}))
    release, stats = build(tmp_path)
    card = (release / "README.md").read_text()
    assert "| pugc | judge | tiny | 0.50 (8/16) | 0.0 | used, gate lowered |" in card
    assert "| pugc | reference | tiny | 0.30 (3/10) | 0.6 | withheld (failed) |" in card
    assert "| selfie | — | — | — | — | no gate recorded |" in card
    assert stats["gates"]["curry"].startswith("no gate recorded")  # no details.json at all
    assert "## Audit" in card and "**passed**" in card


def test_inspect_of_a_release_counts_rows_per_config_and_shows_each_schema(tmp_path, capsys):
    """`all` repeats the other configs' rows, so a release's row total alone double-counts: inspect names the
    rows per config, and DOVE's joint rows (a prompt per side) get their own schema block."""
    from pipeline.cli import main as cli

    standard_methods(tmp_path)
    release, _ = build(tmp_path, test_fraction=0.0)
    assert cli(["inspect", str(release), "-n", "1"]) == 0
    out = capsys.readouterr().out
    per = {c: sum(pq.read_metadata(f).num_rows for f in (release / c).glob("*.parquet"))
           for c in ("all", "curry", "dove", "pugc", "selfie")}
    assert f"per config: all {per['all']}, curry {per['curry']}, dove {per['dove']}, pugc {per['pugc']}" in out
    assert 0 < per["all"] <= per["curry"] + per["dove"] + per["pugc"] + per["selfie"]  # the others' rows again
    assert f"rows:   {sum(per.values())} in all files" in out
    assert "schema of dove/train-00000-of-00001.parquet:" in out and "  chosen_prompt: " in out
    assert out.count("schema of ") == 2


def test_inspect_of_a_release_shows_its_other_files_by_name_and_says_whose_rows_it_shows(tmp_path, capsys):
    """A new user's `prefpipe inspect data/release` printed a 1,900-character manifest line, ten sha256 digests
    of the card, stats and plots, and then rows without saying which of the nine files they came from."""
    from pipeline.cli import main as cli

    standard_methods(tmp_path)
    release, _ = build(tmp_path)
    assert cli(["inspect", str(release), "-n", "1"]) == 0
    out = capsys.readouterr().out
    manifest = json.loads(next(line for line in out.splitlines() if line.startswith("manifest: "))[len("manifest: "):])
    listed = json.loads((release / "_manifest.json").read_text())["other_files"]
    assert manifest["other_files"] == [f["path"] for f in listed] and "README.md" in manifest["other_files"]
    assert "sha256" not in out
    shown = re.search(r"^rows of (\S+):\n\[0\] (.*)$", out, re.M)
    assert shown, out
    first = pq.read_table(release / shown.group(1)).column("pair_id")[0].as_py()
    assert shown.group(2).startswith(json.dumps({"pair_id": first})[:-1])


# --- Selfie/SPA's iterations in training order ------------------------------------------------------


def test_selfie_config_holds_the_seed_then_the_iterations_in_number_order(tmp_path):
    """SPA trains on the seed pairs first, then iteration 1, 2, ...: the `selfie` config lists them in that order.
    The folders were read by name, which put `iteration=10` before `iteration=2` and `seed` last."""
    parts = ["iteration=10", "iteration=2", "seed", "iteration=1"]
    for n, part in enumerate(parts):
        source = "seed" if part == "seed" else "iteration_" + part.split("=")[1]
        rows = [{**pair(f"s{n}{k}", TOPICS[2 * n + k], "selfie"), "source": source} for k in range(2)]
        write_method(tmp_path, "selfie", rows, sub=part)
    build(tmp_path, methods=["selfie"], test_fraction=0.0)
    released = pl.read_parquet(tmp_path / "data" / "release" / "selfie" / "train-00000-of-00001.parquet")
    assert released["source"].to_list() == [s for s in ("seed", "iteration_1", "iteration_2", "iteration_10")
                                            for _ in range(2)]
