"""The errors a stage reports as one line (``pipeline.cli`` prints them without a traceback)."""

from __future__ import annotations

import errno


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


class SourceError(ValueError):
    """A source cannot be read at all (missing file, unknown format); names the path and what to do."""


class StageError(RuntimeError):
    """A stage cannot finish (e.g. too many rejected rows); the message says where and what to do."""


class EngineError(RuntimeError):
    """An engine call failed as a whole (the server, the settings, retries exhausted), not one row of it;
    ``map_batches`` reports it as a ``StageError`` naming the step and the role's model."""


class ModelLoadError(StageError):
    """A model, or the package that runs it, cannot be loaded; the message names the model and the fix."""
