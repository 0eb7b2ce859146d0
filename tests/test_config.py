"""params.yaml validation: bad files fail before any work, naming the file and the key path. The rules of one
section or across sections (source names, tiny overrides, ...): test_config_sections.py."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.config import FORMAT_KINDS, ParamsError, fingerprint, load_params
from tests.params_edits import error_of, parent_of, write


def test_the_shipped_params_load(root):
    p = load_params(root / "params.yaml")
    assert [s.name for s in p.ingest.sources] == ["sample_conversations", "sample_posts", "sample_prompts",
                                                  "sample_seed_pairs", "sample_rated"]
    assert all(s.path.startswith("data/samples/") for s in p.ingest.sources)


def test_unknown_key_is_named(tmp_path, good):
    good["ingest"]["sources"][1]["formt"] = "documents"
    msg = error_of(tmp_path, good)
    assert f"{tmp_path / 'params.yaml'}: ingest.sources[1].formt: unknown key" in msg


def test_a_misspelt_key_gets_a_did_you_mean_at_any_depth(tmp_path, good):
    good["pugc"]["min_word"] = good["pugc"].pop("min_words")
    good["ingest"]["sources"][1]["formt"] = good["ingest"]["sources"][1].pop("format")
    good["pugc"]["roles"]["generator"] = {"sampling": {"max_tokens": 128}}  # a role override: every key optional
    good["wildfedback"] = good.pop("wildfeedback")
    good["export"]["shard_bites"] = 1  # nothing close: no guess
    msg = error_of(tmp_path, good)
    assert "pugc.min_word: unknown key; did you mean 'min_words'?" in msg
    assert "ingest.sources[1].formt: unknown key; did you mean 'format'?" in msg
    assert "pugc.roles.generator.sampling.max_tokens: unknown key; did you mean 'max_new_tokens'?" in msg
    assert "wildfedback: unknown key; did you mean 'wildfeedback'?" in msg
    assert "export.shard_bites: unknown key; did you mean 'shard_bytes'?" in msg


def test_unknown_section_is_named(tmp_path, good):
    good["ingset"] = {}
    assert "params.yaml: ingset: unknown key" in error_of(tmp_path, good)


def test_wrong_type_is_named_with_the_value(tmp_path, good):
    good["ingest"]["max_reject_fraction"] = "lots"
    msg = error_of(tmp_path, good)
    assert "ingest.max_reject_fraction: Input should be a valid number" in msg and "(got 'lots')" in msg


@pytest.mark.parametrize("value", ["fast", 0, True, "2", 1.5])
def test_cpu_threads_is_auto_or_a_positive_integer_in_one_line(tmp_path, good, value):
    good["llm"]["cpu_threads"] = value
    good["wildfeedback"]["roles"]["detector"] = {"cpu_threads": value}
    lines = error_of(tmp_path, good).splitlines()[1:]
    assert lines == [f"  {tmp_path / 'params.yaml'}: {key}: expected 'auto' or a positive integer (got {value!r})"
                     for key in ("llm.cpu_threads", "wildfeedback.roles.detector.cpu_threads")]


def test_cpu_threads_takes_auto_or_a_count(tmp_path, good):
    good["llm"]["cpu_threads"] = 3
    assert load_params(write(tmp_path, good)).llm.cpu_threads == 3


def test_out_of_range_and_bad_literal(tmp_path, good):
    good["ingest"]["max_reject_fraction"] = 1.5
    good["ingest"]["sources"][0]["kind"] = "chats"
    msg = error_of(tmp_path, good)
    assert "ingest.max_reject_fraction: Input should be less than or equal to 1 (got 1.5)" in msg
    assert "ingest.sources[0].kind: Input should be 'conversations', 'documents', 'prompts', 'rated' or 'pairs'" in msg


def test_missing_key_is_named(tmp_path, good):
    del good["ingest"]["max_record_bytes"]
    assert "ingest.max_record_bytes: missing required key" in error_of(tmp_path, good)


def test_format_must_feed_the_kind(tmp_path, good):
    good["ingest"]["sources"][2]["kind"] = "pairs"  # the prompts format feeds prompts only
    msg = error_of(tmp_path, good)
    assert "ingest.sources[2]: format 'prompts' cannot feed kind 'pairs'; it feeds ['prompts']" in msg


def test_source_names_are_unique_and_simple(tmp_path, good):
    good["ingest"]["sources"][1]["name"] = "sample_conversations"
    assert "source names must be unique, repeated: ['sample_conversations']" in error_of(tmp_path, good)
    good["ingest"]["sources"][1]["name"] = "has space"
    assert "ingest.sources[1].name: String should match pattern" in error_of(tmp_path, good)


@pytest.mark.parametrize("key", [
    "export.methods", "export.dedup.priority", "export.pii_kinds", "export.pii_phone_regions", "export.held_out",
    "export.card.language", "export.card.task_categories", "export.card.tags", "pugc.sources", "pugc.languages",
    "pugc.leak_patterns", "selfie.pair_sources", "selfie.prompt_sources", "dove.pair_sources", "wildfeedback.sources",
    "wildfeedback.languages", "wildfeedback.drop_flags", "wildfeedback.summarize",
])
def test_a_value_repeated_in_a_list_where_a_repeat_means_nothing_is_named(tmp_path, good, key):
    """Was accepted silently (``export.methods: [pugc, pugc]``)."""
    node, last = parent_of(good, key)
    node[last] = [*node[last], node[last][0]]
    assert f"params.yaml: {key}: {node[last][0]!r} is listed twice; list each value once" in error_of(tmp_path, good)


def test_not_yaml_not_a_mapping_missing_file(tmp_path):
    assert "not valid YAML" in error_of(tmp_path, "ingest: [unclosed")
    # one line naming file:line:column, what broke and what to do (not the parser's multi-line dump)
    msg = error_of(tmp_path, "execution:\n  batch_size: [4096\n  checkpoint_rows: 2048\n")
    assert "\n" not in msg and "<unicode string>" not in msg
    assert msg.startswith(f"{tmp_path / 'params.yaml'}:3:18: not valid YAML: expected ',' or ']'")
    assert "(while parsing a flow sequence started at line 2); fix the syntax there" in msg
    assert error_of(tmp_path, "execution:\n\tbatch_size: 1\n").startswith(
        f"{tmp_path / 'params.yaml'}:2:1: not valid YAML: found character '\\t' that cannot start any token")
    assert error_of(tmp_path, "ingest: \x07\n") == (  # a reader error has no line mark: the file alone
        f"{tmp_path / 'params.yaml'}: not valid YAML: unacceptable character #x0007: special characters are not "
        "allowed; fix the syntax there (indent with spaces, close every bracket and quote)")
    assert error_of(tmp_path, "- a\n- b\n") == (  # was "expected a mapping of sections at the top level": no fix
        f"{tmp_path / 'params.yaml'}: holds a list at the top level; expected a mapping of sections (execution:, llm:, "
        "ingest:, ...): start from the project's params.yaml")
    assert error_of(tmp_path, "# all commented out\n").startswith(f"{tmp_path / 'params.yaml'}: is empty; expected")
    with pytest.raises(ParamsError, match="no such file"):
        load_params(tmp_path / "absent.yaml")
    with pytest.raises(ParamsError, match=r"is a folder; pass the params file itself \(e\.g\. .*/params\.yaml\)"):
        load_params(tmp_path)  # `--params .` was an IsADirectoryError traceback


def test_every_format_feeds_something():
    from pipeline.adapters import ADAPTERS

    assert set(FORMAT_KINDS) == set(ADAPTERS)
    assert all(FORMAT_KINDS.values())


def test_fingerprint_follows_the_section(root):
    p = load_params(root / "params.yaml")
    data = p.ingest.model_dump()
    data["max_record_bytes"] += 1
    assert fingerprint(p.ingest) == fingerprint(p.ingest)
    assert fingerprint(p.ingest) != fingerprint(data)


def test_scaling_the_replicas_or_their_gpus_changes_no_fingerprint(tmp_path, good):
    """Replicas and GPUs per replica place an engine, they do not change what it computes (outputs are
    byte-identical at any replica count): a stage rerun on a resized cluster writes the same bytes and
    resumes from its checkpoints. Anything the engine computes with still counts."""
    base = load_params(write(tmp_path, good))
    good["llm"].update(replicas=8, gpus_per_replica=1)
    good["pugc"]["roles"]["judge"] = {"replicas": 2, "gpus_per_replica": 4}
    scaled = load_params(write(tmp_path, good))
    for section in ("llm", "pugc", "selfie", "dove", "wildfeedback"):
        assert fingerprint(getattr(scaled, section)) == fingerprint(getattr(base, section)), section
    good["pugc"]["roles"]["judge"]["batch_size"] = 3
    assert fingerprint(load_params(write(tmp_path, good)).pugc) != fingerprint(base.pugc)
    assert fingerprint(scaled.llm.model_copy(update={"tensor_parallel_size": 2})) != fingerprint(base.llm)


def test_cli_fails_before_any_work(tmp_path, good, monkeypatch, capsys):
    good["ingest"]["sources"][0]["path"] = 12  # a path must be a string
    good["ingest"]["bogus"] = True
    bad = write(tmp_path, good)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "ingest", "--params", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "ingest.bogus: unknown key" in err and "ingest.sources[0].path: Input should be a valid string" in err
    assert not (tmp_path / "data").exists()  # nothing was written


def test_cli_unknown_stage(capsys):
    assert cli.main(["run", "nosuchstage"]) == 2
    assert "unknown stage 'nosuchstage'" in capsys.readouterr().err
    assert cli.main(["run", "ingset"]) == 2  # a misspelt stage gets a did-you-mean, as a misspelt key does
    assert capsys.readouterr().err.startswith("prefpipe: unknown stage 'ingset'; did you mean 'ingest'? available: ")


# --- strictness ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "expected"), [
    (("execution", "checkpoint_rows"), True, "execution.checkpoint_rows: Input should be a valid integer (got True)"),
    (("execution", "checkpoint_rows"), "2048", "execution.checkpoint_rows: Input should be a valid integer (got '2048')"),
    (("llm", "enable_prefix_caching"), "yes", "llm.enable_prefix_caching: Input should be a valid boolean (got 'yes')"),
    (("execution", "max_reject_fraction"), "0.5", "execution.max_reject_fraction: Input should be a valid number"),
    (("ingest", "sources", 0, "limit"), 5.0, "ingest.sources[0].limit: Input should be a valid integer (got 5.0); "
                                             "write it as a whole number: 5"),
    (("execution", "spill_bytes"), 2.5e8, "execution.spill_bytes: Input should be a valid integer (got 250000000.0); "
                                          "write it as a whole number: 250000000"),
])
def test_no_value_is_coerced(tmp_path, good, key, value, expected):
    node = good
    for k in key[:-1]:
        node = node[k]
    node[key[-1]] = value
    assert expected in error_of(tmp_path, good)


def test_a_whole_number_is_a_float_and_yaml_is_read_as_dvc_reads_it(tmp_path, root):
    text = (root / "params.yaml").read_text()
    text = text.replace("  num_cpus_per_task: 1 ", "  num_cpus_per_task: 2 ")
    text = text.replace("  beta: 0.1 ", "  beta: 1e-1 ")  # YAML 1.2 float (PyYAML's 1.1 reads a string)
    assert "num_cpus_per_task: 2 " in text and "beta: 1e-1 " in text
    p = load_params(write(tmp_path, text))
    assert p.execution.num_cpus_per_task == 2.0 and p.selfie.beta == 0.1
    unquoted = text.replace("  drop_noisy: false ", "  drop_noisy: no ")  # YAML 1.1's "no" is a string in 1.2
    assert unquoted != text
    assert "selfie.drop_noisy: Input should be a valid boolean (got 'no')" in error_of(tmp_path, unquoted)


def test_a_duplicate_key_is_named_with_its_lines(tmp_path, root):
    text = (root / "params.yaml").read_text()
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  max_record_bytes:"))
    first = next(i for i, line in enumerate(lines) if line.startswith("  max_reject_fraction: 0.2"))
    lines.insert(at + 1, "  max_reject_fraction: 0.9")
    msg = error_of(tmp_path, "\n".join(lines) + "\n")
    assert msg == (f"{tmp_path / 'params.yaml'}: line {at + 2}: duplicate key 'max_reject_fraction' "
                   f"(first at line {first + 1}); keep one of them")


@pytest.mark.parametrize("text", [
    "a: yes\nb: no\nc: on\nd: off\ne: 1e-5\nf: True\ng: .5\nh: +1e3\ni: .inf\n",
    "octal: 017\nnew_octal: 0o17\nsexagesimal: 1:20\nhex: 0x1F\nunderscored: 1_000\n",  # PyYAML's 1.1 ints differ
    "base: &b {x: 1, y: [1, 2]}\nd:\n  <<: *b\n  x: 2\n",  # anchors, aliases and a merge key overridden
    "a: &x 1\nb: &x 2\nc: *x\n",  # an anchor redefined: the alias takes the latest (no multi-line warning)
])
def test_yaml_is_read_exactly_as_dvc_reads_it(text):
    from dvc.utils.serialize._yaml import parse_yaml

    from pipeline.yaml12 import load_yaml

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = load_yaml(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DVC's own read warns, over several lines, about a redefined anchor
        dvc = parse_yaml(text, "params.yaml")
    assert ours == dvc and not caught


def test_a_repeated_key_in_a_nested_or_flow_mapping_is_named_with_both_lines(tmp_path):
    assert error_of(tmp_path, "a: 1\nb:\n  x: 0\n  c: 1\n  c: 2\n") == (
        f"{tmp_path / 'params.yaml'}: line 5: duplicate key 'c' (first at line 4); keep one of them")
    assert error_of(tmp_path, "a: {x: 1,\n  y: 2, x: 3}\n") == (
        f"{tmp_path / 'params.yaml'}: line 2: duplicate key 'x' (first at line 1); keep one of them")


def test_a_params_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"execution:\n  batch_size: 4096 # caf\xe9\n")  # Latin-1, was a UnicodeDecodeError traceback
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert str(err.value) == f"{path}:2: not UTF-8 (byte 0xe9); save the file as UTF-8"


@pytest.mark.parametrize(("encode", "expected"), [
    (lambda text: text.encode("utf-16"), ":1: not UTF-8 (byte 0xff); save the file as UTF-8"),
    (lambda text: text.replace("# Every knob", "# Every kn\xe9b").encode("latin-1"),
     ":1: not UTF-8 (byte 0xe9); save the file as UTF-8"),
])
def test_a_params_file_not_in_utf8_is_one_line_naming_the_line(tmp_path, root, monkeypatch, capsys, encode, expected):
    """Was a UnicodeDecodeError traceback (an editor saving UTF-16, or Latin-1 in a comment)."""
    (tmp_path / "params.yaml").write_bytes(encode((root / "params.yaml").read_text(encoding="utf-8")))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "ingest"]) == 2
    assert capsys.readouterr().err == f"prefpipe: params.yaml{expected}\n"


def test_a_params_file_that_cannot_be_read_is_one_line_saying_so(tmp_path, root, monkeypatch, capsys):
    """Was 'cannot write params.yaml: ... no permission to write there' (a read named as a write). (Tests run
    as root, which chmod cannot stop: the refusal is simulated.)"""
    real = Path.read_bytes

    def read_bytes(self):
        if self.name == "params.yaml":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    (tmp_path / "params.yaml").write_text((root / "params.yaml").read_text())
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "ingest"]) == 2
    assert capsys.readouterr().err == ("prefpipe: params.yaml: cannot be read (Permission denied, EACCES); make it "
                                       "readable (its permissions or owner) and run again\n")
