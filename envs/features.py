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

``FeatureConfig.features`` (the env setting ``features``, ``envs.settings.FEATURE_SETS``) adds to them:

- ``+rank``: ``rank_{name}`` for each feature above, its cross-sectional rank among the assets on the day, in
  ``[-1, 1]`` (``envs.cross_features``), after the per-asset features in each asset's block;
- ``+market``: features shared by all assets, from the Equal Weight index (equal weights rebalanced daily, no
  costs): ``ew_logret_{w}``, ``ew_vol_{w}``, ``ew_drawdown_{d}`` and ``avg_corr_{c}`` (``envs.cross_features``),
  a second array ``[T, S]``, the observation's shared block (``envs.layout``).

The lookback grows with the market set's windows: 252 rows (the drawdown's high) instead of 60, which is also
the purge gap between the splits and folds of a market built with it; the default set's is unchanged.

The arrays are cached together as Parquet (pyarrow) under ``$PORTFOLIO_RL_CACHE`` (default
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

from envs.cross_features import market_features, rank_features
from envs.settings import FEATURE_SEPARATOR, FEATURES_MARKET, FEATURES_RANK, PortfolioSettings

FEATURE_VERSION = 2  # bump when the formulas or the cache's layout change, so old caches are not reused
_META_KEY = b"portfolio_rl.cache_key"
try:  # pandas' rolling kernels (see _rolling)
    from pandas._libs.window import aggregations as _KERNELS
except ImportError:  # pragma: no cover - another pandas layout: the public path
    _KERNELS = None
_META_SHAPE = b"portfolio_rl.shape"
_SHARED_COLUMN = "*"  # the shared features' columns: "*|ew_vol_20", ...


@dataclass(frozen=True)
class FeatureConfig:
    """Feature settings; part of the cache key."""

    return_horizons: tuple[int, ...] = (1, 5, 20, 60)
    vol_windows: tuple[int, ...] = (20, 60)
    ma_windows: tuple[int, ...] = (20, 60)
    rsi_window: int = 14
    features: str = PortfolioSettings.features  # the sets (envs.settings.FEATURE_SETS)
    market_windows: tuple[int, ...] = (20, 60)  # the Equal Weight index's return and volatility windows
    drawdown_window: int = 252  # the index's high over this many days
    correlation_window: int = 60  # the average pairwise correlation's window

    def __post_init__(self) -> None:
        PortfolioSettings.check("features", self.features)

    @classmethod
    def of(cls, features: str | None = None) -> FeatureConfig:
        """The settings of a feature set (``None``: the default set)."""
        return cls() if features is None else cls(features=features)

    @property
    def sets(self) -> tuple[str, ...]:
        return tuple(self.features.split(FEATURE_SEPARATOR))

    @property
    def lookback(self) -> int:
        """Rows of history a complete feature row needs; also the purge gap between splits."""
        rows = max(*self.return_horizons, *self.vol_windows, *self.ma_windows, self.rsi_window)
        if FEATURES_MARKET in self.sets:
            rows = max(rows, *self.market_windows, self.drawdown_window, self.correlation_window)
        return rows

    @property
    def asset_names(self) -> list[str]:
        """The per-asset set's features (what ranks are taken of)."""
        return (
            [f"logret_{h}" for h in self.return_horizons]
            + [f"vol_{w}" for w in self.vol_windows]
            + [f"ma_{w}" for w in self.ma_windows]
            + [f"rsi_{self.rsi_window}"]
        )

    @property
    def names(self) -> list[str]:
        """Each asset's features, in the order of the array's last axis."""
        ranks = [f"rank_{n}" for n in self.asset_names] if FEATURES_RANK in self.sets else []
        return self.asset_names + ranks

    @property
    def shared_names(self) -> list[str]:
        """The features shared by all assets (none without ``market``)."""
        if FEATURES_MARKET not in self.sets:
            return []
        return (
            [f"ew_logret_{w}" for w in self.market_windows]
            + [f"ew_vol_{w}" for w in self.market_windows]
            + [f"ew_drawdown_{self.drawdown_window}", f"avg_corr_{self.correlation_window}"]
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
            columns = np.ascontiguousarray(values.T)  # one copy: each column contiguous, as the kernels need
            out = np.empty_like(columns)
            for j, column in enumerate(columns):
                if how == "std":  # pandas' zsqrt: the square root, 0 where rounding left a variance below 0
                    variance = _KERNELS.roll_var(column, start, end, window, ddof=1)
                    with np.errstate(invalid="ignore"):
                        out[j] = np.where(variance < 0, 0.0, np.sqrt(variance))
                else:
                    out[j] = _KERNELS.roll_mean(column, start, end, window)
            return out.T
        except (TypeError, ValueError, AttributeError):
            pass
    rolling = pd.DataFrame(values, copy=False).rolling(window, min_periods=window)
    return (rolling.std(ddof=1) if how == "std" else rolling.mean()).to_numpy()


def compute_features(prices: pd.DataFrame, config: FeatureConfig | None = None) -> NDArray[np.float32]:
    """Compute the per-asset feature array ``[T, n_assets, n_features]`` (float32, ``config.names``) from
    validated prices; ranks are taken of the float32 values the observation holds.

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
    _check_finite(out)
    # C order, so that every reshape of it (cache writer, env rows) is a view, not a copy.
    out = np.ascontiguousarray(out, dtype=np.float32)
    if FEATURES_RANK in cfg.sets:
        out = np.ascontiguousarray(np.concatenate([out, rank_features(out)], axis=-1))
    return out


def compute_shared_features(prices: pd.DataFrame, config: FeatureConfig | None = None) -> NDArray[np.float32]:
    """Compute the shared feature array ``[T, S]`` (float32, ``config.shared_names``; ``S = 0`` without
    ``market``) from validated prices."""
    cfg = config or FeatureConfig()
    if FEATURES_MARKET not in cfg.sets:
        return np.zeros((len(prices), 0), np.float32)
    out = market_features(prices, cfg.market_windows, cfg.drawdown_window, cfg.correlation_window)
    out[: cfg.lookback] = 0.0
    _check_finite(out)
    return np.ascontiguousarray(out, dtype=np.float32)


def _check_finite(values: NDArray[np.float64]) -> None:
    if not np.isfinite(values).all():  # validated prices cannot produce this; guard the invariant anyway
        raise ValueError("non-finite feature values; the price data was not validated")


def cache_key(prices: pd.DataFrame, config: FeatureConfig) -> str:
    """Hash of the prices (values, dates, tickers) and the feature settings."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(prices.to_numpy(dtype=np.float64)).tobytes())
    h.update(prices.index.asi8.tobytes() if hasattr(prices.index, "asi8") else str(prices.index).encode())
    h.update(json.dumps([str(c) for c in prices.columns]).encode())
    h.update(json.dumps({"v": FEATURE_VERSION, **asdict(config)}, sort_keys=True).encode())
    return h.hexdigest()[:32]


def cache_root() -> Path:
    """The project's cache folder (``$PORTFOLIO_RL_CACHE``, else ``~/.cache/portfolio_rl``)."""
    return Path(os.environ.get("PORTFOLIO_RL_CACHE", Path.home() / ".cache" / "portfolio_rl"))


def cache_dir() -> Path:
    return cache_root() / "features"


def _write_cache(
    path: Path,
    array: NDArray[np.float32],
    key: str,
    columns: list[str],
    shared: NDArray[np.float32] | None = None,
    shared_columns: list[str] | None = None,
) -> None:
    t, a, f = array.shape
    # One Parquet column per (asset, feature). The array is copied once, in (asset, feature, row) order, so
    # each column is a contiguous row that Arrow takes without a copy: memory linear in the array. (Slicing a
    # reshaped array per column copies the whole array for every column when it is not C-contiguous, which
    # grows with the square of assets x features.) The shared features follow, one column each.
    by_column = np.ascontiguousarray(array.transpose(1, 2, 0), dtype=np.float32).reshape(a * f, t)
    arrays = [pa.array(values) for values in by_column]
    s = 0 if shared is None else shared.shape[1]
    if s:
        arrays += [pa.array(values) for values in np.ascontiguousarray(shared.T, dtype=np.float32)]
    table = pa.table(arrays, names=[*columns, *(shared_columns or [])])
    table = table.replace_schema_metadata(
        {_META_KEY: key.encode(), _META_SHAPE: json.dumps([t, a, f, s] if s else [t, a, f]).encode()}
    )
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


def _read_cache(
    path: Path, key: str, shape: tuple[int, int, int], n_shared: int = 0
) -> tuple[NDArray[np.float32], NDArray[np.float32]] | None:
    """The cached ``(per-asset array, shared array)``, or None when missing, unreadable, stale or of the wrong
    shape."""
    if not path.exists():
        return None
    t, a, f = shape
    stored_shape = [t, a, f, n_shared] if n_shared else [t, a, f]
    try:
        table = pq.read_table(path)
        meta = table.schema.metadata or {}
        if meta.get(_META_KEY) != key.encode() or json.loads(meta.get(_META_SHAPE, b"null")) != stored_shape:
            warnings.warn(f"feature cache {path} is stale: rebuilding it", stacklevel=3)
            return None
        if table.num_columns != a * f + n_shared or table.num_rows != t:
            raise ValueError(f"{table.num_columns} columns x {table.num_rows} rows")
        # Filled column by column into one array: the table plus one array at any time, linear in its size.
        flat = np.empty((t, a * f), dtype=np.float32)
        shared = np.empty((t, n_shared), dtype=np.float32)
        for i, column in enumerate(table.columns):
            if i < a * f:
                flat[:, i] = column.to_numpy()
            else:
                shared[:, i - a * f] = column.to_numpy()
        array = flat.reshape(shape)
    except Exception as exc:  # any corruption: rebuild rather than trust it
        warnings.warn(f"feature cache {path} is unreadable ({type(exc).__name__}): rebuilding it", stacklevel=3)
        return None
    if not (np.isfinite(array).all() and np.isfinite(shared).all()):
        warnings.warn(f"feature cache {path} holds non-finite values: rebuilding it", stacklevel=3)
        return None
    return array, shared


def load_features(
    prices: pd.DataFrame, config: FeatureConfig | None = None, use_cache: bool = True
) -> tuple[NDArray[np.float32], str]:
    """The per-asset features of :func:`load_feature_arrays` and its status."""
    array, _, status = load_feature_arrays(prices, config, use_cache)
    return array, status


def load_feature_arrays(
    prices: pd.DataFrame, config: FeatureConfig | None = None, use_cache: bool = True
) -> tuple[NDArray[np.float32], NDArray[np.float32], str]:
    """Per-asset and shared features for ``prices``, from the Parquet cache when valid, else computed and cached.

    Returns:
        ``(per-asset array, shared array, status)`` where status is ``"hit"``, ``"miss"`` or ``"rebuilt"``.
    """
    cfg = config or FeatureConfig()
    if not use_cache:
        return compute_features(prices, cfg), compute_shared_features(prices, cfg), "miss"
    key = cache_key(prices, cfg)
    path = cache_dir() / f"{key}.parquet"
    shape = (len(prices), prices.shape[1], len(cfg.names))
    existed = path.exists()
    cached = _read_cache(path, key, shape, len(cfg.shared_names))
    if cached is not None:
        return *cached, "hit"
    array, shared = compute_features(prices, cfg), compute_shared_features(prices, cfg)
    columns = [f"{t}|{n}" for t in prices.columns for n in cfg.names]
    shared_columns = [f"{_SHARED_COLUMN}|{n}" for n in cfg.shared_names]  # no per-asset name starts like these
    try:
        _write_cache(path, array, key, columns, shared, shared_columns)
    except OSError as exc:  # a read-only home must not stop training; it only costs recomputation
        warnings.warn(f"could not write feature cache {path}: {exc}", stacklevel=2)
    return array, shared, "rebuilt" if existed else "miss"
