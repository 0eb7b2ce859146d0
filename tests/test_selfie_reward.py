"""Selfie / SPA rewards and pairs without the stage: implicit rewards from two real tiny models against
direct teacher forcing, which samples make a pair, and the reward gate params.yaml sets (METHODS.md §3).

The stage end to end, with scripted engines, is in test_selfie_stage.py."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest
import yaml

from pipeline.records import MESSAGES_TYPE, check_table
from stages import selfie, selfie_output, selfie_reward
from tests.selfie_fakes import SAMPLING, selfie_params, user

# --- which samples make a pair; the reward gate params.yaml sets -------------------------------------


def test_pick_pairs_pairs_distinct_texts_only():
    texts = {
        "p1": ["Paris.", "Paris. ", "Lyon."],  # best "Paris." and worst "Lyon." differ: paired
        "p2": ["Paris.", "Lyon.", "Paris.\n"],  # argmin is the same answer as argmax: take "Lyon."
        "p3": ["It is Paris.", "It is  Paris."],  # whitespace variants only: no pair
        "p4": ["Same", "Same"],  # two identical samples (their rewards may differ by batch numerics)
        "p5": ["It is Paris.", "it is PARIS."],  # case variants only: the same answer, no pair
    }
    rewards = {"p1": [2.0, 1.0, 0.0], "p2": [2.0, 1.0, 0.0], "p3": [1.0, 0.9], "p4": [1.0, 0.999], "p5": [1.0, 0.5]}
    scored = pl.DataFrame(
        [
            {
                "prompt_id": p,
                "response_id": f"{p}-{j}",
                "text": t,
                "reward": rewards[p][j],
                "n_tokens_policy": 2,
                "finish_reason": "stop",
            }
            for p, ts in texts.items()
            for j, t in enumerate(ts)
        ]
    )
    pairs, dropped = selfie.pick_pairs(scored, iteration=1)
    got = {r["prompt_id"]: (r["chosen_text"], r["rejected_text"], r["margin"]) for r in pairs.to_dicts()}
    assert got == {"p1": ("Paris.", "Lyon.", 2.0), "p2": ("Paris.", "Lyon.", 1.0)}
    assert dropped == {"nonfinite_reward": 0, "same_text": 3, "tie": 0}


def test_params_gate_the_reward_for_real_models_and_lower_it_for_tiny():
    from pipeline.config import resolve_params
    from tests.conftest import ROOT

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert resolve_params(data).selfie.gates.reward == 0.0  # tiny@1 vs tiny: lowered, announced
    real = {
        **data,
        "selfie": {**data["selfie"], "policy_model": "org/dpo-iter1", "reference_model": "org/sft"},
    }
    assert resolve_params(real).selfie.gates.reward == 0.75
    assert resolve_params(real).selfie.sampling.max_new_tokens == 300  # SPA
    # the rest of what METHODS.md section 3 fixes from the paper: K = 2 at temperature 0.7, top_p 1.0, summed
    # log-probs, beta = 0.1; the least confident 10% smoothed with alpha = 0.1
    sel = resolve_params(real).selfie
    assert (sel.samples_per_prompt, sel.sampling.temperature, sel.sampling.top_p, sel.length_normalize) == (
        2, 0.7, 1.0, False)
    assert (sel.beta, sel.refine_fraction, sel.alpha) == (0.1, 0.1, 0.1)


def test_same_model_means_the_same_weights_loaded_the_same_way():
    from pipeline.config import resolve_params
    from tests.conftest import ROOT

    params = resolve_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    policy = params.selfie.role(params.llm, "policy")
    assert selfie_reward.same_model(policy, policy.model_copy())
    # another dtype or context length gives other log-probabilities: the reference pass is needed
    assert not selfie_reward.same_model(policy, policy.model_copy(update={"dtype": "float16"}))
    assert not selfie_reward.same_model(policy, policy.model_copy(update={"max_model_len": policy.max_model_len + 1}))
    assert not selfie_reward.same_model(policy, policy.model_copy(update={"model": "org/other"}))


def test_same_repo_at_another_revision_is_another_model():
    """SPA's reward is log pi_policy - log pi_reference: a policy trained from the reference and pushed as
    another commit of the same Hub repo must get its own log-probability pass, not the reference's (which
    made every reward 0 and labelled no pair)."""
    from pipeline.config import resolve_params
    from tests.conftest import ROOT

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["selfie"].update(policy_model="org/spa-mistral", reference_model="org/spa-mistral")
    raw["selfie"]["roles"] = {"policy": {"revision": "a" * 40}, "reference": {"revision": "b" * 40}}
    params = resolve_params(raw)
    policy, reference = params.selfie.role(params.llm, "policy"), params.selfie.role(params.llm, "reference")
    assert (policy.revision, reference.revision) == ("a" * 40, "b" * 40)
    assert not selfie_reward.same_model(policy, reference)
    assert selfie_reward.same_model(policy, policy.model_copy())
    # another OpenAI-compatible server may serve other weights under the same model name
    served = policy.model_copy(update={"backend": "openai", "revision": None, "base_url": "http://a:8000/v1"})
    assert not selfie_reward.same_model(served, served.model_copy(update={"base_url": "http://b:8000/v1"}))


# --- the real tiny engine: implicit rewards vs direct teacher forcing --------------------------------


@pytest.fixture(scope="module")
def two_tiny_models(tmp_path_factory) -> tuple[str, str]:
    """The built-in tiny model and a different one: a copy with every weight perturbed (seed 1)."""
    import shutil
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.llm.tiny import resolve_model

    base = Path(resolve_model("tiny"))
    other = tmp_path_factory.mktemp("models") / "tiny-perturbed"
    shutil.copytree(base, other)
    model = AutoModelForCausalLM.from_pretrained(other, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(1)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(other)
    return str(base), str(other)


def direct_logprobs(folder: str, prompts: list, responses: list[str]) -> list[tuple[float, int]]:
    """Teacher forcing with plain transformers, one sequence at a time: the response's tokens plus the
    end-of-turn token, after the templated prompt (generation prompt on)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    out = []
    for prompt, response in zip(prompts, responses, strict=True):
        p_ids = tok(
            tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
            add_special_tokens=False,
        )["input_ids"]
        full = tok.apply_chat_template([*prompt, {"role": "assistant", "content": response}], tokenize=False)
        ids = tok(full, add_special_tokens=False)["input_ids"]
        assert ids[: len(p_ids)] == p_ids
        end = ids.index(tok.eos_token_id, len(p_ids)) + 1
        with torch.no_grad():
            logits = model(torch.tensor([ids[:end]])).logits[0].double()
        lp = torch.log_softmax(logits[len(p_ids) - 1 : end - 1], dim=-1)
        target = torch.tensor(ids[len(p_ids) : end]).unsqueeze(-1)
        out.append((float(lp.gather(-1, target).sum()), end - len(p_ids)))
    return out


def test_implicit_rewards_with_two_tiny_models_match_direct_teacher_forcing(
    two_tiny_models, tmp_path, monkeypatch
):
    from pipeline.config import LLM, Execution, LLMOverride, resolve_role
    from tests.conftest import ROOT

    monkeypatch.chdir(tmp_path)  # the step checkpoints live under ./.prefpipe

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    base, execution = LLM.model_validate(data["llm"]), Execution.model_validate(data["execution"])

    policy_path, reference_path = two_tiny_models
    sel = selfie_params(
        policy_model=policy_path,
        reference_model=reference_path,
        sampling={**SAMPLING.model_dump(), "max_new_tokens": 40},
        gates={"reward": 0.0},  # two random-weights models
    )
    policy, reference = sel.role(base, "policy"), sel.role(base, "reference")
    assert policy == resolve_role(base, LLMOverride(model=policy_path))
    prompts = check_table(
        pa.table(
            {
                "prompt_id": ["p1", "p2", "p3"],
                "messages": pa.array(
                    [
                        user("Write a haiku about rain."),
                        user("What is 2 + 2?"),
                        [{"role": "system", "content": "Be brief."}, *user("Name a colour.")],
                    ],
                    MESSAGES_TYPE,
                ),
                "source": ["t"] * 3,
                "origin_id": ["1", "2", "3"],
            }
        ),
        "prompts",
    )
    scored, unscored = selfie.annotate(prompts, sel, execution, policy, reference)
    assert (
        scored.height + unscored["cut_off"] + unscored["empty"] == 6
        and scored.height > 0
        and set(scored.get_column("generator")) == {policy_path}
    )
    msgs = {r["prompt_id"]: r["messages"] for r in prompts.to_pylist()}
    convs = [msgs[p] for p in scored.get_column("prompt_id")]
    texts = scored.get_column("text").to_list()
    pol = direct_logprobs(policy_path, convs, texts)
    ref = direct_logprobs(reference_path, convs, texts)
    for row, (lp_p, n_p), (lp_r, n_r) in zip(scored.to_dicts(), pol, ref, strict=True):
        assert (row["n_tokens_policy"], row["n_tokens_reference"]) == (n_p, n_r)
        assert row["logprob_policy"] == pytest.approx(lp_p, abs=1e-3)
        assert row["logprob_reference"] == pytest.approx(lp_r, abs=1e-3)
        assert row["reward"] == pytest.approx(lp_p - lp_r, abs=1e-3)
    assert scored.get_column("reward").abs().min() > 1e-3  # two different models: non-zero rewards
    normed = selfie_reward.implicit_reward(scored, length_normalize=True).get_column("reward").to_list()
    for r, (lp_p, n_p), (lp_r, n_r) in zip(normed, pol, ref, strict=True):
        assert r == pytest.approx(lp_p / n_p - lp_r / n_r, abs=1e-4)

    # the same model in both roles: every reward is exactly 0, reported, and no pair survives
    same, _ = selfie.annotate(prompts, sel, execution, policy, policy)
    assert same.get_column("reward").to_list() == [0.0] * scored.height
    assert selfie_output.reward_report(same)["all_zero"] is True
    assert selfie.pick_pairs(same, iteration=1)[0].height == 0

    # the gate runs the probes through the same teacher forcing; random weights are not held to it here
    report = selfie_reward.reward_gate(sel, execution, policy, reference)
    assert report["probes"] == 24 and report["lowered"] and report["detail"]["pairs"] == 12
    assert report["detail"]["good_wins"] + report["detail"]["bad_wins"] == 12  # two models: no exact ties
