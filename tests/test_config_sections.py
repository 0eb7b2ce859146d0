"""params.yaml rules of one section or across sections: source names, Curry's input gaps, tiny overrides, tiny
model names, languages, drop flags, leak patterns, model names, empty lists, base URLs, Ray addresses."""

from __future__ import annotations

import pytest

from pipeline.config import fingerprint, load_params
from tests.params_edits import error_of, write


@pytest.mark.parametrize(("section", "field"), [("wildfeedback", "sources"), ("pugc", "sources"),
                                                ("selfie", "pair_sources"), ("selfie", "prompt_sources"),
                                                ("dove", "pair_sources")])
def test_every_source_name_is_checked_with_a_did_you_mean(tmp_path, good, section, field):
    name = good[section][field][0]
    good[section][field][0] = name[:-1]  # a typo: one letter short
    msg = error_of(tmp_path, good)
    assert (f"params.yaml: {section}.{field}[0]: {name[:-1]!r} is not an ingest source; did you mean {name!r}? "
            "(ingest.sources: sample_conversations, sample_posts, sample_prompts, sample_seed_pairs, sample_rated)") in msg
    good[section][field][0] = "something_else"
    assert f"{section}.{field}[0]: 'something_else' is not an ingest source (ingest.sources:" in error_of(tmp_path, good)


@pytest.mark.parametrize(("section", "field", "other", "reads"), [
    ("wildfeedback", "sources", "sample_posts", "conversations (sources of kind conversations)"),
    ("pugc", "sources", "sample_conversations", "documents (sources of kind documents)"),
    ("selfie", "pair_sources", "sample_rated", "pairs (sources of kind pairs)"),
    ("selfie", "prompt_sources", "sample_seed_pairs", "prompts (sources of kind prompts or rated)"),
    ("dove", "pair_sources", "sample_prompts", "pairs (sources of kind pairs)"),
])
def test_a_source_of_another_kind_is_a_params_error(tmp_path, good, section, field, other, reads):
    """A new user's walk-through: `pugc.sources: [sample_conversations]` passed validation, and the stage then said
    "no documents from pugc.sources ...: add the source to ingest.sources", which already held it."""
    kind = next(s["kind"] for s in good["ingest"]["sources"] if s["name"] == other)
    good[section][field] = [other]
    assert (f"params.yaml: {section}.{field}[0]: {other!r} is an ingest source of kind {kind!r}; {section}.{field} "
            f"reads {reads}") in error_of(tmp_path, good)


def test_dove_pair_sources_of_another_pairs_folder_are_not_ingest_names(tmp_path, good):
    good["dove"]["pairs"] = "data/wildfeedback/pairs"
    good["dove"]["pair_sources"] = ["whatever_wildfeedback_writes"]
    assert load_params(write(tmp_path, good)).dove.pair_sources == ["whatever_wildfeedback_writes"]


def test_a_curry_input_gap_given_as_a_key_takes_that_params_number_after_the_tiny_overrides(tmp_path, good):
    # The samples (tiny): PUGC's tiny min_margin; a real model: PUGC's own margin, the paper default 0.5.
    pugc_input = next(i for i, s in enumerate(good["curry"]["inputs"]) if s["prompts"] == "data/pugc/queries")
    assert good["curry"]["inputs"][pugc_input]["min_gap"] == "pugc.min_margin"
    tiny = load_params(write(tmp_path, good))
    assert tiny.curry.inputs[pugc_input].min_gap == tiny.pugc.min_margin == 0.0001
    good["llm"]["model"] = "smollm2"
    real = load_params(write(tmp_path, good))
    assert real.curry.inputs[pugc_input].min_gap == real.pugc.min_margin == 0.5
    assert fingerprint(real.curry) != fingerprint(tiny.curry)  # the number, not the key, is what Curry ran with
    assert [s.min_gap for i, s in enumerate(real.curry.inputs) if i != pugc_input] == [None, None]


def test_tiny_overrides_apply_only_when_every_model_of_the_section_is_tiny(tmp_path, good):
    good["pugc"]["roles"]["judge"] = {**(good["pugc"]["roles"]["judge"] or {}), "model": "smollm2"}
    mixed = load_params(write(tmp_path, good))  # the policy is still tiny, the judge is not
    assert mixed.pugc.min_margin == 0.5 and not mixed.applied_overrides("pugc")


def test_a_section_left_on_tiny_in_a_real_model_run_keeps_its_gates(tmp_path, good):
    """`dvc exp run -S llm.model=smollm2` leaves Selfie on its own tiny@1 vs tiny: with its gate lowered its
    random-weights pairs (and Curry-DPO's pairs from their rewards) reached the real-model release. Only a run
    whose llm.model is tiny lowers a tiny section's gates; in a real-model run its judge must pass them."""
    assert good["selfie"]["policy_model"] == "tiny@1" and good["selfie"]["reference_model"] == "tiny"
    tiny = load_params(write(tmp_path, good))
    assert tiny.selfie.gates.reward == 0.0 and tiny.applied_overrides("selfie") == {"gates.reward": 0.0}
    good["llm"]["model"] = "smollm2"
    real = load_params(write(tmp_path, good))
    assert (real.selfie.policy_model, real.selfie.reference_model) == ("tiny@1", "tiny")
    assert real.selfie.gates.reward == 0.75 and not real.applied_overrides("selfie")


@pytest.mark.parametrize(("value", "expected"), [
    ("pugc.min_marign", "curry.inputs[1].min_gap: 'pugc.min_marign' names no non-negative number in params"),
    ("pugc.roles", "curry.inputs[1].min_gap: 'pugc.roles' names no non-negative number in params"),
    ("half a point", "curry.inputs[1].min_gap"),
    (-0.5, "curry.inputs[1].min_gap"),
])
def test_a_curry_input_gap_key_must_name_a_number(tmp_path, good, value, expected):
    good["curry"]["inputs"][1]["min_gap"] = value
    assert expected in error_of(tmp_path, good)


def test_a_bad_tiny_override_is_named_under_tiny_overrides_whether_or_not_it_applies(tmp_path, good):
    """The section itself is spelt right: the message must point at the override, also when a real model
    means the overrides do not apply (a typo there would otherwise surface only on the next tiny run)."""
    good["tiny_overrides"]["pugc"]["min_margn"] = good["tiny_overrides"]["pugc"].pop("min_margin")
    good["tiny_overrides"]["dove"]["gates"] = {"judge": "0.0"}
    for model in ("tiny", "Qwen/Qwen2.5-7B-Instruct"):
        good["llm"]["model"] = model
        msg = error_of(tmp_path, good)
        assert "tiny_overrides.pugc.min_margn: unknown key; did you mean 'min_margin'?" in msg
        assert "tiny_overrides.dove.gates.judge: Input should be a valid number (got '0.0')" in msg
        assert ": pugc.min_margn" not in msg and ": dove.gates.judge" not in msg


@pytest.mark.parametrize(("where", "value"), [
    (("llm", "model"), "tiny@x"),
    (("selfie", "policy_model"), "tiny@one"),
    (("selfie", "reference_model"), "tiny@"),
    (("dove", "roles", "judge", "model"), "tiny@-1"),
])
def test_a_tiny_model_name_without_a_seed_number_is_a_params_error_naming_the_key(tmp_path, good, where, value):
    """``tiny@x`` used to escape validation as a traceback from inside ``resolve_params``."""
    node = good
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    msg = error_of(tmp_path, good)
    assert f"{'.'.join(where)}: expected tiny@<non-negative integer seed>, e.g. tiny@1 (got {value!r})" in msg


def test_tiny_model_names_with_a_seed_load(tmp_path, good):
    good["llm"]["model"], good["selfie"]["policy_model"] = "tiny@3", "tiny@12"
    params = load_params(write(tmp_path, good))
    assert (params.llm.model, params.selfie.policy_model) == ("tiny@3", "tiny@12")
    assert params.applied_overrides("pugc")  # still the tiny model: its overrides apply


def test_a_check_across_sections_names_its_key_after_the_file(tmp_path, good):
    """Checks of the whole params (a role resolved with llm, tiny_overrides' sections, a Curry gap key) name
    their key themselves; they were printed after a ``<root>:`` placeholder."""
    good["curry"]["inputs"][1]["min_gap"] = "pugc.min_marign"
    assert f"  {tmp_path / 'params.yaml'}: curry.inputs[1].min_gap: 'pugc.min_marign' names" in error_of(tmp_path, good)
    good["curry"]["inputs"][1]["min_gap"] = 0.5
    good["pugc"]["roles"]["judge"] = {"backend": "openai"}
    msg = error_of(tmp_path, good)
    assert f"  {tmp_path / 'params.yaml'}: pugc.roles.judge: backend openai needs base_url" in msg
    assert "<root>" not in msg


@pytest.mark.parametrize(("value", "expected"), [
    ("EN", "pugc.languages[0]: not a language code the identifier answers; did you mean 'en'? use ISO 639-1"),
    ("english", "pugc.languages[0]: not a language code the identifier answers; use ISO 639-1 codes: en, zh,"),
    ("nb ", "pugc.languages[0]: not a language code the identifier answers; did you mean 'nb'?"),
])
def test_pugc_languages_are_codes_the_identifier_answers(tmp_path, good, value, expected):
    """`languages: [english]` (or `EN`) validated and then dropped every document as `other_language`."""
    good["pugc"]["languages"] = [value]
    assert expected in error_of(tmp_path, good)
    good["pugc"]["languages"] = ["en", "de"]
    assert load_params(write(tmp_path, good)).pugc.languages == ["en", "de"]


def test_drop_flags_are_flags_ingest_writes(tmp_path, good):
    """`drop_flags: [toxc]` validated and kept every toxic conversation."""
    good["wildfeedback"]["drop_flags"] = ["toxc", "redacted"]
    assert ("wildfeedback.drop_flags[0]: Input should be 'toxic', 'redacted' or 'synthetic' (got 'toxc')"
            in error_of(tmp_path, good))
    good["wildfeedback"]["drop_flags"] = ["toxic", "synthetic"]
    assert load_params(write(tmp_path, good)).wildfeedback.drop_flags == ["toxic", "synthetic"]


@pytest.mark.parametrize(("pattern", "why"), [
    (r"according to (the|this|that\b", "unclosed group"),
    (r"(?<!not )the post", "look-around, including look-ahead and look-behind, is not supported"),
])
def test_a_leak_pattern_polars_cannot_run_is_a_params_error(tmp_path, good, pattern, why):
    """Was a polars traceback from PUGC's query cleaning, after the gates and the query generation had run."""
    good["pugc"]["leak_patterns"] = [r"\bthe author\b", pattern]
    assert f"pugc.leak_patterns[1]: not a regex polars can run ({why}) (got {pattern!r})" in error_of(tmp_path, good)


@pytest.mark.parametrize("value", ["", "  ", " tiny"])
def test_an_empty_or_padded_model_name_is_a_params_error(tmp_path, good, value):
    """``model: ''`` passed validation and failed at the engine as 'the folder holds no config.json' (the
    current folder); ``' tiny'`` went to the Hub."""
    good["llm"]["model"] = value
    assert (f"llm.model: expected a model name without spaces around it: tiny, smollm2, a Hugging Face model id "
            f"(ORG/NAME) or a local folder (got {value!r})") in error_of(tmp_path, good)


@pytest.mark.parametrize("key", ["languages", "sources"])
def test_an_empty_wildfeedback_list_is_a_params_error(tmp_path, good, key):
    """``wildfeedback.languages: []`` passed and dropped every conversation with a language (exit 0, no pairs);
    ``sources: []`` failed only when the stage ran (pugc's lists were already checked)."""
    good["wildfeedback"][key] = []
    assert f"wildfeedback.{key}: List should have at least 1 item after validation, not 0" in error_of(tmp_path, good)


def test_an_export_split_with_no_train_rows_is_a_params_error(tmp_path, good):
    good["export"]["test_fraction"] = 1
    assert "export.test_fraction: Input should be less than 1 (got 1)" in error_of(tmp_path, good)


def test_an_empty_dedup_priority_is_a_params_error(tmp_path, good):
    good["export"]["dedup"]["priority"] = []
    assert "export.dedup.priority: List should have at least 1 item after validation, not 0" in error_of(tmp_path, good)


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda d: d["selfie"]["split"]["pools"].__setitem__(0, "ten"),
     "selfie.split.pools[0]: Input should be a valid integer or a valid number (got 'ten')"),
    (lambda d: d["curry"]["inputs"][0].__setitem__("min_gap", -1),
     "curry.inputs[0].min_gap: Input should be greater than or equal to 0 (got -1)"),
    (lambda d: d["curry"]["inputs"][0].__setitem__("min_gap", [1]),
     "curry.inputs[0].min_gap: Input should be a valid number or a valid string"),
])
def test_a_value_of_a_key_with_several_types_is_one_error_at_the_key(tmp_path, good, edit, expected):
    """Was one line per member type, named by pydantic's tags: 'selfie.split.pools[0].int: ...' and
    '....float: ...', 'curry.inputs[0].min_gap.constrained-float: ...' and '....constrained-str: ...'
    (``llm.base_url``, a secret-bearing key, has its own, tested with its credentials check)."""
    edit(good)
    msg = error_of(tmp_path, good)
    assert msg == f"invalid parameters:\n  {tmp_path / 'params.yaml'}: {expected}"


def test_a_ray_address_with_the_local_backend_is_a_params_error(tmp_path, good):
    """Was ignored without a word: the stages ran on this machine, not on the cluster named."""
    good["execution"]["ray_address"] = "10.0.0.1:6379"
    assert ("execution: ray_address is '10.0.0.1:6379' but backend is local, which never uses it: set backend: ray "
            "to run on that cluster, or ray_address: null") in error_of(tmp_path, good)
    good["execution"]["backend"] = "ray"
    assert load_params(write(tmp_path, good)).execution.ray_address == "10.0.0.1:6379"


@pytest.mark.parametrize("value, expected", [
    (["http://a/v1", 2], "base_url[1]: Input should be a valid string"),  # the list's item, by position
    (["ftp://b"], "base_url[0]: expected an http(s) URL up to the API root, e.g. http://localhost:8000/v1"),
    ("localhost:8000", "base_url: expected an http(s) URL up to the API root, e.g. http://localhost:8000/v1"),
    (5, "base_url: Input should be a valid string or a valid list"),  # neither member: both named
])
def test_a_bad_base_url_is_one_line_in_the_member_its_value_took(tmp_path, good, value, expected):
    good["pugc"]["roles"]["judge"] = {"backend": "openai", "base_url": value}
    lines = error_of(tmp_path, good).splitlines()[1:]
    assert lines == [f"  {tmp_path / 'params.yaml'}: pugc.roles.judge.{expected}"]



def test_wildfeedback_sat_pairs_need_the_sat_summary(tmp_path, good):
    # SAT pairs are built from the SAT turns' preference summaries (stages/wildfeedback_pairs.py): with
    # summarize [dsat] (the default) sat_pairs: true used to make no pair at all, without a word.
    good["wildfeedback"].update(sat_pairs=True, summarize=["dsat"])
    msg = error_of(tmp_path, good)
    assert "wildfeedback: sat_pairs: true needs 'sat' in wildfeedback.summarize (got ['dsat'])" in msg
    good["wildfeedback"]["summarize"] = ["dsat", "sat"]
    assert load_params(write(tmp_path, good)).wildfeedback.sat_pairs


def test_wildfeedback_sat_pairs_need_the_checklist_judge(tmp_path, good):
    # A SAT pair's rejected is a policy sample: only the checklist judge says it is worse than the liked answer.
    # With checklist_judge: false every sample used to ship as rejected, unjudged (7 on the samples with tiny).
    good["wildfeedback"].update(sat_pairs=True, summarize=["dsat", "sat"], checklist_judge=False)
    lines = error_of(tmp_path, good).splitlines()[1:]
    assert len(lines) == 1 and "wildfeedback: sat_pairs: true needs checklist_judge: true" in lines[0]
    assert "set checklist_judge: true or sat_pairs: false" in lines[0]
    good["wildfeedback"]["checklist_judge"] = True
    assert load_params(write(tmp_path, good)).wildfeedback.checklist_judge


@pytest.mark.parametrize("role", ["policy", "reference"])
def test_selfie_roles_take_no_sampling_of_their_own(tmp_path, good, role):
    # The policy samples with selfie.sampling (stages/selfie.py); roles.policy.sampling (temperature 0.0 here) was
    # ignored without a word, and the reference never samples.
    good["selfie"]["roles"][role] = {"sampling": {"temperature": 0.0}}
    lines = error_of(tmp_path, good).splitlines()[1:]
    assert lines == [f"  {tmp_path / 'params.yaml'}: selfie: set how the policy samples with selfie.sampling, not "
                     f"selfie.roles.{role}.sampling (the reference model only scores the samples); remove it"]
    good["selfie"]["roles"][role] = {"batch_size": 4}  # engine settings stay per role
    assert getattr(load_params(write(tmp_path, good)).selfie.roles, role).batch_size == 4


def test_wildfeedback_judging_natural_revisions_needs_the_checklist_judge(tmp_path, good):
    # judge_natural_revisions: true with checklist_judge: false used to ship every natural revision unjudged, silently.
    good["wildfeedback"].update(judge_natural_revisions=True, checklist_judge=False)
    lines = error_of(tmp_path, good).splitlines()[1:]
    assert lines == [f"  {tmp_path / 'params.yaml'}: wildfeedback: judge_natural_revisions: true needs checklist_judge: "
                     "true (the judge it names is off); set checklist_judge: true or judge_natural_revisions: false"]


@pytest.mark.parametrize(("value", "expected"), [
    (0, "pugc.min_query_words: Input should be greater than or equal to 1 (got 0)"),
    ("3", "pugc.min_query_words: Input should be a valid integer (got '3')"),
    (2.5, "pugc.min_query_words: Input should be a valid integer (got 2.5)"),
])
def test_min_query_words_is_a_whole_number_of_one_or_more(tmp_path, good, value, expected):
    """PUGC's query length floor (``short_query``) is checked with the params, strictly: "3" or 2.5 is no count."""
    good["pugc"]["min_query_words"] = value
    assert expected in error_of(tmp_path, good)
    del good["pugc"]["min_query_words"]
    assert "pugc.min_query_words: missing" in error_of(tmp_path, good)
