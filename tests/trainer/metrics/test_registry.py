"""trainer.metrics.registry against values computed by hand on short series, and the undefined cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.evaluation.runs import EvalRun
from trainer.metrics import registry as M
from trainer.metrics.measures import effective_number_assets

# Daily returns +1%, -2%, +3%: mean 1/150; deviations 1/300, -8/300, 7/300 -> sample variance 57/90000;
# values 1.01, 0.9898, 1.019494; the only drawdown is day 2's -2% from the 1.01 peak.
R = [0.01, -0.02, 0.03]
SQRT_252 = math.sqrt(252)


def test_total_return_compounds():
    assert M.total_return(R) == pytest.approx(1.01 * 0.98 * 1.03 - 1, abs=1e-15)
    assert M.total_return(R) == pytest.approx(0.019494, abs=1e-15)


def test_annualized_return_and_volatility():
    assert M.annualized_return(R) == pytest.approx(252 / 150, rel=1e-12)  # 1.68
    assert M.annualized_volatility(R) == pytest.approx(math.sqrt(57) / 300 * SQRT_252, rel=1e-12)


def test_sharpe_annualized():
    # (1/150) / (sqrt(57)/300) * sqrt(252) = 2 sqrt(252/57)
    assert M.sharpe_annualized(R) == pytest.approx(2 * math.sqrt(252 / 57), rel=1e-12)
    assert M.sharpe_annualized(R) == pytest.approx(4.205259864, rel=1e-9)


def test_sortino_uses_the_semi_deviation_below_zero():
    # downside: only -0.02 -> semi-variance 0.02^2 / (3 - 1) = 0.0002 -> sortino (1/150) / sqrt(0.0002) sqrt(252)
    assert M.sortino_annualized(R) == pytest.approx((1 / 150) / math.sqrt(0.0002) * SQRT_252, rel=1e-12)
    assert M.sortino_annualized(R) == pytest.approx(2 / 3 * math.sqrt(126), rel=1e-12)


def test_max_drawdown_of_the_compounded_value():
    assert M.max_drawdown(R) == pytest.approx(0.02, abs=1e-15)
    # 1.1, 0.55, 0.66, 0.33: peak 1.1, trough 0.33 -> 70%
    assert M.max_drawdown([0.1, -0.5, 0.2, -0.5]) == pytest.approx(0.7, abs=1e-15)
    # a loss on the first day counts from the starting value 1
    assert M.max_drawdown([-0.1, 0.05]) == pytest.approx(0.1, abs=1e-15)
    assert M.max_drawdown([0.01, 0.02]) == 0.0


def test_calmar_is_annualized_return_over_max_drawdown():
    assert M.calmar(R) == pytest.approx((252 / 150) / 0.02, rel=1e-12)  # 84
    assert M.calmar([0.01, 0.02]) == 0.0  # no drawdown: undefined, reported as 0


def test_effective_number_assets_is_the_mean_inverse_herfindahl_of_normalised_rows():
    # [0.25, 0.25, 0.5] -> 1 / 0.375 = 8/3; [1, 0, 0] -> 1; an all-zero row (all cash) is skipped
    assert effective_number_assets([[0.25, 0.25, 0.5], [1, 0, 0], [0, 0, 0]]) == pytest.approx((8 / 3 + 1) / 2)
    # rows are normalised first: 10% + 10% risky (80% cash, dropped by the caller) is two equal assets
    assert effective_number_assets([[0.1, 0.1]]) == pytest.approx(2.0)
    assert effective_number_assets([0.5, 0.5, 0.0, 0.0]) == pytest.approx(2.0)  # one day as a 1-D array
    assert effective_number_assets([[0.0, 0.0]]) == 0.0


@pytest.mark.parametrize(
    "returns",
    [[], [0.01], [0.004, 0.004, 0.004]],
    ids=["empty", "one-day", "no-spread"],
)
def test_undefined_ratios_are_zero(returns):
    assert M.sharpe_annualized(returns) == 0.0
    assert M.sortino_annualized(returns) == 0.0


def test_empty_series():
    assert M.total_return([]) == 0.0 and M.annualized_return([]) == 0.0
    assert M.annualized_volatility([]) == 0.0 and M.annualized_volatility([0.01]) == 0.0
    assert M.max_drawdown([]) == 0.0 and M.calmar([]) == 0.0
    assert M.sortino_annualized([0.01, 0.02]) == 0.0  # no downside at all


def _run(net_returns, turnovers, costs, values, weights) -> EvalRun:
    n = len(net_returns)
    return EvalRun(
        np.asarray(net_returns, float),
        np.asarray(turnovers, float),
        np.asarray(costs, float),
        np.asarray(values, float),
        np.asarray(weights, float).reshape(n, -1) if n else np.zeros((0, 3)),
        np.arange(n),
    )


VALUES = [1.01, 1.01 * 0.98, 1.01 * 0.98 * 1.03]
WEIGHTS = [[0.5, 0.5, 0.0], [0.25, 0.25, 0.5], [1.0, 0.0, 0.0]]  # two assets, then cash
COSTS = [0.001, 0.0002, 0.0001]


def test_summarize():
    out = M.summarize(_run(R, [1.0, 0.2, 0.1], COSTS, VALUES, WEIGHTS))
    assert set(out) == {M.SHARPE, M.TOTAL_RETURN, M.MAX_DRAWDOWN, M.TURNOVER, M.TOTAL_COSTS}
    assert out[M.SHARPE] == pytest.approx(2 * math.sqrt(252 / 57), rel=1e-12)
    assert out[M.TOTAL_RETURN] == pytest.approx(0.019494, abs=1e-15)
    assert out[M.MAX_DRAWDOWN] == pytest.approx(0.02, abs=1e-15)
    assert out[M.TURNOVER] == pytest.approx(1.3 / 3, rel=1e-12)
    # one meaning of costs everywhere: each day's cost fraction paid on the value held before that day
    assert out[M.TOTAL_COSTS] == pytest.approx(0.001 * 1.0 + 0.0002 * 1.01 + 0.0001 * 0.9898, rel=1e-12)
    empty = M.summarize(_run([], [], [], [], []))
    assert empty == {M.SHARPE: 0.0, M.TOTAL_RETURN: 0.0, M.MAX_DRAWDOWN: 0.0, M.TURNOVER: 0.0, M.TOTAL_COSTS: 0.0}


def test_performance_by_hand():
    perf = M.performance(_run(R, [1.0, 0.2, 0.1], COSTS, VALUES, WEIGHTS))
    expected = {
        M.TOTAL_RETURN: 0.019494,
        "annualized_return": 1.68,
        "annualized_volatility": math.sqrt(57) / 300 * SQRT_252,
        M.SHARPE: 2 * math.sqrt(252 / 57),
        "sortino": 2 / 3 * math.sqrt(126),
        M.MAX_DRAWDOWN: 0.02,
        "calmar": 84.0,
        M.TURNOVER: 1.3 / 3,
        # each day's cost fraction is paid on the value held before that day: 1, 1.01, 0.9898
        M.TOTAL_COSTS: 0.001 * 1.0 + 0.0002 * 1.01 + 0.0001 * 0.9898,
        # risky parts normalised: [.5, .5] -> 2, [.25, .25] -> 2, [1, 0] -> 1
        "effective_number_assets": 5 / 3,
        "final_value": 1.019494,
        "n_days": 3,
    }
    assert set(perf) == set(expected)
    for key, value in expected.items():
        assert perf[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert isinstance(perf["n_days"], int)


def test_performance_of_an_empty_run():
    perf = M.performance(_run([], [], [], [], []))
    assert perf["final_value"] == 1.0 and perf["n_days"] == 0
    assert all(v == 0.0 for k, v in perf.items() if k not in ("final_value", "n_days")), perf


def test_registry_declares_each_metric_once_with_a_format_and_a_place():
    keys = [m.key for m in M.REGISTRY]
    assert len(keys) == len(set(keys))
    assert [m.label for m in M.shown_in(M.REPORT)][:3] == ["Total return", "Ann. return", "Ann. vol"]
    assert {m.gauge_name for m in M.shown_in(M.GAUGE)} >= {
        "portfolio_validation_sharpe",
        "portfolio_critic_loss",
        "portfolio_policy_entropy",
        "portfolio_env_steps_per_s",
        "portfolio_trained_samples_per_s",
    }
    assert M.BY_KEY[M.SHARPE].format(0.123) == "+0.12" and M.BY_KEY[M.SHARPE].format(float("nan")) == "n/a"
    assert M.BY_KEY[M.SHARPE].progress_label == "val Sharpe" and M.BY_KEY[M.CRITIC_LOSS].progress_label == "critic loss"
    section = {M.VALIDATION: {M.SHARPE: 1.5}, M.CRITIC_LOSS: 0.25}
    assert M.BY_KEY[M.SHARPE].read(section) == 1.5 and M.BY_KEY[M.CRITIC_LOSS].read(section) == 0.25
    assert M.BY_KEY[M.ALPHA].read(section) is None


def test_tune_metric_paths_are_the_keys_tune_flattens_results_to():
    from ray.tune.utils import flatten_dict

    result = {M.PORTFOLIO: {M.VALIDATION: {M.SHARPE: 1.5}, M.ENV_STEPS: 300, M.DIVERGED: False}}
    flattened = flatten_dict(result)
    assert flattened[M.VALIDATION_SHARPE_METRIC] == 1.5
    assert flattened[M.ENV_STEPS_METRIC] == 300
    assert flattened[M.DIVERGED_METRIC] is False


# Against a benchmark B = +0.5%, -1%, +2% (mean 0.005, deviations 0, -0.015, 0.015: sample variance 2.25e-4):
# daily differences R - B = 0.005, -0.01, 0.01 (mean 1/600, deviations 2/600, -7/600, 5/600: sample variance
# 39/360000); cov(R, B) = (0 + 8/300 * 0.015 + 7/300 * 0.015) / 2 = 3.75e-4, so beta = 3.75e-4 / 2.25e-4 = 5/3.
B = [0.005, -0.01, 0.02]


def test_figures_against_a_benchmark_by_hand():
    rel = M.relative_performance(np.array(R), np.array(B))
    assert list(rel) == [m.key for m in M.shown_in(M.BENCHMARK)]
    expected = {
        M.SHARPE_MINUS_BENCHMARK: 2 * math.sqrt(252 / 57) - SQRT_252 / 3,
        M.EXCESS_RETURN: 252 / 600,
        M.TRACKING_ERROR: math.sqrt(39) / 600 * SQRT_252,
        M.INFORMATION_RATIO: math.sqrt(252 / 39),
        M.BETA: 5 / 3,
    }
    assert set(rel) == set(expected)
    for key, value in expected.items():
        assert rel[key] == pytest.approx(value, rel=1e-12), key
    # the excess return is exactly the difference of the two annualised (arithmetic) returns
    assert rel[M.EXCESS_RETURN] == pytest.approx(M.annualized_return(R) - M.annualized_return(B), rel=1e-12)


def test_figures_against_a_benchmark_invariants_and_undefined_cases():
    b = np.array(B)
    same = M.relative_performance(b, b)
    assert same[M.EXCESS_RETURN] == 0.0 and same[M.TRACKING_ERROR] == 0.0 and same[M.SHARPE_MINUS_BENCHMARK] == 0.0
    assert math.isnan(same[M.INFORMATION_RATIO]) and same[M.BETA] == pytest.approx(1.0, rel=1e-12)
    assert M.BY_KEY[M.INFORMATION_RATIO].format(same[M.INFORMATION_RATIO]) == "n/a"
    shifted = M.relative_performance(b + 0.001, b)  # a constant daily gap: no tracking error, beta 1
    assert shifted[M.EXCESS_RETURN] == pytest.approx(0.252, rel=1e-12) and shifted[M.TRACKING_ERROR] < 1e-12
    assert math.isnan(shifted[M.INFORMATION_RATIO]) and shifted[M.BETA] == pytest.approx(1.0, rel=1e-12)
    assert M.relative_performance(2 * b, b)[M.BETA] == pytest.approx(2.0, rel=1e-12)
    assert math.isnan(M.relative_performance(np.array(R), np.full(3, 0.001))[M.BETA])  # a flat benchmark
    with pytest.raises(ValueError, match="returns and benchmark must cover the same days, got 3 and 2"):
        M.relative_performance(np.array(R), b[:2])
