"""trainer.runtime.ray_init: which cluster is joined, and a local instance listening on 127.0.0.1 only."""

from __future__ import annotations

import os

from tests.conftest import LOOPBACK, listening_addresses
from trainer.runtime.ray_init import cluster_address


def test_cluster_address_prefers_the_argument_then_ray_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address() is None and cluster_address("local") is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert cluster_address() == "10.0.0.5:6379"
    assert cluster_address("ray://head:10001") == "ray://head:10001"
    assert cluster_address("local") is None  # an explicit local start ignores RAY_ADDRESS
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert cluster_address() is None


def test_the_local_instance_listens_on_loopback_only(ray_session):
    """GCS, raylet, object manager, workers and agents of the session's instance (started by init_ray)."""
    import ray

    @ray.remote
    def one() -> int:
        return 1

    assert ray.get(one.remote()) == 1  # a worker process is up
    addresses = listening_addresses(os.getpid())
    assert len(addresses) >= 3, addresses  # at least the GCS, the raylet and a worker
    assert all(a.startswith(LOOPBACK) for a in addresses), addresses
    assert ray_session.startswith("127.0.0.1:")


def test_loopback_addresses_are_recognised():
    from trainer.runtime.ray_init import is_loopback

    for address in ("127.0.0.1:6379", "localhost:6379", "ray://127.0.0.1:10001", "[::1]:6379", "127.0.1.1:1"):
        assert is_loopback(address), address
    for address in ("10.0.0.5:6379", "ray://head-node:10001", "192.0.2.2:6379"):
        assert not is_loopback(address), address


def test_an_address_nothing_answers_on_is_refused_at_once(ray_session, tmp_path):
    import subprocess
    import sys
    import time

    import pytest

    from tests.conftest import free_port
    from trainer.runtime.ray_init import RayAddressError, check_reachable

    check_reachable(ray_session)  # the session's GCS answers
    check_reachable("auto")  # no port: left to Ray
    dead = f"127.0.0.1:{free_port()}"
    message = (
        f"cannot reach the Ray cluster at {dead} (Connection refused); check the address (--address or "
        "RAY_ADDRESS), start the cluster (ray start --head, or ray up cluster.yaml), or give neither for a local "
        "instance"
    )
    with pytest.raises(RayAddressError) as info:
        check_reachable(f"ray://{dead}")
    assert str(info.value) == message.replace(dead, f"ray://{dead}", 1)
    started = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "trainer.tune", "--exp", "smoke", "--storage", str(tmp_path), "--address", dead],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == f"error: {message}"
    assert not (tmp_path / "smoke").exists() and time.monotonic() - started < 60  # Ray would retry for minutes
