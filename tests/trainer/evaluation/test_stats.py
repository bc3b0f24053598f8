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


def _psr_by_hand(x: np.ndarray, benchmark: float) -> float:
    """Bailey & Lopez de Prado's probabilistic Sharpe ratio, per-period terms: Z[(SR - SR*) sqrt(T - 1) /
    sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2)] with the sample std, and the (population) skew and kurtosis."""
    from scipy import stats as st

    sr = x.mean() / x.std(ddof=1)
    g3, g4 = st.skew(x), st.kurtosis(x, fisher=False)
    return float(st.norm.cdf((sr - benchmark) * math.sqrt(x.size - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)))


def test_deflated_sharpe_is_the_closed_form_of_bailey_and_lopez_de_prado():
    """DSR = PSR(SR0) with SR0 = std(trial SRs) [(1 - g) Z^-1(1 - 1/N) + g Z^-1(1 - 1/(N e))], g Euler's
    constant, every Sharpe ratio per day (not annualised), computed here without the module under test."""
    from scipy import stats as st

    rng = np.random.default_rng(7)
    selected = rng.normal(0.0012, 0.01, 750) + 0.003 * rng.standard_t(5, 750)
    others = [rng.normal(m, 0.01, 750) for m in (0.0, 0.0004, -0.0003, 0.0006)]
    trials = [selected, *others]
    daily_sr = np.array([t.mean() / t.std(ddof=1) for t in trials])
    n, g = len(trials), np.euler_gamma
    sr0 = daily_sr.std(ddof=1) * ((1 - g) * st.norm.ppf(1 - 1 / n) + g * st.norm.ppf(1 - 1 / (n * math.e)))
    expected = _psr_by_hand(selected, sr0)
    assert 0.05 < expected < 0.999  # a case where a wrong benchmark or scale shows
    assert stats.deflated_sharpe(selected, trials) == pytest.approx(expected, rel=1e-9)
    # one configuration: the probabilistic Sharpe ratio against zero
    assert stats.deflated_sharpe(selected, [selected]) == pytest.approx(_psr_by_hand(selected, 0.0), rel=1e-9)


def test_interval_over_several_folds_and_seeds_rebuilt_by_hand():
    """Three folds of different lengths, two or three seeds each: every replicate resamples each fold's days
    (its own seed of the resampling), takes each seed's Sharpe minus EW's, pools all runs, and the interval is
    the 2.5 / 97.5 percentiles of the replicates' medians."""
    rng = np.random.default_rng(11)
    runs = {}
    for fold, (days, n_seeds) in enumerate([(90, 2), (120, 3), (150, 3)]):
        ew = rng.normal(0.0003, 0.01, days)
        runs[fold] = (ew, [ew + rng.normal(0.0001 * (s - 1), 0.004, days) for s in range(n_seeds)])
    lo, hi = stats.median_sharpe_difference_ci(runs, n_samples=250, block_days=15.0, seed=3)
    per_fold = []
    for i, (ew, agents) in enumerate(runs.values()):
        boot = stationary_bootstrap(np.column_stack([ew, *agents]), 250, block_size=15.0, seed=3 + i)
        per_fold.append(
            np.array(
                [[sharpe_annualized(b[:, j]) - sharpe_annualized(b[:, 0]) for j in range(1, b.shape[1])] for b in boot]
            )
        )
    pooled = np.concatenate(per_fold, axis=1)  # [replicates, 8 runs]
    assert pooled.shape == (250, 8)
    medians = np.median(pooled, axis=1)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(medians, [2.5, 97.5])), rel=1e-9)
    # the mean or the max over runs, or one seed per fold, would give another interval
    for other in (pooled.mean(axis=1), pooled.max(axis=1), np.median(pooled[:, [0, 2, 5]], axis=1)):
        assert tuple(np.percentile(other, [2.5, 97.5])) != pytest.approx((lo, hi), rel=1e-3)
