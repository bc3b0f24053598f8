"""python -m trainer.decide through the real CLI: the decision and its files, and every refusal in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from envs.data import load_prices
from tests.conftest import write_wide_csv
from trainer.evaluation.decision import Member, decide


def _decide(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer.decide", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def _as_of(data: str) -> str:
    return str(load_prices(data).prices.index[-1].date())


def test_decision_from_a_run_directory_with_share_holdings(limited_run, tmp_path):
    ckpts, data = limited_run
    run_dir = ckpts[-1].parent.parent
    prices = load_prices(data).prices
    holdings = tmp_path / "holdings.csv"
    holdings.write_text("ticker,shares\nA1,10\nA0,5\ncash,2000\n")  # any order; A2, A3 not held
    out = tmp_path / "out"
    res = _decide(str(run_dir), "--data", data, "--holdings", str(holdings), "--as-of", _as_of(data), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    day = str(prices.index[-1].date())
    result = json.loads((out / f"decision_{day}.json").read_text())
    assert result["date"] == day and result["tickers"] == ["A0", "A1", "A2", "A3"]
    assert result["checkpoint"] == str(ckpts[-1]) and result["warnings"] == []
    last = prices.iloc[-1]
    value = 5 * last["A0"] + 10 * last["A1"] + 2000
    assert result["value"] == pytest.approx(value, rel=1e-12)
    assert result["current"]["A0"] == pytest.approx(5 * last["A0"] / value, abs=1e-12)
    weights = np.array(list(result["weights"].values()))
    assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0, abs=1e-9) and weights[:4].max() <= 0.35 + 1e-9
    for t in result["tickers"]:  # trades in weight, currency and shares agree
        assert result["trades"][t] == pytest.approx(result["weights"][t] - result["current"][t], abs=1e-11)
        assert result["notional"][t] == pytest.approx(result["trades"][t] * value, rel=1e-9, abs=1e-6)
        assert result["shares"][t] == pytest.approx(result["notional"][t] / last[t], rel=1e-9, abs=1e-9)
    assert result["expected_cost"] == pytest.approx(result["turnover"] * result["cost_bps"] * 1e-4)
    assert result["changed_by"]["limits"]["setting"]["max_weight"] == 0.35
    # the same decision in-process, from the checkpoint itself
    direct = decide([Member(ckpts[-1])], data, None, as_of=prices.index[-1])
    assert direct.date == prices.index[-1]
    assert f"Decision for {day}" in res.stdout and "turnover" in res.stdout
    assert (out / f"decision_{day}.md").read_text().startswith(f"# Decision for {day}")


def test_columns_in_another_order_give_the_same_decision(limited_run, tmp_path):
    ckpts, data = limited_run
    prices = load_prices(data).prices
    shuffled = write_wide_csv(tmp_path / "shuffled.csv", prices[["A3", "A1", "A0", "A2"]])
    results = []
    for source, out in ((data, tmp_path / "a"), (shuffled, tmp_path / "b")):
        res = _decide(
            str(ckpts[-1]),
            "--data",
            source,
            "--as-of",
            _as_of(data),
            "--json",
            str(tmp_path / f"{out.name}.json"),
            "--out",
            str(out),
        )
        assert res.returncode == 0, res.stderr[-3000:]
        assert "all cash" in res.stderr  # no holdings given: said on the terminal
        results.append(json.loads((tmp_path / f"{out.name}.json").read_text()))
    assert results[0]["weights"] == results[1]["weights"] and results[1]["tickers"] == ["A0", "A1", "A2", "A3"]


def _refusal(ckpt, tmp_path, *args: str) -> str:
    out = tmp_path / "refused"
    res = _decide(str(ckpt), *args, "--out", str(out))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and not out.exists()  # nothing written on a refusal
    (line,) = res.stderr.strip().splitlines()
    return line


def test_every_bad_input_is_one_line_and_writes_nothing(limited_run, tmp_path):
    ckpts, data = limited_run
    ckpt, prices = ckpts[-1], load_prices(data).prices
    as_of = ["--as-of", _as_of(data)]
    extra = write_wide_csv(tmp_path / "extra.csv", prices.assign(ZZZ=prices["A0"]))
    assert _refusal(ckpt, tmp_path, "--data", extra, *as_of) == (
        f"error: {extra}: not in the checkpoint's universe: ZZZ; the checkpoint was trained on 4 assets (A0, A1, A2, "
        "A3): give prices for exactly those tickers (any column order)"
    )
    missing = write_wide_csv(tmp_path / "missing.csv", prices.drop(columns=["A2"]))
    assert _refusal(ckpt, tmp_path, "--data", missing, *as_of).startswith(f"error: {missing}: missing A2; ")
    short = write_wide_csv(tmp_path / "short.csv", prices.iloc[-40:])
    assert _refusal(ckpt, tmp_path, "--data", short, *as_of) == (
        f"error: {short}: 40 rows of prices, but the features need 61 (the 60-day window before the decision date "
        "and the day itself); give a longer price history"
    )
    stale = str((prices.index[-1] + pd.offsets.BDay(9)).date())
    assert _refusal(ckpt, tmp_path, "--data", data, "--as-of", stale) == (
        f"error: {data}: the last price is on {prices.index[-1].date()}, 9 business days before {stale} (--as-of); "
        "a decision needs the latest close (at most --max-stale-days 5): update the prices"
    )
    holdings = tmp_path / "h.csv"
    for text, message in [
        (
            "ticker,weight\nA0,-0.1\ncash,1.1\n",
            f"{holdings}: line 2 (A0): weight -0.1 is negative; holdings are long-only (>= 0)",
        ),
        (
            "ticker,weight\nA0,0.5\nA1,0.3\n",
            f"{holdings}: the weights sum to 0.8, not 1; add the cash row (cash,0.2) or rescale them",
        ),
        (
            "ticker,weight\na0,0.5\ncash,0.5\n",
            f"{holdings}: a0 (did you mean A0?) not in the policy's universe of 4 assets (A0, A1, A2, A3); list "
            "only those tickers, and cash",
        ),
        (
            "ticker,amount\nA0,1\n",
            f"{holdings}: header 'ticker,amount'; a holdings CSV starts with ticker,weight (a row per asset and a "
            "cash row, summing to 1) or ticker,shares (share counts and a cash row in currency)",
        ),
    ]:
        holdings.write_text(text)
        assert _refusal(ckpt, tmp_path, "--data", data, "--holdings", str(holdings), *as_of) == f"error: {message}"
    nowhere = tmp_path / "nope"
    assert _refusal(nowhere, tmp_path, "--data", data, *as_of) == (
        f"error: {nowhere}: not found; pass a checkpoint (runs/.../checkpoint_NNNNNN), a run directory or a sweep "
        "directory"
    )
