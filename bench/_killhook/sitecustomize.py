"""bench/killfuzz.py's kill hook, imported by every Python that has this folder on PYTHONPATH.

KILLFUZZ_COUNT=FILE: count the file operations of the run (renames, unlinks, folder removals, fsyncs, file opens
for writing, Parquet writes) and write one line per operation to FILE when the process exits.
KILLFUZZ_AT=N KILLFUZZ_SIG=NUM: send signal NUM (default 9) to this process just before its Nth file operation;
KILLFUZZ_AT_LABEL=TEXT: just before the first one whose line holds TEXT (`rename data/pugc/queries`).
Without either variable it changes nothing.
"""

import os

_COUNT, _AT, _LABEL = (os.environ.get(k) for k in ("KILLFUZZ_COUNT", "KILLFUZZ_AT", "KILLFUZZ_AT_LABEL"))

if _COUNT or _AT or _LABEL:
    import atexit
    import builtins
    import shutil
    import threading

    _real_open = builtins.open
    _lock = threading.Lock()
    _ops: list[str] = []
    _fired: list[int] = []
    _at, _sig = int(_AT or 0), int(os.environ.get("KILLFUZZ_SIG", "9"))

    def _op(label: str, arg) -> None:
        what = arg if isinstance(arg, (str, bytes, int, os.PathLike)) else type(arg).__name__  # a DataFrame: lines
        with _lock:
            _ops.append(f"{label} {what!s}".replace("\n", " "))
            n = len(_ops)
        if n == _at or (_LABEL and _LABEL in _ops[-1] and not _fired):
            _fired.append(n)
            os.kill(os.getpid(), _sig)

    def _wrap(owner, name: str, label: str | None = None, write_only: bool = False) -> None:
        real = getattr(owner, name)

        def hooked(*args, **kwargs):
            if not write_only or any(c in str(args[1] if len(args) > 1 else kwargs.get("mode", "r")) for c in "wax+"):
                _op(label or name, args[0] if args else "")
            return real(*args, **kwargs)

        setattr(owner, name, hooked)

    for _name in ("rename", "replace", "unlink", "remove", "rmdir", "fsync", "mkdir"):
        _wrap(os, _name)
    _wrap(shutil, "rmtree")
    _wrap(builtins, "open", write_only=True)
    try:
        import pyarrow.parquet as _pq

        _wrap(_pq.ParquetWriter, "write_table", "parquet.write_table")
        _wrap(_pq.ParquetWriter, "close", "parquet.close")
        _wrap(_pq, "write_table", "pq.write_table")
    except ImportError:
        pass
    try:
        import polars as _pl

        _wrap(_pl.DataFrame, "write_parquet", "polars.write_parquet")
        _wrap(_pl.DataFrame, "write_ndjson", "polars.write_ndjson")
    except ImportError:
        pass

    if _COUNT:
        @atexit.register
        def _dump() -> None:
            with _real_open(_COUNT, "w") as f:
                f.write("\n".join(_ops) + "\n")
