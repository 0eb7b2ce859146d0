"""A wrong ``execution.ray_address`` fails at once, in one line naming the key (Ray retried it for minutes)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import StageError
from pipeline.execute_ray import check_address, check_gcs, ray_init

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _gcs_answers(monkeypatch):
    """The listeners below are plain sockets: ``check_gcs``'s GCS client would wait out its 10 s on them."""
    import ray._raylet

    monkeypatch.setattr(ray._raylet, "GcsClient", lambda **kw: None)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # the driver sends no token unless a test says so


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


@pytest.mark.parametrize("address", ["nonsense", "10.0.0.1"])
def test_an_address_ray_cannot_parse_is_one_line_naming_the_key(address):
    """A new user's walk-through: `ray_address: nonsense` (no port) was a ValueError traceback from inside Ray.
    In a fresh process, as above: Ray refuses the address before it starts anything."""
    code = ("from pipeline.execute_ray import ray_init\n"
            f"try:\n    ray_init({address!r})\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    assert out == (f"StageError execution.ray_address (or RAY_ADDRESS) {address!r}: not an address Ray reads "
                   f"(ValueError: Invalid address format: {address}); give the head node's host:port (e.g. "
                   "10.0.0.1:6379), ray://host:port, or null for a local Ray instance\n")


@pytest.fixture
def listening():
    """``host:port`` of a plain socket listening on this machine: ``check_address``'s TCP check passes there."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"127.0.0.1:{server.getsockname()[1]}"


class AuthenticationError(Exception):  # ray.exceptions.AuthenticationError, as the GCS client raises it
    pass


class RpcError(Exception):  # ray.exceptions.RpcError, as the GCS client raises it after its own 40 s
    pass


def _ray_init_is(monkeypatch, init) -> None:
    """No Ray instance yet, and ``ray.init`` is ``init``."""
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)


def _gcs_client_raises(monkeypatch, error: Exception) -> None:
    """``check_gcs``'s GCS client raises ``error``; ``ray.init`` must not be reached (its retries take minutes)."""
    import ray._raylet

    def client(**kwargs):
        raise error

    monkeypatch.setattr(ray._raylet, "GcsClient", client)
    _ray_init_is(monkeypatch, lambda **kw: pytest.fail("ray.init reached: its retries take 20 s to minutes"))


REFUSED = "RPC error: InvalidAuthToken: Authentication token is missing or incorrect."


def _refused_by_the_cluster(**kwargs):
    """What ray.init raises (Ray 2.60, measured) when a cluster started with `ray start` (token authentication on)
    is reached by a driver that sends no token, after 20 s of retries."""
    try:
        raise RuntimeError("Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
                           "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: Authentication token "
                           "is missing or incorrect. Note: RAY_AUTH_MODE is currently 'disabled' (not 'token').")
    except RuntimeError as e:
        raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6379") from e


def test_a_cluster_that_refuses_the_driver_is_one_line_saying_how_to_get_in(monkeypatch, listening):
    """Today's failure: Ray's ConnectionError traceback; the README's `ray start --head` + RAY_ADDRESS recipe hit it."""
    _ray_init_is(monkeypatch, _refused_by_the_cluster)
    with pytest.raises(StageError) as e:
        ray_init(listening)
    assert str(e.value) == (
        f"execution.ray_address (or RAY_ADDRESS) {listening!r}: the Ray cluster there requires its authentication "
        "token; set RAY_AUTH_MODE=token and give this machine the cluster's token (`ray get-auth-token` on the head "
        "node, into RAY_AUTH_TOKEN or ~/.ray/auth_token)")

    _ray_init_is(monkeypatch, lambda **kw: (_ for _ in ()).throw(ConnectionError("version mismatch")))
    with pytest.raises(StageError, match=r"^execution.ray_address .*: Ray could not connect \(ConnectionError: "
                                         r"version mismatch\); check that a Ray cluster"):
        ray_init(listening)


def test_a_cluster_that_refuses_the_token_fails_before_ray_init_retries(monkeypatch, listening):
    """The docs' `ray start --head` + RAY_ADDRESS without RAY_AUTH_MODE=token: the line came only after ray.init's
    20 s of retries and Ray's warning per retry (measured, Ray 2.60); one GCS client is refused at once."""
    _gcs_client_raises(monkeypatch, AuthenticationError(REFUSED))
    with pytest.raises(StageError, match=r"the Ray cluster there requires its authentication token; set "
                                         r"RAY_AUTH_MODE=token"):
        ray_init(listening)


def test_a_cluster_that_refuses_the_token_given_says_the_token_is_wrong(monkeypatch, listening):
    """With RAY_AUTH_MODE=token and another cluster's token, the line told the user to set RAY_AUTH_MODE=token."""
    _gcs_client_raises(monkeypatch, AuthenticationError(REFUSED))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    with pytest.raises(StageError) as e:
        check_gcs(listening)
    assert str(e.value) == (
        f"execution.ray_address (or RAY_ADDRESS) {listening!r}: the Ray cluster there refused this machine's token "
        "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token); give it the cluster's token "
        "(`ray get-auth-token` on the head node)")


def test_a_listener_that_is_not_a_ray_cluster_fails_in_one_line(monkeypatch, listening):
    """RAY_ADDRESS at a web server (the dashboard's 8265, as `ray job submit` takes it): ray.init retried for minutes,
    a Ray warning every 5 s (measured: still retrying after 5 min). A GCS client that gets no reply: one line."""
    _gcs_client_raises(monkeypatch, RpcError("Timed out while waiting for GCS to become available."))
    with pytest.raises(StageError) as e:
        ray_init(listening)
    assert str(e.value) == (
        f"execution.ray_address (or RAY_ADDRESS) {listening!r}: something answers there, but no Ray cluster replied "
        "within 10 s; give the head node's GCS port (`ray start --head --port`, 6379 by default; not the dashboard's "
        "8265), ray://host:10001 for the Ray client, or null for a local Ray instance")


def test_a_connect_error_quoting_a_traceback_keeps_only_its_last_line(monkeypatch, listening):
    """Measured: an address where an HTTP/2 proxy answers 404 gave 'Ray could not connect (RuntimeError: Failed to
    connect to GCS. Last connection error: Traceback (most recent call last): File ".../ray/...' in the one line."""
    def unreachable(**kwargs):
        raise RuntimeError("Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
                           '  File "/site-packages/ray/_private/node.py", line 996, in _init_gcs_client\n'
                           "    client = GcsClient(\n"
                           "ray.exceptions.RpcError: RPC error: Received http2 header with status: 404")

    _ray_init_is(monkeypatch, unreachable)
    with pytest.raises(StageError) as e:
        ray_init(listening)
    assert str(e.value) == (
        f"execution.ray_address (or RAY_ADDRESS) {listening!r}: Ray could not connect (RuntimeError: Failed to connect "
        "to GCS. Last connection error: ray.exceptions.RpcError: RPC error: Received http2 header with status: 404); "
        "check that a Ray cluster of this Ray version runs there (`ray status` on its head node)")
