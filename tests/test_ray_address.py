"""A wrong ``execution.ray_address`` fails at once, in one line naming the key (Ray retried it for minutes)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import StageError
from pipeline.execute_ray import check_address

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("address", ["127.0.0.1:9", "ray://127.0.0.1:9", "[::1]:9"])
def test_an_address_where_nothing_answers_is_one_line_naming_the_key(address):
    with pytest.raises(StageError, match=r"^execution.ray_address \(or RAY_ADDRESS\) .*: nothing answers at .*:9 "
                                         r"\(.+\); start the cluster there"):
        check_address(address)


def test_a_listening_address_and_the_local_forms_pass():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_address(f"127.0.0.1:{server.getsockname()[1]}")
        check_address(f"ray://127.0.0.1:{server.getsockname()[1]}")
    check_address("local")
    check_address("auto")


def test_ray_init_checks_before_ray_starts():
    """In a fresh process (no Ray instance yet): the error comes before ``ray.init`` tries the address."""
    code = ("from pipeline.execute_ray import ray_init\n"
            "try:\n    ray_init('127.0.0.1:9')\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
            "import ray\nprint('initialized', ray.is_initialized())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    assert out.startswith("StageError execution.ray_address (or RAY_ADDRESS) '127.0.0.1:9': nothing answers")
    assert out.strip().endswith("initialized False")
