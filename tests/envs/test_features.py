"""envs.features: hand-computed values, causality, the Parquet cache (hit, miss, corrupt, stale)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from envs import features as features_module
from envs.data import load_prices
from envs.features import (
    FeatureConfig,
    cache_dir,
    cache_key,
    compute_features,
    compute_shared_features,
    load_feature_arrays,
    load_features,
)
from tests.conftest import synthetic_prices

SMALL = FeatureConfig(return_horizons=(1, 2), vol_windows=(3,), ma_windows=(2,), rsi_window=2)


def test_names_and_lookback():
    cfg = FeatureConfig()
    assert cfg.lookback == 60
    assert cfg.names == [
        "logret_1",
        "logret_5",
        "logret_20",
        "logret_60",
        "vol_20",
        "vol_60",
        "ma_20",
        "ma_60",
        "rsi_14",
    ]
    assert SMALL.lookback == 3


def test_hand_computed_values():
    p = [100.0, 110.0, 99.0, 99.0, 108.9]
    prices = pd.DataFrame({"A": p, "B": [1.0] * 5}, index=pd.bdate_range("2020-01-01", periods=5))
    f = compute_features(prices, SMALL)
    assert f.shape == (5, 2, 5) and f.dtype == np.float32
    assert (f[:3] == 0).all()  # rows before the lookback are zero
    t = 4
    np.testing.assert_allclose(f[t, 0, 0], math.log(108.9 / 99.0), rtol=1e-6)  # logret_1
    np.testing.assert_allclose(f[t, 0, 1], math.log(108.9 / 99.0), rtol=1e-6)  # logret_2 (99 -> 108.9)
    daily = [math.log(99 / 110), math.log(99 / 99), math.log(108.9 / 99)]  # last 3 daily log returns
    np.testing.assert_allclose(f[t, 0, 2], np.std(daily, ddof=1), rtol=1e-5)  # vol_3
    np.testing.assert_allclose(f[t, 0, 3], 108.9 / ((99.0 + 108.9) / 2) - 1, rtol=1e-5)  # ma_2
    # rsi_2 over changes (0, +9.9): gain mean 4.95, loss mean 0 -> RSI 100 -> +1.
    np.testing.assert_allclose(f[t, 0, 4], 1.0, rtol=1e-6)
    # row 3: changes (-11, 0): RSI 0 -> -1; a flat asset is neutral (0).
    np.testing.assert_allclose(f[3, 0, 4], -1.0, rtol=1e-6)
    assert f[t, 1, 4] == 0.0 and f[t, 1, 2] == 0.0


def test_no_look_ahead_on_real_prices():
    prices = load_prices("sp500").prices.iloc[:1500]
    base = compute_features(prices)
    t = 1000
    shocked = prices.copy()
    shocked.iloc[t + 1 :] *= np.random.default_rng(0).uniform(0.5, 2.0, shocked.iloc[t + 1 :].shape)
    after = compute_features(shocked)
    np.testing.assert_array_equal(base[: t + 1], after[: t + 1])
    assert not np.array_equal(base[t + 1 :], after[t + 1 :])


def test_cache_miss_then_hit(tmp_path, monkeypatch):
    monkeypatch.setenv("PORTFOLIO_RL_CACHE", str(tmp_path))
    prices = synthetic_prices(n_days=200)
    a, status = load_features(prices)
    assert status == "miss"
    path = cache_dir() / f"{cache_key(prices, FeatureConfig())}.parquet"
    assert path.exists()
    b, status = load_features(prices)
    assert status == "hit"
    np.testing.assert_array_equal(a, b)
    # other settings -> other key -> another file
    _, status = load_features(prices, SMALL)
    assert status == "miss"


def test_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("PORTFOLIO_RL_CACHE", str(tmp_path))
    prices = synthetic_prices(n_days=200)
    a, _ = load_features(prices)
    path = cache_dir() / f"{cache_key(prices, FeatureConfig())}.parquet"
    path.write_bytes(path.read_bytes()[:100])  # truncated file
    with pytest.warns(UserWarning, match="unreadable"):
        b, status = load_features(prices)
    assert status == "rebuilt"
    np.testing.assert_array_equal(a, b)
    _, status = load_features(prices)
    assert status == "hit"


def test_stale_cache_is_rebuilt(tmp_path, monkeypatch):
    """A file whose stored key does not match (e.g. copied from other data) is not trusted."""
    monkeypatch.setenv("PORTFOLIO_RL_CACHE", str(tmp_path))
    prices = synthetic_prices(n_days=200)
    other = synthetic_prices(n_days=200, seed=1)
    load_features(other)
    src = cache_dir() / f"{cache_key(other, FeatureConfig())}.parquet"
    dst = cache_dir() / f"{cache_key(prices, FeatureConfig())}.parquet"
    dst.write_bytes(src.read_bytes())
    with pytest.warns(UserWarning, match="stale"):
        b, status = load_features(prices)
    assert status == "rebuilt"
    np.testing.assert_array_equal(b, compute_features(prices))


def test_features_are_c_contiguous():
    assert compute_features(synthetic_prices(n_days=100, n_assets=4)).flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("layout", ["c", "assets_outer"])
def test_cache_round_trip_with_memory_linear_in_the_array(tmp_path, layout):
    """Writing and reading the cache holds a few copies of the array at most, whatever its memory layout.

    A writer that copied the whole array once per column (assets x features copies: about 90 MB here for a
    0.3 MB array) fails the bound.
    """
    import tracemalloc

    from envs.features import _read_cache, _write_cache

    t, a, f = 300, 30, 9
    values = np.random.default_rng(0).random((t, a, f), dtype=np.float32)
    # "assets_outer": the layout np.stack gives over pandas' column-major blocks (neither C nor F order).
    array = values if layout == "c" else np.ascontiguousarray(values.transpose(1, 0, 2)).transpose(1, 0, 2)
    assert array.flags["C_CONTIGUOUS"] == (layout == "c")
    path = tmp_path / "f.parquet"
    columns = [f"T{i}|{n}" for i in range(a) for n in range(f)]
    tracemalloc.start()
    try:
        _write_cache(path, array, "key", columns)
        written = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        back, _ = _read_cache(path, "key", (t, a, f))
        read = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert back.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(back, values)
    assert written < 3 * array.nbytes and read < 3 * array.nbytes, (written, read, array.nbytes)


def _pandas_reference(prices: pd.DataFrame, cfg: FeatureConfig) -> np.ndarray:
    """The features as pandas formulas per column: the definition ``compute_features`` must match bit for bit."""
    log_p = np.log(prices.astype("float64"))
    daily = log_p.diff()
    cols = [log_p - log_p.shift(h) for h in cfg.return_horizons]
    cols += [daily.rolling(w, min_periods=w).std(ddof=1) for w in cfg.vol_windows]
    cols += [prices / prices.rolling(w, min_periods=w).mean() - 1.0 for w in cfg.ma_windows]
    change = prices.diff()
    n = cfg.rsi_window
    gain = change.clip(lower=0.0).rolling(n, min_periods=n).mean()
    loss = (-change.clip(upper=0.0)).rolling(n, min_periods=n).mean()
    total = gain + loss
    rsi = (gain / total.where(total > 0)).fillna(0.5) * 2.0 - 1.0
    rsi.iloc[:n] = 0.0
    cols.append(rsi)
    out = np.stack([c.to_numpy() for c in cols], axis=-1)
    out[: cfg.lookback] = 0.0
    return out.astype(np.float32)


def test_identical_to_the_pandas_formulas_bit_for_bit():
    cfg = FeatureConfig()
    bundled = load_prices("sp500").prices
    np.testing.assert_array_equal(compute_features(bundled, cfg), _pandas_reference(bundled, cfg))
    for start, rows in ((0, cfg.lookback + 1), (1234, 100), (7000, 300)):  # a decision's short histories
        window = bundled.iloc[start : start + rows]
        np.testing.assert_array_equal(compute_features(window, cfg), _pandas_reference(window, cfg))
    rng = np.random.default_rng(7)
    prices = pd.DataFrame(np.exp(np.cumsum(rng.normal(0, 0.02, (300, 5)), axis=0)) * rng.uniform(1, 500, 5))
    prices.iloc[50:80, 2] = prices.iloc[49, 2]  # a flat stretch: zero moves, a neutral RSI, zero volatility
    other = FeatureConfig(return_horizons=(1, 3), vol_windows=(5,), ma_windows=(7, 30), rsi_window=9)
    for c in (cfg, other):
        np.testing.assert_array_equal(compute_features(prices, c), _pandas_reference(prices, c))


def test_the_public_rolling_path_gives_the_same_values(monkeypatch):
    prices = load_prices("sp500").prices.iloc[:400]
    fast = compute_features(prices)
    monkeypatch.setattr(features_module, "_KERNELS", None)  # as on a pandas without those internals
    np.testing.assert_array_equal(compute_features(prices), fast)


# --- feature sets: ranks and market features ---------------------------------------------------------------

ALL_SETS = "asset+rank+market"
# tiny windows, so a 7-row frame has complete rows: lookback max(3, 2, 3, 3) = 3
TINY = FeatureConfig(
    return_horizons=(1, 2),
    vol_windows=(3,),
    ma_windows=(2,),
    rsi_window=2,
    features=ALL_SETS,
    market_windows=(2,),
    drawdown_window=3,
    correlation_window=3,
)


def _tiny_prices() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "A": [100.0, 110.0, 99.0, 99.0, 108.9, 120.0, 90.0],
            "B": [50.0, 55.0, 49.5, 49.5, 54.45, 60.0, 45.0],  # A's moves exactly: ties with A on every feature
            "C": [10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0],  # flat
            "D": [20.0, 19.0, 21.0, 22.0, 20.0, 25.0, 24.0],
        },
        index=pd.bdate_range("2020-01-01", periods=7),
    )


def test_feature_set_names_and_lookbacks():
    assert FeatureConfig.of("asset") == FeatureConfig() and FeatureConfig().shared_names == []
    ranked = FeatureConfig.of("asset+rank")
    assert ranked.names == FeatureConfig().names + [f"rank_{n}" for n in FeatureConfig().names]
    assert ranked.lookback == 60  # ranks need no more history than what they rank
    market = FeatureConfig.of("asset+market")
    assert market.names == FeatureConfig().names
    assert market.shared_names == [
        "ew_logret_20",
        "ew_logret_60",
        "ew_vol_20",
        "ew_vol_60",
        "ew_drawdown_252",
        "avg_corr_60",
    ]
    assert market.lookback == 252  # the drawdown's 252-day high: also the purge gap
    with pytest.raises(ValueError, match=r"^features must be one of asset, asset\+rank, asset\+market, "):
        FeatureConfig.of("rank")


def test_default_set_is_unchanged_by_the_other_sets():
    prices = synthetic_prices(n_days=400, n_assets=5)
    default = compute_features(prices)
    for features in ("asset+rank", ALL_SETS):
        cfg = FeatureConfig.of(features)
        rich = compute_features(prices, cfg)
        # the same numbers wherever both sets have complete rows; zero before the larger lookback
        np.testing.assert_array_equal(rich[cfg.lookback :, :, :9], default[cfg.lookback :])
        assert (rich[: cfg.lookback] == 0).all()
    assert compute_shared_features(prices).shape == (400, 0)


def test_ranks_hand_computed_with_ties():
    f = compute_features(_tiny_prices(), TINY)
    assert f.shape == (7, 4, 10) and f.dtype == np.float32
    t = 4
    # logret_1 on row 4: A and B +0.0953 (a tie), C 0, D log(20/22) = -0.0953: ranks D 1, C 2, A and B 3.5
    np.testing.assert_allclose(f[t, :, 5], [2 / 3, 2 / 3, -1 / 3, -1.0], atol=1e-7)  # 2 * (r - 1) / 3 - 1
    # rsi_2 on row 4 (A and B: changes 0, +up: +1; C: flat, 0; D: +1, -2: a loss), ranked with its ties
    rsi = f[t, :, 4]
    expected = [2 * (np.sum(rsi < x) + (np.sum(rsi == x) - 1) / 2) / 3 - 1 for x in rsi]
    np.testing.assert_allclose(f[t, :, 9], expected, atol=1e-7)
    assert (f[:3] == 0).all()  # rows before the lookback: zero, ranks too
    # every feature of A ties with B's (the same moves), so their ranks are equal
    np.testing.assert_array_equal(f[3:, 0, 5:], f[3:, 1, 5:])
    one_asset = compute_features(_tiny_prices()[["A"]], TINY)
    assert (one_asset[:, :, 5:] == 0).all()  # nothing to rank against


def test_market_features_hand_computed():
    prices = _tiny_prices()
    shared = compute_shared_features(prices, TINY)
    assert TINY.shared_names == ["ew_logret_2", "ew_vol_2", "ew_drawdown_3", "avg_corr_3"]
    assert shared.shape == (7, 4) and shared.dtype == np.float32 and (shared[:3] == 0).all()
    p = prices.to_numpy()
    # the Equal Weight index: equal weights rebalanced daily, no costs: each day the mean simple return
    index = np.cumprod(np.r_[1.0, 1.0 + (p[1:] / p[:-1] - 1.0).mean(axis=1)])
    daily = np.log(index[1:] / index[:-1])
    for t in range(3, 7):
        np.testing.assert_allclose(shared[t, 0], np.log(index[t] / index[t - 2]), atol=1e-6)
        np.testing.assert_allclose(shared[t, 1], np.std(daily[t - 2 : t], ddof=1), rtol=1e-5)
        np.testing.assert_allclose(shared[t, 2], index[t] / index[t - 2 : t + 1].max() - 1.0, atol=1e-6)
        # the average pairwise correlation of daily log returns over 3 days, the flat C counting 0 in its pairs
        window = np.diff(np.log(p[t - 3 : t + 1]), axis=0)
        moving = window[:, [0, 1, 3]]
        corr = np.corrcoef(moving.T)
        np.testing.assert_allclose(shared[t, 3], (corr.sum() - 3) / (4 * 3), atol=1e-6)
    assert shared[6, 2] < 0 and shared[5, 2] == 0  # row 5 is the index's high; row 6 falls from it


def test_average_correlation_is_numpys_corrcoef_on_real_prices():
    prices = load_prices("sp500").prices.iloc[:400]
    shared = compute_shared_features(prices, FeatureConfig.of(ALL_SETS))
    daily = np.diff(np.log(prices.to_numpy()), axis=0)
    n = prices.shape[1]
    for t in (252, 300, 399):
        corr = np.corrcoef(daily[t - 60 : t].T)
        np.testing.assert_allclose(shared[t, 5], (corr.sum() - n) / (n * (n - 1)), atol=1e-6)


@pytest.mark.parametrize("features", ["asset+rank", "asset+market", ALL_SETS])
def test_no_look_ahead_in_any_set(features):
    cfg = FeatureConfig.of(features)
    prices = load_prices("sp500").prices.iloc[:1500]
    t = 1000
    shocked = prices.copy()
    shocked.iloc[t + 1 :] *= np.random.default_rng(0).uniform(0.5, 2.0, shocked.iloc[t + 1 :].shape)
    base, after = compute_features(prices, cfg), compute_features(shocked, cfg)
    np.testing.assert_array_equal(base[: t + 1], after[: t + 1])
    assert not np.array_equal(base[t + 1 :], after[t + 1 :])
    shared, shared_after = compute_shared_features(prices, cfg), compute_shared_features(shocked, cfg)
    np.testing.assert_array_equal(shared[: t + 1], shared_after[: t + 1])
    if cfg.shared_names:
        assert not np.array_equal(shared[t + 1 :], shared_after[t + 1 :])


def test_each_set_has_its_own_cache_entry_and_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv("PORTFOLIO_RL_CACHE", str(tmp_path))
    prices = synthetic_prices(n_days=300, n_assets=4)
    keys = {cache_key(prices, FeatureConfig.of(f)) for f in ("asset", "asset+rank", "asset+market", ALL_SETS)}
    assert len(keys) == 4
    cfg = FeatureConfig.of(ALL_SETS)
    a, s, status = load_feature_arrays(prices, cfg)
    assert status == "miss" and s.shape == (300, 6)
    b, s2, status = load_feature_arrays(prices, cfg)
    assert status == "hit"
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(s, s2)
    np.testing.assert_array_equal(s, compute_shared_features(prices, cfg))
