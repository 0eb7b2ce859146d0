"""Export's train/test split: Selfie/SPA's seed pairs, which the method trains on first, stay in train with every
pair opening the same way; every other opening splits by its salted hash as before."""

from __future__ import annotations

import json

import polars as pl

from pipeline.dedup import opening_key
from stages.export import build_release
from stages.export_split import in_test_split
from tests.export_fixtures import TOPICS, build, export_cfg, joint, msg, pair, write_method

FRACTION = 0.5


def hashed_test(prompts: list[str]) -> dict[str, bool]:
    """Where the salted hash alone puts each prompt (a lone user turn: its opening is the whole prompt)."""
    keys = pl.DataFrame({"prompt": [msg("user", p) for p in prompts]}).select(opening_key("prompt"))[:, 0]
    return dict(zip(prompts, in_test_split(keys, FRACTION, export_cfg().split_salt).tolist(), strict=True))


def seed_fixture(root) -> tuple[list[str], list[str]]:
    """Selfie: seed pairs (``source`` "seed", ``seed/``) on the first six topics, iteration 1's on the rest; PUGC a
    pair on every topic (the same prompt: `all` keeps PUGC's) and a dialogue opening with it; DOVE a row on two seed
    topics. Returns (seed topics, the others)."""
    seeds, rest = TOPICS[:6], TOPICS[6:]
    for sub, source, topics in (("seed", "seed", seeds), ("iteration=1", "iteration_1", rest)):
        write_method(root, "selfie", [pair(f"selfie-{source}-{i}", t, "selfie") | {"source": source}
                                      for i, t in enumerate(topics)], sub=sub)
    rows = []
    for i, t in enumerate(TOPICS):
        talk = pair(f"pugc-talk-{i}", t, "pugc", rejected=f"Another weak reply {i}.")
        talk["prompt"] = msg("user", t) + msg("assistant", f"A first reply {i}.") + msg("user", f"Tell me more about point {i}.")
        rows += [pair(f"pugc-{i}", t, "pugc"), talk]
    write_method(root, "pugc", rows)
    write_method(root, "dove", [joint("dove-seed", seeds[0], seeds[1])])
    return seeds, rest


def splits(release) -> dict[str, dict[str, str]]:
    """config -> pair_id -> split, as released."""
    out: dict[str, dict[str, str]] = {}
    for f in sorted(release.glob("*/*-*.parquet")):
        ids = pl.read_parquet(f)["pair_id"]
        out.setdefault(f.parent.name, {}).update(dict.fromkeys(ids, f.name.split("-", 1)[0]))
    return out


def test_selfie_seed_pairs_and_every_pair_sharing_their_opening_stay_in_train(tmp_path):
    """Main split the seed pairs by their opening's hash like any other, so a seed pair could land in the release's
    test split (the samples' "Romeo and Juliet" seed did) and SPA, training on the train split, lost it. The seed's
    openings are pinned to train: the seed pair, PUGC's pair and dialogue opening the same way and the DOVE row on
    them are in train in every config and in `all`."""
    seeds, rest = seed_fixture(tmp_path)
    hashed = hashed_test(TOPICS)
    assert any(hashed[t] for t in seeds) and any(hashed[t] for t in rest) and not all(hashed.values())
    release, stats = build(tmp_path, methods=["pugc", "selfie", "dove"], test_fraction=FRACTION)
    got = splits(release)
    for i, t in enumerate(seeds):
        for config, pid in (("selfie", f"selfie-seed-{i}"), ("pugc", f"pugc-{i}"), ("pugc", f"pugc-talk-{i}")):
            assert got[config][pid] == "train", (config, pid, hashed[t])
    assert got["dove"] == {"dove-seed": "train"}
    assert {pid for pid, split in got["all"].items() if split == "test"} == {
        pid for i, t in enumerate(TOPICS) if hashed[t] and t not in seeds for pid in (f"pugc-{i}", f"pugc-talk-{i}")}
    assert json.loads((release / "audit.json").read_text())["passed"]
    assert "split_straddle" not in stats["drops"] and "test_prompt_in_train" not in stats["drops"]


def test_pairs_of_other_openings_split_by_their_hash_as_before(tmp_path):
    """Selfie's iteration pairs and every pair not opening like a seed one keep their hashed split, whatever the
    batch size the export reads with."""
    seeds, rest = seed_fixture(tmp_path)
    hashed = hashed_test(TOPICS)
    release, _ = build(tmp_path, methods=["pugc", "selfie", "dove"], test_fraction=FRACTION)
    got = splits(release)
    want = {"test" if hashed[t] else "train" for t in rest}
    assert want == {"train", "test"}  # the fixture holds both
    for j, t in enumerate(rest):
        i = TOPICS.index(t)
        split = "test" if hashed[t] else "train"
        assert got["selfie"][f"selfie-iteration_1-{j}"] == split
        assert got["pugc"][f"pugc-{i}"] == got["pugc"][f"pugc-talk-{i}"] == split
    small = tmp_path / "small"
    build_release(export_cfg(methods=["pugc", "selfie", "dove"], test_fraction=FRACTION), tmp_path, small, "fp-test",
                  batch_rows=1)
    assert splits(small) == got


def in_test(texts: list[str]) -> list[str]:
    """The texts of ``texts`` whose opening (a lone user turn, or a dialogue's first) the hash puts in test."""
    return [t for t, test in hashed_test(texts).items() if test]


def sharing_fixture(root) -> dict[str, str]:
    """Three Selfie seed pairs, each sharing a user turn with another method's pair whose opening the hash puts in
    test: a PUGC question that is the seed dialogue's last turn, a Curry dialogue ending with the seed's question,
    and a PUGC turn quoting the seed's question inside a longer one; and a PUGC pair on a topic no seed touches
    (its twin). Returns the role -> the prompt text the hash sees (its opening)."""
    hi = in_test([f"Hello there my good friend number {i}, how are you doing?" for i in range(40)])[0]
    quote = in_test([f"Here is what my friend number {i} asked me: {TOPICS[2]} Can you do better than that?"
                     for i in range(40)])[0]
    test_topics = in_test(TOPICS[3:])
    shared, neutral = test_topics[0], test_topics[1]
    dialogue = msg("user", "Hey, good morning.") + msg("assistant", "Good morning!")
    seeds = [pair("seed-last", "", "selfie") | {"prompt": dialogue + msg("user", shared)},
             pair("seed-first", TOPICS[0], "selfie"), pair("seed-quoted", TOPICS[2], "selfie")]
    write_method(root, "selfie", [s | {"source": "seed"} for s in seeds], sub="seed")
    write_method(root, "pugc", [pair("pugc-shared", shared, "pugc"), pair("pugc-quote", quote, "pugc"),
                                pair("pugc-neutral", neutral, "pugc")])
    curry = pair("curry-hi", hi, "curry", level=0)
    curry["prompt"] += msg("assistant", "Fine, thanks.") + msg("user", TOPICS[0])
    write_method(root, "curry", [curry], sub="level=0")
    return {"shared": shared, "hi": hi, "quote": quote, "neutral": neutral}


def test_a_pair_sharing_a_user_turn_with_a_seed_pair_trains_and_the_seed_pair_stays(tmp_path):
    """Main pinned only the seed's openings: a PUGC question whose opening the hash put in test while a seed
    dialogue asked it as its last turn (or a Curry dialogue whose opening fell in test ending with a seed question,
    or a test turn quoting one) made the seed pair a train pair holding a test turn, and the gold pair went as
    `test_prompt_in_train`. Every pair sharing (or quoting) a seed turn now trains; the seed pairs stay."""
    opening = sharing_fixture(tmp_path)
    assert all(hashed_test([t])[t] for t in opening.values())  # the hash alone puts each in test
    release, stats = build(tmp_path, methods=["pugc", "selfie", "curry"], test_fraction=FRACTION)
    got = splits(release)
    assert got["selfie"] == {"seed-last": "train", "seed-first": "train", "seed-quoted": "train"}
    assert got["pugc"]["pugc-shared"] == got["pugc"]["pugc-quote"] == got["curry"]["curry-hi"] == "train"
    assert "test_prompt_in_train" not in stats["drops"]
    assert stats["split"]["pinned_by_seed"] == 3  # the PUGC question, the Curry dialogue and the quoting turn
    assert "3 openings moved to train for a seed pair's turn" in (release / "README.md").read_text()
    assert json.loads((release / "audit.json").read_text())["passed"]


def test_a_pair_sharing_no_turn_with_a_seed_pair_keeps_its_hashed_split(tmp_path):
    """The twin: a PUGC pair on a topic no seed pair holds or quotes stays where the hash put it (test), and
    ``pinned_by_seed`` counts only the openings moved for a seed pair; a batch of one row splits the same."""
    opening = sharing_fixture(tmp_path)
    release, stats = build(tmp_path, methods=["pugc", "selfie", "curry"], test_fraction=FRACTION)
    assert hashed_test([opening["neutral"]])[opening["neutral"]]
    assert splits(release)["pugc"]["pugc-neutral"] == "test"
    assert stats["split"]["pinned_seed"] == sum(hashed_test([TOPICS[0], TOPICS[2]]).values()) + hashed_test(
        ["Hey, good morning."])["Hey, good morning."]
    small = tmp_path / "small"
    build_release(export_cfg(methods=["pugc", "selfie", "curry"], test_fraction=FRACTION), tmp_path, small, "fp-test",
                  batch_rows=1)
    assert splits(small) == splits(release)
