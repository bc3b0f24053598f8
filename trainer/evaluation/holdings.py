"""The portfolio held now, from a holdings file: weights, or share counts plus cash in currency.

A holdings CSV has a header ``ticker,weight`` (one row per asset and a ``cash`` row; the weights are >= 0 and
sum to 1) or ``ticker,shares`` (share counts, and a ``cash`` row in currency; the weights follow from the
last prices). Tickers are matched to the policy's universe by name, in any order; an asset left out holds
nothing. A service's request gives the weights as a mapping (``holdings_from_weights``), checked the same way.
Every problem is a ``HoldingsError`` naming the file (or the request's field), the row or ticker, and the fix.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
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


def _number(at: str, column: str, written: object) -> float:
    """A holding's amount (text from a file, a number from a request); ``at`` says where, for the message."""
    try:
        if isinstance(written, bool):  # a JSON true is no amount
            raise TypeError
        value = float(written)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise HoldingsError(f"{at}: {column} {written!r} is not a number") from None
    if not math.isfinite(value):
        raise HoldingsError(f"{at}: {column} {written!r} is not a finite number")
    if value < 0:
        raise HoldingsError(f"{at}: {column} {value:g} is negative; holdings are long-only (>= 0)")
    return value


def _rows(path: Path) -> tuple[str, dict[str, float]]:
    """The file's value column (``weight`` or ``shares``) and ``{ticker: value}``."""
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
    column, lines, rows = header[1], {}, {}
    for line, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise HoldingsError(f"{path}: line {line}: expected 2 values (ticker,{column}), got {len(row)}")
        ticker = row[0].strip()
        key = CASH if ticker.lower() == CASH else ticker
        if key in lines:
            raise HoldingsError(f"{path}: line {line}: {ticker} is listed twice (first on line {lines[key]})")
        lines[key] = line
        rows[key] = _number(f"{path}: line {line} ({ticker})", column, row[1].strip())
    return column, rows


def _held(
    where: str,
    column: str,
    rows: dict[str, float],
    tickers: list[str],
    last_prices: NDArray[np.float64] | None,
    value: float | None,
    cash_entry: str,
) -> Holdings:
    """The holdings of ``rows`` (``{ticker or cash: weight or shares}``) over ``tickers``; ``cash_entry``
    formats the missing cash weight the way ``where`` spells a cash entry, for the message."""
    unknown = [t for t in rows if t != CASH and t not in tickers]
    if unknown:
        lowered = {t.lower(): t for t in tickers}
        hints = [f"{u} (did you mean {lowered[u.lower()]}?)" if u.lower() in lowered else u for u in unknown]
        raise HoldingsError(
            f"{where}: {', '.join(hints)} not in the policy's universe of {len(tickers)} assets "
            f"({', '.join(tickers[:8])}{', ...' if len(tickers) > 8 else ''}); list only those tickers, and cash"
        )
    amounts = np.array([rows.get(t, 0.0) for t in tickers] + [rows.get(CASH, 0.0)])
    if column == WEIGHT:
        total = float(amounts.sum())
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise HoldingsError(
                f"{where}: the weights sum to {total:.6g}, not 1; add the "
                f"{cash_entry.format(max(0.0, 1 - total))} or rescale them"
            )
        return Holdings(amounts / total, value, None, where)
    if value is not None:
        raise HoldingsError(
            f"--value {value:g} with share counts in {where}: the value is the shares' market value plus cash; drop "
            "--value"
        )
    shares = amounts[:-1]
    positions = np.append(shares * np.asarray(last_prices, dtype=np.float64), amounts[-1])
    total = float(positions.sum())
    if total <= 0:
        raise HoldingsError(f"{where}: nothing is held (every share count and the cash are 0)")
    return Holdings(positions / total, total, shares, where)


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
    return _held(str(path), column, rows, tickers, last_prices, value, "cash row (cash,{:.6g})")


def holdings_from_weights(
    weights: Mapping[str, object], tickers: list[str], value: float | None = None, where: str = "holdings"
) -> Holdings:
    """Holdings given as ``{ticker: weight, ..., "cash": weight}`` (a request's), checked as a weights file is.

    Args:
        weights: each held asset's weight and the cash weight (any order; an asset left out holds nothing).
        tickers: the policy's assets, in the order of its weights.
        value: the portfolio's value in currency, for notional trades.
        where: the holdings' name in messages (and ``Holdings.source``).

    Raises:
        HoldingsError: a negative, non-numeric or non-finite weight, a ticker listed twice (up to the case of
            cash) or outside the universe, or weights that do not sum to 1.
    """
    rows: dict[str, float] = {}
    for written, weight in weights.items():
        ticker = str(written).strip()
        key = CASH if ticker.lower() == CASH else ticker
        if key in rows:
            raise HoldingsError(f"{where}: {ticker} is listed twice; give each ticker, and cash, once")
        rows[key] = _number(f"{where}: {ticker}", WEIGHT, weight)
    return _held(where, WEIGHT, rows, tickers, None, value, '"cash": {:.6g}')


def check_value(value: float | None) -> float | None:
    """``--value``: a finite amount > 0, or None."""
    if value is None:
        return None
    if not math.isfinite(value) or value <= 0:
        raise HoldingsError(f"--value {value:g}: the portfolio's value must be a finite amount > 0")
    return float(value)
