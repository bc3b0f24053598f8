"""python -m trainer.serve as a user runs it: it serves until Ctrl-C and then stops cleanly, and every refusal
before serving is one line with exit 2 (Ray Serve missing included)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("ray.serve", reason='Ray Serve is the serve extra: pip install -e ".[serve]"')

from envs.data import PriceData, load_prices
from tests.conftest import cli_env, free_port
from tests.trainer.evaluation.test_decision_request import rows_of
from trainer.evaluation.decision import Member, decide
from trainer.evaluation.decision_report import decision_json

STARTED = 180  # seconds the command may take to start Serve and load the policy on a busy 2-core machine


def _serve(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer.serve", *args], capture_output=True, text=True, env=env, timeout=300
    )


def _one_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, res.stdout + res.stderr
    (line,) = res.stderr.strip().splitlines()
    return line


def _local_env() -> dict:
    """The environment of a user's shell: no cluster address, so the command would start its own instance."""
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def test_argument_errors_are_one_line(tmp_path):
    for args, message in [
        (["--port", "0"], "argument --port: expected a port 1 .. 65535, got '0'"),
        (["--replicas", "0"], "argument --replicas: expected a whole number >= 1, got '0'"),
    ]:
        res = _serve(str(tmp_path), *args)
        assert res.returncode == 2 and "Traceback" not in res.stderr  # argparse: the usage, then the error
        assert res.stderr.strip().splitlines()[-1] == f"python -m trainer.serve: error: {message}"
    nowhere = tmp_path / "nope"
    assert _one_line(_serve(str(nowhere), env=_local_env())) == (
        f"error: {nowhere}: not found; pass a checkpoint (runs/.../checkpoint_NNNNNN), a run directory or a sweep "
        "directory"
    )


def test_haproxy_ingress_refusals_are_one_line(tmp_path):
    joined = _serve(str(tmp_path), "--ingress", "haproxy", "--address", "127.0.0.1:1")
    assert _one_line(joined) == (
        "error: --ingress haproxy: a cluster (--address or RAY_ADDRESS) uses the ingress its nodes were started "
        "with; start them with RAY_SERVE_ENABLE_HA_PROXY=1 for HAProxy"
    )
    # a machine without the HAProxy binary
    code = (
        "import sys; import trainer.runtime.serve_ingress as s; s.haproxy_available = lambda: False; "
        "from trainer.serve import main; sys.exit(main(sys.argv[1:]))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), "--ingress", "haproxy"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_local_env(),
    )
    assert _one_line(res) == (
        "error: --ingress haproxy: no HAProxy binary (it comes with ray[serve] on Linux, or put haproxy on PATH); "
        "use --ingress proxy"
    )
    res = _serve(str(tmp_path), "--ingress", "nginx")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == (
        "python -m trainer.serve: error: argument --ingress: invalid choice: 'nginx' (choose from 'proxy', 'haproxy')"
    )


def test_without_ray_serve_it_says_how_to_install_it(tmp_path):
    # Ray Serve's import failing, as it does where the serve extra is not installed
    code = "import sys; sys.modules['ray.serve'] = None; from trainer.serve import main; sys.exit(main(sys.argv[1:]))"
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert _one_line(res) == 'error: Ray Serve is not installed; install it with: pip install -e ".[serve]"'


def test_a_port_in_use_is_refused_before_anything_starts(limited_run):
    ckpts, _ = limited_run
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _one_line(_serve(str(ckpts[-1]), "--port", str(port), env=_local_env()))
    assert line == f"error: --port {port}: something already listens on 127.0.0.1:{port}; pick another"


def test_more_replicas_than_the_cluster_has_cpus_is_refused(limited_run, ray_session):
    ckpts, _ = limited_run
    line = _one_line(_serve(str(ckpts[-1]), "--replicas", "3", "--port", str(free_port()), env=cli_env(ray_session)))
    assert line == (
        "error: --replicas 3: each replica takes 1 CPU and the Ray cluster has 2; ask for fewer replicas or a larger "
        "cluster"
    )


def _get(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=60) as resp:
        return resp.status, json.loads(resp.read())


def _serve_controllers() -> list[dict]:
    import ray

    return [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"] == "SERVE_CONTROLLER_ACTOR"]


def test_the_command_serves_until_ctrl_c_then_stops_cleanly(limited_run, ray_session, tmp_path):
    ckpts, data = limited_run
    port = free_port()
    log = tmp_path / "serve.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trainer.serve", str(ckpts[-1]), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=cli_env(ray_session),
        )
    try:
        deadline = time.time() + STARTED
        while "Serving" not in log.read_text() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert "Serving" in log.read_text(), log.read_text()
        url = f"http://127.0.0.1:{port}"
        assert _get(f"{url}/healthz") == (200, {"status": "ok", "tickers": 4})
        tail = load_prices(data).prices.iloc[-70:]
        status, answer = _get(f"{url}/decide", {"prices": rows_of(tail), "as_of": str(tail.index[-1].date())})
        direct = decide([Member(ckpts[-1])], PriceData("prices", "wide", tail), as_of=tail.index[-1])
        assert status == 200 and answer == decision_json(direct, None)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    # ours, and nothing else but Ray's own note on the Serve controller it kills while shutting Serve down
    lines = [line for line in log.read_text().splitlines() if "(raylet)" not in line]
    assert lines == [
        f"Serving checkpoint {ckpts[-1].name} at {url} (1 replica(s), the cluster's ingress)",
        f"  POST {url}/decide | GET {url}/healthz | GET {url}/model | Ctrl-C stops it",
        "SIGINT received: stopping the application...",
        "stopped",
    ]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # nothing listens any more
    deadline = time.time() + 60
    while _serve_controllers() and time.time() < deadline:
        time.sleep(1)
    assert _serve_controllers() == []  # Serve itself is gone from the cluster the command joined
