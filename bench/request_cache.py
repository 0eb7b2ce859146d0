"""The openai backend's request cache (pipeline/llm/request_cache.py) against diskcache and plain sqlite3.

    python bench/request_cache.py                # 2,000 answers, 4 writer processes
    python bench/request_cache.py --smoke

Three stores behind the same ``get``/``put``, each in a fresh folder, all in this process and its children:
- **prefpipe**: one JSON file per key, written whole (temporary file + ``os.replace``);
- **diskcache** (``diskcache.Cache``, 5.x, installed with DVC): SQLite index, values pickled (inline or files);
- **sqlite3**: one table (key, JSON answer) in WAL mode, one commit per answer, 60 s busy timeout.

Measured: sequential put / get-hit / get-miss per answer; ``--procs`` processes writing the same keys at
once (as Ray replicas asking the same question), then every key read back and checked; a writer killed with
SIGKILL in the middle of its puts, then every key read back (each must be a miss or the right answer, never
an exception or a wrong value) and one more put; bytes on disk. Answers are what the cache stores: a judge's
few log-probabilities or a generated text of ~400 characters.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.llm.request_cache import MISS, RequestCache, request_key  # noqa: E402


class Disk:
    """diskcache.Cache behind the RequestCache interface."""

    def __init__(self, root: Path):
        import diskcache

        self.cache = diskcache.Cache(str(root))

    def get(self, key: str) -> Any:
        return self.cache.get(key, default=MISS)

    def put(self, key: str, answer: Any) -> None:
        self.cache.set(key, answer)


class Sqlite:
    """A hand-written sqlite3 store: (key, JSON answer), WAL, a commit per put."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(root / "cache.sqlite", timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")

    def get(self, key: str) -> Any:
        row = self.db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return MISS if row is None else json.loads(row[0])

    def put(self, key: str, answer: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, json.dumps(answer)))


STORES = {"prefpipe": RequestCache, "diskcache": Disk, "sqlite3": Sqlite}


def keys(n: int) -> list[str]:
    return [request_key({"endpoint": "chat", "body": {"model": "m", "prompt": f"prompt {i}"}}) for i in range(n)]


def answer(i: int) -> Any:
    return [-0.25 * i, -1.5, -2.0] if i % 2 else f"generated answer {i}. " * 20


def _writer(store: str, root: str, ks: list[str], done: Any = None, rounds: int = 1) -> None:
    cache = STORES[store](Path(root))
    for r in range(rounds):
        for i, k in enumerate(ks):
            cache.put(k, answer(i))
            if done is not None:
                done.value = r * len(ks) + i + 1


def _wrong(cache: Any, ks: list[str]) -> tuple[int, int, int]:
    """(misses, wrong answers, reads that raised) over ``ks``."""
    miss = wrong = raised = 0
    for i, k in enumerate(ks):
        try:
            got = cache.get(k)
        except Exception:  # noqa: BLE001 - counted: a store that raises on read after a crash
            raised += 1
            continue
        if got is MISS:
            miss += 1
        elif got != answer(i):
            wrong += 1
    return miss, wrong, raised


def du(root: Path) -> tuple[int, int]:
    """(bytes written, bytes of disk blocks used): a small file still takes a whole block."""
    stats = [p.stat() for p in root.rglob("*") if p.is_file()]
    return sum(st.st_size for st in stats), sum(st.st_blocks * 512 for st in stats)


def bench(store: str, base: Path, n: int, procs: int, kill_after: float) -> dict[str, Any]:
    ks, ctx = keys(n), mp.get_context("fork")
    row: dict[str, Any] = {"store": store}
    root = base / store / "seq"
    cache = STORES[store](root)
    t = time.perf_counter()
    for i, k in enumerate(ks):
        cache.put(k, answer(i))
    row["put us"] = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    miss, wrong, raised = _wrong(cache, ks)
    row["get hit us"] = (time.perf_counter() - t) / n * 1e6
    assert (miss, wrong, raised) == (0, 0, 0), (store, miss, wrong, raised)
    other = keys(2 * n)[n:]
    t = time.perf_counter()
    assert all(cache.get(k) is MISS for k in other)
    row["get miss us"] = (time.perf_counter() - t) / n * 1e6
    written, blocks = du(root)
    row["bytes/answer"], row["disk blocks/answer"] = written / n, blocks / n

    root = base / store / "concurrent"
    STORES[store](root)  # created once before the writers race
    workers = [ctx.Process(target=_writer, args=(store, str(root), ks)) for _ in range(procs)]
    t = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    row[f"{procs} writers s"] = time.perf_counter() - t
    miss, wrong, raised = _wrong(STORES[store](root), ks)
    row["concurrent ok"] = "yes" if all(w.exitcode == 0 for w in workers) and (miss, wrong, raised) == (0, 0, 0) \
        else f"exit {[w.exitcode for w in workers]}, {miss} missing, {wrong} wrong, {raised} raised"

    root = base / store / "killed"
    STORES[store](root)
    # lock=False: the writer is SIGKILLed, and a Value's lock killed while held stays held, so reading
    # done.value here would block forever (it did, in CI); one int written by one process needs no lock
    done = ctx.Value("i", 0, lock=False)
    w = ctx.Process(target=_writer, args=(store, str(root), ks, done, 1000))
    w.start()
    time.sleep(kill_after)
    os.kill(w.pid, signal.SIGKILL)
    w.join()
    after = STORES[store](root)
    miss, wrong, raised = _wrong(after, ks)
    after.put(ks[0], answer(0))
    ok = wrong == raised == 0 and after.get(ks[0]) == answer(0)
    row["after SIGKILL"] = f"{'ok' if ok else 'BROKEN'} ({done.value} puts, {n - miss} readable" + \
        (f", {wrong} wrong, {raised} raised)" if not ok else ")")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--answers", type=int, default=2000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--kill-after", type=float, default=0.5, help="seconds before the writer is killed")
    ap.add_argument("--smoke", action="store_true", help="50 answers, 2 writers (checks the bench runs)")
    args = ap.parse_args()
    if args.smoke:
        args.answers, args.procs, args.kill_after = 50, 2, 0.1
    with tempfile.TemporaryDirectory(prefix="bench-request-cache-") as tmp:
        rows = [bench(store, Path(tmp), args.answers, args.procs, args.kill_after) for store in STORES]
    cols = list(rows[0])
    print(f"{args.answers} answers, {args.procs} writer processes")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
