"""What the executor's two backends share: a step bound to its engine, and blocks of results.

``Step`` is a batch function with its keyword arguments and, for an engine step, the engine it was
built with (once per process locally, once per actor on Ray; ``build_engine``). A backend yields
``Block``s: a run of input rows and the output of each of its batches, which the driver
(``pipeline.execute.map_batches``) checkpoints and joins with ``concat_outputs``. Tables cross process
boundaries as one compact Arrow IPC buffer (``to_ipc`` / ``from_ipc``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from pipeline.config import LLM

Block = tuple[int, int, list[pa.Table | None]]  # input rows [start, end) and the output of each batch


def to_ipc(table: pa.Table | None) -> pa.Buffer | None:
    """A table as one compact buffer (a pickled slice would carry its parent's whole buffers)."""
    if table is None:
        return None
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def from_ipc(buf: pa.Buffer | None) -> pa.Table | None:
    return None if buf is None else pa.ipc.open_stream(buf).read_all()


def build_engine(engine: dict | None, factory=None):
    """The engine of ``LLM.shipped`` (settings and the params keys that set them), or None for a CPU step."""
    if engine is None:
        return None
    if factory is None:
        from pipeline.llm import get_engine as factory
    return factory(LLM.unshipped(engine))


class Step:
    """``fn`` with its kwargs and, for an engine step, the engine: built once when the step is made
    (once per process locally) by ``factory`` (default ``get_engine``)."""

    def __init__(self, fn: Callable[..., pa.Table], fn_kwargs: dict[str, Any], engine: dict | None, factory=None):
        self.fn, self.fn_kwargs, self.engine = fn, fn_kwargs, build_engine(engine, factory)

    def __call__(self, batch: pa.Table) -> pa.Table | None:
        if self.engine is None:
            return self.fn(batch, **self.fn_kwargs)
        return self.fn(batch, self.engine, **self.fn_kwargs)


def slices(table: pa.Table, start: int, end: int, size: int) -> Iterator[pa.Table]:
    for lo in range(start, end, size):
        yield table.slice(lo, min(size, end - lo))


def concat_outputs(parts: list[pa.Table | None]) -> pa.Table | None:
    parts = [p for p in parts if p is not None and p.num_columns]
    if not parts:
        return None
    return pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]
