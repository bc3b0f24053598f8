"""A policy's universe: the tickers it was trained on, in its column order, matched by name to other data."""

from __future__ import annotations

from envs.market import MarketData, reorder


def _listed(tickers: list[str], limit: int = 8) -> str:
    return ", ".join(tickers[:limit]) + (f", ... ({len(tickers)} in all)" if len(tickers) > limit else "")


def universe_problem(trained: list[str], given: list[str], where: str) -> str | None:
    """What keeps ``given`` tickers (of the data at ``where``) from being the checkpoint's universe, or None.

    The same tickers in another column order are fine: columns are matched by name.
    """
    missing = [t for t in trained if t not in given]
    extra = [t for t in given if t not in trained]
    if not missing and not extra:
        return None
    parts = []
    if missing:
        parts.append(f"missing {_listed(missing)}")
    if extra:
        parts.append(f"not in the checkpoint's universe: {_listed(extra)}")
    return (
        f"{where}: {'; '.join(parts)}; the checkpoint was trained on {len(trained)} assets ({_listed(trained)}): "
        "give prices for exactly those tickers (any column order)"
    )


def align(market: MarketData, trained: list[str], where: str) -> MarketData:
    """``market`` with its columns in the checkpoint's order.

    Raises:
        ValueError: other tickers than the checkpoint's (``universe_problem``'s message).
    """
    problem = universe_problem(list(trained), list(market.tickers), where)
    if problem:
        raise ValueError(problem)
    return reorder(market, list(trained))
