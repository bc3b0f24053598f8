"""Serve a trained agent's decision over HTTP: ``python -m trainer.serve CHECKPOINT_OR_DIR [--port 8000]``.

Starts a Ray Serve application (``trainer.evaluation.decision_service``) on a local Ray instance, or on the
cluster of ``--address`` (or ``RAY_ADDRESS``), with HTTP on ``--host`` (127.0.0.1 unless told otherwise)
and ``--port``: ``POST /decide`` answers what ``python -m trainer.decide --json`` writes, for the prices and
holdings of the request; ``GET /healthz`` answers 200 once the replicas are ready; ``GET /model`` names the
universe, the checkpoints, the training window and the env settings. Accepts what ``trainer.decide``
accepts (a checkpoint, a run directory, a sweep or study directory; ``--agent`` / ``--ensemble``; or
``--registry DIR``: the live model of a ``trainer.rolling`` registry, followed as it changes). Prints
the URL, serves until Ctrl-C (or SIGTERM), then deletes the application and stops what it started. Every
refusal before serving is one line (exit 2); without Ray Serve installed, the line says how to install it.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType

from trainer.evaluation.decision import DecisionError, load_members
from trainer.evaluation.decision_sources import members_of
from trainer.runtime.console import quiet_logging
from trainer.runtime.errors import ExperimentError
from trainer.runtime.ray_init import cluster_address, init_ray
from trainer.runtime.serve_ingress import HA_PROXY_ENV, HAPROXY, INGRESSES, PROXY, IngressError, use_haproxy_ingress

EXIT_BAD_INPUT = 2
INSTALL_HINT = 'Ray Serve is not installed; install it with: pip install -e ".[serve]"'
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000


def _bounded(low: int, high: int | None, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            bound = f"{low} .. {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"expected {what} {bound}, got {text!r}")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer.serve", description=__doc__.splitlines()[0])
    p.add_argument(
        "source", type=Path, nargs="?", help="a checkpoint, a trainer.train run directory, or a sweep/study directory"
    )
    p.add_argument(
        "--registry",
        type=Path,
        help="instead of SOURCE: the live model of a trainer.rolling registry, followed as promotions and rollbacks "
        "change it",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}: this machine)")
    p.add_argument(
        "--port", type=_bounded(1, 65535, "a port"), default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT})"
    )
    p.add_argument(
        "--replicas", type=_bounded(1, None, "a whole number"), default=1, help="replicas (one CPU each; default 1)"
    )
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local instance)")
    p.add_argument(
        "--ingress",
        choices=INGRESSES,
        default=PROXY,
        help="a local instance's HTTP ingress: Serve's proxy (default; listens on --host only) or HAProxy (much "
        "faster; also opens its statistics and metrics ports on every interface, see the README)",
    )
    p.add_argument("--agent", type=int, help="of a population checkpoint: the agent to decide with, 0 .. K-1")
    p.add_argument("--ensemble", action="store_true", help="of a population checkpoint: average every agent")
    p.add_argument("--verbose", action="store_true", help="show Ray and Serve log output on the terminal")
    return p


class PortTaken(OSError):
    """The port a local Serve would listen on is in use."""


def _port_taken(host: str, port: int) -> bool:
    """Whether something on this machine already listens on ``host:port`` (where a local Serve would bind)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _wait_for_stop() -> str:
    """Block until SIGINT (Ctrl-C) or SIGTERM; the signal's name."""
    received: list[str] = []
    stop = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
    while not stop.wait(1.0):
        pass
    return received[0]


def _prepare(args: argparse.Namespace) -> tuple[list, str]:
    """The decision's members, checked and loaded once here (every problem of the checkpoints in one line,
    not in a replica's log), and Ray started or joined.

    Raises:
        DecisionError, PortTaken, ExperimentError: the source, the port or the cluster address cannot be used.
    """
    members, chosen = members_of(args.source, args.registry, args.agent, args.ensemble)
    load_members(members)
    address = cluster_address(args.address)
    if address is None and _port_taken(args.host, args.port):  # a local Serve would bind here and fail late
        raise PortTaken(f"--port {args.port}: something already listens on {args.host}:{args.port}; pick another")
    init_ray(address, include_dashboard=False, log_to_driver=args.verbose)
    return members, chosen


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    local = cluster_address(args.address) is None
    if args.ingress == HAPROXY:  # before Ray Serve is imported and a local instance starts
        try:
            if not local:
                raise IngressError(
                    "--ingress haproxy: a cluster (--address or RAY_ADDRESS) uses the ingress its nodes were started "
                    f"with; start them with {HA_PROXY_ENV}=1 for HAProxy"
                )
            use_haproxy_ingress()
        except IngressError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        from trainer.evaluation import decision_service as service
    except ImportError as exc:
        if (exc.name or "").startswith("trainer"):
            raise
        print(f"error: {INSTALL_HINT}", file=sys.stderr)
        return EXIT_BAD_INPUT
    quiet_logging(None, args.verbose)
    import ray

    try:
        members, chosen = _prepare(args)
    except (DecisionError, PortTaken, ExperimentError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        url = service.start(
            members, chosen, host=args.host, port=args.port, replicas=args.replicas, registry=args.registry
        )
        ingress = {PROXY: "Serve's proxy", HAPROXY: "HAProxy"}[args.ingress] if local else "the cluster's"
        print(f"Serving {chosen} at {url} ({args.replicas} replica(s), {ingress} ingress)", flush=True)
        print(f"  POST {url}/decide | GET {url}/healthz | GET {url}/model | Ctrl-C stops it", flush=True)
        if args.registry is not None:
            print(f"  follows {args.registry}/live.json: a promotion or rollback is used from the next request")
        received = _wait_for_stop()
        print(f"{received} received: stopping the application...", flush=True)
        service.stop(shutdown_serve=cluster_address(args.address) is not None)
        ray.shutdown()  # a local instance goes with it, Serve included
        print("stopped", flush=True)
        return 0
    except service.ServeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
