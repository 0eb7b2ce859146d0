"""The errors a stage reports as one line (``pipeline.cli`` prints them without a traceback)."""

from __future__ import annotations

import errno
import os
import re
import sys


def os_reason(e: OSError) -> str:
    """What an OSError says and its code, for a one-line message ("Permission denied, EACCES"); an OSError with
    no code: its text, else its type.

    >>> import errno, os
    >>> os_reason(PermissionError(errno.EACCES, os.strerror(errno.EACCES), "x"))
    'Permission denied, EACCES'
    """
    if not e.errno:
        return str(e) or type(e).__name__
    return f"{e.strerror or e}, {errno.errorcode.get(e.errno, e.errno)}"


UTF8_MODE = "run with PYTHONUTF8=1 (Python's UTF-8 mode) or in a UTF-8 locale"


def unnameable(path: str) -> str:
    """``"; ..."`` when this Python cannot name ``path`` on disk (a non-UTF-8 locale with UTF-8 mode off: Python's
    file system encoding lacks a letter of it, so Python sees no such file; or ``path`` came from argv as surrogates,
    which pyarrow refuses), else "".

    >>> unnameable("data/pösts.jsonl")
    ''
    >>> unnameable("data/p\\udcc3\\udcb6sts.jsonl").startswith("; this Python's file system encoding")
    True
    """
    try:
        os.fsencode(path)
        path.encode("utf-8")
    except UnicodeError:
        return f"; this Python's file system encoding ({sys.getfilesystemencoding()}) cannot name it: {UTF8_MODE}"
    return ""


def printable(text: str) -> str:
    """``text`` with its line breaks and other control characters escaped as Python writes them, so a message that
    quotes a value stays one line.

    >>> printable("post 1\\n\\nHuman: x")
    'post 1\\\\n\\\\nHuman: x'
    """
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def one_line(e: BaseException, width: int = 300) -> str:
    """``Type: text`` of an exception a library raised, for a one-line message: its white space (Parquet's thrift
    errors end in a line break) collapsed, other control characters escaped, cut to ``width`` characters.

    >>> one_line(OSError("Couldn't deserialize thrift: don't know what type: \\x0e\\n"))
    "OSError: Couldn't deserialize thrift: don't know what type: \\\\x0e"
    """
    text = printable(" ".join(str(e).split()))
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= width else text[:width] + "..."


# What pyarrow puts before its reason when it opens a file: the path, which the message names already.
_OPENING = re.compile(r"^(\w+: )Could not open Parquet input source '[^']*': ")

# The fix for a stage's output a later step cannot read: a stage wrote it, so write it again.
REBUILD = "run the stage that writes it again (`dvc repro`)"


def unreadable_parquet(path: object, e: BaseException, fix: str = REBUILD) -> str:
    """One line for a Parquet file pyarrow cannot read: the file, pyarrow's reason on one line (``one_line``: a
    thrift error ends in a line break) without the path it repeats, and ``fix`` (for a file the user may not read,
    making it readable: writing it again would not help).

    >>> unreadable_parquet("d/p.parquet", OSError("Could not open Parquet input source 'd/p.parquet': Bad footer\\n"))
    'd/p.parquet: not a readable Parquet file (OSError: Bad footer); run the stage that writes it again (`dvc repro`)'
    """
    reason = _OPENING.sub(r"\1", one_line(e))
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM):
        fix = "make it readable (its permissions or owner) and run again"
    return f"{path}: not a readable Parquet file ({reason}); {fix}"


class SourceError(ValueError):
    """A source cannot be read at all (missing file, unknown format); names the path and what to do."""


class StageError(RuntimeError):
    """A stage cannot finish (e.g. too many rejected rows); the message says where and what to do."""


class EngineError(RuntimeError):
    """An engine call failed as a whole (the server, the settings, retries exhausted), not one row of it;
    ``map_batches`` reports it as a ``StageError`` naming the step and the role's model."""


# What an engine that cannot load its model says to set; ``map_batches`` puts the exact params key in its place
# (``LLM.model_key``: ``selfie.policy_model``, ``pugc.roles.judge.model``), the same on every backend.
MODEL_KEY = "llm.model (or the role's model)"


class ModelLoadError(StageError):
    """A model, or the package that runs it, cannot be loaded; the message names the model and the fix."""

    def naming(self, key: str) -> ModelLoadError:
        """This error with ``key``, the params key that set the model, in place of ``MODEL_KEY``.

        >>> str(ModelLoadError(f"model './x': no such folder; set {MODEL_KEY} to a folder").naming("selfie.policy_model"))
        "model './x': no such folder; set selfie.policy_model to a folder"
        """
        text = str(self)
        return self if MODEL_KEY not in text else type(self)(text.replace(MODEL_KEY, key))
