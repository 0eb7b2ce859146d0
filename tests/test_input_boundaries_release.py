"""Input boundaries, second adversarial pass, past ingest: the decontamination and held-out sets the release
is checked against, and the command line that reads a release. Each case crashed, dropped data silently, or
gave a reason a user could not act on, before its fix (the records ingest reads are in
test_input_boundaries.py; tests/test_hostile.py holds the first pass)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.encodings import RE_ENCODE
from tests.conftest import ROOT

# --- decontamination sets: a prompt that cannot be read cannot be kept out of the release ---------------

def _eval_set(tmp_path: Path, optional: bool):
    from pipeline.config import EvalSet

    (tmp_path / "q.jsonl").write_bytes(b'{"question_id": 1, "turns": ["Name three primes."]}\n'
                                       b'{"question_id": 2, "turns": ["Sort th\xff list."]}\n'
                                       b'{"question_id": 3, "prompt": "wrong field"}\n'
                                       b'{"question_id": 4, "turns": ["Explain DNS."]}\n')
    return EvalSet(name="mt", path=str(tmp_path / "q.jsonl"), text_field="turns", id_field="question_id",
                   optional=optional)


def test_an_eval_set_record_that_cannot_be_read_fails_the_release(tmp_path):
    """Was skipped without a word: the release was built unchecked against that prompt."""
    from pipeline.decontam import ReleaseInputError, load_eval_sets

    with pytest.raises(ReleaseInputError) as err:
        load_eval_sets([_eval_set(tmp_path, optional=False)])
    assert str(err.value).startswith(
        f"decontamination set 'mt' ({tmp_path / 'q.jsonl'}): 2 record(s) without a prompt (first: q.jsonl:2: "
        f"invalid UTF-8 at byte 37: {RE_ENCODE}); the release cannot be checked against a prompt it cannot read.")


def test_an_optional_eval_set_reports_its_unread_records(tmp_path, caplog):
    from pipeline.decontam import load_eval_sets, prompts_sha256

    with caplog.at_level("WARNING"):
        evals, status = load_eval_sets([_eval_set(tmp_path, optional=True)])
    assert evals["eval_id"].to_list() == ["1", "4"]
    assert status["mt"] == {"prompts": 2, "prompts_sha256": prompts_sha256(["1", "4"], evals["text"].to_list()),
                            "status": f"ok; 2 record(s) without a prompt (first: q.jsonl:2: invalid UTF-8 at byte 37: {RE_ENCODE})"}
    assert "decontamination set mt: 2 record(s) without a prompt" in caplog.text


def test_each_eval_sets_sha256_is_of_its_own_prompts(tmp_path):
    """The second set's digest is of its prompts alone, not of every set read before it."""
    from pipeline.config import EvalSet
    from pipeline.decontam import load_eval_sets, prompts_sha256

    (tmp_path / "a.jsonl").write_text('{"id": "a1", "q": "Name three primes."}\n')
    (tmp_path / "b.jsonl").write_text('{"id": "b1", "q": "Explain DNS."}\n{"id": "b2", "q": "Sort this list."}\n')
    sets = [EvalSet(name=n, path=str(tmp_path / f"{n}.jsonl"), text_field="q", id_field="id", optional=False)
            for n in ("a", "b")]
    _, status = load_eval_sets(sets)
    assert status["a"]["prompts_sha256"] == prompts_sha256(["a1"], ["Name three primes."])
    assert status["b"]["prompts_sha256"] == prompts_sha256(["b1", "b2"], ["Explain DNS.", "Sort this list."])


def test_a_held_out_set_with_a_broken_shard_fails_in_one_line(tmp_path):
    """Was a traceback (ArrowInvalid) from the export stage."""
    from pipeline.decontam import ReleaseInputError, load_held_out

    (tmp_path / "data" / "selfie" / "test").mkdir(parents=True)
    (tmp_path / "data" / "selfie" / "test" / "part-0.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ReleaseInputError) as err:
        load_held_out(["data/selfie/test"], tmp_path)
    assert str(err.value).startswith("export.held_out: data/selfie/test: not a readable Parquet file (ArrowInvalid: ")
    assert str(err.value).endswith("; point export.held_out at a pairs, joint pairs or prompts shard set a stage "
                                   "wrote, or run that stage again (`dvc repro`)")


# --- command line -------------------------------------------------------------------------------------------

def test_audit_of_a_folder_without_a_release_fails_in_one_line(tmp_path, capsys, monkeypatch):
    """Was "0 rows in 0 files: passed" (an empty or mistyped folder), or a traceback (other Parquet, a broken file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.cli import main as cli

    (tmp_path / "empty").mkdir()
    (tmp_path / "ingest" / "conversations").mkdir(parents=True)
    pq.write_table(pa.table({"conversation_id": ["a"]}), tmp_path / "ingest" / "conversations" / "part-0.parquet")
    (tmp_path / "broken" / "pugc").mkdir(parents=True)
    (tmp_path / "broken" / "pugc" / "train-00000-of-00001.parquet").write_bytes(b"PAR1 cut")
    (tmp_path / "noprompt" / "pugc").mkdir(parents=True)  # pairs without the prompt they answer
    pq.write_table(pa.table({"pair_id": ["a"], "chosen": ["x"], "rejected": ["y"]}),
                   tmp_path / "noprompt" / "pugc" / "train-00000-of-00001.parquet")
    (tmp_path / "release" / "all").mkdir(parents=True)  # one config of a release, given instead of the release
    (tmp_path / "release" / "_manifest.json").write_text("{}")
    pq.write_table(pa.table({"pair_id": ["a"]}), tmp_path / "release" / "all" / "train-00000-of-00001.parquet")
    expected = {
        "release/all": f"{tmp_path / 'release' / 'all'}: one config of a release; audit the whole release, "
                       f"`prefpipe audit {tmp_path / 'release'}`",
        "empty": f"{tmp_path / 'empty'}: no released pair files (<config>/<split>-*.parquet); build the release with "
                 "`dvc repro export`",
        "ingest": f"{tmp_path / 'ingest' / 'conversations' / 'part-0.parquet'}: not a released pairs file (no column "
                  "'pair_id'); audit the folder export writes (data/release)",
        "noprompt": f"{tmp_path / 'noprompt' / 'pugc' / 'train-00000-of-00001.parquet'}: not a released pairs file (no "
                    "column 'prompt'); audit the folder export writes (data/release)",
        "broken": f"{tmp_path / 'broken' / 'pugc' / 'train-00000-of-00001.parquet'}: not a readable Parquet file (ArrowInvalid: ",
    }
    for folder, line in expected.items():
        assert cli(["audit", str(tmp_path / folder)]) == 2
        out = capsys.readouterr()
        assert out.err.startswith(f"prefpipe audit: {line}") and out.err.count("\n") == 1 and "passed" not in out.out
    monkeypatch.chdir(tmp_path / "release" / "all")  # run from inside the config folder: its parent is not "."
    assert cli(["audit", "."]) == 2
    assert capsys.readouterr().err.startswith(f"prefpipe audit: .: one config of a release; audit the whole release, "
                                              f"`prefpipe audit {(tmp_path / 'release').resolve()}`")


def test_inspect_of_a_broken_parquet_file_fails_in_one_line(tmp_path, capsys):
    from pipeline.cli import main as cli

    (tmp_path / "x.parquet").write_bytes(b"hello")
    assert cli(["inspect", str(tmp_path / "x.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prefpipe: {tmp_path / 'x.parquet'}: not a readable Parquet file (ArrowInvalid")
    assert err.endswith("; if a stage wrote it, rebuild it with `dvc repro`\n") and err.count("\n") == 1


@pytest.mark.parametrize("name", ["details.json", "README.md"])
def test_inspect_of_a_file_that_is_not_parquet_says_what_inspect_reads(tmp_path, capsys, name):
    """`prefpipe inspect data/ingest/details.json` (or the release card) said "not a readable Parquet file
    (ArrowInvalid: Parquet magic bytes not found in footer. Either the file is corrupted ...)", as if the file
    were damaged: it is simply no Parquet file, and the line now says what inspect takes."""
    from pipeline.cli import main as cli

    (tmp_path / name).write_text('{"rows_in": 3}\n')
    assert cli(["inspect", str(tmp_path / name)]) == 2
    assert capsys.readouterr().err == (f"prefpipe: {tmp_path / name}: not a Parquet file; inspect takes a shard set "
                                       "folder (e.g. data/ingest/conversations), a release folder or a .parquet file\n")


def test_inspect_of_a_folder_of_shard_sets_names_them(tmp_path, capsys):
    """`prefpipe inspect data/curry/pairs` said only "no Parquet files": the levels (and Selfie's iterations)
    are one shard set per sub-folder, which the message now names with the command that reads one."""
    from pipeline.cli import main as cli
    from pipeline.io import write_shards
    from pipeline.records import to_table
    from tests.export_fixtures import pair

    pairs = tmp_path / "pairs"
    for level in (0, 1):
        write_shards(to_table([pair(f"p{level}", "Explain DNS.", "curry", level=level)], "pairs"), pairs / f"level={level}",
                     name="pairs")
    (pairs / "notes").mkdir()  # a folder without shards is not offered
    assert cli(["inspect", str(pairs)]) == 2
    err = capsys.readouterr().err
    assert err == (f"prefpipe: {pairs}: no Parquet files; it holds shard sets in level=0, level=1: inspect one of "
                   f"them ({pairs / 'level=0'})\n")
    assert cli(["inspect", str(pairs / "level=1")]) == 0
    (tmp_path / "empty").mkdir()
    assert cli(["inspect", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err == f"prefpipe: {tmp_path / 'empty'}: no Parquet files\n"


@pytest.mark.parametrize("damage", ["remove", "replace"])
def test_audit_of_a_release_missing_a_file_its_manifest_lists_fails_in_one_line(tmp_path, capsys, monkeypatch, damage):
    """Was 'passed' (exit 0): the audit checked what was left of a release a copy or `dvc pull` cut short."""
    from pipeline.cli import main as cli
    from pipeline.io import write_parquet
    from pipeline.records import to_table
    from stages.export import build_release
    from tests.export_fixtures import TOPICS, export_cfg, pair, standard_methods

    standard_methods(tmp_path)
    release = tmp_path / "data" / "release"
    build_release(export_cfg(test_fraction=0.3), tmp_path, release, "fp")
    monkeypatch.chdir(tmp_path)  # no params.yaml: the release-only checks
    assert cli(["audit", str(release)]) == 0
    listed = json.loads((release / "_manifest.json").read_text())["files"]
    first = release / listed[0]["path"]
    first.unlink()
    if damage == "replace":  # another release's file in its place: it holds other rows
        rows = [pair(f"x{i}", TOPICS[i], "pugc") for i in range(listed[0]["rows"] + 1)]
        write_parquet(to_table(rows, "pairs"), first)
    capsys.readouterr()
    assert cli(["audit", str(release)]) == 2
    what = "missing" if damage == "remove" else "not the rows _manifest.json lists"
    assert capsys.readouterr().err == (f"prefpipe audit: {first}: {what} (1 of the {len(listed)} files it lists); the "
                                       "release is incomplete: build it again (`dvc repro export`) or fetch it again "
                                       "(`dvc pull`)\n")


@pytest.mark.parametrize(("args", "expected"), [
    (["-n", "-1"], "argument -n/--rows: expected a whole number >= 0, got '-1'"),
    (["--width", "0"], "argument --width: expected a whole number >= 1, got '0'"),
])
def test_inspect_with_a_negative_count_is_a_usage_error(tmp_path, capsys, args, expected):
    """``-n -1`` showed no row and ``--width 0`` rows as '...', exit 0, without a word."""
    from pipeline.cli import main as cli

    with pytest.raises(SystemExit) as exit_:
        cli(["inspect", str(tmp_path), *args])
    assert exit_.value.code == 2 and capsys.readouterr().err.splitlines()[-1] == f"prefpipe inspect: error: {expected}"


def test_a_method_shard_missing_when_export_reads_it_fails_in_one_line(tmp_path):
    """Was a traceback: pyarrow's FileNotFoundError, given data/release as its file name by the CLI."""
    from pipeline.io import shard_files
    from stages.export import build_release
    from stages.export_read import ExportError
    from tests.export_fixtures import export_cfg, standard_methods

    standard_methods(tmp_path)
    (gone := shard_files(tmp_path / "data" / "pugc" / "pairs")[0]).unlink()
    with pytest.raises(ExportError, match=rf"cannot read the pugc pairs \({gone}: not a readable Parquet file "
                                          r"\(FileNotFoundError: .*\); rerun `dvc repro pugc`$"):
        build_release(export_cfg(), tmp_path, tmp_path / "data" / "release", "fp")
    assert not (tmp_path / "data" / "release").exists()


def test_audit_with_a_root_that_holds_no_params_fails_in_one_line(tmp_path, capsys, monkeypatch):
    """A misspelt --root skipped the project checks (empty_config, held_out_in_train) and passed, exit 0."""
    from pipeline.cli import main as cli
    from stages.export import build_release
    from tests.export_fixtures import export_cfg, standard_methods

    standard_methods(tmp_path)
    build_release(export_cfg(), tmp_path, tmp_path / "data" / "release", "fp")
    monkeypatch.chdir(tmp_path)  # no params.yaml here either: without --root the checks are skipped, as before
    assert cli(["audit", "data/release"]) == 0
    capsys.readouterr()
    assert cli(["audit", "data/release", "--root", "projetc"]) == 2
    assert capsys.readouterr().err == ("prefpipe audit: --root projetc: not a folder; pass the project root (it "
                                       "holds data/<method>/pairs)\n")
    # With --params named, a misspelt --root used to skip the project checks without a word and pass.
    (tmp_path / "params.yaml").write_text((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    assert cli(["audit", "data/release", "--params", "params.yaml", "--root", "projetc"]) == 2
    assert "--root projetc: not a folder" in capsys.readouterr().err
    (tmp_path / "elsewhere").mkdir()  # a folder without params.yaml, as before
    assert cli(["audit", "data/release", "--root", "elsewhere"]) == 2
    assert capsys.readouterr().err == ("prefpipe audit: elsewhere/params.yaml: not found; --root elsewhere must be "
                                       "the project root, which holds params.yaml\n")


def _built_release(tmp_path: Path, root: Path) -> Path:
    from stages.export import build_release
    from tests.export_fixtures import export_cfg, standard_methods, write_held_out

    standard_methods(tmp_path)
    write_held_out(tmp_path, ["A held-out question nobody trains on?"])
    (tmp_path / "params.yaml").write_text((root / "params.yaml").read_text())
    release = tmp_path / "data" / "release"
    build_release(export_cfg(test_fraction=0.3), tmp_path, release, "fp")
    return release


@pytest.mark.parametrize(("text", "line"), [
    (b"not json\n", "line 1: not JSON"),
    (b'{"pair_id": "a", "method": "pugc", "reason": "identical", "configs": ["pugc"]}\n\n{"pair_id": 1, "method": 3, '
     b'"reason": 2, "configs": 5}\n', "line 3: 'method' is not a string"),
    (b'{"pair_id": "a", "method": "pugc", "reason": "identical", "configs": "pugc"}\n',
     "line 1: 'configs' is not a list of config names"),
])
def test_audit_of_a_release_whose_removals_were_edited_fails_in_one_line(tmp_path, capsys, monkeypatch, root, text,
                                                                        line):
    """Was a polars ComputeError traceback (`prefpipe audit` from the project root reads removed.jsonl to explain an
    empty config)."""
    from pipeline.cli import main as cli

    release = _built_release(tmp_path, root)
    monkeypatch.chdir(tmp_path)
    (release / "removed.jsonl").write_bytes(text)
    capsys.readouterr()
    assert cli(["audit", "data/release"]) == 2
    err = capsys.readouterr().err
    assert err == (f"prefpipe audit: {Path('data/release/removed.jsonl')}: {line}, not a removal export writes; it was "
                   "edited or cut short: build the release again (`dvc repro export`)\n")


def test_audit_of_a_release_whose_manifest_was_edited_is_not_audited(tmp_path, capsys, monkeypatch, root):
    """Was exit 1, which the audit's docs give to violations found in an audited release (not-audited is exit 2)."""
    from pipeline.cli import main as cli

    release = _built_release(tmp_path, root)
    monkeypatch.chdir(tmp_path)
    (release / "_manifest.json").write_text("{")
    capsys.readouterr()
    assert cli(["audit", "data/release"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prefpipe audit: {Path('data/release/_manifest.json')}: not valid JSON (") and err.count("\n") == 1


@pytest.mark.parametrize("copy", ["all/train-00001-of-00001.parquet", "all/train-00000-of-00001 (copy).parquet",
                                  "extra/train-00000-of-00001.parquet"])
def test_audit_of_a_release_holding_a_pair_file_its_manifest_does_not_list_fails_in_one_line(tmp_path, capsys,
                                                                                             monkeypatch, root, copy):
    """Was 'passed' (exit 0), counting the copy's rows: a pair file copied into a release by hand is read by
    `load_dataset("parquet", data_dir=...)` and the card's globs, so its pairs would be trained on twice."""
    import shutil

    from pipeline.cli import main as cli

    release = _built_release(tmp_path, root)
    monkeypatch.chdir(tmp_path)
    assert cli(["audit", "data/release"]) == 0
    (release / copy).parent.mkdir(exist_ok=True)
    shutil.copy(release / "all" / "train-00000-of-00001.parquet", release / copy)
    capsys.readouterr()
    assert cli(["audit", "data/release"]) == 2
    assert capsys.readouterr().err == (
        f"prefpipe audit: {Path('data/release') / copy}: a pair file _manifest.json does not list (1 such file), so "
        "readers of the release would load its rows too; delete it, or build the release again (`dvc repro export`)\n")


def test_inspect_of_a_shard_set_missing_a_file_its_manifest_lists_says_it_is_missing(tmp_path, capsys):
    """A new user's walk-through: a shard deleted from a release (or a `dvc pull` cut short) was "not a readable
    Parquet file (FileNotFoundError: [Errno 2] Failed to open local file ...)"."""
    from pipeline.cli import main as cli

    release = _built_release(tmp_path, ROOT)
    first = release / json.loads((release / "_manifest.json").read_text())["files"][0]["path"]
    first.unlink()
    assert cli(["inspect", str(release)]) == 2
    assert capsys.readouterr().err == (f"prefpipe: {first}: missing (its folder's _manifest.json lists it); the folder "
                                       "is incomplete: rebuild it (`dvc repro`) or fetch it again (`dvc pull`)\n")


def test_audit_with_a_stage_pairs_shard_that_is_not_parquet_fails_in_one_line(tmp_path, capsys, monkeypatch, root):
    """A new user's walk-through: with the project (`prefpipe audit` from its root), a damaged shard under
    data/<method>/pairs (a `dvc pull` cut short) was a pyarrow ArrowInvalid traceback from the empty_config check."""
    from pipeline.cli import main as cli

    _built_release(tmp_path, root)
    monkeypatch.chdir(tmp_path)
    shard = sorted((tmp_path / "data" / "pugc" / "pairs").rglob("*.parquet"))[0]
    shard.write_bytes(b"PAR1 cut short")
    capsys.readouterr()
    assert cli(["audit", "data/release"]) == 2
    err = capsys.readouterr().err
    shown = shard.relative_to(tmp_path)  # under --root, default "."
    assert err.startswith(f"prefpipe audit: {shown}: not a readable Parquet file (ArrowInvalid: ") and err.count("\n") == 1
    assert err.endswith("); run the stage that writes it again (`dvc repro`)\n")


def test_audit_whose_held_out_set_cannot_be_read_is_not_audited(tmp_path, capsys, monkeypatch, root):
    """A new user's walk-through: with a held-out set of export.held_out gone, `prefpipe audit` said so in one line
    but exited 1, the code docs/audit.md gives violations found in an audited release (not audited is exit 2)."""
    import shutil

    from pipeline.cli import main as cli

    _built_release(tmp_path, root)
    monkeypatch.chdir(tmp_path)
    shutil.rmtree(tmp_path / "data" / "wildfeedback" / "test")
    capsys.readouterr()
    assert cli(["audit", "data/release"]) == 2
    assert capsys.readouterr().err == ("prefpipe audit: export.held_out lists data/wildfeedback/test, which holds no "
                                       "Parquet shards; run the stage that writes it (`dvc repro`), or remove it from "
                                       "export.held_out if that stage is not part of this release\n")
