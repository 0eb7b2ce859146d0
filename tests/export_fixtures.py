"""Small hand-written method outputs (pairs and joint_pairs contracts) and an export config for tests."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import yaml

from pipeline.config import Export
from pipeline.io import write_shards
from pipeline.records import empty_table, to_table
from stages.export import build_release

ROOT = Path(__file__).resolve().parents[1]

TOPICS = [
    "How do I keep sourdough starter alive while travelling for two weeks in summer?",
    "Explain the difference between a process and a thread in an operating system.",
    "Write a short poem about the first snow falling on a quiet mountain village.",
    "What are good stretches after a long run to avoid sore calves the next day?",
    "Summarise the causes of the French Revolution for a high school student.",
    "How can I convert a list of dictionaries to a pandas DataFrame and sort it?",
    "Suggest a weekly vegetarian meal plan for a family of four on a budget.",
    "Why is the sky blue during the day but red and orange at sunset?",
    "Give me tips for a first job interview at a small software company.",
    "How do vaccines train the immune system to recognise a virus?",
    "Plan a three day itinerary for Lisbon with museums and food markets.",
    "What is the time complexity of binary search and why is it logarithmic?",
]


def msg(role: str, content: str) -> list[dict[str, str]]:
    return [{"role": role, "content": content}]


def pair(pid: str, prompt: str, method: str, *, chosen: str | None = None, rejected: str | None = None,
         confidence: float | None = 0.7, margin: float | None = 1.0, level: int | None = None) -> dict:
    return {
        "pair_id": pid,
        "prompt": msg("user", prompt),
        "chosen": msg("assistant", chosen or f"A careful, complete answer to: {prompt}"),
        "rejected": msg("assistant", rejected or f"idk ({pid})"),
        "score_chosen": 4.0,
        "score_rejected": 4.0 - (margin or 0.0),
        "margin": margin,
        "confidence": confidence,
        "label_smoothing": 0.0,
        "noisy": False,
        "level": level,
        "method": method,
        "source": "fixture",
        "lineage": json.dumps({"stage": method, "model": f"tiny-{method}", "fingerprint": f"fp-{method}",
                               "inputs": [pid]}),
    }


def joint(pid: str, prompt_a: str, prompt_b: str, confidence: float = 0.8) -> dict:
    return {
        "pair_id": pid,
        "chosen_prompt": msg("user", prompt_a),
        "chosen": msg("assistant", f"A good answer to: {prompt_a}"),
        "rejected_prompt": msg("user", prompt_b),
        "rejected": msg("assistant", "no."),
        "confidence": confidence,
        "method": "dove",
        "lineage": json.dumps({"stage": "dove", "model": "tiny-judge", "fingerprint": "fp-dove"}),
    }


def write_method(root: Path, method: str, rows: list[dict], sub: str | None = None) -> Path:
    name = "joint_pairs" if method == "dove" else "pairs"
    out = root / "data" / method / "pairs"
    if sub:
        out = out / sub
    write_shards(to_table(rows, name), out, name=name)
    return out


def write_held_out(root: Path, prompts: list[str]) -> Path:
    """Selfie's held-out labelled prompts, as the stage writes them (``data/selfie/test``, pairs contract), and
    WildFeedback's test set (``data/wildfeedback/test``, the other default ``export.held_out`` set) as its stage
    writes it when it holds nothing out: empty."""
    out = root / "data" / "selfie" / "test"
    write_shards(to_table([pair(f"test{i}", p, "selfie") for i, p in enumerate(prompts)], "pairs"), out, name="pairs")
    write_shards(empty_table("pairs"), root / "data" / "wildfeedback" / "test", name="pairs")
    return out


def export_cfg(**overrides) -> Export:
    """The project's export params, with absolute eval-set paths and ``overrides`` applied."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text())["export"]
    for s in data["decontamination"]["sets"]:
        s["path"] = str((ROOT / s["path"]).resolve())
        s["optional"] = False  # tests run beside shared/: a missing set is a failure here
    data["summary_png"] = False  # matplotlib costs seconds per build; one test turns it on
    data["held_out"] = []  # the fixtures write no data/selfie/test; the held-out tests set it
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Export.model_validate(data)


def broken(topic: str, word: str) -> str:
    """``topic`` with ``word`` inserted mid-way: another method's prompt on it that does not hold it (or another
    method's) whole, since a train prompt holding a test prompt is a leak export removes (``test_prompt_in_train``)."""
    words = topic.split()
    return " ".join(words[: len(words) // 2] + [word] + words[len(words) // 2:])


def standard_methods(root: Path) -> None:
    """pugc + selfie (12 prompts), curry with two levels per prompt, dove joint pairs."""
    write_method(root, "pugc", [pair(f"pugc{i}", t, "pugc", confidence=0.6 + i / 100) for i, t in enumerate(TOPICS[:8])])
    write_method(root, "selfie", [pair(f"selfie{i}", t, "selfie", confidence=0.55) for i, t in enumerate(TOPICS[8:])])
    for level in (0, 1):
        prompt = "For my class project number {i}, {t} Please answer with concrete examples, numbers and a short summary."
        rows = [pair(f"curry{level}-{i}", prompt.format(i=i, t=broken(t.lower(), "(really)")), "curry", level=level,
                     margin=2.0 - level, rejected=f"weak answer {level} {i}") for i, t in enumerate(TOPICS)]
        write_method(root, "curry", rows, sub=f"level={level}")
    write_method(root, "dove", [joint(f"dove{i}", f"Dove task {i}: {broken(TOPICS[i], '(honestly)')}",
                                      f"Dove task {i}: {broken(TOPICS[(i + 1) % 12], '(truly)')}") for i in range(12)])


def build(root: Path, **overrides) -> tuple[Path, dict]:
    """Build the release of ``root`` with ``export_cfg(**overrides)``: (its folder, its stats)."""
    stats = build_release(export_cfg(**overrides), root, root / "data" / "release", "fp-test")
    return root / "data" / "release", stats


def removed(release: Path) -> pl.DataFrame:
    """The release's removed.jsonl as a table (an empty one when nothing was removed)."""
    return pl.read_ndjson(release / "removed.jsonl") if (release / "removed.jsonl").stat().st_size else pl.DataFrame()
