"""A release folder's pair files: where they are (``<config>/<split>-*.parquet``) and whether ``prefpipe audit`` can
read them (present, holding the rows ``_manifest.json`` lists, released pairs files whose columns have the types the
audit reads); ``release_problem`` says in one line what is wrong."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import unreadable_parquet
from pipeline.io import read_manifest


def release_files(release: Path) -> dict[str, dict[str, list[Path]]]:
    """config -> split -> Parquet files (``<config>/<split>-*.parquet``)."""
    out: dict[str, dict[str, list[Path]]] = {}
    for f in sorted(release.glob("*/*.parquet")):
        out.setdefault(f.parent.name, {}).setdefault(f.name.split("-", 1)[0], []).append(f)
    return out


def release_problem(release: Path) -> str | None:
    """Why ``release`` holds no released pair files the audit can read (one line: the file and what to do), or None."""
    files = [f for splits in release_files(release).values() for paths in splits.values() for f in paths]
    incomplete = _unlike_manifest(release, files)
    if incomplete:
        return incomplete
    if not files:
        up = release.parent if release.name not in ("", "..") else release.resolve().parent  # "." has no parent
        if any(release.glob("*.parquet")) and (up / "_manifest.json").is_file():
            return (f"{release}: one config of a release; audit the whole release, `prefpipe audit {up}` "
                    "(its checks compare the configs and splits with one another)")
        return f"{release}: no released pair files (<config>/<split>-*.parquet); build the release with `dvc repro export`"
    for f in files:
        try:
            schema = pq.read_schema(f)
        except (pa.ArrowException, OSError) as e:
            return unreadable_parquet(f, e, "rebuild the release with `dvc repro export`")
        names = schema.names
        missing = [c for c in ("pair_id", "chosen", "rejected") if c not in names]
        if missing or not ({"prompt"} <= set(names) or {"chosen_prompt", "rejected_prompt"} <= set(names)):
            return (f"{f}: not a released pairs file (no column {(missing or ['prompt'])[0]!r}); "
                    "audit the folder export writes (data/release)")
        for field in schema:
            want, ok = _KINDS.get(field.name, ("", None))
            if ok is not None and not ok(field.type):  # was a polars traceback from the check that reads it
                return (f"{f}: column {field.name!r} is {field.type}, expected {want}: not a release export wrote; "
                        "rebuild the release with `dvc repro export`")
    return None


def _text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _messages(t: pa.DataType) -> bool:
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)) or not pa.types.is_struct(t.value_type):
        return False
    item = t.value_type
    return all(item.get_field_index(k) >= 0 and _text(item.field(k).type) for k in ("role", "content"))


def _number(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_null(t)


# The type each column the audit reads must have: column -> (what it is, its test).
_KINDS = {
    **dict.fromkeys(("prompt", "chosen", "rejected", "chosen_prompt", "rejected_prompt"),
                    ("a list of {role, content} messages", _messages)),
    **dict.fromkeys(("pair_id", "method", "source", "lineage"), ("a string", _text)),
    **dict.fromkeys(("score_chosen", "score_rejected", "margin", "confidence", "label_smoothing", "level"),
                    ("a number", _number)),
    "noisy": ("a boolean", lambda t: pa.types.is_boolean(t) or pa.types.is_null(t)),
}


def _unlike_manifest(release: Path, files: list[Path]) -> str | None:
    """A pair file the release's manifest lists that is missing or holds other rows (a copy or `dvc pull` cut
    short): the audit would pass what is left; or one of ``files`` it does not list (a copy made by hand), whose
    rows the audit would count and readers of the folder load too. Hashes are ``prefpipe publish``'s to check."""
    manifest = read_manifest(release)  # SourceError naming it when it is cut short itself
    listed = manifest["files"] if manifest else []
    paths = {f["path"] for f in listed}
    unlisted = [f for f in files if f.relative_to(release).as_posix() not in paths] if manifest else []
    if unlisted:
        return (f"{unlisted[0]}: a pair file _manifest.json does not list ({len(unlisted)} such "
                f"file{'s' if len(unlisted) > 1 else ''}), so readers of the release would load its rows too; delete "
                "it, or build the release again (`dvc repro export`)")
    bad = [f for f in listed if not (release / f["path"]).is_file()
           or _rows(release / f["path"]) not in (None, f.get("rows"))]  # an unreadable file: release_problem says so
    if not bad:
        return None
    what = "missing" if not (release / bad[0]["path"]).is_file() else "not the rows _manifest.json lists"
    return (f"{release / bad[0]['path']}: {what} ({len(bad)} of the {len(listed)} files it lists); the release is "
            "incomplete: build it again (`dvc repro export`) or fetch it again (`dvc pull`)")


def _rows(path: Path) -> int | None:
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError):
        return None
