"""trainer.evaluation.decision_request: a request's JSON checked in one line, and answered as decide answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from envs.data import PriceData, load_prices
from trainer.evaluation.decision import DecisionError, Member, decide, load_members
from trainer.evaluation.decision_report import decision_json
from trainer.evaluation.decision_request import RequestError, answer, model_info, parse_request
from trainer.evaluation.holdings import HoldingsError, holdings_from_weights, read_holdings

ROW = '{"date": "YYYY-MM-DD", "<ticker>": price, ...}'
TICKERS = ["A0", "A1", "A2", "A3"]


def rows_of(prices: pd.DataFrame) -> list[dict]:
    """Prices as a request's rows."""
    return [{"date": str(d.date()), **{t: float(v) for t, v in row.items()}} for d, row in prices.iterrows()]


def _refused(payload) -> tuple[int, str]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    with pytest.raises(RequestError) as info:
        parse_request(body)
    return info.value.status, str(info.value)


GOOD_ROWS = [{"date": "2020-01-02", "A0": 1.0}]


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        (
            b"{bad",
            400,
            "request body: not valid JSON (Expecting property name enclosed in double quotes: line 1 "
            "column 2 (char 1))",
        ),
        (
            b"\xff",
            400,
            "request body: not valid JSON ('utf-8' codec can't decode byte 0xff in position 0: invalid start byte)",
        ),
        ([1, 2], 422, "request body: expected a JSON object with 'prices' or 'data', got a list"),
        (
            {},
            422,
            f"request body: no prices; give 'prices' (rows {ROW}) or 'data' (a price file on the server)",
        ),
        (
            {"prices": GOOD_ROWS, "data": "x.csv"},
            422,
            "request body: both 'prices' and 'data'; give one of them",
        ),
        (
            {"prices": GOOD_ROWS, "holding": {}},
            422,
            "request body: unknown field 'holding'; the fields are prices, "
            "data, holdings, value, as_of, max_stale_days",
        ),
        ({"prices": []}, 422, f"prices: no rows; give the rows {ROW} up to the decision date"),
        ({"prices": {"date": "2020-01-02"}}, 422, f"prices: expected a list of rows {ROW}, got an object"),
        ({"prices": [*GOOD_ROWS, 3]}, 422, f"prices[1]: expected an object {ROW}, got a number"),
        ({"prices": [{"A0": 1.0}]}, 422, f"prices[0]: no date; every row is {ROW} with the date as text"),
        (
            {"prices": [{"date": 20200102}]},
            422,
            f"prices[0]: the date is a number; every row is {ROW} with the date as text",
        ),
        (
            {"prices": [{"date": "2020-01-02", "A0": "1.5"}]},
            422,
            "prices[0].A0: expected a price (a number, or null), got '1.5'",
        ),
        (
            {"prices": [{"date": "2020-01-02", "A0": True}]},
            422,
            "prices[0].A0: expected a price (a number, or null), got True",
        ),
        ({"data": 3}, 422, "data: expected a price file's path (text), got a number"),
        (
            {"data": "x", "holdings": [0.5, 0.5]},
            422,
            'holdings: expected an object {"<ticker>": weight, ..., "cash": weight}',
        ),
        ({"data": "x", "holdings": {"A0": "0.5"}}, 422, "holdings.A0: expected a weight (a number), got '0.5'"),
        ({"data": "x", "value": "1e6"}, 422, "value: expected the portfolio's value (a number), got '1e6'"),
        ({"data": "x", "as_of": "tomorrow"}, 422, "as_of: expected a date YYYY-MM-DD, got 'tomorrow'"),
        ({"data": "x", "as_of": 20200102}, 422, "as_of: expected a date YYYY-MM-DD, got 20200102"),
        ({"data": "x", "max_stale_days": -1}, 422, "max_stale_days: expected a whole number >= 0, got -1"),
        ({"data": "x", "max_stale_days": 2.5}, 422, "max_stale_days: expected a whole number >= 0, got 2.5"),
    ],
)
def test_a_request_of_the_wrong_shape_is_refused_in_one_line(payload, status, message):
    assert _refused(payload) == (status, message)


def test_a_good_request_keeps_its_fields():
    request = parse_request(
        json.dumps(
            {
                "prices": [{"date": "2020-01-02", "A0": 1, "A1": None}, {"date": "2020-01-03", "A0": 1.5, "A1": 2}],
                "holdings": {"A0": 1},
                "value": 5,
                "as_of": "2020-01-03",
                "max_stale_days": 0,
            }
        )
    )
    assert request.prices.columns.tolist() == ["date", "A0", "A1"]
    assert request.prices["A0"].tolist() == [1, 1.5] and np.isnan(request.prices["A1"].iloc[0])
    assert request.holdings == {"A0": 1} and request.value == 5.0 and request.max_stale_days == 0
    assert request.as_of == pd.Timestamp("2020-01-03")
    assert parse_request(b'{"data": "sp500"}').prices == "sp500" and parse_request(b'{"data": "x"}').as_of is None


def test_weights_from_a_request_are_checked_as_a_weights_file_is(tmp_path):
    last = np.ones(4)
    request = holdings_from_weights({"A1": 0.25, "A0": 0.5, "CASH": 0.25}, TICKERS, 1000.0)
    path = tmp_path / "h.csv"
    path.write_text("ticker,weight\nA1,0.25\nA0,0.5\nCASH,0.25\n")
    from_file = read_holdings(path, TICKERS, last, 1000.0)
    np.testing.assert_array_equal(request.weights, from_file.weights)
    assert request.weights.tolist() == [0.5, 0.25, 0.0, 0.0, 0.25] and request.value == 1000.0
    assert request.source == "holdings"
    for weights, message in [
        ({"A0": -0.1, "cash": 1.1}, "holdings: A0: weight -0.1 is negative; holdings are long-only (>= 0)"),
        ({"A0": 0.5, "A1": 0.3}, 'holdings: the weights sum to 0.8, not 1; add the "cash": 0.2 or rescale them'),
        (
            {"a0": 0.5, "cash": 0.5},
            "holdings: a0 (did you mean A0?) not in the policy's universe of 4 assets (A0, A1, A2, A3); list only "
            "those tickers, and cash",
        ),
        ({"A0": 0.5, "cash": 0.25, "Cash": 0.25}, "holdings: Cash is listed twice; give each ticker, and cash, once"),
        ({"A0": float("nan"), "cash": 1.0}, "holdings: A0: weight nan is not a finite number"),
        ({"A0": True, "cash": 0.0}, "holdings: A0: weight True is not a number"),
    ]:
        with pytest.raises(HoldingsError) as info:
            holdings_from_weights(weights, TICKERS)
        assert str(info.value) == message
    path.write_text("ticker,weight\nA0,0.5\nA1,0.3\n")  # the file's wording of the same fix is its own
    with pytest.raises(HoldingsError, match=r"add the cash row \(cash,0.2\) or rescale them$"):
        read_holdings(path, TICKERS, last)


def test_the_answer_is_decides_json_and_every_refusal_is_decides_message(limited_run):
    ckpts, data = limited_run
    members = [Member(ckpts[-1])]
    loaded = load_members(members)
    prices = load_prices(data)
    tail = prices.prices.iloc[-90:]
    last = tail.index[-1]
    rows = rows_of(tail)
    weights = {"A2": 0.1, "A0": 0.3, "cash": 0.6}
    request = {"prices": rows, "holdings": weights, "value": 25000.0, "as_of": str(last.date())}
    result = answer(parse_request(json.dumps(request)), members, loaded)
    holdings = holdings_from_weights(weights, TICKERS, 25000.0)
    direct = decide(members, PriceData("prices", "wide", tail), holdings, as_of=last, loaded=loaded)
    assert result == decision_json(direct, holdings)
    assert result["value"] == 25000.0 and result["current"]["A0"] == 0.3 and result["holdings"] == "holdings"
    # no holdings: decide's all-cash answer; a value alone: all cash with notional trades
    plain = answer(parse_request(json.dumps({"data": data, "as_of": str(last.date())})), members, loaded)
    assert plain == decision_json(decide(members, data, None, as_of=last, loaded=loaded), None)
    valued = answer(parse_request(json.dumps({**request, "holdings": None})), members, loaded)
    assert valued["current"]["cash"] == 1.0 and valued["value"] == 25000.0

    def refusal(**changes) -> str:
        payload = {k: v for k, v in {**request, **changes}.items() if v is not None}
        with pytest.raises((DecisionError, HoldingsError)) as info:
            answer(parse_request(json.dumps(payload)), members, loaded)
        return str(info.value)

    stale = last + pd.offsets.BDay(9)
    assert refusal(as_of=str(stale.date())) == (
        f"prices: the last price is on {last.date()}, 9 business days before {stale.date()} (--as-of); a decision "
        "needs the latest close (at most --max-stale-days 5): update the prices"
    )
    answer(parse_request(json.dumps({**request, "as_of": str(stale.date()), "max_stale_days": 9})), members, loaded)
    assert refusal(prices=rows[-40:]) == (
        "prices: 40 rows of prices, but the features need 61 (the 60-day window before the decision date and the "
        "day itself); give a longer price history"
    )
    assert refusal(prices=[{**r, "ZZZ": 10.0} for r in rows]) == (
        "prices: not in the checkpoint's universe: ZZZ; the checkpoint was trained on 4 assets (A0, A1, A2, A3): give "
        "prices for exactly those tickers (any column order)"
    )
    assert refusal(prices=[rows[1], rows[0], *rows[2:]]).startswith(
        "prices: dates are not in increasing order: row 1 (" + rows[0]["date"] + ") comes after row 0 ("
    )
    assert refusal(value=-5.0) == "--value -5: the portfolio's value must be a finite amount > 0"
    assert refusal(prices=None, data=str(data) + ".missing").startswith(f"{data}.missing: file not found;")
    info = model_info(members, loaded[1], "checkpoint x")
    windows = loaded[1]["data"]["windows"]
    assert info["tickers"] == TICKERS and info["checkpoint"] == str(ckpts[-1]) and info["chosen"] == "checkpoint x"
    assert info["training_window"] == {"start": windows["train"]["start"], "end": windows["train"]["end"]}
    assert info["settings"]["max_weight"] == 0.35 and info["settings"]["action"] == "tilt"
    assert "data" not in info["settings"] and info["min_price_rows"] == 61
