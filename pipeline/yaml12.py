"""params.yaml read as DVC reads it: with ruamel.yaml (YAML 1.2), the library DVC itself parses it with.

DVC reads params with ``ruamel.yaml.YAML(typ="safe")`` (dvc/utils/serialize/_yaml.py), so reading with the
same library makes the two agree by construction: ``yes``/``no``/``on``/``off`` are strings, ``1e-5`` is a
float, ``017`` is 17 and ``0o17`` is 15, and a key repeated in one mapping is an error. ``load_yaml`` only
turns ruamel's multi-line duplicate-key report into ``DuplicateKey``, one line naming the key and both lines.
``load_yaml_file`` reads a file so, every way it can fail one line (``YamlFileError``): no permission, not
UTF-8 (line and byte), a syntax error (file:line:column), a duplicate key.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import ReusedAnchorWarning
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from pipeline.errors import os_reason

__all__ = ["DuplicateKey", "YAMLError", "YamlFileError", "load_yaml", "load_yaml_file"]


class DuplicateKey(YAMLError):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(f"line {line}: duplicate key {key!r} (first at line {first}); keep one of them")


def _yaml() -> YAML:
    # DVC's typ; pure=True: the same parser (and error text) whether or not ruamel.yaml.clib is installed.
    return YAML(typ="safe", pure=True)


def load_yaml(text: str) -> Any:
    """The document in ``text`` as DVC reads it; raises ``DuplicateKey`` on a repeated key, else ``YAMLError``."""
    try:
        with warnings.catch_warnings():  # YAML 1.2 lets an anchor be redefined (an alias takes the latest one)
            warnings.simplefilter("ignore", ReusedAnchorWarning)
            return _yaml().load(text)
    except DuplicateKeyError as e:
        raise _duplicate(text, e) or e from None


def _duplicate(text: str, err: DuplicateKeyError) -> DuplicateKey | None:
    """The repeated key ruamel found at ``err.problem_mark``, with the line of its first occurrence."""
    at = (err.problem_mark.line, err.problem_mark.column)
    for node in _mappings(_yaml().compose(text)):
        keys = [key for key, _ in node.value]
        dup = next((k for k in keys if (k.start_mark.line, k.start_mark.column) == at), None)
        if dup is not None:
            first = next(k for k in keys if k.tag == dup.tag and k.value == dup.value)
            return DuplicateKey(dup.value, at[0] + 1, first.start_mark.line + 1)
    return None


def _mappings(root: Node | None) -> list[MappingNode]:
    """Every mapping node under ``root`` (each once: an alias shares its anchor's node)."""
    found, stack, seen = [], [root], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            found.append(node)
            stack.extend(n for pair in node.value for n in pair)
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)
    return found


class YamlFileError(ValueError):
    """A YAML file cannot be read or parsed; the message is one line naming the file (and line) and the fix."""


def yaml_error_line(path: Path, err: YAMLError) -> str:
    """One line: where the YAML breaks (file:line:column), what the parser found, what it was reading."""
    mark = getattr(err, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context, cmark = getattr(err, "context", None), getattr(err, "context_mark", None)
    started = f" ({context} started at line {cmark.line + 1})" if context and cmark is not None else ""
    return (f"{where}: not valid YAML: {problem}{started}; fix the syntax there (indent with spaces, close "
            "every bracket and quote)")


def load_yaml_file(path: Path) -> Any:
    """``load_yaml`` of the UTF-8 file ``path``; ``YamlFileError`` in one line when it cannot be."""
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except OSError as e:
        raise YamlFileError(f"{path}: cannot be read ({os_reason(e)}); make it readable (its "
                            "permissions or owner) and run again") from None
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise YamlFileError(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x}); save the file as UTF-8") from None
    try:
        return load_yaml(text)
    except DuplicateKey as e:
        raise YamlFileError(f"{path}: {e}") from None
    except YAMLError as e:
        raise YamlFileError(yaml_error_line(path, e)) from None
