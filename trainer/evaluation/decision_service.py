"""A trained agent's decision as a Ray Serve application: ``POST /decide``, ``GET /healthz``, ``GET /model``.

Each replica loads the policies once, when it starts (``load_members``), and answers every request through
``trainer.evaluation.decision_request`` (the request's JSON checked, then the command's own ``decide`` and
``decision_json``). Refusals are ``{"error": "<one line>"}`` with 400 (not JSON; inputs that cannot be
decided on, in the command's messages) or 422 (a request of the wrong shape); anything unexpected is a 500
with one line, its traceback in the replica's log, and the replica keeps serving.

Needs Ray Serve (``pip install -e ".[serve]"``): importing this module without it raises ``ImportError``.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.serve.context import _get_global_client
from starlette.requests import Request
from starlette.responses import Response

from trainer.evaluation.decision import DecisionError, Member, load_members
from trainer.evaluation.decision_report import json_text
from trainer.evaluation.decision_request import BAD_REQUEST, RequestError, answer, model_info, parse_request
from trainer.evaluation.decision_sources import live_members
from trainer.evaluation.holdings import HoldingsError
from trainer.runtime.registry import LIVE_FILE

APP_NAME = "portfolio-decide"
REPLICA_CPUS = 1.0  # one decision at a time per replica: one core's work (torch runs one thread)
# Requests a replica accepts at once (Serve's default is 5). A replica decides one request at a time and the
# others wait in its queue at no cost; requests beyond the limit wait in Serve's router instead, retried with
# a backoff growing to 0.5 s, which left the replica idle: 32 clients got 8 requests/s against 33 at 8 clients.
MAX_ONGOING_REQUESTS = 64
NOT_FOUND, METHOD_NOT_ALLOWED, INTERNAL_ERROR = 404, 405, 500
ROUTES = {"/decide": "POST", "/healthz": "GET", "/model": "GET"}
_log = logging.getLogger("ray.serve")


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json_text(body, compact=True), status_code=status, media_type="application/json")


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


@serve.deployment(name="decide")
class DecisionService:
    """One replica: the policies of ``members`` loaded once, answering the routes of ``ROUTES``."""

    def __init__(self, members: list[Member], chosen: str, registry: str | None = None) -> None:
        self._registry = None if registry is None else Path(registry)
        self._live_stamp = _stamp(self._registry)
        self._use(members, chosen)
        # Everything loaded so far (torch, pandas, the policies) lives as long as the replica: out of the
        # collector's sight, so that its full collections, which would otherwise walk all of it in the middle
        # of a request, stay short (the p99 latency).
        gc.freeze()

    def _use(self, members: list[Member], chosen: str) -> None:
        loaded = load_members(members)
        self._members, self._loaded, self._model = members, loaded, model_info(members, loaded[1], chosen)

    def _follow_live(self) -> None:
        """With a registry: a promotion or rollback since the last request (``live.json`` replaced) loads the
        new live model before this request is answered. A registry that cannot be read keeps the model in use
        (logged); the next change is tried again."""
        if self._registry is None:
            return
        stamp = _stamp(self._registry)
        if stamp == self._live_stamp:
            return
        self._live_stamp = stamp
        try:
            members, chosen = live_members(self._registry)
            if members != self._members:
                self._use(members, chosen)
                _log.info("now deciding with %s", chosen)
        except DecisionError as exc:
            _log.warning("kept deciding with %s: %s", self._model["chosen"], exc)

    async def __call__(self, request: Request) -> Response:
        self._follow_live()
        path = request.url.path.rstrip("/") or "/"
        if path not in ROUTES:
            return _error(f"{path}: no such route; the routes are {', '.join(ROUTES)}", NOT_FOUND)
        if request.method != ROUTES[path]:
            return _error(f"{request.method} {path}: use {ROUTES[path]} {path}", METHOD_NOT_ALLOWED)
        if path == "/healthz":
            return _json({"status": "ok", "tickers": len(self._model["tickers"])})
        if path == "/model":
            return _json(self._model)
        return self._decide(await request.body())

    def _decide(self, body: bytes) -> Response:
        try:
            return _json(answer(parse_request(body), self._members, self._loaded))
        except RequestError as exc:
            return _error(str(exc), exc.status)
        except (DecisionError, HoldingsError) as exc:
            return _error(str(exc), BAD_REQUEST)
        except Exception as exc:  # a bug, not bad input: one line to the client, the traceback to the log
            _log.exception("POST /decide failed")
            return _error(f"internal error ({type(exc).__name__}: {exc}); see the replica's log", INTERNAL_ERROR)


def _stamp(registry: Path | None) -> tuple[int, int, int] | None:
    """What changes when ``live.json`` is replaced (atomically: a new file), read in microseconds per request."""
    if registry is None:
        return None
    try:
        st = (registry / LIVE_FILE).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class ServeError(RuntimeError):
    """Serve cannot run the application as asked; the message says why and what to do."""


def start(
    members: list[Member], chosen: str, *, host: str, port: int, replicas: int = 1, registry: Path | None = None
) -> str:
    """Start Serve (HTTP on ``host:port``) on the connected Ray cluster and deploy the application; its URL.

    Returns once every replica has loaded the policies and answers. With ``registry`` (whose live model
    ``members`` is), every replica follows the registry's live model: a promotion or rollback is picked up by
    the next request (the replicas must see the registry's directory: one machine, or a shared file system).

    Raises:
        ServeError: the cluster's CPUs cannot hold the replicas, or Serve already runs there with other HTTP
            options (Serve has one HTTP address per cluster).
    """
    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    if replicas * REPLICA_CPUS > cpus:
        raise ServeError(
            f"--replicas {replicas}: each replica takes {REPLICA_CPUS:g} CPU and the Ray cluster has {cpus:g}; "
            "ask for fewer replicas or a larger cluster"
        )
    serve.start(http_options={"host": host, "port": port})
    running = _get_global_client().http_config  # the options Serve kept: the first start's, if it already ran
    if (running.host, running.port) != (host, port):
        raise ServeError(
            f"Ray Serve already runs on this cluster with HTTP on {running.host}:{running.port}; pass --host "
            f"{running.host} --port {running.port}, or stop it first (serve shutdown)"
        )
    app = DecisionService.options(
        num_replicas=replicas,
        max_ongoing_requests=MAX_ONGOING_REQUESTS,
        ray_actor_options={"num_cpus": REPLICA_CPUS},
    ).bind(members, chosen, None if registry is None else str(registry.resolve()))
    serve.run(app, name=APP_NAME, route_prefix="/")
    return f"http://{host}:{port}"


def stop(shutdown_serve: bool = True) -> None:
    """Delete the application; with ``shutdown_serve``, shut Serve down too when no other application runs on
    the cluster (without: a local instance about to be shut down whole takes Serve with it)."""
    serve.delete(APP_NAME)
    if shutdown_serve and not serve.status().applications:
        serve.shutdown()
