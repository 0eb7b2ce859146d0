"""The errors a stage reports as one line (``pipeline.cli`` prints them without a traceback)."""

from __future__ import annotations


class SourceError(ValueError):
    """A source cannot be read at all (missing file, unknown format); names the path and what to do."""


class StageError(RuntimeError):
    """A stage cannot finish (e.g. too many rejected rows); the message says where and what to do."""


class EngineError(RuntimeError):
    """An engine call failed as a whole (the server, the settings, retries exhausted), not one row of it;
    ``map_batches`` reports it as a ``StageError`` naming the step and the role's model."""


class ModelLoadError(StageError):
    """A model, or the package that runs it, cannot be loaded; the message names the model and the fix."""
