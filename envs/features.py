"""Causal per-asset features, computed once into a float32 array ``[T, n_assets, n_features]``.

Every value at row ``t`` uses prices at rows ``<= t`` only (rolling windows that end at ``t``); rows
before ``FeatureConfig.lookback`` are incomplete and set to 0 — the data splits never start there.

Features (per asset, in this order):

- ``logret_{h}`` for each horizon ``h``: ``log(p_t / p_{t-h})``.
- ``vol_{w}`` for each volatility window ``w``: standard deviation of daily log returns over ``w`` days.
- ``ma_{w}`` for each moving-average window ``w``: ``p_t / mean(p_{t-w+1..t}) - 1``.
- ``rsi_{n}``: RSI over ``n`` days with simple averages (Cutler's RSI, a finite window so the purge gap
  really separates the splits; Wilder's exponential RSI would remember the previous split), mapped to
  ``(RSI - 50) / 50`` in ``[-1, 1]``.

The array is cached as Parquet (pyarrow) under ``$PORTFOLIO_RL_CACHE`` (default
``~/.cache/portfolio_rl``), keyed by a hash of the prices and of the settings, so env runners in other
processes load it instead of recomputing. A cache file that cannot be read, or whose stored key or shape
does not match, is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

FEATURE_VERSION = 1  # bump when the formulas change, so old caches are not reused
_META_KEY = b"portfolio_rl.cache_key"
try:  # pandas' rolling kernels (see _rolling)
    from pandas._libs.window import aggregations as _KERNELS
except ImportError:  # pragma: no cover - another pandas layout: the public path
    _KERNELS = None
_META_SHAPE = b"portfolio_rl.shape"


@dataclass(frozen=True)
class FeatureConfig:
    """Feature settings; part of the cache key."""

    return_horizons: tuple[int, ...] = (1, 5, 20, 60)
    vol_windows: tuple[int, ...] = (20, 60)
    ma_windows: tuple[int, ...] = (20, 60)
    rsi_window: int = 14

    @property
    def lookback(self) -> int:
        """Rows of history a complete feature row needs; also the purge gap between splits."""
        return max(*self.return_horizons, *self.vol_windows, *self.ma_windows, self.rsi_window)

    @property
    def names(self) -> list[str]:
        return (
            [f"logret_{h}" for h in self.return_horizons]
            + [f"vol_{w}" for w in self.vol_windows]
            + [f"ma_{w}" for w in self.ma_windows]
            + [f"rsi_{self.rsi_window}"]
        )


def _lagged_diff(values: NDArray[np.float64], lag: int) -> NDArray[np.float64]:
    """``values[t] - values[t - lag]`` per column, NaN for the first ``lag`` rows (pandas' ``diff``)."""
    out = np.full_like(values, np.nan)
    if lag < values.shape[0]:
        out[lag:] = values[lag:] - values[:-lag]
    return out


def _window_bounds(n_rows: int, window: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Each row's window ``[start, end)`` of a fixed rolling window, as pandas' ``FixedWindowIndexer`` gives."""
    end = np.arange(1, n_rows + 1, dtype=np.int64)
    return np.clip(end - window, 0, None), end


def _rolling(values: NDArray[np.float64], window: int, how: str) -> NDArray[np.float64]:
    """Rolling mean or standard deviation (ddof 1) over ``window`` rows ending at each row, per column;
    NaN until a window is complete.

    pandas' own rolling kernels, called per column as ``DataFrame.rolling`` calls them but without its
    per-column bookkeeping (window bounds, checks), which cost ten times the arithmetic on a decision's
    100 rows. The kernels are pandas internals: where they are missing or changed, the public
    ``DataFrame.rolling`` gives the same values (the bit-for-bit test against it guards the fast path).
    """
    if _KERNELS is not None:
        start, end = _window_bounds(values.shape[0], window)
        try:
            out = np.empty_like(values)
            for j in range(values.shape[1]):
                column = np.ascontiguousarray(values[:, j])
                if how == "std":  # pandas' zsqrt: the square root, 0 where rounding left a variance below 0
                    variance = _KERNELS.roll_var(column, start, end, window, ddof=1)
                    with np.errstate(invalid="ignore"):
                        out[:, j] = np.where(variance < 0, 0.0, np.sqrt(variance))
                else:
                    out[:, j] = _KERNELS.roll_mean(column, start, end, window)
            return out
        except (TypeError, ValueError, AttributeError):
            pass
    rolling = pd.DataFrame(values, copy=False).rolling(window, min_periods=window)
    return (rolling.std(ddof=1) if how == "std" else rolling.mean()).to_numpy()


def compute_features(prices: pd.DataFrame, config: FeatureConfig | None = None) -> NDArray[np.float32]:
    """Compute the feature array ``[T, n_assets, n_features]`` (float32) from validated prices.

    Numpy on the whole table with pandas' rolling kernels: the same values, bit for bit, as the pandas
    formulas per column (``tests/envs/test_features.py`` holds them as the reference), in a fraction of the
    time: a decision computes the features of every request's prices.
    """
    cfg = config or FeatureConfig()
    p = prices.to_numpy(dtype=np.float64)
    log_p = np.log(p)
    daily = _lagged_diff(log_p, 1)
    cols = [_lagged_diff(log_p, h) for h in cfg.return_horizons]
    cols += [_rolling(daily, w, "std") for w in cfg.vol_windows]
    cols += [p / _rolling(p, w, "mean") - 1.0 for w in cfg.ma_windows]
    change = _lagged_diff(p, 1)
    n, n_assets = cfg.rsi_window, p.shape[1]
    # gains and losses side by side: one rolling call for both
    moves = _rolling(np.concatenate([np.clip(change, 0.0, None), -np.clip(change, None, 0.0)], axis=1), n, "mean")
    gain, loss = moves[:, :n_assets], moves[:, n_assets:]
    total = gain + loss
    # RSI = 100 * gain / (gain + loss); a flat window (no moves) is neutral (50 -> 0).
    with np.errstate(invalid="ignore"):
        ratio = gain / np.where(total > 0, total, np.nan)
    rsi = np.where(np.isnan(ratio), 0.5, ratio) * 2.0 - 1.0
    rsi[:n] = 0.0
    cols.append(rsi)
    out = np.stack(cols, axis=-1)
    out[: cfg.lookback] = 0.0
    if not np.isfinite(out).all():  # validated prices cannot produce this; guard the invariant anyway
        raise ValueError("non-finite feature values; the price data was not validated")
    # C order, so that every reshape of it (cache writer, env rows) is a view, not a copy.
    return np.ascontiguousarray(out, dtype=np.float32)


def cache_key(prices: pd.DataFrame, config: FeatureConfig) -> str:
    """Hash of the prices (values, dates, tickers) and the feature settings."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(prices.to_numpy(dtype=np.float64)).tobytes())
    h.update(prices.index.asi8.tobytes() if hasattr(prices.index, "asi8") else str(prices.index).encode())
    h.update(json.dumps([str(c) for c in prices.columns]).encode())
    h.update(json.dumps({"v": FEATURE_VERSION, **asdict(config)}, sort_keys=True).encode())
    return h.hexdigest()[:32]


def cache_dir() -> Path:
    return Path(os.environ.get("PORTFOLIO_RL_CACHE", Path.home() / ".cache" / "portfolio_rl")) / "features"


def _write_cache(path: Path, array: NDArray[np.float32], key: str, columns: list[str]) -> None:
    t, a, f = array.shape
    # One Parquet column per (asset, feature). The array is copied once, in (asset, feature, row) order, so
    # each column is a contiguous row that Arrow takes without a copy: memory linear in the array. (Slicing a
    # reshaped array per column copies the whole array for every column when it is not C-contiguous, which
    # grows with the square of assets x features.)
    by_column = np.ascontiguousarray(array.transpose(1, 2, 0), dtype=np.float32).reshape(a * f, t)
    table = pa.table([pa.array(values) for values in by_column], names=columns)
    table = table.replace_schema_metadata({_META_KEY: key.encode(), _META_SHAPE: json.dumps([t, a, f]).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temp file and rename: a reader in another process never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_cache(path: Path, key: str, shape: tuple[int, int, int]) -> NDArray[np.float32] | None:
    """The cached array, or None when missing, unreadable, stale or of the wrong shape."""
    if not path.exists():
        return None
    try:
        table = pq.read_table(path)
        meta = table.schema.metadata or {}
        if meta.get(_META_KEY) != key.encode() or json.loads(meta.get(_META_SHAPE, b"null")) != list(shape):
            warnings.warn(f"feature cache {path} is stale: rebuilding it", stacklevel=3)
            return None
        t, a, f = shape
        if table.num_columns != a * f or table.num_rows != t:
            raise ValueError(f"{table.num_columns} columns x {table.num_rows} rows")
        # Filled column by column into one array: the table plus one array at any time, linear in its size.
        flat = np.empty((t, a * f), dtype=np.float32)
        for i, column in enumerate(table.columns):
            flat[:, i] = column.to_numpy()
        array = flat.reshape(shape)
    except Exception as exc:  # any corruption: rebuild rather than trust it
        warnings.warn(f"feature cache {path} is unreadable ({type(exc).__name__}): rebuilding it", stacklevel=3)
        return None
    if not np.isfinite(array).all():
        warnings.warn(f"feature cache {path} holds non-finite values: rebuilding it", stacklevel=3)
        return None
    return array


def load_features(
    prices: pd.DataFrame, config: FeatureConfig | None = None, use_cache: bool = True
) -> tuple[NDArray[np.float32], str]:
    """Features for ``prices``, from the Parquet cache when valid, else computed and cached.

    Returns:
        ``(array, status)`` where status is ``"hit"``, ``"miss"`` or ``"rebuilt"``.
    """
    cfg = config or FeatureConfig()
    if not use_cache:
        return compute_features(prices, cfg), "miss"
    key = cache_key(prices, cfg)
    path = cache_dir() / f"{key}.parquet"
    shape = (len(prices), prices.shape[1], len(cfg.names))
    existed = path.exists()
    cached = _read_cache(path, key, shape)
    if cached is not None:
        return cached, "hit"
    array = compute_features(prices, cfg)
    columns = [f"{t}|{n}" for t in prices.columns for n in cfg.names]
    try:
        _write_cache(path, array, key, columns)
    except OSError as exc:  # a read-only home must not stop training; it only costs recomputation
        warnings.warn(f"could not write feature cache {path}: {exc}", stacklevel=2)
    return array, "rebuilt" if existed else "miss"
