"""envs.features: hand-computed values, causality, the Parquet cache (hit, miss, corrupt, stale)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from envs.data import load_prices
from envs.features import FeatureConfig, cache_dir, cache_key, compute_features, load_features
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
