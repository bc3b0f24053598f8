"""The error every data problem raises, and the helpers that word its one-line message."""

from __future__ import annotations

import pandas as pd


class DataError(ValueError):
    """Bad price data; the message says what is wrong, where, and how to fix it."""


def fail(where: str, what: str) -> DataError:
    return DataError(f"{where}: {what}")


def fmt_dates(dates: pd.Index | list, limit: int = 3) -> str:
    items = [pd.Timestamp(d).strftime("%Y-%m-%d") for d in list(dates)[:limit]]
    more = len(dates) - limit
    return ", ".join(items) + (f" (and {more} more)" if more > 0 else "")
