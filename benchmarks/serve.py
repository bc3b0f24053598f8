"""The decision service's speed: ``python -m benchmarks.serve CHECKPOINT [--requests N] [--json FILE]``.

Trains nothing: CHECKPOINT is anything ``trainer.decide`` accepts (a checkpoint, a run or a sweep directory;
a smoke run is enough, ``python -m trainer.train --exp smoke --out runs/bench_serve``). Starts a local Ray
instance, deploys ``trainer.evaluation.decision_service`` with one replica on 127.0.0.1, and sends the same
request (the last ``--rows`` rows of ``--data``, default the checkpoint's training data, with holdings and a
value) from 1, 8 and 32 concurrent clients (threads, one keep-alive connection each, ``--requests`` per client
count after a warm-up): requests/s and p50/p99 latency per client count, every answer checked against the
in-process answer. Beside them, in this process: ``decide`` alone per decision (prices already validated)
and the whole request without HTTP (parse, validate, decide, JSON): what one replica does per request, so
N clients on one replica wait about N times that. Target: p99 <= 50 ms at 8 clients, one replica.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import json_path, positive_int
from benchmarks.throughput_report import machine
from envs.data import DataError, PriceData, load_prices, prices_from_frame
from trainer.evaluation.decision import DecisionError, decide, load_members
from trainer.evaluation.decision_report import json_text
from trainer.evaluation.decision_request import answer, parse_request
from trainer.evaluation.decision_sources import resolve
from trainer.evaluation.holdings import CASH, holdings_from_weights
from trainer.runtime.serve_ingress import HAPROXY, INGRESSES, PROXY, IngressError, use_haproxy_ingress
from trainer.serve import EXIT_BAD_INPUT, INSTALL_HINT

TARGET_P99_MS, TARGET_CLIENTS = 50.0, 8
WARMUP = 20  # requests before any measurement: the replica's first decisions import and cache


def client_counts(text: str) -> list[int]:
    """An argparse type: comma-separated client counts, each >= 1."""
    try:
        counts = [int(x) for x in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected client counts >= 1 separated by commas (1,8,32), got {text!r}")
    return counts


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, help="a checkpoint, a run directory or a sweep directory")
    p.add_argument("--data", help="the price file the requests' rows come from (default: the training data)")
    p.add_argument(
        "--ingress", choices=INGRESSES, default=PROXY, help="as trainer.serve --ingress (default proxy: Serve's own)"
    )
    p.add_argument("--rows", type=positive_int, default=100, help="price rows per request (default 100)")
    p.add_argument("--requests", type=positive_int, default=400, help="requests per client count (default 400)")
    p.add_argument("--clients", type=client_counts, default=[1, 8, 32], help="concurrent clients (default 1,8,32)")
    p.add_argument("--json", type=json_path, help="also write the results as JSON here")
    return p


def _request(data: PriceData, rows: int, tickers: list[str]) -> dict[str, Any]:
    tail = data.prices.iloc[-rows:]
    prices = [{"date": str(d.date()), **{t: float(v) for t, v in row.items()}} for d, row in tail.iterrows()]
    weights = {tickers[0]: 0.5, CASH: 0.5}
    return {"prices": prices, "holdings": weights, "value": 1_000_000.0, "as_of": str(tail.index[-1].date())}


def _unused_port() -> int:
    """A loopback port nothing listens on now (the OS picks it)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        return int(server.getsockname()[1])


def _ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1e3, q))


def in_process(members: list, loaded: tuple, body: bytes, n: int) -> dict[str, float]:
    """Milliseconds per decision in this process: ``decide`` alone, and the whole request without HTTP."""
    request = parse_request(body)
    tail = prices_from_frame(request.prices, "prices", first_row=0)  # the prices a replica decides on
    holdings = holdings_from_weights(request.holdings or {}, list(loaded[1]["tickers"]), request.value)

    def alone() -> None:
        decide(members, tail, holdings, as_of=request.as_of, loaded=loaded)

    def whole() -> None:
        json_text(answer(parse_request(body), members, loaded), compact=True)

    times: dict[str, list[float]] = {"alone": [], "whole": []}
    for i in range(n + 5):  # the two in turn, so that the machine's other load falls on both alike
        for name, work in (("alone", alone), ("whole", whole)):
            t0 = time.perf_counter()
            work()
            if i >= 5:  # the first rounds warm caches up
                times[name].append(time.perf_counter() - t0)
    return {
        "decide_ms_p50": _ms(times["alone"], 50),
        "decide_ms_p99": _ms(times["alone"], 99),
        "request_in_process_ms_p50": _ms(times["whole"], 50),
        "request_in_process_ms_p99": _ms(times["whole"], 99),
    }


def _post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", "/decide", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def load(port: int, body: bytes, expected: dict[str, Any], clients: int, requests: int) -> dict[str, float]:
    """``requests`` POSTs from ``clients`` threads at once; requests/s and latency percentiles."""
    latencies: list[float] = []
    answers: list[tuple[int, bytes]] = []
    left = [requests]
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            while True:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                t0 = time.perf_counter()
                status, raw = _post(conn, body)
                elapsed = time.perf_counter() - t0
                with lock:  # answers are checked after the run: parsing them here would hold up the others
                    latencies.append(elapsed)
                    answers.append((status, raw))
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    failures = [f"{status}: {raw[:200]!r}" for status, raw in answers if status != 200 or json.loads(raw) != expected]
    if failures:
        raise RuntimeError(f"{len(failures)} of {requests} answers differ from the in-process one: {failures[0]}")
    return {
        "clients": clients,
        "requests": requests,
        "requests_per_s": requests / wall,
        "p50_ms": _ms(latencies, 50),
        "p99_ms": _ms(latencies, 99),
        "mean_ms": statistics.fmean(latencies) * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.ingress == HAPROXY:  # as trainer.serve --ingress haproxy does: before Serve is imported and Ray starts
        try:
            use_haproxy_ingress()
        except IngressError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        from trainer.evaluation import decision_service as service
    except ImportError:
        print(f"error: {INSTALL_HINT}", file=sys.stderr)
        return EXIT_BAD_INPUT
    import ray

    from trainer.runtime.console import quiet_logging
    from trainer.runtime.ray_init import init_ray

    quiet_logging(None)
    try:
        members, chosen = resolve(args.checkpoint)
        loaded = load_members(members)
        data = load_prices(args.data or loaded[1]["env_config"]["data"])
    except (DecisionError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    body = json.dumps(_request(data, args.rows, list(loaded[1]["tickers"]))).encode()
    expected = json.loads(json_text(answer(parse_request(body), members, loaded)))
    load_before = os.getloadavg()
    timing = in_process(members, loaded, body, n=200)
    init_ray(None, include_dashboard=False, log_to_driver=False)
    port = _unused_port()
    service.start(members, chosen, host="127.0.0.1", port=port, replicas=1)
    try:
        load(port, body, expected, 1, WARMUP)
        runs = [load(port, body, expected, n, args.requests) for n in args.clients]
    finally:
        service.stop(shutdown_serve=False)  # the local instance below takes Serve with it
        ray.shutdown()
    at_target = next((r for r in runs if r["clients"] == TARGET_CLIENTS), None)
    result = {
        "checkpoint": chosen,
        "rows_per_request": args.rows,
        "replicas": 1,
        "ingress": args.ingress,
        "runs": runs,
        **timing,
        "target_p99_ms_at_8_clients": TARGET_P99_MS,
        "meets_target": None if at_target is None else at_target["p99_ms"] <= TARGET_P99_MS,
        "machine": machine(),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    print(
        f"decision service, one replica, {result['ingress']} ingress, {args.rows} price rows per request ({chosen}); "
        f"{result['machine']}"
    )
    print(f"{'clients':>8} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8}")
    for r in runs:
        print(f"{r['clients']:>8} {r['requests_per_s']:>11.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}")
    print(
        f"in-process: decide {timing['decide_ms_p50']:.1f} ms per decision (p99 {timing['decide_ms_p99']:.1f}), the "
        f"whole request without HTTP {timing['request_in_process_ms_p50']:.1f} ms (p99 "
        f"{timing['request_in_process_ms_p99']:.1f})"
    )
    if result["meets_target"] is not None:
        verdict = "met" if result["meets_target"] else "NOT met"
        print(f"target p99 <= {TARGET_P99_MS:g} ms at {TARGET_CLIENTS} clients, one replica: {verdict}")
    print(f"load average (1 min) before / after: {result['load_average_before_after']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
