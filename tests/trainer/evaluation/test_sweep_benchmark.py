"""sweep.benchmark: the schema key (form only, summary-only on resume), the driver's check before any trial, the
summary's figures against the benchmark by hand, and a benchmark that fails when the summary is written."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from skfolio.datasets import load_sp500_index

from tests.conftest import toy_market
from trainer.evaluation import stats
from trainer.evaluation.sweep_benchmark import benchmark_trials, configuration_benchmark_stats
from trainer.experiment.config import SELECTION_METRICS
from trainer.experiment.loading import ExperimentError, load_experiment, resolve_experiment_path
from trainer.experiment.sweep_state import check_same_experiment, save_experiment
from trainer.metrics import registry as M

FORMS = (
    "give 'sp500' (skfolio's bundled S&P 500 index) or FILE:COLUMN (a CSV/Parquet file with a date column and the "
    "price column COLUMN, e.g. prices.csv:SPY)"
)


def test_the_key_takes_sp500_or_file_column_and_refuses_other_forms():
    assert load_experiment("study").sweep.benchmark is None  # off unless asked for
    assert load_experiment("study", {"sweep.benchmark": "sp500"}).sweep.benchmark == "sp500"
    assert load_experiment("study", {"sweep.benchmark": "idx.csv:SPY"}).sweep.benchmark == "idx.csv:SPY"
    with pytest.raises(ExperimentError) as info:
        load_experiment("study", {"sweep.benchmark": "spx"})
    assert str(info.value) == (
        f"{resolve_experiment_path('study')} with sweep.benchmark=spx from the command line: key 'sweep.benchmark': "
        f"Value error, benchmark 'spx': {FORMS}"
    )


def test_the_figures_against_a_benchmark_are_not_selection_metrics():
    # training results never report them (only summaries and backtests compute them), so ASHA could not read them
    relative = {m.tune_key for m in M.shown_in(M.BENCHMARK)}
    assert len(relative) == 5 and relative.isdisjoint(SELECTION_METRICS)
    with pytest.raises(ExperimentError, match=r"key 'sweep\.metric': Value error, unknown metric 'portfolio/beta'"):
        load_experiment("study", {"sweep.metric": "portfolio/beta"})


def test_a_resume_may_add_or_change_the_benchmark(tmp_path):
    save_experiment(load_experiment("study"), tmp_path)
    check_same_experiment(load_experiment("study", {"sweep.benchmark": "sp500"}), tmp_path)  # no error
    with pytest.raises(ExperimentError, match=r"sweep\.num_samples"):  # a change that reaches the trials still fails
        check_same_experiment(load_experiment("study", {"sweep.num_samples": 2}), tmp_path)


def test_a_benchmark_that_misses_a_test_window_is_refused_before_any_trial(tmp_path):
    short = tmp_path / "short.csv"
    load_sp500_index().loc[:"2021-06-30"].rename_axis("date").to_csv(short, date_format="%Y-%m-%d")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.tune",
            "--exp",
            "study",
            "--dry-run",
            "--set",
            f"sweep.benchmark={short}:SP500",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    # fold 1's test window is 2020-12-29 .. 2021-12-28 (252 days, 125 of them after 2021-06-30)
    assert res.stderr.strip() == (
        f"error: {resolve_experiment_path('study')}: key 'sweep.benchmark' (the test window of data.fold=1): {short}: "
        "column 'SP500' has no price on 2021-07-01 (125 of the 252 days of the evaluated window 2020-12-29 .. "
        "2021-12-28 lack one; it has prices 1990-01-02 .. 2021-06-30); give the benchmark a price on every trading "
        "day of the window, or evaluate a window it covers"
    )
    assert res.stdout == ""  # no plan printed


def _toy_sweep(tmp_path, benchmark_prices: list[float]):
    """Three runs of two configurations over the toy market's 4 days (3 holding periods), a benchmark file."""
    market = toy_market()
    path = tmp_path / "b.csv"
    pd.DataFrame({"IDX": benchmark_prices}, index=market.dates.rename("date")).to_csv(path, date_format="%Y-%m-%d")
    runs = {"t0": [0.01, -0.02, 0.03], "t1": [0.02, 0.0, -0.01], "t2": [0.0, 0.01, 0.01]}
    trials = pd.DataFrame(
        {
            "trial": ["t0", "t1", "t2", "t3"],
            "config": ["a", "a", "b", "b"],
            "best_checkpoint": ["c0", "c1", "c2", None],  # t3 has no checkpoint: no returns, NaN figures
        }
    )
    returns = {t: (None, np.array(r), np.zeros(3)) for t, r in runs.items()}
    test_envs = {t: ({}, market) for t in runs}
    return trials, returns, test_envs, f"{path}:IDX"


def test_summary_figures_against_the_benchmark_by_hand(tmp_path):
    # the benchmark 100 -> 100.5 -> 99.495 -> 101.4849: returns +0.5%, -1%, +2% (B of test_registry)
    trials, returns, test_envs, spec = _toy_sweep(tmp_path, [100.0, 100.5, 99.495, 101.4849])
    bench = benchmark_trials(spec, trials, returns, test_envs)
    assert bench.section["error"] is None and bench.section["label"] == "IDX (b.csv)"
    b = np.array([0.005, -0.01, 0.02])
    np.testing.assert_allclose(bench.returns["t0"], b, rtol=1e-12)
    (fold,) = bench.section["folds"]  # one window: the benchmark's own figures on it
    assert fold["test"] == ["2020-01-06", "2020-01-09"]
    assert fold["test_sharpe"] == pytest.approx(math.sqrt(252) / 3, rel=1e-9)
    t0 = trials.set_index("trial").loc["t0"]
    assert t0["test_beta"] == pytest.approx(5 / 3, rel=1e-9) and t0["test_excess_return"] == pytest.approx(0.42)
    assert math.isnan(trials.set_index("trial").loc["t3", "test_sharpe_minus_benchmark"])
    groups = [{"config": "a"}, {"config": "b"}]
    configuration_benchmark_stats(groups, trials, returns, bench.returns, n_boot=100)

    def sharpe(x):
        return x.mean() / x.std(ddof=1) * math.sqrt(252)

    diffs = {t: sharpe(np.array(returns[t][1])) - sharpe(b) for t in ("t0", "t1", "t2")}
    a = groups[0]["test_sharpe_minus_benchmark"]
    assert a["median"] == pytest.approx(np.median([diffs["t0"], diffs["t1"]]), rel=1e-12) and a["n"] == 2
    assert groups[0]["beat_benchmark_fraction"] == np.mean([diffs["t0"] > 0, diffs["t1"] > 0])
    # the interval resamples the benchmark and both seeds on the same days, as for Equal Weight
    by_fold = {None: (b, [np.array(returns["t0"][1]), np.array(returns["t1"][1])])}
    assert a["ci95"] == pytest.approx(list(stats.median_sharpe_difference_ci(by_fold, 100)), rel=1e-9)
    assert groups[1]["test_tracking_error"]["n"] == 1  # t3 (no checkpoint) is not a run
    d = np.array(returns["t2"][1]) - b
    assert groups[1]["test_tracking_error"]["median"] == pytest.approx(d.std(ddof=1) * math.sqrt(252), rel=1e-12)


def test_a_benchmark_that_fails_when_the_summary_is_written_leaves_the_rest(tmp_path):
    # the file lost the window's third day since the sweep started
    trials, returns, test_envs, spec = _toy_sweep(tmp_path, [100.0, 100.5, 99.495, 101.4849])
    path = spec.rsplit(":", 1)[0]
    pd.read_csv(path).drop(index=2).to_csv(path, index=False)
    before = trials.copy()
    bench = benchmark_trials(spec, trials, returns, test_envs)
    assert bench.returns == {} and bench.section == {
        "spec": spec,
        "error": f"{path}: column 'IDX' has no price on 2020-01-08 (1 of the 4 days of the evaluated window "
        "2020-01-06 .. 2020-01-09 lack one; it has prices 2020-01-06 .. 2020-01-09); give the benchmark a price on "
        "every trading day of the window, or evaluate a window it covers",
    }
    pd.testing.assert_frame_equal(trials, before)  # no columns added
