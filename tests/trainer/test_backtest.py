"""trainer.backtest / baselines / metrics / report: hand-computed numbers, no look-ahead in the fits,
the CLI round trip (train smoke -> backtest), reproducibility and exact errors."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from envs.market import load_market
from envs.portfolio import PortfolioEnv
from tests.conftest import checkpoints, synthetic_prices, toy_market, write_wide_csv
from trainer.evaluation.baselines import (
    BUY_AND_HOLD,
    EQUAL_WEIGHT,
    LOOKAHEAD,
    MAX_SHARPE,
    MAX_SHARPE_LOOKAHEAD,
    fit_classical,
    run_baselines,
    split_returns,
)
from trainer.evaluation.simulation import BacktestError, simulate, training_overlap
from trainer.experiment.config import Experiment
from trainer.metrics import registry as M

STRATEGIES = {
    "sac",
    "equal_weight",
    "buy_and_hold",
    "min_volatility",
    "max_sharpe",
    "min_volatility_lookahead",
    "max_sharpe_lookahead",
}


def test_equal_weight_metrics_by_hand_with_costs():
    market = toy_market()
    runs = run_baselines(lambda: PortfolioEnv(data=market, split="test", cost_bps=10.0), market, "test")
    ew = runs[EQUAL_WEIGHT]
    third = 1 / 3
    # day 1: all cash -> 1/3 each: turnover 1, cost 0.001; A +10% -> gross 0.1/3
    n1 = (1 - 0.001) * (1 + 0.1 / 3) - 1
    drift1 = np.array([third * 1.1, third, third]) / (1 + 0.1 / 3)
    t2 = np.abs(third - drift1).sum()
    n2 = (1 - 0.001 * t2) * 1.0 - 1  # day 2: B -10%, C +10% -> gross 0
    drift2 = np.array([third, third * 0.9, third * 1.1])
    t3 = np.abs(third - drift2).sum()
    assert t3 == pytest.approx(0.2 / 3)
    n3 = (1 - 0.001 * t3) * (1 + 0.1 / 3) - 1  # day 3: A +10%
    np.testing.assert_allclose(ew.net_returns, [n1, n2, n3], rtol=0, atol=1e-14)
    np.testing.assert_allclose(ew.turnovers, [1.0, t2, t3], atol=1e-14)
    v1, v2, v3 = 1 + n1, (1 + n1) * (1 + n2), (1 + n1) * (1 + n2) * (1 + n3)
    perf = M.performance(ew)
    assert perf["total_return"] == pytest.approx(v3 - 1, abs=1e-14)
    assert perf["total_costs"] == pytest.approx(0.001 * 1.0 + 0.001 * t2 * v1 + 0.001 * t3 * v2, abs=1e-15)
    assert perf["turnover_per_day"] == pytest.approx((1 + t2 + t3) / 3, abs=1e-14)
    mean, std = np.mean([n1, n2, n3]), np.std([n1, n2, n3], ddof=1)
    assert perf["sharpe"] == pytest.approx(mean / std * math.sqrt(252), rel=1e-12)
    assert perf["annualized_return"] == pytest.approx(mean * 252, rel=1e-12)
    assert perf["max_drawdown"] == pytest.approx(1 - v2 / v1, rel=1e-9)  # the only loss is day 2's cost
    assert perf["effective_number_assets"] == pytest.approx(3.0)
    # buy and hold: one purchase, then no trading
    bh = runs[BUY_AND_HOLD]
    np.testing.assert_allclose(bh.turnovers, [1.0, 0.0, 0.0], atol=1e-14)
    value_bh = 0.999 * (12.1 / 10 + 18 / 20 + 5.5 / 5) / 3  # each third grows with its own price
    assert bh.values[-1] == pytest.approx(value_bh, rel=1e-12)


def test_classical_fits_use_the_training_split_only(tmp_path):
    prices = synthetic_prices(n_days=800, n_assets=4, seed=5, drifts=[0.001, 0.0, 0.0005, -0.0005])
    a = write_wide_csv(tmp_path / "a.csv", prices)
    shocked = prices.copy()
    shocked.iloc[600:] *= np.random.default_rng(0).uniform(0.7, 1.4, shocked.iloc[600:].shape)  # val/test only
    b = write_wide_csv(tmp_path / "b.csv", shocked)
    ma, mb = load_market(a), load_market(b)
    assert ma.splits["train"].end < 600
    fa, fb = fit_classical(split_returns(ma, "train")), fit_classical(split_returns(mb, "train"))
    np.testing.assert_array_equal(fa.min_volatility, fb.min_volatility)
    np.testing.assert_array_equal(fa.max_sharpe, fb.max_sharpe)
    # ... while the look-ahead fits do move with the test prices
    la, lb = fit_classical(split_returns(ma, "test")), fit_classical(split_returns(mb, "test"))
    assert not np.allclose(la.max_sharpe, lb.max_sharpe)
    for w in (fa.min_volatility, fa.max_sharpe, la.min_volatility):
        assert (w >= 0).all() and w.sum() == pytest.approx(1.0)


def test_baseline_weights_valid_and_lookahead_labelled():
    market = load_market("sp500")
    runs = run_baselines(lambda: PortfolioEnv(data=market, split="validation"), market, "validation")
    assert set(runs) == STRATEGIES - {"sac"}
    assert {"min_volatility_lookahead", "max_sharpe_lookahead"} == LOOKAHEAD
    for run in runs.values():
        assert (run.weights >= 0).all()
        np.testing.assert_allclose(run.weights.sum(axis=1), 1.0, atol=1e-12)
        assert len(run.net_returns) == market.splits["validation"].n_rows - 1


def _backtest(args):
    return subprocess.run([sys.executable, "-m", "trainer.backtest", *args], capture_output=True, text=True)


def test_round_trip_train_smoke_then_backtest(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    ckpt = checkpoints(run_dir)[-1]
    out1, out2 = tmp_path / "bt1", tmp_path / "bt2"
    res = _backtest([str(ckpt), "--out", str(out1)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Backtest on the test split 2019-03-29 .. 2022-12-28 (945 days), 10 bp costs" in res.stdout
    for name in STRATEGIES:
        assert name in res.stdout
    result = json.loads((out1 / "backtest.json").read_text())
    assert set(result) >= {"strategies", "split", "dates", "checkpoint"}
    assert set(result["strategies"]) == STRATEGIES
    assert result["split"] == "test" and result["checkpoint"] == str(ckpt)
    assert result["warnings"] == [] and result["not_fitted"] == {}
    assert result["benchmark"] is None  # no --benchmark, no comparison with one
    assert not [line for line in res.stderr.splitlines() if line.startswith("WARNING: ")]
    values = pd.read_parquet(out1 / "values.parquet")
    for name, m in result["strategies"].items():
        assert m["lookahead"] == (name in LOOKAHEAD)
        # every figure recomputed from the daily values file (value 1 before the first day)
        v = values[name].to_numpy()
        r = v / np.concatenate([[1.0], v[:-1]]) - 1.0
        assert m["total_return"] == pytest.approx(v[-1] - 1.0, rel=1e-9)
        assert m["annualized_return"] == pytest.approx(r.mean() * 252, rel=1e-9)
        assert m["annualized_volatility"] == pytest.approx(r.std(ddof=1) * np.sqrt(252), rel=1e-9)
        assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(252), rel=1e-9)
        drawdown = 1.0 - v / np.maximum.accumulate(v)
        assert m["max_drawdown"] == pytest.approx(drawdown.max(), rel=1e-9)
        assert m["calmar"] == pytest.approx(r.mean() * 252 / drawdown.max(), rel=1e-9)
        downside = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2) * r.size / (r.size - 1))
        assert m["sortino"] == pytest.approx(r.mean() / downside * np.sqrt(252), rel=1e-6)
    sac_weights = pd.read_parquet(out1 / "weights.parquet").to_numpy()[:, :-1]
    risky = sac_weights / sac_weights.sum(axis=1, keepdims=True)
    n_eff = result["strategies"]["sac"]["effective_number_assets"]
    assert n_eff == pytest.approx(np.mean(1.0 / (risky**2).sum(axis=1)), rel=1e-9)
    for png in ("equity.png", "drawdowns.png", "weights.png", "training.png"):
        assert (out1 / png).stat().st_size > 10_000, png
        assert (out1 / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(values.columns) == STRATEGIES and len(values) == 945
    weights = pd.read_parquet(out1 / "weights.parquet")
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-9)
    md, html = (out1 / "report.md").read_text(), (out1 / "report.html").read_text()
    for name in STRATEGIES:
        assert f"| {name} |" in md and f"<th>{name}</th>" in html
    assert "SAW THE FUTURE" in md and "SAW THE FUTURE" in html
    assert "![Equity curves](equity.png)" in md and "<img src='training.png'" in html
    # reproducible: the same checkpoint gives identical numbers
    assert _backtest([str(ckpt), "--out", str(out2)]).returncode == 0
    assert json.loads((out2 / "backtest.json").read_text())["strategies"] == result["strategies"]


def test_backtest_errors_are_clear(smoke_run, tmp_path):
    missing = tmp_path / "nope"
    res = _backtest([str(missing)])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (
        f"error: {missing}: checkpoint not found; pass a checkpoint directory (runs/.../checkpoint_NNNNNN)"
    )
    res = _backtest([str(tmp_path)])
    assert res.stderr.strip() == f"error: {tmp_path}: not an RLlib checkpoint directory (no rllib_checkpoint.json)"
    run_dir, _ = smoke_run
    ckpt = checkpoints(run_dir)[-1]
    other = write_wide_csv(tmp_path / "other.csv", synthetic_prices(n_days=600, n_assets=3))
    res = _backtest([str(ckpt), "--data", other, "--out", str(tmp_path / "bt")])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (
        f"error: {other}: missing AAPL, AMD, BAC, BBY, CVX, GE, HD, JNJ, ... (20 in all); not in the checkpoint's "
        "universe: A0, A1, A2; the checkpoint was trained on 20 assets (AAPL, AMD, BAC, BBY, CVX, GE, HD, JNJ, ... "
        "(20 in all)): give prices for exactly those tickers (any column order)"
    )
    assert not (tmp_path / "bt").exists()  # nothing written on bad input


def test_backtest_aligns_columns_by_name(smoke_run, tmp_path):
    """The training data with its columns in another order: the same backtest, column for column."""
    from envs.data import load_prices

    ckpt = checkpoints(smoke_run[0])[-1]
    prices = load_prices("sp500").prices
    same = write_wide_csv(tmp_path / "same.csv", prices)
    shuffled = write_wide_csv(tmp_path / "shuffled.csv", prices[prices.columns[::-1]])
    results = []
    for data, out in ((same, tmp_path / "a"), (shuffled, tmp_path / "b")):
        res = _backtest([str(ckpt), "--data", data, "--out", str(out)])
        assert res.returncode == 0, res.stderr[-3000:]
        results.append(json.loads((out / "backtest.json").read_text())["strategies"])
    assert results[0]["sac"] == results[1]["sac"] and results[0]["equal_weight"] == results[1]["equal_weight"]
    for name, figures in results[0].items():  # fitted baselines: the solver's sums in another memory layout
        assert results[1][name] == pytest.approx(figures, rel=1e-9), name
    weights = [pd.read_parquet(tmp_path / d / "weights.parquet") for d in ("a", "b")]
    assert list(weights[1].columns) == [*prices.columns, "cash"]  # the checkpoint's order
    pd.testing.assert_frame_equal(weights[0], weights[1])


def test_text_table_shows_each_strategys_values():
    from trainer.evaluation.report import text_table
    from trainer.evaluation.runs import EvalRun

    run = EvalRun(
        net_returns=np.array([0.01, -0.02, 0.005]),
        turnovers=np.array([0.1, 0.2, 0.1]),
        costs=np.zeros(3),
        values=np.array([1.01, 0.9898, 0.994749]),
        weights=np.full((3, 3), 1 / 3),
        step_indices=np.arange(3),
    )
    perf = M.performance(run)
    assert perf["total_return"] == pytest.approx(1.01 * 0.98 * 1.005 - 1, abs=1e-15)
    lines = text_table({"sac": perf, "equal_weight": perf}).splitlines()
    assert lines[0].split()[:3] == ["strategy", "Total", "return"]
    sac = lines[2].split()
    # total return -0.5%, turnover 0.133/day, effective N of equal asset weights 2.0
    assert sac[0] == "sac" and sac[1] == "-0.5%" and "0.133" in sac and sac[-1] == "2.0"
    assert lines[3].split()[1:] == sac[1:]


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_bad_cost_bps_is_a_clear_error(smoke_run, tmp_path, value):
    ckpt = checkpoints(smoke_run[0])[-1]
    res = _backtest([str(ckpt), "--cost-bps", value, "--out", str(tmp_path / "bt")])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    shown = repr(float(value))
    assert res.stderr.strip() == (
        f"error: --cost-bps {shown}: cost_bps must be a finite number in [0, 1000] basis points, got {shown}"
    )
    assert not (tmp_path / "bt").exists()


def test_fold_out_of_range_is_a_clear_error(smoke_run):
    ckpt = checkpoints(smoke_run[0])[-1]
    with pytest.raises(BacktestError) as info:
        simulate(ckpt, fold=5)
    assert str(info.value) == f"{ckpt}: fold must be an integer in 0..2 (folds.n_folds is 3), got 5"


def _window(market, split):
    rng = market.splits[split]
    return f"{rng.start_date.date()} .. {rng.end_date.date()}"


def test_backtest_window_inside_the_training_window_is_warned_about(smoke_run, tmp_path):
    """Other data (the bundled prices of 2005-2012 as a CSV) whose test window lies inside the checkpoint's
    training window 2005-01-03 .. 2016-12-30: the result is labelled, on the terminal, report and JSON."""
    from envs.data import load_prices

    ckpt = checkpoints(smoke_run[0])[-1]
    early = load_prices("sp500").prices.loc["2005-01-01":"2012-12-31"]
    data = write_wide_csv(tmp_path / "early.csv", early)
    out = tmp_path / "bt"
    res = _backtest([str(ckpt), "--data", data, "--out", str(out)])
    assert res.returncode == 0, res.stderr[-3000:]
    warning = (
        f"the test window {_window(load_market(data), 'test')} ({data}) overlaps the checkpoint's training window "
        "2005-01-03 .. 2016-12-30 (sp500): the agent was trained on some of these days, so this is NOT an "
        "out-of-sample result; evaluate on days after 2016-12-30 or before 2005-01-03"
    )
    assert f"WARNING: {warning}" in res.stderr.splitlines()
    result = json.loads((out / "backtest.json").read_text())
    assert result["warnings"] == [warning]
    md = (out / "report.md").read_text()
    assert md.startswith("# Backtest (test) - OVERLAPS THE TRAINING WINDOW\n") and f"- WARNING: {warning}" in md


def test_overlap_of_another_folds_window_with_the_training_window():
    """Expanding folds: fold 2 trained on fold 0's test days; fold 0 never saw fold 2's."""
    from envs.market import load_market_for

    def config(fold):
        return Experiment().data.env_config() | {"fold": fold}

    fold0 = load_market_for(config(0))
    warning = training_overlap({"env_config": config(2)}, config(0), fold0, "test")
    assert warning == (
        "the test window 2019-12-30 .. 2020-12-28 (sp500, fold 0) overlaps the checkpoint's training window "
        "1990-03-28 .. 2020-07-08 (sp500, fold 2): the agent was trained on some of these days, so this is NOT an "
        "out-of-sample result; evaluate on days after 2020-07-08 or before 1990-03-28"
    )
    fold2 = load_market_for(config(2))
    assert training_overlap({"env_config": config(0)}, config(2), fold2, "test") is None
    assert training_overlap({"env_config": config(2)}, config(2), fold2, "test") is None  # its own test window


def _losing_prices(tickers, start="2010-01-04"):
    """Every asset loses about 0.3% a day (noise 1%): mean daily returns are negative in every window."""
    prices = synthetic_prices(n_days=600, n_assets=len(tickers), seed=7, drifts=[-0.003] * len(tickers))
    prices.columns = tickers
    prices.index = pd.bdate_range(start, periods=len(prices))
    return prices


def test_maximum_sharpe_without_a_positive_mean_is_not_fitted(tmp_path):
    market = load_market(write_wide_csv(tmp_path / "losing.csv", _losing_prices(["A", "B", "C"])))
    fit = fit_classical(split_returns(market, "train"), "in the training window X")
    assert fit.max_sharpe is None and fit.min_volatility is not None
    assert fit.not_fitted == {
        MAX_SHARPE: "every asset's mean daily return in the training window X is <= 0, so no long-only portfolio "
        "has a positive Sharpe ratio to maximise"
    }
    runs = run_baselines(lambda: PortfolioEnv(data=market, split="test"), market, "test")
    assert set(runs) == STRATEGIES - {"sac", MAX_SHARPE, MAX_SHARPE_LOOKAHEAD}
    assert set(runs.not_fitted) == {MAX_SHARPE, MAX_SHARPE_LOOKAHEAD}
    assert runs.not_fitted[MAX_SHARPE_LOOKAHEAD].startswith(
        f"every asset's mean daily return in the evaluated test window {_window(market, 'test')} is <= 0"
    )


def test_backtest_reports_an_unfittable_baseline_and_writes_everything_else(smoke_run, tmp_path):
    ckpt = checkpoints(smoke_run[0])[-1]
    tickers = json.loads((ckpt / "portfolio_state.json").read_text())["tickers"]
    data = write_wide_csv(tmp_path / "losing.csv", _losing_prices(tickers, start="2023-01-02"))  # after training
    out = tmp_path / "bt"
    res = _backtest([str(ckpt), "--data", data, "--out", str(out)])
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    market = load_market(data)
    reason = (
        f"every asset's mean daily return in the training window {_window(market, 'train')} is <= 0, so no "
        "long-only portfolio has a positive Sharpe ratio to maximise"
    )
    result = json.loads((out / "backtest.json").read_text())
    assert result["not_fitted"][MAX_SHARPE] == reason and set(result["not_fitted"]) == {
        MAX_SHARPE,
        MAX_SHARPE_LOOKAHEAD,
    }
    assert set(result["strategies"]) == STRATEGIES - {MAX_SHARPE, MAX_SHARPE_LOOKAHEAD}
    assert result["warnings"] == []  # 2023 onwards: after the checkpoint's training window
    assert f"max_sharpe: not fitted, {reason}" in res.stdout.splitlines()
    assert f"- max_sharpe: NOT FITTED, {reason}" in (out / "report.md").read_text()
    assert set(pd.read_parquet(out / "values.parquet").columns) == set(result["strategies"])
    for png in ("equity.png", "drawdowns.png", "weights.png", "training.png"):
        assert (out / png).stat().st_size > 10_000


def test_default_report_folder_names_what_was_backtested():
    from trainer.evaluation.backtest_report import default_report_name

    ckpt = Path("runs/x/checkpoints/checkpoint_000010")
    assert default_report_name(ckpt, "test", None, None, None, None) == "backtest_test_checkpoint_000010"
    assert default_report_name(ckpt, "validation", "/d/other.csv", 5.0, 2, 1) == (
        "backtest_validation_checkpoint_000010_agent1_fold2_cost5bps_data-other"
    )
    assert default_report_name(ckpt, "test", None, 2.5, None, None) == "backtest_test_checkpoint_000010_cost2.5bps"


def test_backtests_of_two_checkpoints_keep_both_reports(smoke_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run[0], run)
    first, last = checkpoints(run)[0], checkpoints(run)[-1]
    for ckpt in (first, last):
        res = _backtest([str(ckpt), "--split", "validation"])
        assert res.returncode == 0, res.stderr[-3000:]
    for ckpt in (first, last):
        report = run / f"backtest_validation_{ckpt.name}"
        assert json.loads((report / "backtest.json").read_text())["checkpoint"] == str(ckpt)


def test_a_checkpoint_knows_its_data_and_warns_when_a_backtest_reads_other_prices(ray_session, tmp_path):
    """Trained on a file that is then edited: prices changed inside the training window, or the file cut
    short so its test window falls inside the recorded training window. Each backtest says so (terminal and
    backtest.json) although the splits are recomputed from the edited file."""
    from envs.fingerprint import prices_fingerprint
    from tests.conftest import train_cli
    from trainer.runtime.checkpoint import read_state

    prices = synthetic_prices(n_days=900, n_assets=3, seed=4)
    data = write_wide_csv(tmp_path / "prices.csv", prices)
    res = train_cli(tmp_path / "run", ray_session, "--exp", "smoke", "--data", data, "--steps", "300")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ckpt = checkpoints(tmp_path / "run")[-1]
    record = read_state(ckpt)["data"]
    train = record["windows"]["train"]
    assert record["tickers"] == ["A0", "A1", "A2"] and record["source"] == data
    first = prices.index.searchsorted(pd.Timestamp(train["start"])) - record["lookback"]
    window = prices.loc[: train["end"]].iloc[first:]  # the window's rows and the feature lookback before them
    assert train["sha256"] == prices_fingerprint(window)

    edited = prices.copy()
    edited.iloc[150, 1] *= 1.01  # one price inside the training window
    write_wide_csv(tmp_path / "prices.csv", edited)
    res = _backtest([str(ckpt), "--out", str(tmp_path / "bt1")])
    assert res.returncode == 0, res.stderr[-3000:]
    changed = (
        f"the prices of the train window {train['start']} .. {train['end']} differ from those the checkpoint "
        f"was trained with ({data}): rows changed, added or removed"
    )
    assert f"WARNING: {changed}" in res.stderr.splitlines()
    assert json.loads((tmp_path / "bt1" / "backtest.json").read_text())["warnings"] == [changed]
    # a decision says so too, and a resume is refused (nothing of the run changed) unless told to go on
    from trainer.evaluation.decision import Member, decide

    decision = decide([Member(ckpt)], data, as_of=edited.index[-1])
    assert changed in decision.warnings
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    res = train_cli(tmp_path / "run", ray_session, "--resume", str(ckpt))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: --resume {ckpt}: {changed}; the run would go on training on other prices than it started with: "
        "restore the data file, or pass --allow-changed-data to continue on it anyway"
    )
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before

    write_wide_csv(tmp_path / "prices.csv", prices.iloc[:640])  # the new test window lies in the old training one
    res = _backtest([str(ckpt), "--out", str(tmp_path / "bt2")])
    assert res.returncode == 0, res.stderr[-3000:]
    (warning,) = json.loads((tmp_path / "bt2" / "backtest.json").read_text())["warnings"]
    assert f"overlaps the checkpoint's training window {train['start']} .. {train['end']} ({data})" in warning


def _backtest_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "trainer.backtest", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_an_output_folder_through_a_file_is_refused_before_the_simulation(smoke_run, tmp_path, monkeypatch, capsys):
    import trainer.backtest as B

    ckpt = checkpoints(smoke_run[0])[-1]
    afile = tmp_path / "report.txt"
    afile.write_text("mine")
    for out, where in ((afile, f"{afile}: is"), (afile / "sub", f"{afile / 'sub'}: {afile} is")):
        res = _backtest_cli(str(ckpt), "--out", str(out))
        assert res.returncode == 2 and res.stdout == ""
        assert res.stderr == f"error: {where} a file, not a directory; pass a directory (or a new path) as --out\n"
    assert afile.read_text() == "mine"

    def never(*args, **kwargs):
        raise AssertionError("the simulation ran")

    monkeypatch.setattr(B, "run_backtest", never)  # the refusal comes before it
    assert B.main([str(ckpt), "--out", str(afile)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {afile}: is a file")


def test_a_checkpoint_trained_on_a_ticker_named_cash_is_refused(smoke_run, tmp_path):
    from trainer.runtime.checkpoint import STATE_FILE, write_manifest

    run = tmp_path / "run"
    shutil.copytree(smoke_run[0], run)
    ckpt = checkpoints(run)[-1]
    state = json.loads((ckpt / STATE_FILE).read_text())
    state["tickers"][3] = "cash"  # as a checkpoint trained before such data was refused
    (ckpt / STATE_FILE).write_text(json.dumps(state))
    write_manifest(ckpt)
    res = _backtest_cli(str(ckpt))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == (
        f"error: {ckpt}: its training data: ticker 'cash' has the name of the portfolio's cash position (a column of "
        "the backtest's weights beside the tickers); rename that column (or that ticker in a long file), e.g. to "
        "'cash_asset', and train again\n"
    )
    assert not list(run.glob("backtest_*"))


def test_a_full_disk_while_the_report_is_written_is_one_line(smoke_run, tmp_path, monkeypatch, capsys):
    import errno
    import os

    import trainer.backtest as B

    def full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    out = tmp_path / "report"
    assert B.main([str(checkpoints(smoke_run[0])[-1]), "--out", str(out)]) == 1
    assert capsys.readouterr().err == (
        f"error: {out}: not written ({out / 'values.parquet'}: No space left on device): make room, then backtest "
        "again\n"
    )
