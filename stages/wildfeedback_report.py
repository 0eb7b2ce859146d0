"""WildFeedback's account of a run (not one of the paper's steps): the partitions' metrics added up, the
warnings when the model steps wiped out what the rules found, the headline numbers (metrics.json) beside
every figure (details.json), and the one-line summary on the console."""

from __future__ import annotations

from pipeline.config import Wildfeedback
from pipeline.metrics import counted, gate_headline
from stages.wildfeedback_common import OUT


def add_metrics(a: dict, b: dict) -> dict:
    """Two partitions' metrics as one: counts add up, keys from either side are kept.

    >>> add_metrics({"n": 1, "by": {"x": 2}, "detector": "rules"}, {"n": 2, "by": {"y": 1}, "detector": "rules"})
    {'n': 3, 'by': {'x': 2, 'y': 1}, 'detector': 'rules'}
    """
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict):
            out[key] = add_metrics(out[key], value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = out[key] + value
    return out


def collapse_warnings(d: dict, cfg: Wildfeedback, detector: str) -> list[str]:
    """What the model steps wiped out: signals or natural revisions under ``collapse_fraction`` of what the
    rules alone found, or no pair at all from DSAT signals.

    >>> d = {"signals": {"turns_dsat": 0, "turns_sat": 9}, "rules": {"turns_dsat": 20, "turns_sat": 10,
    ...      "natural_revisions": 0}, "pairs": {"natural_revision_found": 0, "out": 0}}
    >>> collapse_warnings(d, type("C", (), {"collapse_fraction": 0.1, "combine": "llm_overrides"}), "rules+llm")
    ['DSAT signals fell from 20 (rules alone) to 0 with detector rules+llm (combine: llm_overrides)']
    """
    out = []
    if detector != "rules":
        for name, final, rules in (("DSAT signals", d["signals"]["turns_dsat"], d["rules"]["turns_dsat"]),
                                   ("SAT signals", d["signals"]["turns_sat"], d["rules"]["turns_sat"]),
                                   ("natural revision pairs", d["pairs"]["natural_revision_found"],
                                    d["rules"]["natural_revisions"])):
            if rules > 0 and final < cfg.collapse_fraction * rules:
                out.append(f"{name} fell from {rules} (rules alone) to {final} with detector {detector} "
                           f"(combine: {cfg.combine})")
    if d["signals"]["turns_dsat"] > 0 and d["pairs"]["out"] == 0 and not out:
        out.append(f"0 pairs from {d['signals']['turns_dsat']} DSAT signals (see details.dropped)")
    return out


def headline(details: dict, gates: dict, warnings: list[str]) -> tuple[dict, dict]:
    """(metrics.json: a few headline numbers, what ``dvc metrics show`` prints; details.json: more numbers,
    the gate reports, and every figure under ``details``)."""
    by_kind = details["pairs"]["out_by_kind"]
    summary = {
        "conversations_selected": details["conversations"]["selected"],
        "signals_sat": details["signals"]["turns_sat"], "signals_dsat": details["signals"]["turns_dsat"],
        "pairs": details["pairs"]["out"], "pairs_natural_revision": by_kind["natural_revision"],
        "pairs_generated": by_kind["generated"] + by_kind["sat"],
        "gates_run": len(gates), "gates_passed": sum(bool(g["passed"]) for g in gates.values()),
        "collapse_warnings": len(warnings),
        "gates": gates,
        "details": {**details, "collapse": warnings},
    }
    numbers = {"rows_in": details["conversations"]["in"], "signals": details["signals"]["turns_with_signal"],
               **{k: summary[k] for k in ("pairs", "pairs_natural_revision", "collapse_warnings")},
               **gate_headline(gates)}
    return numbers, summary


def console_line(summary: dict) -> str:
    """The stage's one-line account on the console, like the other stages'."""
    d = summary["details"]
    return (f"wildfeedback: {counted(d['conversations']['in'], 'conversation')} -> {summary['conversations_selected']} "
            f"selected -> {counted(d['signals']['turns_with_signal'], 'turn')} with a signal (SAT "
            f"{summary['signals_sat']}, DSAT {summary['signals_dsat']}; detector {d['detector_used']}) -> "
            f"{counted(summary['pairs'], 'pair')} "
            f"({summary['pairs_natural_revision']} from natural revisions, {summary['pairs_generated']} generated); "
            f"judge gates passed: {summary['gates_passed']} of {summary['gates_run']} (drops by reason in "
            f"{OUT / 'details.json'})")
