"""Starting or joining Ray, in one place: a local instance listens on 127.0.0.1 only.

An embedded local instance (a laptop run, the tests) must not offer its services to the network: Ray's
GCS, raylet, object manager, workers and agents bind to the node's IP address, and Ray 2.60 picks the
machine's outward-facing address by default (``ray.init(_node_ip_address="127.0.0.1")`` alone is mapped
back to that address by ``ray._private.services.resolve_ip_for_localhost``). Ray keeps a node on the
loopback address when its single-node switch ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set (the default on
Windows and macOS), so a local start sets it for the processes it launches and for the driver's lookup.
Joining a cluster (an address, or ``RAY_ADDRESS``) changes nothing: the cluster's nodes chose their
addresses when they were started (``cluster.yaml``); only a loopback address (a local instance of another
process on this machine, as in the tests) is joined the same way.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterator
from typing import Any

from trainer.runtime.errors import ExperimentError

LOCALHOST = "127.0.0.1"
LOCAL = "local"
ADDRESS_ENV = "RAY_ADDRESS"
# Ray reads this at import (ray._private.ray_constants.ENABLE_RAY_CLUSTER); "0": one node, on loopback.
_SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def cluster_address(address: str | None = None) -> str | None:
    """The cluster to join: ``address``, else ``$RAY_ADDRESS``; None (or ``"local"``) means a local instance."""
    address = address or os.environ.get(ADDRESS_ENV) or None
    return None if address == LOCAL else address


def _host_port(address: str) -> tuple[str, str]:
    """``host:port`` or ``ray://host:port`` (an IPv6 host in brackets) -> (host, port); port "" when absent."""
    rest = address.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    return (host.strip("[]"), port) if sep else (rest.strip("[]"), "")


class RayAddressError(ExperimentError):
    """The cluster address given to join accepts no connection."""


# How long a cluster's address may take to accept a connection before it is reported unreachable.
CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse a ``host:port`` (or ``ray://host:port``) cluster address that accepts no TCP connection.

    ``ray.init`` retries such an address for minutes with repeated warnings; this fails at once instead.
    Addresses without a port (``auto``) are left to Ray.

    Raises:
        RayAddressError: nothing accepts a connection there within ``timeout`` seconds.
    """
    host, port = _host_port(address)
    if not port.isdigit():
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    raise RayAddressError(
        f"cannot reach the Ray cluster at {address} ({reason}); check the address (--address or {ADDRESS_ENV}), "
        f"start the cluster (ray start --head, or ray up cluster.yaml), or give neither for a local instance"
    )


def is_loopback(address: str) -> bool:
    """Whether a cluster address (``host:port`` or ``ray://host:port``) is on this machine's loopback."""
    host, _ = _host_port(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def _single_node() -> Iterator[None]:
    """Ray's single-node switch, for the processes ``ray.init`` launches and for the driver's own lookup."""
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(_SINGLE_NODE_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_SINGLE_NODE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False  # the driver read the variable at import
    try:
        yield
    finally:
        # Scoped to this start: a later join from the same process must report its real address.
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_SINGLE_NODE_ENV, None)
        else:
            os.environ[_SINGLE_NODE_ENV] = saved_env


def init_ray(address: str | None = None, **kwargs: Any) -> Any:
    """``ray.init``: join ``address`` (or ``$RAY_ADDRESS``), else start a local instance bound to 127.0.0.1.

    A local instance is always a new embedded one (``address="local"``), never a stale ``ray start`` found
    on disk, and its dashboard (when started) also listens on 127.0.0.1. Joining a loopback address (such an
    instance started by another process on this machine) keeps the loopback address too: Ray would
    otherwise dial the machine's outward-facing address, where nothing listens.

    Args:
        address: a cluster address (``ray://...`` or ``host:port``); None or ``"local"``: see above.
        **kwargs: passed to ``ray.init`` (``num_cpus``, ``include_dashboard``, ``log_to_driver``, ...).

    Returns:
        The ``RayContext`` of ``ray.init``.

    Raises:
        RayAddressError: the cluster address accepts no connection (``check_reachable``).
    """
    import ray

    joined = cluster_address(address)
    if joined is not None:
        check_reachable(joined)
    if joined is not None and not is_loopback(joined):
        return ray.init(address=joined, **kwargs)
    with _single_node():
        if joined is not None:
            return ray.init(address=joined, **kwargs)
        kwargs.setdefault("dashboard_host", LOCALHOST)
        return ray.init(address=LOCAL, _node_ip_address=LOCALHOST, **kwargs)
