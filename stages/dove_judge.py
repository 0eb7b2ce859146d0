"""DOVE's judge (stages/dove.py, step 3): prompts, the engine step, verdicts, the judge gate, metrics.

The ``judge`` role reads a filled ``pipeline/prompts/dove_judge.txt`` (joint: Instruction (a)/Output (a)
vs Instruction (b)/Output (b)) or ``dove_judge_conditional.txt`` (one instruction, two outputs), every
user or model text escaped inside its fence by ``pipeline.prompt.fill``, and ``choose``s "a" or "b",
once in each position order. Texts too long for the judge are shortened (``pipeline.budget``) to
``max_prompt_chars`` characters and to the engine's context (``llm.max_model_len`` tokens, when the
engine can count them) and flagged ``truncated``; they are never failures.

Before the judge labels real comparisons, ``run_gate`` has it judge the built-in probes
(``pipeline/probes/dove_judge.jsonl``: an instruction with a good output vs one with a bad output, joint
and conditional), each in both orders, scored one point per order: a judge that always answers "a"
(or always "b") scores exactly 0.5.

>>> verdicts(pl.DataFrame({"comparison_id": ["x", "y", "z"], "p_first_ab": [0.9, 0.8, 0.7],
...                        "p_first_ba": [0.7, 0.3, None], "failure": [None, None, "engine error"]}))["outcome"].to_list()
['first', 'tie', 'failure']
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl
import pyarrow as pa

from pipeline.budget import shorten
from pipeline.errors import EngineError, StageError
from pipeline.gates import check_gate, load_probes
from pipeline.llm.base import first_error
from pipeline.llm.chat import InputTooLong, token_fit
from pipeline.metrics import counted
from pipeline.prompt import fill

OPTIONS = ["a", "b"]
DIST_TOLERANCE = 1e-3  # how far from 1 a `choose` distribution may sum before it counts as invalid
ANSWER_TOKENS = 8  # context kept free for the answer ("a"/"b" and the end-of-turn token)
NO_SIGNAL = 0.05  # raw position consistency at or below this: the judge's own verdicts carry no signal

JUDGE_INPUT = ["comparison_id", "conditional", "instruction_text_1", "response_1", "instruction_text_2", "response_2"]
JUDGED_SCHEMA = {"comparison_id": pl.String, "p_first_ab": pl.Float64, "p_first_ba": pl.Float64,
                 "truncated": pl.Boolean, "failure": pl.String}


# --- prompts -------------------------------------------------------------------------------------


def judge_prompt(template: str, instruction_a: str, output_a: str, instruction_b: str, output_b: str) -> str:
    """The template filled with the two examples, every text escaped (it cannot forge a fence marker)."""
    return fill(template, instruction_a=instruction_a, output_a=output_a, instruction_b=instruction_b, output_b=output_b)


def _orders(template: str, d: dict[str, str], conditional: bool) -> tuple[str, str]:
    """The prompts of order AB (item 1 at a) and BA; a conditional comparison has one instruction."""
    i2 = d["i1"] if conditional else d["i2"]
    return (judge_prompt(template, d["i1"], d["r1"], i2, d["r2"]),
            judge_prompt(template, i2, d["r2"], d["i1"], d["r1"]))


def _token_check(engine):
    """``fits(template, data, conditional) -> bool``: both orders' chat prompts, rendered as the judge call
    renders them, within the engine's context (``pipeline.llm.chat.token_fit``), when the engine exposes its
    chat codec (both built-in engines do); None otherwise (the character budget alone applies)."""
    fit = token_fit(engine, ANSWER_TOKENS, judge=True)
    if fit is None:
        return None

    def fits(template: str, data: dict[str, str], conditional: bool) -> bool:
        return all(fit([{"role": "user", "content": text}]) for text in _orders(template, data, conditional))

    return fits


def check_room(templates: dict[str, str], max_chars: int) -> None:
    """Fail before any model work when ``dove.max_prompt_chars`` is no longer than a judge template's own text:
    ``shorten`` would then cut every instruction and output to nothing, and the judge (its probes too) would
    label comparisons it cannot see."""
    own = max(len(judge_prompt(t, "", "", "", "")) for t in templates.values())
    if max_chars <= own:
        raise StageError(f"dove.max_prompt_chars ({max_chars}) leaves no room for the texts: the judge's prompt "
                         f"template alone is {own} characters (pipeline/prompts/dove_judge*.txt); raise it well "
                         "above that (params.yaml: 6000)")


def fitted_prompts(row: dict[str, Any], template: str, max_chars: int, fits) -> tuple[str, str, bool]:
    """(prompt AB, prompt BA, truncated) for one comparison, its texts shortened to the budget."""
    # The two orders hold the same texts, so one budget serves both.
    conditional = bool(row["conditional"])
    lay = template.replace("{instruction_a}", "{i1}").replace("{output_a}", "{r1}")
    lay = lay.replace("{instruction_b}", "{i2}").replace("{output_b}", "{r2}")
    data = {"i1": row["instruction_text_1"], "r1": row["response_1"], "i2": row["instruction_text_2"],
            "r2": row["response_2"]}
    check = (lambda d: fits(template, d, conditional)) if fits else None
    data, cut = shorten(lay, max_chars, check, **data)
    return (*_orders(template, data, conditional), cut)


# --- the engine step -----------------------------------------------------------------------------


def _check_distribution(probs: Any) -> str | None:
    """Why a `choose` result is not a distribution over ["a", "b"], or None when it is."""
    try:
        values = [float(p) for p in probs]
    except (TypeError, ValueError):
        return f"invalid judge distribution: not a list of numbers ({str(probs)[:80]})"
    refused = first_error(probs)
    if refused is not None:  # a row the engine could not score (pipeline.llm.base.FailedValue)
        return f"engine error: {refused}"
    if len(values) != len(OPTIONS):
        return f"invalid judge distribution: {len(values)} probabilities for {len(OPTIONS)} options"
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
        return f"invalid judge distribution: {values} (NaN, infinite or outside [0, 1])"
    if abs(sum(values) - 1.0) > DIST_TOLERANCE:
        return f"invalid judge distribution: sums to {sum(values):.4f}, not 1"
    return None


def _choose(engine, prompts: list[list[dict[str, str]]]) -> tuple[list | None, str | None]:
    try:
        out = engine.choose(prompts, OPTIONS)
    except InputTooLong as e:  # one prompt the judge cannot take: that comparison's failure row
        return None, f"engine error: {type(e).__name__}: {str(e)[:200]}"
    except (EngineError, StageError):  # the engine as a whole (a server down, retries exhausted, a refused key):
        raise  # the step fails in one line and a rerun asks again; as failure rows it would be committed as such
    except Exception as e:  # a model error must not sink the stage: it becomes a failure row
        return None, f"engine error: {type(e).__name__}: {str(e)[:200]}"
    if len(out) != len(prompts):
        return None, f"engine error: {len(out)} results for {len(prompts)} prompts"
    return out, None


def judge(batch: pa.Table, engine, *, joint_template: str, conditional_template: str, max_prompt_chars: int) -> pa.Table:
    """Engine step: P(first item wins) in order AB (first at position a) and BA (first at position b).

    Output: comparison_id, p_first_ab, p_first_ba, truncated (texts shortened to fit), failure (reason;
    the p's are null then). Both orders of a whole batch go to the engine in one ``choose`` call; if
    that call raises, each comparison is retried alone so one bad row does not fail its neighbours.
    """
    rows = batch.select(JUDGE_INPUT).to_pylist()
    fits = _token_check(engine)
    failure: list[str | None] = [None] * len(rows)
    prompts_ab, prompts_ba, truncated = [], [], []
    for r in rows:
        ab, ba, cut = fitted_prompts(r, conditional_template if r["conditional"] else joint_template,
                                     max_prompt_chars, fits)
        prompts_ab.append([{"role": "user", "content": ab}])
        prompts_ba.append([{"role": "user", "content": ba}])
        truncated.append(cut)
    results: dict[int, tuple[Any, Any]] = {}
    out, _ = _choose(engine, prompts_ab + prompts_ba) if rows else ([], None)
    if out is not None:
        results = {i: (out[i], out[len(rows) + i]) for i in range(len(rows))}
    else:
        for i in range(len(rows)):
            one, err_one = _choose(engine, [prompts_ab[i], prompts_ba[i]])
            if one is None:
                failure[i] = err_one
            else:
                results[i] = (one[0], one[1])
    p_ab: list[float | None] = [None] * len(rows)
    p_ba: list[float | None] = [None] * len(rows)
    for i, (d_ab, d_ba) in results.items():
        problem = _check_distribution(d_ab) or _check_distribution(d_ba)
        if problem:
            failure[i] = problem
        else:
            p_ab[i], p_ba[i] = float(d_ab[0]), float(d_ba[1])  # the first item sits at a, then at b
    return pa.table({
        "comparison_id": pa.array([r["comparison_id"] for r in rows], pa.string()),
        "p_first_ab": pa.array(p_ab, pa.float64()),
        "p_first_ba": pa.array(p_ba, pa.float64()),
        "truncated": pa.array(truncated, pa.bool_()),
        "failure": pa.array(failure, pa.string()),
    })


# --- verdicts ------------------------------------------------------------------------------------


def _logit(p: pl.Expr) -> pl.Expr:
    p = p.clip(1e-9, 1 - 1e-9)
    return (p / (1 - p)).log()


def _sigmoid(x: pl.Expr) -> pl.Expr:
    return 1 / (1 + (-x).exp())


def position_bias(judged: pl.DataFrame) -> float:
    """The judge's log-odds for position a over b, median over judged comparisons (0: unbiased).

    Order AB puts item 1 at a, order BA puts item 2 at a; the mean of the two orders' log-odds for a
    cancels the items' own merit and leaves the judge's preference for the position.
    """
    ok = judged.filter(pl.col("failure").is_null() & pl.col("p_first_ab").is_not_null())
    if ok.height == 0:
        return 0.0
    return float(ok.select(((_logit(pl.col("p_first_ab")) - _logit(pl.col("p_first_ba"))) / 2).median()).item())


def verdicts(judged: pl.DataFrame, bias: float = 0.0) -> pl.DataFrame:
    """outcome per comparison: `first`/`second` when both orders prefer that item, `tie` when they
    disagree (or either is exactly 0.5), `failure` when judging failed; confidence = the winner's
    mean probability over both orders.

    ``bias`` (log-odds, see ``position_bias``) is removed from both orders first (`q_first_*`):
    with ``dove.position_calibration: median`` (ours); 0 applies the paper's rule to the raw
    probabilities.
    """
    q = judged.with_columns(
        q_first_ab=_sigmoid(_logit(pl.col("p_first_ab")) - bias) if bias else pl.col("p_first_ab"),
        q_first_ba=_sigmoid(_logit(pl.col("p_first_ba")) + bias) if bias else pl.col("p_first_ba"),
    )
    ab, ba = pl.col("q_first_ab"), pl.col("q_first_ba")
    outcome = (
        pl.when(pl.col("failure").is_not_null()).then(pl.lit("failure"))
        .when((ab > 0.5) & (ba > 0.5)).then(pl.lit("first"))
        .when((ab < 0.5) & (ba < 0.5)).then(pl.lit("second"))
        .otherwise(pl.lit("tie"))
    )
    mean_first = (ab + ba) / 2
    return q.with_columns(outcome=outcome).with_columns(
        confidence=pl.when(pl.col("outcome") == "first").then(mean_first)
        .when(pl.col("outcome") == "second").then(1 - mean_first)
        .otherwise(None)
    )


# --- the judge gate ------------------------------------------------------------------------------


def probe_comparisons() -> pl.DataFrame:
    """The built-in probes as comparisons (item 1 = the good example, item 2 = the bad one)."""
    probes = load_probes("dove_judge")
    return pl.DataFrame({
        "comparison_id": [f"probe-{i}" for i in range(len(probes))],
        "conditional": [p["kind"] == "conditional" for p in probes],
        "instruction_text_1": [p["instruction_good"] for p in probes],
        "response_1": [p["good"] for p in probes],
        "instruction_text_2": [p["instruction_bad"] for p in probes],
        "response_2": [p["bad"] for p in probes],
    })


def probe_report(probes: pl.DataFrame, judged: pl.DataFrame, calibration: str) -> tuple[list[bool], dict[str, Any]]:
    """One answer per probe and order (right = the good example wins that order, after the position
    calibration the stage applies, measured on the probes), and the figures for the report."""
    df = probes.join(judged, on="comparison_id", how="left", maintain_order="left")
    bias = position_bias(df) if calibration == "median" else 0.0
    v = verdicts(df, bias)
    right_ab = (v["q_first_ab"] > 0.5).fill_null(False)
    right_ba = (v["q_first_ba"] > 0.5).fill_null(False)
    raw = verdicts(df)
    ok = df.filter(pl.col("failure").is_null())
    a_votes = int((ok["p_first_ab"] > 0.5).sum() + (ok["p_first_ba"] < 0.5).sum()) if ok.height else 0

    def acc(mask: pl.Series) -> float | None:
        n = int(mask.sum())
        return round(float((right_ab.filter(mask).sum() + right_ba.filter(mask).sum()) / (2 * n)), 4) if n else None

    detail = {
        "comparisons": probes.height, "orders": 2, "position_calibration": calibration,
        "joint_accuracy": acc(~df["conditional"]), "conditional_accuracy": acc(df["conditional"]),
        "both_orders_right": int((right_ab & right_ba).sum()),
        "raw_accuracy": round(float(((raw["q_first_ab"] > 0.5).fill_null(False).sum()
                                     + (raw["q_first_ba"] > 0.5).fill_null(False).sum()) / (2 * probes.height)), 4),
        "position_a_rate": round(a_votes / (2 * ok.height), 4) if ok.height else None,
        "position_bias_logit": round(bias, 4), "failures": int(df["failure"].is_not_null().sum()),
    }
    return [*right_ab.to_list(), *right_ba.to_list()], detail


def run_gate(judge_probes, cfg, model: str, on_failure: str, checkpoint=None) -> dict[str, Any]:
    """Judge the probes with ``judge_probes(table) -> judged table`` (the stage's own engine step), then
    ``pipeline.gates.check_gate``: raises ``JudgeGateError`` below ``dove.gates.judge`` unless
    ``on_failure`` is withhold (then the report says ``passed: false``). ``checkpoint``: the probes' own,
    cleared when the gate stops the stage."""
    probes = probe_comparisons()
    judged = judge_probes(probes.select(JUDGE_INPUT).to_arrow())
    judged_df = pl.from_arrow(judged) if judged is not None else pl.DataFrame(schema=JUDGED_SCHEMA)
    correct, detail = probe_report(probes, judged_df, cfg.position_calibration)
    # The judge must make each distinction the stage labels (one right on every joint probe and at chance on
    # the conditional ones scored 0.75 overall): joint comparisons, and conditional ones with include_conditional
    # (without it none is labelled, and a judge weak on them only must not be failed for it).
    labelled = ("joint", "conditional") if cfg.include_conditional else ("joint",)
    kinds = {k: detail[f"{k}_accuracy"] for k in labelled if detail[f"{k}_accuracy"] is not None}
    return check_gate("dove", "judge", model, correct, min_accuracy=cfg.gates.judge, key="dove.gates.judge",
                      on_failure=on_failure, detail=detail, errors=judged_df["failure"].to_list(), contrasts=kinds,
                      checkpoints=[checkpoint])


# --- metrics -------------------------------------------------------------------------------------


def judgment_metrics(decided: pl.DataFrame) -> dict[str, Any]:
    """Counts by outcome, failure kinds, and the judge's position behaviour (raw and as applied)."""
    by = {r["outcome"]: r["count"] for r in decided["outcome"].value_counts().to_dicts()}
    decided_n = by.get("first", 0) + by.get("second", 0)
    judged = decided_n + by.get("tie", 0)
    raw = verdicts(decided.select("comparison_id", "p_first_ab", "p_first_ba", "failure"))
    raw_n = raw.filter(pl.col("outcome").is_in(["first", "second"])).height
    ok = decided.filter(pl.col("failure").is_null())
    # Share of single-order verdicts (raw) that picked position a: 0.5 is an unbiased judge.
    a_votes = ((ok["p_first_ab"] > 0.5).sum() + (ok["p_first_ba"] < 0.5).sum()) if ok.height else 0
    # A reason reads "<kind>: <detail>"; metrics count kinds, the rejects table keeps the details.
    reasons = decided.filter(pl.col("outcome") == "failure")["failure"].cast(pl.String).str.replace(r"(?s):.*", "").value_counts()
    return {
        "comparisons": decided.height,
        "judged": judged,
        "consistent": decided_n,
        "ties": by.get("tie", 0),
        "failures": by.get("failure", 0),
        "failures_by_reason": {r["failure"]: r["count"] for r in reasons.sort("failure").to_dicts()},
        "truncated_for_judge": int(decided["truncated"].fill_null(False).sum()) if "truncated" in decided.columns else 0,
        "position_consistency_rate": decided_n / judged if judged else None,
        "raw_position_consistency_rate": raw_n / judged if judged else None,
        "position_a_rate": a_votes / (2 * ok.height) if ok.height else None,
        "position_bias_logit": position_bias(decided),
        "mean_confidence": decided.filter(pl.col("confidence").is_not_null())["confidence"].mean(),
    }


def calibration_warning(judgment: dict[str, Any], calibration: str) -> str | None:
    """A note when ``position_calibration: median`` labels pairs for a judge whose raw verdicts carry no
    signal (raw position consistency ~0: every label then comes from the calibration)."""
    raw = judgment["raw_position_consistency_rate"]
    if calibration != "median" or raw is None or raw > NO_SIGNAL or not judgment["consistent"]:
        return None
    return (f"dove: position_calibration=median made {counted(judgment['consistent'], 'label')} from a judge whose raw verdicts "
            f"agree across the two orders on {raw:.0%} of comparisons (position a chosen in "
            f"{judgment['position_a_rate'] or 0:.0%} of single-order answers): the labels come from small deviations "
            "around its position preference, not from judgments it made. Use a stronger judge, or "
            "position_calibration: none (the paper)")
