"""The market an env runs on: validated prices, causal features, returns and the windows of one run.

:func:`load_market` is memoised per process, so every env of an env runner shares one copy of the arrays
(the design keeps env configs small: each process loads the arrays itself from the source and the cached
feature file). The windows are either the plain train / validation / test split (``split_dates``, or the
defaults of :func:`envs.data.default_split_dates`) or one walk-forward fold (``folds`` + ``fold``, see
:mod:`envs.folds`); the prices and features are loaded once for all of them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from envs.data import SP500, PriceData, SplitRange, load_prices, split_ranges
from envs.features import FeatureConfig, compute_features, compute_shared_features, load_feature_arrays
from envs.folds import FoldSpec, as_fold_spec, check_fold, fold_ranges
from envs.limits import check_feasible

# Which windows a market holds: ("dates", frozen split dates or None) or ("fold", FoldSpec, index).
Selection = tuple[Any, ...]


@dataclass(frozen=True)
class MarketData:
    """Everything an env needs, as read-only arrays (no pandas on the step path).

    Attributes:
        data: the validated prices (pandas, for reports and baselines only).
        features: ``[T, n_assets, n_features]`` float32, causal: each asset's features
            (``feature_config.names``).
        simple_returns: ``[T, n_assets]`` float64; row ``t`` is the return from ``t-1`` to ``t`` (row 0 is 0).
        splits: row ranges of train / validation / test (a fold's, when loaded for a fold).
        feature_config: the feature settings (its lookback is the purge gap).
        selection: which windows ``splits`` are (see :func:`selection_key`); ``None`` for a market built
            by hand, whose windows are not checked against an env's arguments.
        shared: ``[T, S]`` float32, causal: the features shared by all assets (``feature_config.shared_names``);
            ``None`` (a market built by hand) is none, ``S = 0``.
    """

    data: PriceData
    features: NDArray[np.float32]
    simple_returns: NDArray[np.float64]
    splits: dict[str, SplitRange]
    feature_config: FeatureConfig
    selection: Selection | None = None
    shared: NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        if self.shared is None:
            object.__setattr__(self, "shared", np.zeros((self.features.shape[0], 0), np.float32))

    @property
    def tickers(self) -> list[str]:
        return self.data.tickers

    @property
    def dates(self) -> pd.DatetimeIndex:
        return self.data.prices.index


def selection_key(
    split_dates: Mapping[str, Any] | None = None,
    folds: FoldSpec | Mapping[str, Any] | None = None,
    fold: int | None = None,
) -> Selection:
    """A hashable, canonical description of the windows these arguments select.

    ``folds`` only matters with a ``fold``; a ``fold`` replaces the split dates, so giving both is an error.

    Raises:
        ValueError: ``split_dates`` and ``fold`` together, a bad ``folds`` spec or an out-of-range ``fold``.
    """
    if fold is None:
        if split_dates is None:
            return ("dates", None)
        return ("dates", tuple(sorted((str(k), tuple(str(d) for d in v)) for k, v in split_dates.items())))
    if split_dates is not None:
        raise ValueError("give split_dates or fold, not both: a fold's windows replace the split dates")
    spec = as_fold_spec(folds)
    return ("fold", spec, check_fold(fold, spec))


def describe_selection(selection: Selection) -> str:
    """``selection`` in words, for error messages."""
    if selection[0] == "fold":
        return f"fold {selection[2]} of {selection[1]}"
    return "the default split dates" if selection[1] is None else f"split_dates {dict(selection[1])}"


def _stamp(source: str) -> tuple:
    """Part of the cache key: a changed file (size or mtime) is reloaded."""
    if source != SP500 and os.path.exists(source):
        st = Path(source).stat()
        return (st.st_size, st.st_mtime_ns)
    return ()


@functools.lru_cache(maxsize=4)
def _load_prices(source: str, stamp: tuple, date_format: str | None, sort_dates: bool) -> PriceData:
    del stamp  # part of the cache key only
    return load_prices(source, date_format=date_format, sort_dates=sort_dates)


@functools.lru_cache(maxsize=4)
def _load_arrays(
    source: str, stamp: tuple, date_format: str | None, sort_dates: bool, features: str | None
) -> tuple[PriceData, NDArray[np.float32], NDArray[np.float32], NDArray[np.float64], FeatureConfig]:
    cfg = FeatureConfig.of(features)
    data = _load_prices(source, stamp, date_format, sort_dates)  # read once for every feature set
    per_asset, shared, _ = load_feature_arrays(data.prices, cfg)
    rets = _returns(data.prices.to_numpy())
    for arr in (per_asset, shared, rets):
        arr.setflags(write=False)
    return data, per_asset, shared, rets, cfg


@functools.lru_cache(maxsize=16)
def _load_market_cached(
    source: str, stamp: tuple, selection: Selection, date_format: str | None, sort_dates: bool, features: str | None
) -> MarketData:
    data, per_asset, shared, rets, cfg = _load_arrays(source, stamp, date_format, sort_dates, features)
    # the purge gap is this feature set's lookback: 252 rows with the market features, 60 without
    if selection[0] == "fold":
        splits = fold_ranges(data, cfg.lookback, selection[1])[selection[2]]
    else:
        splits = split_ranges(data, cfg.lookback, dict(selection[1]) if selection[1] else None)
    return MarketData(data, per_asset, rets, splits, cfg, selection, shared)


def load_market(
    source: str = SP500,
    split_dates: Mapping[str, Any] | None = None,
    folds: FoldSpec | Mapping[str, Any] | None = None,
    fold: int | None = None,
    *,
    date_format: str | None = None,
    sort_dates: bool = False,
    features: str | None = None,
) -> MarketData:
    """Load prices, features and the windows of one run, once per process.

    Args:
        source: ``"sp500"`` or a CSV/Parquet path (memoised on the file's size and mtime).
        split_dates: ``{"train": [start, end], ...}`` inclusive ISO dates; ``None`` = the defaults.
        folds: the walk-forward layout (:class:`envs.folds.FoldSpec` or its dict; ``None`` = the defaults);
            used only with ``fold``.
        fold: the fold whose windows become ``.splits``; ``None`` = the plain split.
        date_format: ``strptime`` format of the file's dates (see :func:`envs.data.load_prices`).
        sort_dates: sort rows by date instead of refusing a file whose dates are not increasing.
        features: the feature set (``envs.settings.FEATURE_SETS``; ``None`` = the default); its lookback is
            the purge gap between the windows.

    Raises:
        DataError: bad prices, or windows that do not fit in the data (the message has the numbers).
        ValueError: bad ``folds`` / ``fold`` values, or ``split_dates`` together with ``fold``.
    """
    source = str(source)
    selection = selection_key(split_dates, folds, fold)
    features = FeatureConfig.of(features).features  # validated, and None and the default are one cache entry
    return _load_market_cached(source, _stamp(source), selection, date_format, bool(sort_dates), features)


def load_market_for(env_config: Mapping[str, Any]) -> MarketData:
    """The market an env built from ``env_config`` (its keyword arguments, e.g. a checkpoint's) runs on.

    Reads ``data``, ``split_dates``, ``folds``, ``fold``, ``features`` and the read options, so in-process evaluation
    (backtests, sweep summaries) gets the same windows as the env runners whatever the config selects.
    Position limits that no portfolio of its assets can meet are refused here too (a ``ValueError``, as the env
    would raise), so that the commands' data check before anything starts reports them.
    """
    market = load_market(
        str(env_config.get("data", SP500)),
        env_config.get("split_dates"),
        env_config.get("folds"),
        env_config.get("fold"),
        date_format=env_config.get("date_format"),
        sort_dates=bool(env_config.get("sort_dates", False)),
        features=env_config.get("features"),
    )
    check_feasible(len(market.tickers), env_config.get("max_weight"), env_config.get("max_cash"))
    return market


def _returns(prices: NDArray[np.float64]) -> NDArray[np.float64]:
    rets = np.zeros_like(prices)
    rets[1:] = prices[1:] / prices[:-1] - 1.0
    return rets


def reorder(market: MarketData, tickers: list[str]) -> MarketData:
    """``market`` with its assets in the order of ``tickers`` (the same set): prices, features and returns
    permuted together, the windows and the shared features unchanged. A policy's inputs and outputs follow its
    own column order."""
    if list(market.tickers) == list(tickers):
        return market
    order = [market.tickers.index(t) for t in tickers]
    data = PriceData(market.data.source, market.data.form, market.data.prices[list(tickers)], market.data.warnings)
    features = np.ascontiguousarray(market.features[:, order])
    rets = np.ascontiguousarray(market.simple_returns[:, order])
    for arr in (features, rets):
        arr.setflags(write=False)
    return MarketData(data, features, rets, market.splits, market.feature_config, market.selection, market.shared)


def market_for_decision(data: PriceData, features: str | None = None) -> MarketData:
    """A market over every row of ``data`` for a decision on its last day: the same features (of the set
    ``features``, ``None`` = the default) and returns an env computes, and every window is that last day (no
    split is needed to decide, only the feature lookback).

    Raises:
        DataError: fewer rows than the feature lookback needs (the message gives both numbers).
    """
    from envs.data import SPLITS
    from envs.errors import fail

    cfg = FeatureConfig.of(features)
    prices = data.prices
    if len(prices) < cfg.lookback + 1:
        raise fail(
            data.source,
            f"{len(prices)} rows of prices, but the features need {cfg.lookback + 1} (the {cfg.lookback}-day window "
            f"before the decision date and the day itself); give a longer price history",
        )
    per_asset = compute_features(prices, cfg)  # not cached: every decision day has other prices
    shared = compute_shared_features(prices, cfg)
    rets = _returns(prices.to_numpy())
    for arr in (per_asset, shared, rets):
        arr.setflags(write=False)
    last = len(prices) - 1
    day = prices.index[last]
    splits = {name: SplitRange(name, last, last, day, day) for name in SPLITS}
    return MarketData(data, per_asset, rets, splits, cfg, None, shared)
