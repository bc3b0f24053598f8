"""trainer.evaluation.stats: quantiles, the paired block-bootstrap interval and the deflated Sharpe ratio."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skfolio.utils.bootstrap import stationary_bootstrap

from trainer.evaluation import stats
from trainer.metrics.measures import sharpe_annualized


def test_quantiles_by_hand():
    q = stats.quantiles([4.0, 1.0, float("nan"), 3.0, 2.0, None])
    assert q == {"median": 2.5, "q25": 1.75, "q75": 3.25, "mean": 2.5, "n": 4}
    empty = stats.quantiles([float("nan")])
    assert empty["n"] == 0 and math.isnan(empty["median"])


def test_sharpe_rows_matches_the_scalar_measure():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0005, 0.01, (3, 50))
    np.testing.assert_allclose(stats.sharpe_rows(x), [sharpe_annualized(r) for r in x], rtol=1e-12)
    assert stats.sharpe_rows(np.zeros((1, 5)))[0] == 0.0  # no spread: 0, as sharpe_annualized


def test_block_bootstrap_interval_is_the_hand_computed_percentiles_of_resampled_medians():
    rng = np.random.default_rng(1)
    ew = rng.normal(0.0004, 0.01, 120)
    seeds = [ew + rng.normal(0.0002, 0.003, 120) for _ in range(3)]
    lo, hi = stats.median_sharpe_difference_ci({0: (ew, seeds)}, n_samples=300, block_days=10.0, seed=5)
    # by hand: the same stationary-bootstrap resamples of the table [EW, seed 0, seed 1, seed 2] (paired days),
    # each resample's Sharpe differences to EW, their median over seeds, then the 2.5 / 97.5 percentiles
    boot = stationary_bootstrap(np.column_stack([ew, *seeds]), 300, block_size=10.0, seed=5)
    medians = []
    for sample in boot:
        s = [sharpe_annualized(sample[:, j]) for j in range(4)]
        medians.append(np.median([s[j] - s[0] for j in range(1, 4)]))
    assert (lo, hi) == pytest.approx(tuple(np.percentile(medians, [2.5, 97.5])), rel=1e-9)
    assert lo < hi


def test_identical_or_rescaled_agents_have_a_degenerate_interval_at_zero():
    rng = np.random.default_rng(2)
    ew = rng.normal(0.0004, 0.01, 200)
    # Sharpe is scale invariant: 2 x EW's daily returns has EW's Sharpe on every resample
    lo, hi = stats.median_sharpe_difference_ci({0: (ew, [ew.copy(), 2 * ew])}, n_samples=200)
    assert lo == pytest.approx(0.0, abs=1e-9) and hi == pytest.approx(0.0, abs=1e-9)
    assert all(math.isnan(x) for x in stats.median_sharpe_difference_ci({}, n_samples=10))


def test_folds_are_resampled_independently_and_pooled_per_replicate():
    rng = np.random.default_rng(3)
    better = {f: (e := rng.normal(0, 0.01, 150), [e + 0.002]) for f in range(3)}  # beats EW every day
    lo, hi = stats.median_sharpe_difference_ci(better, n_samples=200)
    assert 0 < lo < hi


def test_deflated_sharpe_deflates_for_the_number_of_configurations():
    rng = np.random.default_rng(4)
    selected = rng.normal(0.0008, 0.01, 500)
    single = stats.deflated_sharpe(selected, [selected])  # one configuration: probabilistic Sharpe vs 0
    others = [rng.normal(0.0, 0.01, 500) for _ in range(9)]
    deflated = stats.deflated_sharpe(selected, [selected, *others])
    assert 0.0 <= deflated < single <= 1.0
    assert math.isnan(stats.deflated_sharpe(np.array([0.01, 0.02]), [np.array([0.01, 0.02])]))
