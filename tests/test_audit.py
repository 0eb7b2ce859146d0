"""`prefpipe audit` (pipeline/audit.py): each hard violation is found in a release folder written by hand,
a clean release passes, and export refuses to publish a release that fails."""

from __future__ import annotations

import json

import pytest

from pipeline.audit import audit_release, summary_lines
from pipeline.cli import main as cli
from pipeline.hub import verify_release
from pipeline.io import write_parquet, write_shards
from pipeline.records import to_table
from stages.export import build_release
from stages.export_read import ExportError
from tests.export_fixtures import (
    TOPICS,
    export_cfg,
    joint,
    pair,
    standard_methods,
    write_held_out,
    write_method,
)


def put(release, config, split, rows, name="pairs"):
    (release / config).mkdir(parents=True, exist_ok=True)
    write_parquet(to_table(rows, name), release / config / f"{split}-00000-of-00001.parquet")


def audit(release, **kw):
    report = audit_release(release, **kw)
    return report, {k: c["violations"] for k, c in report["checks"].items() if c["violations"]}


def with_lineage(p, **fields):
    p["lineage"] = json.dumps({**json.loads(p["lineage"]), **fields})
    return p


def test_each_violation_is_found_with_counts_and_pair_ids(tmp_path):
    rel = tmp_path / "release"
    put(rel, "pugc", "train", [
        pair("same", TOPICS[0], "pugc", chosen="Yes.\n\nIt works.", rejected="Yes. It works."),
        with_lineage(pair("pii", TOPICS[1], "pugc"), preference="write to ann@example.org"),
        with_lineage(pair("cut", TOPICS[2], "pugc"), chosen_finish_reason="length"),
        pair("cut-text", TOPICS[8], "pugc", chosen="The seasons come from the tilt of the axis, and"),
        pair("sorry", TOPICS[3], "pugc", chosen="You're right, I apologize for the error. Here is the fix."),
        pair("redo", TOPICS[7], "pugc", chosen="Understood. Here's a version without the jargon: light scatters."),
        pair("both", TOPICS[4], "pugc"),
        pair("fine", TOPICS[5], "pugc"),
    ])
    put(rel, "pugc", "test", [pair("both-t", TOPICS[4].lower() + "?", "pugc")])
    put(rel, "dove", "train", [joint("dsame", TOPICS[6], TOPICS[6])], name="joint_pairs")
    (rel / "README.md").write_text("# card\n\ncontact: +44 20 7946 0958\n")
    report, counts = audit(rel)
    assert not report["passed"]
    assert counts == {"identical": 1, "pii": 2, "prompt_in_both_splits": 1, "cut_off_chosen": 2,
                      "unprompted_acknowledgement": 2}
    c = report["checks"]
    assert c["identical"]["examples"] == ["same"]
    assert c["pii"]["by_config"] == {"README.md": 1, "pugc": 1}
    assert set(c["pii"]["examples"]) == {"pugc/pii:lineage", "README.md:line 3"}
    assert c["cut_off_chosen"]["examples"] == ["cut", "cut-text"] and set(c["unprompted_acknowledgement"]["examples"]) == {"sorry", "redo"}
    assert c["prompt_in_both_splits"]["examples"] == ["both"]
    assert set(report["skipped"]) == {"empty_config", "held_out_in_train", "contaminated"}
    lines = summary_lines(report)
    assert "ok    identical" not in lines and any(line.startswith("FAIL  identical: 1 (pugc: 1)") for line in lines)
    assert any(line.startswith("skip  held_out_in_train") for line in lines)


def test_a_test_prompt_that_opens_a_train_dialogue_is_in_both_splits(tmp_path):
    """The test row's prompt ``[u0]`` is the opening of a train row's ``[u0, a1, u2]`` (two turns of one
    conversation): training on train sees the test prompt and its answer. main keyed the check on whole prompts
    and passed it; a dialogue with another opening, or the same prompt in one split only, is fine."""
    later = pair("later", TOPICS[0], "wildfeedback")
    later["prompt"] = [{"role": "user", "content": TOPICS[0]}, {"role": "assistant", "content": "Too short."},
                       {"role": "user", "content": "More detail please."}]
    other = pair("other", TOPICS[2], "wildfeedback")
    other["prompt"] = [{"role": "user", "content": TOPICS[2]}, {"role": "assistant", "content": "Too short."},
                       {"role": "user", "content": TOPICS[3]}]  # not a test prompt's turn (see the test below)
    rel = tmp_path / "release"
    put(rel, "wildfeedback", "test", [pair("first", TOPICS[0], "wildfeedback"), pair("alone", TOPICS[1], "wildfeedback")])
    put(rel, "wildfeedback", "train", [later, other])
    report, counts = audit(rel)
    assert counts == {"prompt_in_both_splits": 1}
    assert report["checks"]["prompt_in_both_splits"]["examples"] == ["later"]


def test_a_test_prompt_held_by_a_later_turn_of_a_train_dialogue_is_in_both_splits(tmp_path):
    """A test prompt ("write a poem about cats") as a later user turn of a train dialogue with another opening
    (["hi", a1, "write a poem about cats"]) is in train too, and so is a train prompt that is a test dialogue's
    later turn; main keyed the check on prompts and openings and passed both. Turns under ``min_words`` words
    ("continue please") shared by the two splits are fine."""
    def talk(pid, opening, later, config="wildfeedback"):
        p = pair(pid, later, config)
        p["prompt"] = [{"role": "user", "content": opening}, {"role": "assistant", "content": "Sure, ask away."},
                       {"role": "user", "content": later}]
        return p

    rel = tmp_path / "release"
    put(rel, "wildfeedback", "test", [pair("cats", TOPICS[0], "wildfeedback"), talk("t2", "hey there", TOPICS[1]),
                                      talk("t3", TOPICS[4], "continue please")])
    put(rel, "wildfeedback", "train", [talk("holds_cats", "hi", TOPICS[0]), pair("is_t2_turn", TOPICS[1], "wildfeedback"),
                                       talk("short", TOPICS[5], "continue please"), pair("fine", TOPICS[2], "wildfeedback")])
    put(rel, "pugc", "train", [talk("other_config", "hello", TOPICS[0].upper(), "pugc")])
    report, counts = audit(rel)
    assert counts == {"prompt_in_both_splits": 3}
    assert report["checks"]["prompt_in_both_splits"]["by_config"] == {"pugc": 1, "wildfeedback": 2}
    assert sorted(report["checks"]["prompt_in_both_splits"]["examples"]) == ["holds_cats", "is_t2_turn", "other_config"]


def test_a_check_names_its_first_five_pairs_and_counts_them_all(tmp_path):
    rel = tmp_path / "release"
    put(rel, "pugc", "train", [pair(f"same{i}", TOPICS[i], "pugc", chosen="Yes, it works.", rejected="yes it works")
                               for i in range(7)])
    report, counts = audit(rel)
    assert counts == {"identical": 7} and report["checks"]["identical"]["examples"] == [f"same{i}" for i in range(5)]


def test_a_dove_pair_is_identical_only_when_both_prompts_and_both_answers_are(tmp_path):
    """A joint pair sets (instruction, answer) against (instruction, answer): one answer under two different
    instructions is a comparison, the same answer to the same instruction on both sides is not."""
    one_answer = joint("d-answer", TOPICS[0], TOPICS[1])
    one_answer["rejected"] = one_answer["chosen"]
    both = joint("d-both", TOPICS[2], TOPICS[2])
    both["rejected"] = [{"role": "assistant", "content": both["chosen"][0]["content"].upper()}]
    rel = tmp_path / "release"
    put(rel, "dove", "train", [one_answer, both, joint("d-prompt", TOPICS[3], TOPICS[3])], name="joint_pairs")
    report, counts = audit(rel)
    assert counts == {"identical": 1} and report["checks"]["identical"]["examples"] == ["d-both"]


def test_a_looping_chosen_is_a_violation_a_looping_rejected_is_not(tmp_path):
    """SmolLM2 answers that loop ("I'm here to listen." over and over) end with finish_reason stop: only the
    loop check keeps one from being released as a chosen answer; as a rejected answer it is fine."""
    loop = "Here is my answer. " + "I am here to listen to you. " * 8
    rel = tmp_path / "release"
    put(rel, "pugc", "train", [pair("loops", TOPICS[0], "pugc", chosen=loop),
                               pair("loses", TOPICS[1], "pugc", rejected=loop)])
    put(rel, "dove", "train", [{**joint("dloops", TOPICS[2], TOPICS[3]),
                                "chosen": [{"role": "assistant", "content": loop}]}], name="joint_pairs")
    report, counts = audit(rel)
    assert counts == {"looping_chosen": 2} and not report["passed"]
    assert report["checks"]["looping_chosen"]["by_config"] == {"dove": 1, "pugc": 1}
    assert report["checks"]["looping_chosen"]["examples"] == ["dloops", "loops"]


def test_a_pair_whose_scores_rank_chosen_lower_is_a_violation(tmp_path):
    """Scores are the method's own definition of better: a chosen scored below its rejected (or a negative
    margin) has its labels swapped. Equal scores (a tie a source kept) and pairs without scores pass."""
    rows = [pair("ok", TOPICS[0], "curry"), pair("swapped", TOPICS[1], "curry"), pair("neg", TOPICS[2], "curry"),
            pair("tie", TOPICS[3], "curry", margin=0.0), {**pair("none", TOPICS[4], "curry"),
                                                           "score_chosen": None, "score_rejected": None, "margin": None}]
    rows[1]["score_chosen"], rows[1]["score_rejected"] = 2.0, 4.0
    rows[2]["margin"] = -1.0
    put(tmp_path / "release", "curry", "train", rows)
    report, counts = audit(tmp_path / "release")
    assert counts == {"chosen_scored_lower": 2} and report["checks"]["chosen_scored_lower"]["examples"] == ["swapped", "neg"]


def test_a_malformed_dialogue_is_a_violation(tmp_path):
    """The stages' records refuse these rows; a release written by anything else is checked again: an empty
    prompt, one ending with an assistant turn, roles out of order, a system message in the middle, an empty
    message, a chosen that is a user turn or nothing (rows written without validation)."""
    import pyarrow as pa

    from pipeline.io import write_parquet
    from pipeline.records import SCHEMAS

    def m(*turns):
        return [{"role": r, "content": c} for r, c in turns]

    u, a, sy = ("user", "Why is the sky blue?"), ("assistant", "Scattering."), ("system", "Be brief.")
    cases = {"ok": (m(u), m(a)), "ok-sys": (m(sy, u, a, u), m(a)), "empty": (m(), m(a)), "ends-a": (m(u, a), m(a)),
             "order": (m(u, u), m(a)), "sys-mid": (m(u, sy, u), m(a)), "blank": (m(u, a, ("user", "  ")), m(a)),
             "ch-user": (m(u), m(("user", "Scattering."))), "ch-none": (m(u), m()), "ch-blank": (m(u), m(("assistant", "")))}
    rows = [{**pair(pid, TOPICS[i], "pugc"), "prompt": p, "chosen": ch} for i, (pid, (p, ch)) in enumerate(cases.items())]
    (tmp_path / "release" / "pugc").mkdir(parents=True)
    write_parquet(pa.Table.from_pylist(rows, schema=SCHEMAS["pairs"]), tmp_path / "release/pugc/train-00000-of-00001.parquet")
    j = [joint("j-ok", TOPICS[1], TOPICS[2]), {**joint("j-bad", TOPICS[3], TOPICS[4]), "rejected_prompt": m(u, a)}]
    (tmp_path / "release" / "dove").mkdir()
    write_parquet(pa.Table.from_pylist(j, schema=SCHEMAS["joint_pairs"]), tmp_path / "release/dove/train-00000-of-00001.parquet")
    report, counts = audit(tmp_path / "release")
    c = report["checks"]["malformed_dialogue"]
    assert c["violations"] == 9 and c["by_config"] == {"dove": 1, "pugc": 8} and not report["passed"]
    assert counts["malformed_dialogue"] == 9


def test_acknowledgement_is_fine_when_the_prompt_gives_the_feedback(tmp_path):
    rel = tmp_path / "release"
    p = pair("ok", "Write a haiku about rain.", "wildfeedback",
             chosen="You're right, I apologize for the error. Here is a haiku with 5-7-5 syllables.")
    p["prompt"] = [{"role": "user", "content": "Write a haiku about rain."},
                   {"role": "assistant", "content": "Rain falls down on me"},
                   {"role": "user", "content": "That's wrong, a haiku has three lines. Try again."}]
    put(rel, "wildfeedback", "train", [p])
    assert audit(rel)[1] == {}


def test_project_checks_empty_config_and_held_out(tmp_path):
    root = tmp_path
    write_method(root, "pugc", [pair(f"p{i}", t, "pugc") for i, t in enumerate(TOPICS[:3])])
    write_method(root, "curry", [pair("c0", TOPICS[4], "curry", level=0)], sub="level=0")
    write_held_out(root, [TOPICS[4]])
    rel = root / "data" / "release"
    put(rel, "curry", "train", [pair("c0", TOPICS[4], "curry", level=0)])
    (rel / "pugc").mkdir()
    cfg = export_cfg(methods=["pugc", "curry"], held_out=["data/selfie/test"])
    report, counts = audit(rel, root=root, cfg=cfg)
    assert counts == {"empty_config": 1, "held_out_in_train": 1}
    assert report["checks"]["empty_config"]["examples"] == ["pugc: 3 pairs in data/pugc/pairs, 0 in pugc/ (0 removed for "
                                                            "a reason of the pair itself)"]
    assert report["checks"]["held_out_in_train"]["examples"] == ["c0"] and report["skipped"] == {}
    # an empty config is explained when removed.jsonl shows every pair left for a reason of its own...
    lines = [{"pair_id": f"p{i}", "method": "pugc", "reason": "contaminated", "detail": "{}", "configs": ["pugc", "all"]}
             for i in range(3)]
    (rel / "removed.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert "empty_config" not in audit(rel, root=root, cfg=cfg)[1]
    # ... but not when another method was preferred (today's cross-method de-duplication, #14.1)
    for x in lines:
        x["reason"] = "duplicate_prompt_exact"
    (rel / "removed.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert "empty_config" in audit(rel, root=root, cfg=cfg)[1]
    # ... nor when the pairs left other configs only (a reason of their own, but not for leaving theirs)
    for x in lines:
        x["reason"], x["configs"] = "contaminated", ["all"]
    (rel / "removed.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert "empty_config" in audit(rel, root=root, cfg=cfg)[1]


def test_a_stage_folder_being_written_is_not_counted_as_its_pairs(tmp_path):
    """A dot folder under data/<method>/pairs is a shard set not yet in place (a writer's temporary folder)."""
    write_method(tmp_path, "pugc", [pair("p0", TOPICS[0], "pugc")], sub=".writing")
    rel = tmp_path / "data" / "release"
    put(rel, "curry", "train", [pair("c0", TOPICS[4], "curry", level=0)])
    (rel / "pugc").mkdir()
    assert "empty_config" not in audit(rel, root=tmp_path, cfg=export_cfg(methods=["pugc", "curry"]))[1]


def test_a_held_out_prompt_is_found_in_train_after_its_personal_data_was_redacted(tmp_path):
    """The release holds prompts as redacted; the held-out set holds them raw: the audit keys both alike."""
    import polars as pl

    from pipeline.pii_structured import redact_messages

    held = "Email jane.doe@example.com the minutes of today's meeting, politely."
    write_held_out(tmp_path, [held])
    released, _ = redact_messages(pl.from_arrow(to_table([pair("h", held, "pugc")], "pairs")), ["prompt", "chosen"], ["email"])
    assert "jane.doe" not in json.dumps(released.to_dicts()[0]["prompt"])
    rel = tmp_path / "data" / "release"
    put(rel, "pugc", "train", released.to_dicts())
    cfg = export_cfg(methods=["pugc"], held_out=["data/selfie/test"])
    assert audit(rel, root=tmp_path, cfg=cfg)[1] == {"held_out_in_train": 1}


MT_BENCH_81 = ("Compose an engaging travel blog post about a recent trip to Hawaii, highlighting cultural experiences "
               "and must-see attractions.")


def test_a_prompt_of_an_evaluation_set_is_a_violation_in_any_split(tmp_path):
    """Export drops prompts overlapping export.decontamination.sets; the audit checks the release again, as
    export measures overlap: an MT-Bench question copied into a release (verbatim in a test split, prefixed
    in train, as DOVE's rejected prompt) passed every check."""
    rel = tmp_path / "data" / "release"
    put(rel, "pugc", "train", [pair("pre", "Hi there! " + MT_BENCH_81, "pugc"), pair("fine", TOPICS[0], "pugc")])
    put(rel, "pugc", "test", [pair("verbatim", MT_BENCH_81, "pugc")])
    put(rel, "dove", "train", [joint("j", TOPICS[1], "Please: " + MT_BENCH_81), joint("j-ok", TOPICS[2], TOPICS[3])],
        name="joint_pairs")
    report, counts = audit(rel, root=tmp_path, cfg=export_cfg(methods=["pugc", "dove"]))
    # the two train prompts also hold the test prompt "verbatim" (pipeline.split_leaks)
    assert counts == {"contaminated": 3, "prompt_in_both_splits": 2} and not report["passed"]
    assert set(report["checks"]["prompt_in_both_splits"]["examples"]) == {"pre", "j"}
    assert report["checks"]["contaminated"]["by_config"] == {"dove": 1, "pugc": 2}
    assert set(report["checks"]["contaminated"]["examples"]) == {"pre", "verbatim", "j"}


def test_a_reworded_held_out_prompt_in_train_is_a_violation(tmp_path):
    """Export keeps a prompt overlapping a held-out one out of train (``near_held_out``); the audit matched
    held-out prompts exactly only, so a prefixed copy in train passed it. In a test split it is fine."""
    write_held_out(tmp_path, ["What's a healthy breakfast I can make in five minutes for my two kids?"])
    rel = tmp_path / "data" / "release"
    near = "Quick question: what's a healthy breakfast I can make in five minutes for my two kids?"
    put(rel, "curry", "train", [pair("near", near, "curry", level=0), pair("other", TOPICS[0], "curry", level=0)])
    put(rel, "curry", "test", [pair("near-t", near + " Thanks", "curry", level=0)])
    cfg = export_cfg(methods=["curry"], held_out=["data/selfie/test"])
    report, counts = audit(rel, root=tmp_path, cfg=cfg)
    assert counts["held_out_in_train"] == 1 and report["checks"]["held_out_in_train"]["examples"] == ["near"]
    # "near" is also held by the test prompt "near-t" (overlap 1.0; pipeline.split_leaks)
    assert counts == {"held_out_in_train": 1, "prompt_in_both_splits": 1}


def test_a_clean_release_passes_and_lists_its_audit(tmp_path, capsys, monkeypatch, root):
    standard_methods(tmp_path)
    write_held_out(tmp_path, ["A held-out question nobody trains on?"])
    (tmp_path / "params.yaml").write_text((root / "params.yaml").read_text())
    release = tmp_path / "data" / "release"
    build_release(export_cfg(test_fraction=0.3), tmp_path, release, "fp")
    report = json.loads((release / "audit.json").read_text())
    assert report["passed"] and report["rows"] > 0 and set(report["checks"]) >= {"pii", "identical", "empty_config"}
    manifest = json.loads((release / "_manifest.json").read_text())
    assert "audit.json" in {f["path"] for f in manifest["other_files"]} and verify_release(release) == []
    assert cli(["audit", str(release), "--params", str(tmp_path / "none.yaml")]) == 2  # a named params file must exist
    monkeypatch.chdir(tmp_path)  # the project root: params.yaml, data/<method>/pairs and the held-out set
    assert cli(["audit", "data/release"]) == 0
    out = capsys.readouterr().out
    assert "passed" in out and "ok    pii" in out
    # from elsewhere, --root is enough: its params.yaml is read (it was looked for in the current folder,
    # and the project checks were skipped although README says params.yaml and data/ are under --root)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert cli(["audit", str(release), "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ok    empty_config" in out and "ok    held_out_in_train" in out and "skip" not in out


def test_cli_exits_non_zero_on_violations(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the release-only checks (a clean clone has no data/)
    rel = tmp_path / "release"
    put(rel, "pugc", "train", [pair("same", TOPICS[0], "pugc", chosen="A", rejected="A ")])
    assert cli(["audit", str(rel), "--json", str(tmp_path / "a.json")]) == 1
    assert "FAIL  identical: 1 (pugc: 1)" in capsys.readouterr().out
    assert json.loads((tmp_path / "a.json").read_text())["passed"] is False
    # a --json path that cannot be written is one line (it was a FileNotFoundError traceback after the audit)
    assert cli(["audit", str(rel), "--json", str(tmp_path / "no" / "a.json")]) == 2
    assert capsys.readouterr().err == (f"prefpipe audit: --json {tmp_path / 'no' / 'a.json'}: no folder "
                                       f"{tmp_path / 'no'}; create it or write the report elsewhere\n")
    assert cli(["audit", str(rel), "--json", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"prefpipe audit: --json {tmp_path}: cannot write it (")


def test_an_audit_report_interrupted_as_it_is_written_leaves_no_temporary(tmp_path, capsys, monkeypatch):
    """Ctrl-C between writing --json's temporary and renaming it left a hidden .a.json.tmp-* beside the report."""
    monkeypatch.chdir(tmp_path)
    rel = tmp_path / "release"
    put(rel, "pugc", "train", [pair("same", TOPICS[0], "pugc", chosen="A", rejected="B")])
    (tmp_path / "out").mkdir()

    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", interrupted)
    assert cli(["audit", str(rel), "--json", str(tmp_path / "out" / "a.json")]) != 0
    assert "interrupted" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []


def test_export_does_not_publish_a_release_that_fails_its_audit(tmp_path):
    standard_methods(tmp_path)
    release = tmp_path / "data" / "release"
    build_release(export_cfg(), tmp_path, release, "fp")
    before = (release / "_manifest.json").read_bytes()
    cut = [with_lineage(pair(f"cut{i}", f"{t} (cut)", "selfie"), chosen_finish_reason="length")
           for i, t in enumerate(TOPICS[:2])]
    write_shards(to_table(cut, "pairs"), tmp_path / "data" / "selfie" / "pairs", name="pairs")
    with pytest.raises(ExportError, match=r"fails its audit(.|\n)*FAIL  cut_off_chosen: [0-9]+ \(.*selfie: 2\)"):
        build_release(export_cfg(), tmp_path, release, "fp")
    assert (release / "_manifest.json").read_bytes() == before  # the published release is untouched
    rejected = tmp_path / "data" / ".release.rejected"
    assert json.loads((rejected / "audit.json").read_text())["passed"] is False
    assert "**FAILED**" in (rejected / "README.md").read_text()


def test_the_card_audit_json_and_prefpipe_audit_count_the_same_files_and_rows(tmp_path, capsys, monkeypatch):
    """The card said 17 files where `prefpipe audit` on the same release said 18: the card, scanned after the
    audit ran, was not counted."""
    import re

    standard_methods(tmp_path)
    release = tmp_path / "data" / "release"
    build_release(export_cfg(test_fraction=0.3), tmp_path, release, "fp")
    saved = json.loads((release / "audit.json").read_text())
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the project checks are skipped, the files all read
    assert cli(["audit", str(release)]) == 0
    rows, files = re.search(r": (\d+) rows in (\d+) files: passed", capsys.readouterr().out).groups()
    card = re.search(r"re-read every file of this release \((\d+) rows, (\d+) files",
                     (release / "README.md").read_text()).groups()
    assert (int(rows), int(files)) == (saved["rows"], saved["files"]) == tuple(map(int, card))


def test_a_text_file_is_scanned_in_batches_of_lines_with_editor_line_numbers(tmp_path):
    # removed.jsonl carries every removed pair's texts: the scan reads it a batch of lines at a time (read whole,
    # a million-pair release cost GBs), and a hit is named by its line as an editor counts them (\n only)
    from pipeline.audit import _Found, _scan_file
    from pipeline.pii import KINDS, PHONE_REGIONS

    lines = ["clean line"] * 7
    lines[2] = "mail ann@example.org"
    lines[5] = "a\u2028separator then bob@example.org"  # one line for an editor, two for str.splitlines()
    path = tmp_path / "removed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for batch_lines in (1, 2, 3, 1000):
        found = _Found()
        _scan_file(found, "removed.jsonl", path, KINDS, PHONE_REGIONS, batch_lines=batch_lines)
        assert found.examples == ["removed.jsonl:line 3", "removed.jsonl:line 6"], batch_lines


def test_our_pair_ids_are_not_personal_data_but_the_same_digits_in_a_text_are(tmp_path):
    # one in ~20,000 of our 16-hex-digit ids is 16 decimal digits passing a card checksum: a million-pair
    # release failed its audit on removed.jsonl's pair ids alone (2026-12-01, bench/memory.py at 1M)
    card_like = "2359468598074351"
    rel = tmp_path / "release"
    ours = [pair(pid, TOPICS[i], "pugc", rejected="I don't know.") for i, pid in enumerate([card_like, "0095299358a809d7"])]
    for p in ours:  # lineage names its rows by our ids too
        p["lineage"] = json.dumps({"stage": "pugc", "prompt_id": p["pair_id"], "chosen_item": f"{card_like}:{card_like}"})
    put(rel, "pugc", "train", ours)
    (rel / "removed.jsonl").write_text(json.dumps({"pair_id": card_like, "method": "pugc", "reason": "identical",
                                                   "configs": ["pugc"]}, separators=(",", ":")) + "\n")
    report, counts = audit(rel)
    assert "pii" not in counts, report["checks"]["pii"]
    # a pair_id of another shape is still scanned, and the digits in a released text still fail
    put(rel, "pugc", "train", [pair("card-" + card_like, TOPICS[0], "pugc", rejected="I don't know."),
                               pair("fine", TOPICS[1], "pugc", chosen=f"Your card {card_like} is on file.",
                                    rejected="I don't know."),
                               with_lineage(pair("note", TOPICS[2], "pugc", rejected="No."), preference=card_like)])
    (rel / "removed.jsonl").write_text(json.dumps({"pair_id": "x", "method": "pugc", "reason": "identical",
                                                   "detail": card_like}) + "\n")
    report, counts = audit(rel)
    assert counts["pii"] == 5 and set(report["checks"]["pii"]["examples"]) == {  # the fixture's lineage lists
        f"pugc/card-{card_like}:pair_id", f"pugc/card-{card_like}:lineage",      # the pair_id as an input
        "pugc/fine:chosen", "pugc/note:lineage", "removed.jsonl:line 1"}


def test_personal_data_in_a_text_checked_after_the_audit_fails_the_report(tmp_path):
    """The card is written after the audit and scanned then (``add_text_check``): a hit in it fails the release."""
    from pipeline.audit import add_text_check
    from pipeline.pii import KINDS

    rel = tmp_path / "release"
    put(rel, "pugc", "train", [pair("fine", TOPICS[0], "pugc")])
    report, counts = audit(rel)
    assert report["passed"] and not counts
    checked = add_text_check(report, "README.md", "# card\n\ncontact: +44 20 7946 0958\n", KINDS)
    assert not checked["passed"] and checked["files"] == report["files"] + 1
    assert checked["checks"]["pii"]["by_config"] == {"README.md": 1}
    assert checked["checks"]["pii"]["examples"] == ["README.md:line 3"]
