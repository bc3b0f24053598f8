"""The decision service on a real Ray Serve instance, over real HTTP on 127.0.0.1: answers equal to
``trainer.decide``'s, every refusal one line with its status, the service serving on after them, concurrency."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

pytest.importorskip("ray.serve", reason='Ray Serve is the serve extra: pip install -e ".[serve]"')

from envs.data import load_prices
from tests.conftest import cli_env, free_port, write_wide_csv
from tests.trainer.evaluation.test_decision_request import rows_of
from tests.trainer.test_decide import _decide
from trainer.evaluation import decision_service
from trainer.evaluation.decision_sources import resolve

ROWS = 90  # the request's history: more than the 61 rows the features need


def call(url: str, path: str, body: bytes | dict | None = None, method: str | None = None) -> tuple[int, dict]:
    """One HTTP request; the status and the JSON answer (errors included)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url + path, data=data, method=method or ("GET" if data is None else "POST"))
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def served(limited_run):
    """The service on the session's Ray instance at a free port, for the run of ``limited_run``; stopped
    (Serve shut down) after the module."""
    ckpts, data = limited_run
    run_dir = ckpts[-1].parent.parent
    members, chosen = resolve(run_dir)
    port = free_port()
    url = decision_service.start(members, chosen, host="127.0.0.1", port=port, replicas=1)
    assert url == f"http://127.0.0.1:{port}"
    try:
        yield url, run_dir, data
    finally:
        decision_service.stop()


def _request(data: str, **extra) -> dict:
    tail = load_prices(data).prices.iloc[-ROWS:]
    return {"prices": rows_of(tail), "as_of": str(tail.index[-1].date()), **extra}


def test_healthz_and_the_model(served, limited_run):
    url, _, _ = served
    assert call(url, "/healthz") == (200, {"status": "ok", "tickers": 4})
    status, model = call(url, "/model")
    assert status == 200
    ckpts, _ = limited_run
    assert model["tickers"] == ["A0", "A1", "A2", "A3"] and model["checkpoint"] == str(ckpts[-1])
    assert model["chosen"] == f"the run's latest checkpoint {ckpts[-1].name}"
    windows = json.loads((ckpts[-1] / "portfolio_state.json").read_text())["data"]["windows"]
    assert model["training_window"] == {"start": windows["train"]["start"], "end": windows["train"]["end"]}
    assert model["settings"]["max_weight"] == 0.35 and model["settings"]["no_trade_band"] == 0.02
    assert model["min_price_rows"] == 61


def test_an_answer_is_what_decide_writes(served, tmp_path):
    url, run_dir, data = served
    request = _request(data, holdings={"A3": 0.6, "A0": 0.3, "cash": 0.1}, value=50000.0)
    status, answer = call(url, "/decide", request)
    assert status == 200, answer
    # the command on the same prices (a file of the request's rows) and holdings
    tail = load_prices(data).prices.iloc[-ROWS:]
    prices = write_wide_csv(tmp_path / "tail.csv", tail)
    holdings = tmp_path / "h.csv"
    holdings.write_text("ticker,weight\nA3,0.6\nA0,0.3\ncash,0.1\n")
    args = ["--data", prices, "--holdings", str(holdings), "--value", "50000", "--as-of", request["as_of"]]
    res = _decide(str(run_dir), *args, "--json", str(tmp_path / "d.json"), "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr[-3000:]
    written = json.loads((tmp_path / "d.json").read_text())
    assert written.pop("holdings") == str(tmp_path / "h.csv") and answer.pop("holdings") == "holdings"
    assert answer == written  # weights, trades, notional, shares, costs, what each rule changed: all equal
    assert answer["weights"]["A3"] < 0.6  # a decision that trades (A3 is held above the 0.35 limit)
    # a price file on the server instead of rows
    status, by_path = call(url, "/decide", {"data": prices, "as_of": request["as_of"], "value": 50000.0})
    assert status == 200 and by_path["current"]["cash"] == 1.0 and by_path["tickers"] == answer["tickers"]


def test_bad_requests_get_one_line_and_the_service_serves_on(served):
    url, _, data = served
    good = _request(data)
    last = pd.Timestamp(good["as_of"])
    stale = str((last + pd.offsets.BDay(9)).date())
    cases = [
        (
            b"{bad",
            400,
            "request body: not valid JSON (Expecting property name enclosed in double quotes: line 1 "
            "column 2 (char 1))",
        ),
        (
            {**good, "prices": [{**r, "ZZZ": 5.0} for r in good["prices"]]},
            400,
            "prices: not in the checkpoint's "
            "universe: ZZZ; the checkpoint was trained on 4 assets (A0, A1, A2, A3): give prices for exactly those "
            "tickers (any column order)",
        ),
        (
            {**good, "holdings": {"a0": 1.0}},
            400,
            "holdings: a0 (did you mean A0?) not in the policy's universe of 4 "
            "assets (A0, A1, A2, A3); list only those tickers, and cash",
        ),
        (
            {**good, "as_of": stale},
            400,
            f"prices: the last price is on {last.date()}, 9 business days before "
            f"{stale} (--as-of); a decision needs the latest close (at most --max-stale-days 5): update the prices",
        ),
        (
            {**good, "prices": good["prices"][-40:]},
            400,
            "prices: 40 rows of prices, but the features need 61 (the "
            "60-day window before the decision date and the day itself); give a longer price history",
        ),
        (
            {**good, "holding": {}},
            422,
            "request body: unknown field 'holding'; the fields are prices, data, "
            "holdings, value, as_of, max_stale_days",
        ),
        (
            {**good, "prices": [{"A0": 1.0}]},
            422,
            'prices[0]: no date; every row is {"date": "YYYY-MM-DD", "<ticker>": price, ...} with the date as text',
        ),
    ]
    for body, status, message in cases:
        assert call(url, "/decide", body) == (status, {"error": message})
        assert call(url, "/decide", good)[0] == 200  # served on
    assert call(url, "/decide", method="GET") == (405, {"error": "GET /decide: use POST /decide"})
    assert call(url, "/nowhere") == (
        404,
        {"error": "/nowhere: no such route; the routes are /decide, /healthz, /model"},
    )


def test_concurrent_requests_all_succeed_and_agree(served):
    url, _, data = served
    request = _request(data, holdings={"A2": 0.5, "cash": 0.5})
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: call(url, "/decide", request), range(24)))
    assert {status for status, _ in answers} == {200}
    assert all(answer == answers[0][1] for _, answer in answers)


def test_the_command_refuses_other_http_options_while_serve_runs(served, ray_session):
    url, run_dir, _ = served
    port = url.rsplit(":", 1)[1]
    res = subprocess.run(
        [sys.executable, "-m", "trainer.serve", str(run_dir), "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=cli_env(ray_session),
        timeout=300,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line == (
        f"error: Ray Serve already runs on this cluster with HTTP on 127.0.0.1:{port}; pass --host 127.0.0.1 --port "
        f"{port}, or stop it first (serve shutdown)"
    )
    assert call(url, "/healthz")[0] == 200  # the running service is untouched
