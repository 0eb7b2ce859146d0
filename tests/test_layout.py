"""Issue #20's layout rules, checked on the source: no module of the package over 450 lines, and no
polars native hash (``Expr.hash``, ``Series.hash``, ``DataFrame.hash_rows``), whose values change with
the polars version, anywhere in ``pipeline/`` or ``stages/``: ids and keys go through ``pipeline.ids``
(xxh3 through polars-hash), pinned by tests/test_ids.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.project_imports import PACKAGES, ROOT

MAX_LINES = 450
NATIVE_HASHES = {"hash", "hash_rows"}  # polars' own hashes: seeded by polars, not stable across versions


def long_modules(root: Path) -> dict[str, int]:
    """module file (relative to ``root``) -> its line count, for the modules over ``MAX_LINES``."""
    counts = {p.relative_to(root).as_posix(): len(p.read_text().splitlines())
              for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}
    return {path: n for path, n in counts.items() if n > MAX_LINES}


def native_hash_calls(root: Path) -> list[str]:
    """``file:line`` of every call of a method named ``hash`` or ``hash_rows`` (polars' native hashes)."""
    found = []
    for path in sorted(p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in NATIVE_HASHES:
                found.append(f"{path.relative_to(root).as_posix()}:{node.lineno}")
    return found


def test_no_module_of_the_package_is_over_450_lines():
    assert not long_modules(ROOT), f"modules over {MAX_LINES} lines (move generic machinery into pipeline/, or " \
                                   f"split the stage by its paper's steps): {long_modules(ROOT)}"


def test_no_id_or_key_uses_a_polars_native_hash():
    assert not native_hash_calls(ROOT), "polars' native hash changes with the polars version: use " \
                                        f"pipeline.ids.hash64 / hex_id instead at {native_hash_calls(ROOT)}"


def test_the_checks_find_a_long_module_and_a_native_hash(tmp_path):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
    (tmp_path / "pipeline" / "short.py").write_text("import polars as pl\nx = pl.col('a').str.len_bytes()\n")
    (tmp_path / "stages" / "ids.py").write_text("import polars as pl\n\n\ndef key(df):\n"
                                                "    return df.select(pl.col('a').hash(seed=1)), df.hash_rows()\n")
    (tmp_path / "stages" / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert long_modules(tmp_path) == {"stages/long.py": MAX_LINES + 1}
    assert native_hash_calls(tmp_path) == ["stages/ids.py:5", "stages/ids.py:5"]
