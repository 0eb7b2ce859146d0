"""A content-addressed disk cache of server answers, so a rerun or a resume does not pay twice.

    >>> cache = RequestCache(Path("/tmp/requests"))                 # doctest: +SKIP
    >>> key = request_key({"endpoint": "chat", "body": {...}})        # doctest: +SKIP
    >>> cache.get(key) or cache.put(key, answer)                     # doctest: +SKIP

The key is the SHA-256 of the canonical JSON of everything that determines the answer: the endpoint,
the request body (which names the model) and how the answer is read. The value is the parsed answer
(a few numbers or a text), not the raw response, so a judge call over a long prompt stays small on
disk. Files are written whole (temporary file + ``os.replace``): concurrent writers of one key (Ray
replicas, two runs) leave one complete file, and a torn or foreign file reads as a miss.

Where: ``$PREFPIPE_REQUEST_CACHE`` if set, else ``requests/`` under the prefpipe cache
(``$PREFPIPE_CACHE``, default ``~/.cache/prefpipe``): an absolute path, so Ray actors whose working
directory is not the project still find it. Nothing here holds an API key: requests never carry one.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from pipeline.llm.tiny import cache_root, env_folder

MISS = object()  # what ``get`` returns for a key with no stored answer


def cache_dir() -> Path:
    if os.environ.get("PREFPIPE_REQUEST_CACHE"):
        return env_folder("PREFPIPE_REQUEST_CACHE", Path())
    return cache_root() / "requests"


def request_key(request: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``request`` (sorted keys, no whitespace)."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class RequestCache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache_dir()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any:
        """The stored answer, or ``MISS``."""
        try:
            entry = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return MISS
        if not isinstance(entry, dict) or entry.get("key") != key or "answer" not in entry:
            return MISS
        return entry["answer"]

    def put(self, key: str, answer: Any) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps({"key": key, "answer": answer}, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, path)

