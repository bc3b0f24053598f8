"""The portfolio held now, from a holdings file: weights, or share counts plus cash in currency.

A holdings CSV has a header ``ticker,weight`` (one row per asset and a ``cash`` row; the weights are >= 0 and
sum to 1) or ``ticker,shares`` (share counts, and a ``cash`` row in currency; the weights follow from the
last prices). Tickers are matched to the policy's universe by name, in any order; an asset left out holds
nothing. Every problem is a ``HoldingsError`` naming the file, the row or ticker, and the fix.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

CASH = "cash"
WEIGHT, SHARES = "weight", "shares"
SUM_TOLERANCE = 1e-6  # weights written with a few decimals sum to 1 within this


class HoldingsError(ValueError):
    """A holdings file or value that cannot be used; the message names the file, row or ticker and the fix."""


@dataclass(frozen=True)
class Holdings:
    """The portfolio held now, over the policy's universe.

    Attributes:
        weights: ``[N + 1]`` float64, the assets in the policy's order then cash; >= 0, sum 1.
        value: the portfolio's value in currency when known (``--value``, or shares x prices + cash).
        shares: ``[N]`` share counts when the file gave them.
        source: where the holdings came from, for the report (a path, or ``"all cash"``).
    """

    weights: NDArray[np.float64]
    value: float | None
    shares: NDArray[np.float64] | None
    source: str


def all_cash(n_assets: int, value: float | None) -> Holdings:
    """No holdings file: everything in cash."""
    weights = np.zeros(n_assets + 1)
    weights[n_assets] = 1.0
    return Holdings(weights, value, None, "all cash (no --holdings given)")


def _number(path: Path, line: int, ticker: str, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise HoldingsError(f"{path}: line {line} ({ticker}): {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise HoldingsError(f"{path}: line {line} ({ticker}): {column} {text!r} is not a finite number")
    if value < 0:
        raise HoldingsError(
            f"{path}: line {line} ({ticker}): {column} {value:g} is negative; holdings are long-only (>= 0)"
        )
    return value


def _rows(path: Path) -> tuple[str, dict[str, tuple[int, float]]]:
    """The file's value column (``weight`` or ``shares``) and ``{ticker: (line, value)}``."""
    if not path.is_file():
        raise HoldingsError(f"{path}: holdings file not found; give a CSV with a header ticker,weight or ticker,shares")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise HoldingsError(f"{path}: cannot read the holdings file ({exc})") from None
    reader = csv.reader(text.splitlines())
    header = [h.strip().lower() for h in next(reader, [])]
    if len(header) != 2 or header[0] != "ticker" or header[1] not in (WEIGHT, SHARES):
        raise HoldingsError(
            f"{path}: header {','.join(header) or '(empty)'!r}; a holdings CSV starts with ticker,weight (a row per "
            "asset and a cash row, summing to 1) or ticker,shares (share counts and a cash row in currency)"
        )
    column, rows = header[1], {}
    for line, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise HoldingsError(f"{path}: line {line}: expected 2 values (ticker,{column}), got {len(row)}")
        ticker = row[0].strip()
        key = CASH if ticker.lower() == CASH else ticker
        if key in rows:
            raise HoldingsError(f"{path}: line {line}: {ticker} is listed twice (first on line {rows[key][0]})")
        rows[key] = (line, _number(path, line, ticker, column, row[1].strip()))
    return column, rows


def read_holdings(
    path: Path | str, tickers: list[str], last_prices: NDArray[np.float64], value: float | None = None
) -> Holdings:
    """The holdings of file ``path`` over ``tickers`` (the policy's universe, in its order).

    Args:
        path: the holdings CSV.
        tickers: the policy's assets, in the order of its weights.
        last_prices: each ticker's price on the decision date (for share counts).
        value: the portfolio's value in currency (``--value``), for weights files; refused with share counts,
            whose value is the shares' market value plus cash.

    Raises:
        HoldingsError: a missing or unreadable file, a bad header or row, a negative or non-numeric value, a
            ticker outside the universe, weights that do not sum to 1, or nothing held.
    """
    path = Path(path)
    column, rows = _rows(path)
    unknown = [t for t in rows if t != CASH and t not in tickers]
    if unknown:
        lowered = {t.lower(): t for t in tickers}
        hints = [f"{u} (did you mean {lowered[u.lower()]}?)" if u.lower() in lowered else u for u in unknown]
        raise HoldingsError(
            f"{path}: {', '.join(hints)} not in the policy's universe of {len(tickers)} assets "
            f"({', '.join(tickers[:8])}{', ...' if len(tickers) > 8 else ''}); list only those tickers, and cash"
        )
    amounts = np.array([rows.get(t, (0, 0.0))[1] for t in tickers] + [rows.get(CASH, (0, 0.0))[1]])
    if column == WEIGHT:
        total = float(amounts.sum())
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise HoldingsError(
                f"{path}: the weights sum to {total:.6g}, not 1; add the cash row (cash,{max(0.0, 1 - total):.6g}) "
                "or rescale them"
            )
        return Holdings(amounts / total, value, None, str(path))
    if value is not None:
        raise HoldingsError(
            f"--value {value:g} with share counts in {path}: the value is the shares' market value plus cash; drop "
            "--value"
        )
    shares = amounts[:-1]
    positions = np.append(shares * np.asarray(last_prices, dtype=np.float64), amounts[-1])
    total = float(positions.sum())
    if total <= 0:
        raise HoldingsError(f"{path}: nothing is held (every share count and the cash are 0)")
    return Holdings(positions / total, total, shares, str(path))


def check_value(value: float | None) -> float | None:
    """``--value``: a finite amount > 0, or None."""
    if value is None:
        return None
    if not math.isfinite(value) or value <= 0:
        raise HoldingsError(f"--value {value:g}: the portfolio's value must be a finite amount > 0")
    return float(value)
