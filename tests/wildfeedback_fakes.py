"""Shared by the WildFeedback tests: params, hand-written conversations, a scripted engine, a stage runner."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import yaml

import pipeline.llm
from pipeline.config import Params
from pipeline.gates import load_probes
from pipeline.io import read_table, write_shards
from pipeline.llm.base import Completion, GenerationFailure
from pipeline.records import to_table
from stages import wildfeedback as wf
from stages.wildfeedback_detect import FeedbackJudgment
from stages.wildfeedback_models import PreferenceSummary

ROOT = Path(__file__).resolve().parents[1]


def make_params(**wf_overrides) -> Params:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    execution = wf_overrides.pop("_execution", {})
    data.setdefault("ingest", {"sources": [], "max_reject_fraction": 0.5, "max_record_bytes": 1 << 20})
    # The model paths are what these tests pin: rules+llm unless a test says otherwise.
    data["wildfeedback"] = {**data["wildfeedback"], "sources": ["logs"], "detector": "rules+llm", **wf_overrides}
    data["execution"] = {**data["execution"], "backend": "local", "batch_size": 3, "checkpoint_rows": 4,
                         **execution}
    return Params.model_validate(data)


def conv(cid: str, turns: list[str], *, language="en", flags=(), source="logs", system: str | None = None) -> dict:
    msgs = [{"role": "system", "content": system}] if system else []
    msgs += [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    return {"conversation_id": cid, "messages": msgs, "source": source, "language": language, "flags": list(flags)}


CONVS = [
    # DSAT on turn 1, revision turn 3 earns SAT at turn 4: a natural revision pair.
    conv("c1", ["Capital of Australia?", "Sydney.", "That's wrong, it's not Sydney.", "Canberra.", "Thanks, perfect!"]),
    # Thanked new task only: SAT, no DSAT, no pair.
    conv("c2", ["Write a haiku.", "Leaves fall softly.", "Thanks! Now write a limerick.", "There once was a cat.",
                "What rhymes with cat?"]),
    # Style complaint, never fixed: a generated pair candidate. Has a system message.
    conv("c3", ["Explain DNS.", "DNS is a long story. " * 5, "Way too long, make it shorter.", "DNS maps names.",
                "Who invented it?"], system="You are terse."),
    conv("c4", ["Hi", "Hello!", "Bye"]),  # too few user turns
    conv("c5", ["a", "b", "that's wrong", "d", "e"], language="fr"),
    conv("c6", ["a", "b", "that's wrong", "d", "e"], flags=["toxic"]),
    conv("c7", ["a", "b", "that's wrong", "d", "e"], source="other"),
    conv("c8", ["Hi", "Hello!", "ok", "Sure.", "thanks"], language=None),
]


def frame(rows=CONVS) -> pl.DataFrame:
    return pl.from_arrow(to_table(rows, "conversations"))


_DETECTOR_PROBES = {p["user"]: p for p in load_probes("wildfeedback_detector")}
_GOOD_ANSWERS = tuple(p["follows"] for p in load_probes("wildfeedback_judge"))


def fenced(text: str, name: str) -> str:
    """The body of the last ``<<<NAME`` ... ``NAME>>>`` fence in a prompt."""
    return text.rsplit(f"<<<{name}\n", 1)[1].split(f"\n{name}>>>", 1)[0]


class FakeEngine:
    """Scripted engine: answers follow keywords in the prompt, deterministically; it answers the built-in
    probes like a judge that discriminates, unless told to be ``silent`` (no signal anywhere, as the random
    tiny model), ``dsat_always`` (right on SAT, DSAT on every probe turn), ``failing`` (every detector call fails) or position-biased (``judge_bias="always_a"``) or
    undecided (``judge_bias="undecided"``: 0.5 for both answers) or against the policy's sample (``judge_bias=
    "against_sample"``: any other answer wins, as a SAT turn's liked answer should). Every prompt it sees is kept in ``seen``."""

    name = "fake"

    def __init__(self, judge_bias: str = "fair", detector: str = "keywords", answer: str = "PREFERRED short answer.",
                 finish: str = "stop", rationale: str = "scripted", preference: str = "Be concise. Answer in one sentence"):
        self.judge_bias, self.detector, self.answer, self.finish = judge_bias, detector, answer, finish
        self.rationale, self.preference = rationale, preference
        self.calls: list[tuple[str, int]] = []
        self.seen: list[tuple[str, list[dict]]] = []

    def _judgment(self, text: str):
        user = fenced(text, "USER_TURN")
        if "FAIL" in user or self.detector == "failing":
            return GenerationFailure(error="cut at max_new_tokens", raw='{"sat": tr', attempts=3)
        if self.detector == "silent":
            sat = dsat = False
        elif user in _DETECTOR_PROBES:
            sat, dsat = _DETECTOR_PROBES[user]["sat"], _DETECTOR_PROBES[user]["dsat"] or self.detector == "dsat_always"
        else:
            dsat = "wrong" in user or "too long" in user.lower()
            sat = "thanks" in user.lower()
        return FeedbackJudgment(sat=sat, sat_categories=["Gratitude"] if sat else [], dsat=dsat,
                                dsat_categories=["Factual_Error"] if dsat else [], refers_to_preceding=True,
                                rationale=self.rationale)

    def generate(self, prompts, n=1, sampling=None, schema=None):
        kind = schema.__name__ if schema else "text"
        self.calls.append((kind, len(prompts)))
        self.seen += [(kind, p) for p in prompts]
        out = []
        for p in prompts:
            text = p[-1]["content"]
            if schema is FeedbackJudgment:
                out.append([self._judgment(text)])
            elif schema is PreferenceSummary:
                out.append([PreferenceSummary(preference=self.preference, reasonable=True,
                                              safe="UNSAFE" not in fenced(text, "FEEDBACK"))])
            else:
                system = p[0]["content"] if p[0]["role"] == "system" else ""
                prefer = "PREFERENCE" in system and "Be concise" in fenced(system, "PREFERENCE")
                out.append([Completion(self.answer if prefer else "policy sample", self.finish)] * n)
        return out

    def choose(self, prompts, options):
        assert options == ["A", "B"]
        self.seen += [("choose", p) for p in prompts]
        out = []
        for p in prompts:
            a = fenced(p[-1]["content"], "ANSWER_A")
            if self.judge_bias == "always_a":
                out.append([0.9, 0.1])
            elif self.judge_bias == "undecided":
                out.append([0.5, 0.5])
            elif self.judge_bias == "against_sample":
                out.append([0.2, 0.8] if a == "policy sample" else [0.8, 0.2])
            else:
                good = a.startswith("PREFERRED") or a.startswith(_GOOD_ANSWERS)
                out.append([0.8, 0.2] if good else [0.2, 0.8])
        return out

    def logprobs(self, prompts, responses):
        raise AssertionError("WildFeedback never scores given text with logprobs")


def run_stage(tmp_path, monkeypatch, engine, rows=CONVS, **overrides):
    """Run the whole stage on ``rows`` with ``engine``: (signals, pairs, rejects, details.json)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline.llm, "get_engine", lambda cfg: engine, raising=False)
    write_shards(to_table(rows, "conversations"), tmp_path / "data/ingest/conversations", name="conversations")
    wf.main(make_params(**overrides))
    out = tmp_path / "data/wildfeedback"
    return (read_table(out / "signals", "signals"), read_table(out / "pairs", "pairs"),
            read_table(out / "rejects", "rejects"), json.loads((out / "details.json").read_text()))


def kinds(pairs) -> list[str]:
    return sorted(json.loads(x)["kind"] for x in pairs.column("lineage").to_pylist())
