"""trainer.backtest --benchmark: every strategy's figures against a benchmark series, recomputed from the backtest's
own daily values and skfolio's index without our code, the same figures from the index written to a file, and
the exact one-line errors with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from skfolio.datasets import load_sp500_index

from envs.benchmark import PRICE_INDEX_NOTE
from tests.conftest import checkpoints, relative_by_hand, sharpe_by_hand


def _backtest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer.backtest", *args], capture_output=True, text=True)


def test_backtest_against_the_bundled_index_and_the_same_index_from_a_file(smoke_run, tmp_path):
    ckpt = checkpoints(smoke_run[0])[-1]
    out = tmp_path / "bt"
    res = _backtest(str(ckpt), "--benchmark", "sp500", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((out / "backtest.json").read_text())
    section = result["benchmark"]
    assert (section["source"], section["column"], section["label"]) == ("sp500", "SP500", "S&P 500 price index")
    assert set(section["strategies"]) == set(result["strategies"])
    # independently: the window's days are its first day and the value dates; the index's returns between them
    values = pd.read_parquet(out / "values.parquet")
    days = pd.DatetimeIndex([pd.Timestamp(result["dates"]["start"]), *values.index])
    index = load_sp500_index()["SP500"]
    b = index.loc[days].to_numpy()
    b = b[1:] / b[:-1] - 1.0
    assert section["sharpe"] == pytest.approx(sharpe_by_hand(b), rel=1e-9)
    assert section["total_return"] == pytest.approx(index.loc[days[-1]] / index.loc[days[0]] - 1.0, rel=1e-9)
    for name, figures in section["strategies"].items():
        v = values[name].to_numpy()
        r = v / np.concatenate([[1.0], v[:-1]]) - 1.0
        assert figures == pytest.approx(relative_by_hand(r, b), rel=1e-8), name
        # arithmetic annualisation: the excess return is the difference of the annualised returns
        own = result["strategies"][name]["annualized_return"] - section["annualized_return"]
        assert figures["excess_return"] == pytest.approx(own, rel=1e-9)
    lines = res.stdout.splitlines()
    head = f"benchmark: S&P 500 price index (sp500) over the same {result['dates']['n_days']} days: Total return "
    (at,) = [i for i, line in enumerate(lines) if line.startswith(head)]
    assert " ".join(lines[at + 1].split()) == "strategy Sharpe - bench Excess return Tracking error Info ratio Beta"
    sac = lines[at + 3].split()
    assert sac[0] == "sac" and sac[-1] == f"{section['strategies']['sac']['beta']:.2f}"
    assert f"note: {PRICE_INDEX_NOTE}" in lines
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "## Against the benchmark" in md and "| strategy | Sharpe - bench | Excess return |" in md
    assert f"- {PRICE_INDEX_NOTE}" in md and "<h2>Against the benchmark</h2>" in html
    assert (out / "equity.png").stat().st_size > 10_000

    # the same index as a column of a CSV file beside a text column: the same figures, no price-index note
    frame = index.rename_axis("date").to_frame()
    frame["source"] = "skfolio"
    frame.to_csv(tmp_path / "index.csv", date_format="%Y-%m-%d")
    res = _backtest(str(ckpt), "--benchmark", f"{tmp_path / 'index.csv'}:SP500", "--out", str(tmp_path / "bt2"))
    assert res.returncode == 0, res.stderr[-3000:]
    from_file = json.loads((tmp_path / "bt2" / "backtest.json").read_text())["benchmark"]
    assert from_file["strategies"] == section["strategies"] and from_file["notes"] == []
    assert from_file["label"] == "SP500 (index.csv)" and from_file["source"] == str(tmp_path / "index.csv")


def test_benchmark_errors_are_one_line_and_nothing_is_written(smoke_run, tmp_path):
    ckpt = checkpoints(smoke_run[0])[-1]
    index = load_sp500_index()["SP500"].rename_axis("date")
    path = tmp_path / "index.csv"
    index.to_frame().assign(QQQ=index * 0.5).to_csv(path, date_format="%Y-%m-%d")
    out = tmp_path / "bt"
    res = _backtest(str(ckpt), "--benchmark", f"{path}:SPY", "--out", str(out))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (
        f"error: {path}: no column 'SPY'; its price columns are 'SP500', 'QQQ'; give FILE:COLUMN with one of them"
    )
    res = _backtest(str(ckpt), "--benchmark", "spx", "--out", str(out))
    assert res.returncode == 2 and res.stderr.strip() == (
        "error: benchmark 'spx': give 'sp500' (skfolio's bundled S&P 500 index) or FILE:COLUMN (a CSV/Parquet file "
        "with a date column and the price column COLUMN, e.g. prices.csv:SPY)"
    )
    # a benchmark that ends before the test window does (2019-03-29 .. 2022-12-28)
    short = tmp_path / "short.csv"
    index.loc[:"2021-06-30"].to_frame().to_csv(short, date_format="%Y-%m-%d")
    res = _backtest(str(ckpt), "--benchmark", f"{short}:SP500", "--out", str(out))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (
        f"error: {short}: column 'SP500' has no price on 2021-07-01 (377 of the 946 days of the evaluated window "
        "2019-03-29 .. 2022-12-28 lack one; it has prices 1990-01-02 .. 2021-06-30); give the benchmark a price on "
        "every trading day of the window, or evaluate a window it covers"
    )
    assert not out.exists()
