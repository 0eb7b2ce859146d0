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
