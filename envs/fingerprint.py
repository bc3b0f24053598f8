"""What data a policy was trained on: the dates of its windows and a fingerprint of the prices behind them.

A checkpoint records, for each window (train, validation, test), its first and last date and the SHA-256 of
the prices the env read for it: the window's rows and the feature lookback before them, every ticker, in
the checkpoint's column order. A later backtest, decision or resume recomputes the fingerprint over the same
dates of the data it reads; a different hash means the prices of those days changed (a file edited,
re-downloaded with other adjustments, rows removed), which would otherwise go unnoticed because splits are
recomputed from the new file's dates.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from envs.market import MarketData

WINDOWS_KEY = "windows"


def prices_fingerprint(prices: pd.DataFrame) -> str:
    """SHA-256 of the tickers, the ISO dates and the float64 prices of ``prices`` (rows in date order)."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(str(c) for c in prices.columns).encode())
    digest.update("\x1f".join(prices.index.strftime("%Y-%m-%d")).encode())
    digest.update(np.ascontiguousarray(prices.to_numpy(dtype=np.float64)).tobytes())
    return digest.hexdigest()


def _window_prices(prices: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, lookback: int) -> pd.DataFrame:
    """The rows from ``lookback`` rows before ``start`` to ``end`` (what the env read for that window)."""
    first = int(prices.index.searchsorted(start))
    last = int(prices.index.searchsorted(end, side="right"))
    return prices.iloc[max(0, first - lookback) : last]


def data_record(market: MarketData) -> dict[str, Any]:
    """The record a checkpoint keeps of its data: source, tickers, lookback, and per window its dates and the
    fingerprint of the prices behind it."""
    prices, lookback = market.data.prices, market.feature_config.lookback
    windows = {}
    for name, rng in market.splits.items():
        start, end = market.dates[rng.start], market.dates[rng.end]
        windows[name] = {
            "start": str(start.date()),
            "end": str(end.date()),
            "sha256": prices_fingerprint(_window_prices(prices, start, end, lookback)),
        }
    return {"source": market.data.source, "tickers": list(market.tickers), "lookback": lookback, WINDOWS_KEY: windows}


def changed_windows(record: dict[str, Any], market: MarketData) -> list[str]:
    """The recorded windows whose prices differ in ``market``'s data (same tickers in the recorded order): one
    line each, naming the window and its dates. A window the data does not cover at all (other data, another
    period) is not compared: nothing of it is read."""
    prices = market.data.prices
    tickers = record.get("tickers") or []
    if not tickers or set(tickers) - set(prices.columns):
        return []
    first, last = prices.index[0], prices.index[-1]
    covered = {
        name: window
        for name, window in (record.get(WINDOWS_KEY) or {}).items()
        if first <= pd.Timestamp(window["start"]) and pd.Timestamp(window["end"]) <= last
    }
    if not covered:  # a decision's recent rows: nothing to compare, and no copy of the prices made
        return []
    prices = prices[tickers]
    changed = []
    for name, window in covered.items():
        start, end = pd.Timestamp(window["start"]), pd.Timestamp(window["end"])
        rows = _window_prices(prices, start, end, int(record.get("lookback", 0)))
        if prices_fingerprint(rows) != window["sha256"]:
            changed.append(
                f"the prices of the {name} window {window['start']} .. {window['end']} differ from those the "
                f"checkpoint was trained with ({record.get('source')}): rows changed, added or removed"
            )
    return changed
