"""Sources on the Hugging Face Hub (``hf://org/name[:split]``, ``hf://org/name/config:split``), streamed.

``check_hub`` fails fast, in one line, when a set cannot be reached; ``hub_rows`` streams its records
through ``datasets.load_dataset`` (it honours HF_HUB_OFFLINE and the local cache; streaming keeps memory
bounded). ``pipeline.readers.iter_records`` turns them into numbered rows like any local file's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from pipeline.errors import SourceError, one_line

HF_PREFIX = "hf://"


def _hub_spec(dataset_id: str) -> tuple[str, str | None, str]:
    spec, _, split = dataset_id[len(HF_PREFIX):].partition(":")
    parts = spec.split("/")
    return "/".join(parts[:2]), ("/".join(parts[2:]) or None), split or "train"


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def check_hub(dataset_id: str, key: str = "") -> None:
    """Fail fast, in one line, when ``hf://`` set ``dataset_id`` cannot be reached: one request, no retries.

    Skipped when offline (HF_HUB_OFFLINE=1): ``datasets`` then reads the local cache and fails at
    once on a miss. ``key`` names the params key that holds the id (``ingest.sources[2].path``).
    """
    if _offline():
        return
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    where = f"{key}: " if key else ""
    name, _, _ = _hub_spec(dataset_id)
    try:
        HfApi().dataset_info(name, timeout=10)
    except (RepositoryNotFoundError, GatedRepoError) as e:
        raise SourceError(f"{where}{dataset_id}: no such dataset on the Hugging Face Hub, or it is private or gated "
                          f"({type(e).__name__}); check the id, and log in (`hf auth login`) for gated sets") from None
    except Exception as e:  # network down, DNS, proxy: one line instead of minutes of retries
        raise SourceError(f"{where}{dataset_id}: the Hugging Face Hub cannot be reached ({one_line(e)}); "
                          "check your network, or set HF_HUB_OFFLINE=1 to use a cached copy, or download the set and "
                          "point the path at the local files") from None


def hub_rows(dataset_id: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row number, record)`` of ``dataset_id``, 1-based, through ``datasets.load_dataset`` (streaming)."""
    import datasets

    check_hub(dataset_id)
    name, config, split = _hub_spec(dataset_id)
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as e:  # network, auth, missing dataset: all surface as one readable error
        missed_cache = _offline() and "offline" in f"{type(e).__name__}: {e}".lower()  # OfflineModeIsEnabled
        fix = ("HF_HUB_OFFLINE is set and the set is not in the local cache: run once with HF_HUB_OFFLINE=0 to "
               "cache it (check the id and split)" if missed_cache else
               "Check the id and split, your network, and `hf auth login` for gated sets")
        raise SourceError(
            f"{dataset_id}: could not load from the Hugging Face Hub ({one_line(e)}). {fix}; "
            "or download it and point `path` at the local files."
        ) from e
    rows, i = iter(ds), 0
    while True:
        try:
            rec = next(rows)
        except StopIteration:
            return
        except Exception as e:  # a dropped connection, a shard that cannot be decoded: rerun, not a partial set
            raise SourceError(f"{dataset_id}: reading broke off after row {i} ({one_line(e)}); "
                              "run the stage again, or download the set and point `path` at the local files") from None
        i += 1
        yield i, rec
