"""Publishing: manifest verification, the huggingface_hub calls and their arguments, clear errors; the card."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import polars as pl
import pytest
import yaml
from huggingface_hub import HfApi
from pydantic import ValidationError

from pipeline.cli import main as cli
from pipeline.files import file_sha256
from pipeline.hub import PublishError, publish, verify_release
from stages.export import build_release
from stages.export_card import lineage_summary, size_category
from tests.export_fixtures import TOPICS, export_cfg, pair, standard_methods, write_held_out, write_method

TOKEN = "hf_" + "x" * 34


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    standard_methods(root)
    build_release(export_cfg(test_fraction=0.3), root, root / "data" / "release", "fp-hub")
    return root / "data" / "release"


@pytest.fixture
def hub(monkeypatch):
    """Replace the HfApi methods publish uses; record every call with its arguments."""
    calls: list[tuple[str, tuple, dict]] = []

    def recorder(name, result=None):
        def method(self, *args, **kwargs):
            calls.append((name, args, kwargs | {"token": self.token}))
            if isinstance(result, Exception):
                raise result
            return result
        return method

    monkeypatch.setattr(HfApi, "create_repo", recorder("create_repo", "https://huggingface.co/datasets/org/prefs"))
    monkeypatch.setattr(HfApi, "create_branch", recorder("create_branch"))

    def repo_info(self, *args, **kwargs):  # the repo as the last create_repo made it
        calls.append(("repo_info", args, kwargs | {"token": self.token}))
        return SimpleNamespace(private=next(c[2]["private"] for c in reversed(calls) if c[0] == "create_repo"))

    monkeypatch.setattr(HfApi, "repo_info", repo_info)
    monkeypatch.setattr(HfApi, "upload_folder", recorder("upload_folder", "https://huggingface.co/datasets/org/prefs/commit/abc"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)

    class Hub:
        def __init__(self):
            self.calls = calls

        def fail_upload(self, exc):
            monkeypatch.setattr(HfApi, "upload_folder", recorder("upload_folder", exc))

    return Hub()


def test_publish_creates_the_repo_and_uploads_the_manifest_files(release, hub):
    lines: list[str] = []
    done = publish(release, "org/prefs", private=True, revision="v1", echo=lines.append)
    names = [c[0] for c in hub.calls]
    assert names == ["create_repo", "repo_info", "create_branch", "upload_folder"]
    _, args, kw = hub.calls[0]
    assert args == ("org/prefs",) and kw == {"repo_type": "dataset", "private": True, "exist_ok": True, "token": TOKEN}
    assert hub.calls[1][1:] == (("org/prefs",), {"repo_type": "dataset", "token": TOKEN})
    assert hub.calls[2][2] == {"branch": "v1", "repo_type": "dataset", "exist_ok": True, "token": TOKEN}
    up = hub.calls[3][2]
    manifest = json.loads((release / "_manifest.json").read_text())
    expected = ([f["path"] for f in manifest["files"]] + [f["path"] for f in manifest["other_files"]
                                                         if f["path"] != "removed.jsonl"] + ["_manifest.json"])
    assert up["repo_id"] == "org/prefs" and up["repo_type"] == "dataset" and up["revision"] == "v1"
    assert up["folder_path"] == str(release) and up["allow_patterns"] == expected
    assert "all/train-00000-of-00001.parquet" in expected and "README.md" in expected and "stats.json" in expected
    assert up["delete_patterns"] == ["*.parquet", "plots/*", "removed.jsonl"]  # stale shards must not linger
    assert up["commit_message"] == "prefpipe release fp-hub"
    assert done["uploaded"] and done["commit"].endswith("/commit/abc")
    assert not any(TOKEN in line for line in lines)  # the token is never printed


def test_removed_jsonl_stays_local_its_contaminated_and_held_out_texts_are_never_uploaded(release, hub, capsys):
    # removed.jsonl holds the texts of every removed pair, contaminated (eval-set) and held-out prompts among
    # them: uploading it published what decontamination keeps out of the dataset (main uploaded it)
    records = [json.loads(line) for line in (release / "removed.jsonl").read_text().splitlines()]
    assert records  # the fixture removes pairs, so the file holds texts
    publish(release, "org/prefs", echo=lambda _: None)
    up = hub.calls[-1][2]
    assert "removed.jsonl" not in up["allow_patterns"] and "removed.jsonl" in up["delete_patterns"]
    plan = publish(release, "org/prefs", dry_run=True)
    assert "removed.jsonl" not in plan["files"] and "removed.jsonl" not in capsys.readouterr().out


def test_a_new_repo_is_private_unless_public_is_asked_for(release, hub):
    # the texts come from users and redaction is pattern based: main created a public repo by default
    assert cli(["publish", "--repo-id", "org/prefs", "--path", str(release)]) == 0
    assert cli(["publish", "--repo-id", "org/prefs", "--path", str(release), "--public"]) == 0
    assert cli(["publish", "--repo-id", "org/prefs", "--path", str(release), "--private"]) == 0
    assert [c[2]["private"] for c in hub.calls if c[0] == "create_repo"] == [True, False, True]
    publish(release, "org/prefs", echo=lambda _: None)
    assert hub.calls[-3][0] == "create_repo" and hub.calls[-3][2]["private"] is True


def test_main_revision_creates_no_branch(release, hub):
    publish(release, "org/prefs", echo=lambda _: None)
    assert [c[0] for c in hub.calls] == ["create_repo", "repo_info", "upload_folder"]
    assert hub.calls[0][2]["private"] is True and hub.calls[2][2]["revision"] is None  # private unless asked


def test_failure_mid_upload_is_reported_with_how_to_resume(release, hub):
    hub.fail_upload(ConnectionError("connection reset by peer after 3 of 9 files"))
    with pytest.raises(PublishError, match=r"upload to org/prefs failed part-way: ConnectionError: connection reset.*re-run"):
        publish(release, "org/prefs", echo=lambda _: None)
    assert [c[0] for c in hub.calls] == ["create_repo", "repo_info", "upload_folder"]


def test_a_failure_is_one_line_with_its_cause(release, hub):
    # huggingface_hub wraps a failed LFS upload in a RuntimeError naming only the file; the cause (the
    # storage's answer, several lines) is chained below it. tests/test_hub_e2e.py sees these on the wire.
    cause = ConnectionError("Client error '403 Forbidden' for url 'https://s3/x'\nFor more information check: "
                            "https://developer.mozilla.org/403\n\nRequest has expired")
    try:
        raise RuntimeError("Error while uploading 'all/train-00000-of-00001.parquet' to the Hub.") from cause
    except RuntimeError as e:
        hub.fail_upload(e)
    with pytest.raises(PublishError) as e:
        publish(release, "org/prefs", echo=lambda _: None)
    assert str(e.value) == (
        "upload to org/prefs failed part-way: RuntimeError: Error while uploading 'all/train-00000-of-00001.parquet' "
        "to the Hub <- ConnectionError: Client error '403 Forbidden' for url 'https://s3/x' Request has expired. "
        "Nothing local is lost: re-run the same command to resume (files already committed are skipped).")


def test_a_signed_storage_url_in_a_failure_is_printed_without_its_signature(release, hub):
    url = "https://s3.example/bucket/obj?X-Amz-Credential=AKIA%2F123&X-Amz-Signature=deadbeef"
    hub.fail_upload(ConnectionError(f"Client error '403 Forbidden' for url '{url}'"))
    with pytest.raises(PublishError) as e:
        publish(release, "org/prefs", echo=lambda _: None)
    assert "for url 'https://s3.example/bucket/obj?<query hidden>'" in str(e.value)
    assert "Signature" not in str(e.value) and "AKIA" not in str(e.value)


def test_dry_run_lists_files_and_touches_nothing(release, hub, capsys):
    assert cli(["publish", "--repo-id", "org/prefs", "--dry-run", "--path", str(release)]) == 0
    out = capsys.readouterr().out
    assert hub.calls == []
    assert "dry run: would upload" in out and "all/train-00000-of-00001.parquet" in out and "rows" in out
    assert "README.md" in out and "token: found" in out and TOKEN not in out


def test_the_dry_run_says_1_row_not_1_rows(release, hub, capsys):
    """A new user's walk-through: `prefpipe publish --dry-run` listed a one-row test split as "1 rows"."""
    manifest = json.loads((release / "_manifest.json").read_text())
    one = [f["path"] for f in manifest["files"] if f["rows"] == 1]
    assert one  # the fixture's selfie test split holds one pair
    assert cli(["publish", "--repo-id", "org/prefs", "--dry-run", "--path", str(release)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for path in one:
        line = next(x for x in lines if x.startswith(f"  {path}  "))
        assert line.endswith("  1 row"), line
    assert not any(re.search(r"\b1 (rows|files|bytes)\b", x) for x in lines), lines


def test_offline_mode_is_a_clear_error(release, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE.*needs the network"):
        publish(release, "org/prefs", echo=lambda _: None)
    assert hub.calls == []


def test_no_token_is_a_clear_error(release, hub, monkeypatch, tmp_path, capsys):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "token"))  # no saved login
    assert cli(["publish", "--repo-id", "org/prefs", "--path", str(release)]) == 1
    assert "no Hugging Face token: set HF_TOKEN" in capsys.readouterr().err
    assert hub.calls == []


def test_missing_release_and_bad_repo_id(tmp_path, hub):
    with pytest.raises(PublishError, match="no release here.*dvc repro export"):
        publish(tmp_path / "data" / "release", "org/prefs")
    with pytest.raises(PublishError, match="ORG/NAME"):
        publish(tmp_path, "prefs")


@pytest.mark.parametrize(("repo_id", "why"), [("my org/prefs", "Repo id must use alphanumeric chars"),
                                               ("org--x/prefs", "Cannot have -- or .."),
                                               ("org/prefs.git", "Repo_id cannot end by '.git'")])
def test_a_repo_id_the_hub_refuses_is_refused_by_the_dry_run(release, hub, capsys, repo_id, why):
    """A new user's walk-through: `--dry-run` said it "would upload" to 'my org/prefs'; the real run then failed
    at the Hub blaming the token's write access."""
    assert cli(["publish", "--repo-id", repo_id, "--dry-run", "--path", str(release)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"prefpipe publish: --repo-id {repo_id!r}: {why}") and err.count("\n") == 1
    assert "ORG/NAME" in err and "token" not in err and hub.calls == []


@pytest.mark.parametrize("revision", ["bad rev", "", "-x", "a..b", "v1/", "v1.", "x//y", "x/.y", "v1.lock", "a~1", "b:c"])
def test_a_revision_that_is_no_branch_name_is_refused_by_the_dry_run(release, hub, capsys, revision):
    """A new user's walk-through: `--dry-run --revision 'bad rev'` said it "would upload" there."""
    assert cli(["publish", "--repo-id", "org/prefs", "--dry-run", f"--revision={revision}", "--path", str(release)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"prefpipe publish: --revision {revision!r}: not a branch name git and the Hub accept")
    assert err.count("\n") == 1 and "give a branch such as main" in err and hub.calls == []


def test_a_commit_as_revision_is_refused_by_the_dry_run(release, hub, capsys):
    """A 40-hex revision names a commit on the Hub: nothing can be committed on top of it."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert cli(["publish", "--repo-id", "org/prefs", "--dry-run", "--revision", sha, "--path", str(release)]) == 1
    err = capsys.readouterr().err
    assert err == f"prefpipe publish: --revision {sha!r} is a commit, and a publish adds a commit to a branch; " \
                  "give a branch such as main or release-v1\n" and hub.calls == []


@pytest.mark.parametrize("revision", ["main", "v1", "release/v1.0", "refs/pr/1", "my_branch-2"])
def test_a_branch_name_is_taken_by_the_dry_run(release, hub, capsys, revision):
    assert cli(["publish", "--repo-id", "org/prefs", "--dry-run", "--revision", revision, "--path", str(release)]) == 0
    assert f"(revision {revision}," in capsys.readouterr().out


def test_a_tampered_or_extra_file_is_refused_by_name(tmp_path, hub):
    root = tmp_path
    standard_methods(root)
    release = root / "data" / "release"
    build_release(export_cfg(), root, release, "fp")
    assert verify_release(release) == []
    shard = release / "pugc" / "train-00000-of-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-8] + b"00000000")
    (release / "notes.txt").write_text("scratch")
    (release / "stats.json").unlink()
    with pytest.raises(PublishError) as e:
        publish(release, "org/prefs", echo=lambda _: None)
    msg = str(e.value)
    assert f"{shard}: sha256 differs from the manifest" in msg
    assert f"{release / 'notes.txt'}: not in the manifest" in msg and f"{release / 'stats.json'}: missing" in msg
    assert hub.calls == []


def test_an_edited_card_is_refused_and_the_hubs_local_cache_folder_is_ignored(tmp_path, hub):
    standard_methods(tmp_path)
    release = tmp_path / "data" / "release"
    build_release(export_cfg(), tmp_path, release, "fp")
    (release / ".cache" / "huggingface").mkdir(parents=True)  # upload_folder's own bookkeeping, left behind
    (release / ".cache" / "huggingface" / "upload.lock").write_text("")
    assert verify_release(release) == []
    card = release / "README.md"
    card.write_text(card.read_text() + "\nedited by hand\n")
    assert verify_release(release) == [f"{card}: sha256 differs from the manifest"]


def test_card_front_matter(release):
    card = (release / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert list(front) == ["license", "pretty_name", "language", "task_categories", "tags", "size_categories", "configs",
                           "dataset_info"]
    assert front["configs"][0] == {"config_name": "all", "default": True, "data_files": [
        {"split": "train", "path": "all/train-*.parquet"}, {"split": "test", "path": "all/test-*.parquet"}]}
    body = card.split("---\n", 2)[2]
    for needle in ("## Configs", "## How it was built", "## Training on it with TRL", "DPOTrainer", "Curry-DPO",
                   "chosen_prompt", "## Limitations", "fp-hub", "tiny-curry", "fp-curry", "tiny-judge", "fp-dove"):
        assert needle in body, needle
    assert size_category(10_000) == "10K<n<100K"
    # the Hub's buckets go on past 1B (main wrote "n>1B", which is none of them)
    assert [size_category(10**k) for k in (9, 10, 11, 12)] == ["1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T"]
    assert size_category(10**9 - 1) == "100M<n<1B"


def test_the_cards_models_are_every_role_each_method_names_in_its_lineage():
    # Each stage names its models under its roles' keys (PUGC generator/judge/policy, Selfie policy/reference,
    # DOVE judge, WildFeedback a {role: model} map, empty for natural revisions that used no model); Curry-DPO
    # re-ranks other stages' scores and names no model of its own.
    lineage = {
        "wildfeedback": ['{"models": {}, "fingerprint": "a"}', '{"models": {"expert": "m1", "judge": "m2"}, "fingerprint": "a"}'],
        "pugc": ['{"generator": "tiny", "judge": "tiny", "policy": "tiny", "fingerprint": "b"}'],
        "selfie": ['{"policy": "tiny@1", "reference": "tiny", "fingerprint": "c"}'],
        "dove": ['{"judge": "smollm2", "fingerprint": "e"}'],
        "curry": ['{"scorer": "pugc:tiny", "fingerprint": "d"}'],
    }
    pairs = pl.DataFrame([(m, x) for m, xs in lineage.items() for x in xs], schema=["_config", "lineage"], orient="row")
    got = {m: v["models"] for m, v in lineage_summary(pairs).items()}
    assert got == {"wildfeedback": ["m1", "m2"], "pugc": ["tiny"], "selfie": ["tiny", "tiny@1"], "dove": ["smollm2"],
                   "curry": []}
    natural_only = pairs.filter(pl.col("lineage").str.contains('"models": {}', literal=True))
    assert lineage_summary(natural_only)["wildfeedback"] == {"models": [], "fingerprints": ["a"]}


@pytest.mark.parametrize("scheme", ["https", "http"])  # http: a local or private endpoint (HF_ENDPOINT)
def test_a_signed_url_of_either_scheme_is_printed_without_its_query(release, hub, scheme):
    hub.fail_upload(ConnectionError(f"Client error '403 Forbidden' for url '{scheme}://store.local/obj?sig=deadbeef'"))
    with pytest.raises(PublishError) as e:
        publish(release, "org/prefs", echo=lambda _: None)
    assert f"for url '{scheme}://store.local/obj?<query hidden>'" in str(e.value) and "deadbeef" not in str(e.value)


class _HTTPError(Exception):
    response = "403"  # huggingface_hub's HTTP errors carry the server's answer


def test_a_cause_that_repeats_its_error_or_lies_under_an_http_answer_is_left_out(release, hub):
    try:
        raise RuntimeError("upload failed: connection reset by peer") from ConnectionError("connection reset by peer")
    except RuntimeError as e:
        hub.fail_upload(e)
    with pytest.raises(PublishError, match=r"part-way: RuntimeError: upload failed: connection reset by peer\. "):
        publish(release, "org/prefs", echo=lambda _: None)
    try:
        raise _HTTPError("403 Forbidden: token lacks write access") from ConnectionError("TLS handshake detail")
    except _HTTPError as e:
        hub.fail_upload(e)
    with pytest.raises(PublishError, match=r"part-way: _HTTPError: 403 Forbidden: token lacks write access\. "):
        publish(release, "org/prefs", echo=lambda _: None)


def test_a_hub_that_cannot_be_reached_is_not_blamed_on_the_token(release, hub, monkeypatch):
    """Without a network, `publish` said "Check the token's write access" after a DNS error."""
    def unreachable(self, *args, **kwargs):
        try:
            raise OSError(-2, "Name or service not known")
        except OSError as dns:
            raise RuntimeError("[Errno -2] Name or service not known") from dns

    monkeypatch.setattr(HfApi, "create_repo", unreachable)
    with pytest.raises(PublishError) as e:
        publish(release, "org/prefs", echo=lambda _: None)
    assert str(e.value).startswith("could not create or open dataset repo org/prefs: RuntimeError: [Errno -2] Name or ")
    assert str(e.value).endswith("The Hub could not be reached: check the network connection (and HF_ENDPOINT, "
                                 "if set), then run the same command again.")

    def refused(self, *args, **kwargs):
        raise _HTTPError("401 Unauthorized") from ConnectionError("TLS detail")

    monkeypatch.setattr(HfApi, "create_repo", refused)
    with pytest.raises(PublishError, match=r": _HTTPError: 401 Unauthorized\. Check the token's write access"):
        publish(release, "org/prefs", echo=lambda _: None)


def test_the_cards_column_lists_are_the_columns_of_the_released_files(release):
    """The card names every column a trainer finds in each kind of config, and no other (the `dove` list left out
    `pair_id` and `method`)."""
    import re

    import pyarrow.parquet as pq

    body = (release / "README.md").read_text().split("---\n", 2)[2]
    para = next(p for p in body.split("\n\n") if p.startswith("Conditional configs follow"))
    conditional, joint = para.split("The `dove` config has")

    def named(text: str) -> set[str]:
        return set(re.findall(r"`(\w+)`", text))

    assert named(conditional) == set(pq.read_schema(next((release / "all").glob("train-*.parquet"))).names)
    assert named(joint) == set(pq.read_schema(next((release / "dove").glob("*.parquet"))).names)


def test_a_model_named_by_a_local_folder_leaves_no_home_path_in_the_release(tmp_path):
    # main published /home/alice/... (the user's name, the machine's layout) in every row's lineage, the card's
    # models column and its gates table whenever a role's model was a local folder
    rows = []
    for i, t in enumerate(TOPICS[:6]):
        r = pair(f"p{i}", t, "pugc")
        r["lineage"] = json.dumps({"stage": "pugc", "generator": "/home/alice/ckpt/sft-v3", "judge": "org/judge",
                                   "models": {"policy": "~/models/pol"}, "scorer": "pugc:/home/alice/rm", "inputs": [f"p{i}"]})
        rows.append(r)
    write_method(tmp_path, "pugc", rows)
    gate = {"model": "/home/alice/ckpt/judge", "probes": 10, "correct": 9, "accuracy": 0.9, "min_accuracy": 0.6,
            "passed": True, "labels": "used"}
    (tmp_path / "data" / "pugc" / "details.json").write_text(json.dumps({"gates": {"scorer": gate}}))
    for kinds in (None, []):  # PII redaction on (the project's kinds) or off: the paths go either way
        out = tmp_path / "data" / f"release{len(kinds or ['x'])}"
        build_release(export_cfg(**({} if kinds is None else {"pii_kinds": kinds})), tmp_path, out, "fp")
        for f in out.rglob("*"):
            if f.is_file() and f.suffix != ".png":
                assert b"alice" not in f.read_bytes(), f
        released = [json.loads(x) for x in pl.read_parquet(out / "pugc" / "*.parquet")["lineage"]]
        assert {(d["generator"], d["models"]["policy"], d["scorer"], d["judge"]) for d in released} == {
            ("local:sft-v3", "local:pol", "pugc:local:rm", "org/judge")}
        card = (out / "README.md").read_text()
        assert "local:sft-v3" in card and "local:judge" in card


def test_the_card_loads_the_repo_it_is_published_to(release, tmp_path, hub, capsys):
    # main's card always told its readers to load_dataset("ORG/NAME"), whatever repo it was published to
    assert 'REPO = "ORG/NAME"' in (release / "README.md").read_text()
    assert cli(["publish", "--repo-id", "org/prefs", "--dry-run", "--path", str(release)]) == 0
    assert ("note: the card's training snippets load 'ORG/NAME', not 'org/prefs': set export.card.repo_id: "
            "org/prefs in params.yaml") in capsys.readouterr().out
    root = tmp_path / "named"
    standard_methods(root)
    build_release(export_cfg(card={"repo_id": "org/prefs"}), root, root / "data" / "release", "fp-named")
    card = (root / "data" / "release" / "README.md").read_text()
    assert 'REPO = "org/prefs"' in card and "ORG/NAME" not in card
    assert cli(["publish", "--repo-id", "org/prefs", "--dry-run", "--path", str(root / "data" / "release")]) == 0
    assert "note:" not in capsys.readouterr().out
    lines: list[str] = []
    publish(root / "data" / "release", "org/other", echo=lines.append)
    assert any(line.startswith("note: the card's training snippets load 'org/prefs', not 'org/other'") for line in lines)


@pytest.mark.parametrize("repo_id", ["prefs", "org/sub/prefs", "org/my prefs", "org/prefs--x"])
def test_a_card_repo_id_the_hub_refuses_is_a_params_error(repo_id):
    with pytest.raises(ValidationError, match=r"card\.repo_id[\s\S]*ORG/NAME"):
        export_cfg(card={"repo_id": repo_id})


def test_a_stage_table_is_refused_its_texts_are_neither_redacted_nor_decontaminated(tmp_path, hub, capsys):
    """Every stage table has a manifest, so `publish --path data/wildfeedback/pairs` (or data/ingest/rejects, or
    a held-out set) passed the manifest check and uploaded the unredacted texts: only a release export built is
    published, dry run included."""
    standard_methods(tmp_path)
    write_held_out(tmp_path, ["What's a healthy breakfast I can make in five minutes?"])
    for table in (tmp_path / "data" / "pugc" / "pairs", tmp_path / "data" / "selfie" / "test"):
        for dry_run in (True, False):
            with pytest.raises(PublishError) as e:
                publish(table, "org/prefs", dry_run=dry_run, echo=print)
            assert f"{table}: a stage's table (pairs), not a release" in str(e.value)
            assert "`dvc repro export`" in str(e.value) and "--path data/release" in str(e.value)
    assert hub.calls == [] and "would upload" not in capsys.readouterr().out


@pytest.mark.parametrize("audit", ["failed", "no verdict", "verdict as text", "not an object", "not json"])
def test_a_candidate_that_failed_its_audit_is_refused(tmp_path, hub, audit):
    """Export leaves a release failing its audit (PII found, a held-out prompt in train) in data/.release.rejected,
    manifest and all: publishing that folder uploaded what the audit stopped. Only an audit.json saying
    ``"passed": true`` lets a release go (one edited to drop or reword the verdict, or cut short, does not)."""
    standard_methods(tmp_path)
    release = tmp_path / "data" / "release"
    build_release(export_cfg(), tmp_path, release, "fp")
    rejected = tmp_path / "data" / ".release.rejected"
    release.rename(rejected)
    report = json.loads((rejected / "audit.json").read_text())
    verdictless = {k: v for k, v in report.items() if k != "passed"}
    (rejected / "audit.json").write_text({
        "failed": json.dumps({**report, "passed": False}), "no verdict": json.dumps(verdictless),
        "verdict as text": json.dumps({**report, "passed": "true"}), "not an object": "[]",
        "not json": json.dumps(report)[:100]}[audit])
    manifest = json.loads((rejected / "_manifest.json").read_text())
    for f in manifest["other_files"]:
        if f["path"] == "audit.json":
            f["sha256"] = file_sha256(rejected / "audit.json")
    (rejected / "_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PublishError) as e:
        publish(rejected, "org/prefs", dry_run=True, echo=lambda _: None)
    assert f"{rejected / 'audit.json'}: the release failed its audit" in str(e.value)
    assert hub.calls == []
