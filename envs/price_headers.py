"""Headers of price files: names checked, one spelling per ticker, and two-level ``(field, ticker)`` headers read.

- Every column needs a name, and no two names may be the same once surrounding spaces are dropped and case is
  ignored: ``AAPL`` and ``aapl``, or ``AAPL`` and ``AAPL ``, would be one asset held twice under two names.
  In long form the same holds for the values of the ticker column.
- A two-level header, as pandas writes a table with ``MultiIndex`` columns (what ``yfinance.download``
  returns: ``('Adj Close', 'AAPL')``, ``('Close', 'AAPL')``, ``('Volume', 'AAPL')``, ...), is read when one of
  its levels names price fields: the prices are the adjusted close when there is one, else the close (a
  warning says which field was used); the other level names the tickers. It is found in a Parquet file's
  columns and in a CSV's first two lines (with or without pandas' third line holding only the index name).
  Any other multi-level header is refused with the advice to flatten it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from envs.errors import fail

DATE_NAMES = ("date", "datetime", "timestamp", "time", "day")
# Price columns by preference: an adjusted close before a raw close (splits and dividends included).
PRICE_NAMES = ("adj close", "adj_close", "adjclose", "close", "price")

_FLATTEN = "flatten the header to one line: a 'date' column and one price column per ticker"


def _spelling_difference(a: str, b: str) -> str:
    """How two names equal up to case and surrounding spaces differ: ``case``, ``spaces`` or both."""

    def padding(name: str) -> tuple[str, str]:
        return name[: len(name) - len(name.lstrip())], name[len(name.rstrip()) :]

    differs = (("case", a.strip() != b.strip()), ("spaces", padding(a) != padding(b)))
    return " and ".join(word for word, different in differs if different)


def check_header(names: Sequence[str], where: str, spellings: bool = True) -> None:
    """Refuse unnamed columns and a name that appears twice (with ``spellings``, also up to case and spaces).

    Args:
        names: the column names as written.
        where: the file, for the message.
        spellings: also refuse names equal up to case and surrounding spaces (without it, only the same
            name twice, which some readers cannot read at all).
    """
    for k, name in enumerate(names):
        if not name.strip():
            raise fail(
                where,
                f"column {k + 1} has no name in the header; name the date column 'date' and each price column "
                "after its ticker",
            )
    seen: dict[str, int] = {}
    for k, name in enumerate(names):
        key = name.strip().casefold() if spellings else name
        if key not in seen:
            seen[key] = k
            continue
        first = names[seen[key]]
        if first == name:
            raise fail(
                where,
                f"column '{name.strip()}' appears twice in the header (columns {seen[key] + 1} and {k + 1}); keep "
                "one column per ticker",
            )
        raise fail(
            where,
            f"columns {seen[key] + 1} ({first!r}) and {k + 1} ({name!r}) differ only in "
            f"{_spelling_difference(first, name)}: the same name twice; keep one column per ticker",
        )


def check_ticker_spellings(tickers: pd.Series, where: str, column: str, first_row: int) -> None:
    """Refuse a long-form ticker written two ways (up to case and surrounding spaces).

    Args:
        tickers: the ticker column as written (text).
        where: the file, for the message.
        column: the ticker column's name.
        first_row: the row number of the first value in messages.
    """
    written = tickers.astype(str).reset_index(drop=True).drop_duplicates()  # first row of each spelling
    keys = written.str.strip().str.casefold()
    clash = keys.duplicated(keep=False).to_numpy()
    if not clash.any():
        return
    key = keys[clash].iloc[0]
    (i, a), (j, b) = list(written[keys == key].items())[:2]
    raise fail(
        where,
        f"column '{column}' writes one ticker two ways, {a!r} (row {first_row + i}) and {b!r} (row {first_row + j}), "
        f"that differ only in {_spelling_difference(a, b)}; write each ticker one way",
    )


def price_column(names: Sequence[str]) -> tuple[str | None, list[str]]:
    """The preferred price column among ``names`` (case-insensitive) and the other price columns present."""
    found = sorted((PRICE_NAMES.index(n.strip().lower()), n) for n in names if n.strip().lower() in PRICE_NAMES)
    return (found[0][1], [n for _, n in found[1:]]) if found else (None, [])


def _is_date_name(parts: tuple[str, ...]) -> bool:
    named = [p for p in parts if p]
    return bool(named) and all(p.lower() in DATE_NAMES for p in named)


def read_two_level(frame: pd.DataFrame, where: str, notes: list[str]) -> pd.DataFrame:
    """A table with a two-level ``(field, ticker)`` or ``(ticker, field)`` header as one price column per ticker.

    Args:
        frame: the table, its columns a ``MultiIndex``; a date column among them (``('Date', '')``) is kept as
            ``date``; the index is kept as it is.
        where: the file, for messages.
        notes: receives a line saying which field the prices were read from.

    Raises:
        DataError: more than two levels, no level of price fields, or a ticker without the chosen field.
    """
    written = [tuple(str(p) for p in c) for c in frame.columns]
    columns = [tuple(p.strip() for p in c) for c in written]
    example = next((c for c in columns if not _is_date_name(c)), columns[0])
    if frame.columns.nlevels != 2:
        raise fail(where, f"the header has {frame.columns.nlevels} levels (e.g. {example}); {_FLATTEN}")
    dates = [k for k, c in enumerate(columns) if _is_date_name(c)]
    data = [(k, c) for k, c in enumerate(columns) if k not in dates]
    level = next((lv for lv in (0, 1) if price_column([c[lv] for _, c in data])[0] is not None), None)
    if level is None:
        raise fail(
            where,
            f"the header has two levels (e.g. {example}) and neither names a price field (Adj Close, Close or "
            f"Price); {_FLATTEN}",
        )
    field, _ = price_column([c[level] for _, c in data])
    tickers = list(dict.fromkeys(c[1 - level] for _, c in data))
    chosen = [(c[1 - level], k) for k, c in data if c[level] == field]  # a ticker twice stays twice: refused later
    missing = [t for t in tickers if t not in {name for name, _ in chosen}]
    if missing:
        raise fail(
            where,
            f"ticker '{missing[0]}' has no '{field}' column in the two-level header; give every ticker a '{field}' "
            "column, or remove the ticker",
        )
    others = sorted({c[level] for _, c in data} - {field})
    notes.append(
        f"two-level header read as ({'field, ticker' if level == 0 else 'ticker, field'}): prices from '{field}' for "
        f"{len(tickers)} tickers" + (f" ({', '.join(others)} not used)" if others else "")
    )
    out = frame.iloc[:, dates[:1] + [k for _, k in chosen]]
    # Tickers as written: the header check that follows refuses two spellings of one ticker.
    out.columns = ["date"] * len(dates[:1]) + [written[k][1 - level] for _, k in chosen]
    return out


def csv_two_level(grid: pd.DataFrame) -> tuple[pd.DataFrame, int] | None:
    """A CSV's text grid with a two-level header as a frame with ``MultiIndex`` columns, or None.

    Two header lines are recognised when the third line holds only an index name that is a date name (pandas
    writes that line under a ``MultiIndex`` header), or when the first line repeats names that are unique
    paired with the second line, one of the two lines names price fields and the second line does not start
    with a date. The first column is the dates.

    Returns:
        ``(frame, first_row)``: the data rows under the header, and the line number of the first of them.
    """
    if len(grid) < 3:
        return None
    top, second, third = (list(grid.iloc[k].astype(str)) for k in range(3))
    # pandas writes the index first: the first column holds the dates whatever its header cells say.
    if third[0].strip().lower() in DATE_NAMES and not any(v.strip() for v in third[1:]):
        start = 3
    else:
        pairs = [(a.strip(), b.strip()) for a, b in zip(top[1:], second[1:], strict=True)]
        repeats = len({a for a, _ in pairs}) < len(pairs) and len(set(pairs)) == len(pairs)
        fields = any(price_column([pair[k] for pair in pairs])[0] is not None for k in (0, 1))
        # A data row starts with a date, which has digits; a second header line with a label or nothing.
        labelled = not any(ch.isdigit() for ch in second[0])
        if not (repeats and fields and labelled):
            return None
        start = 2
    columns = [("date", ""), *zip(top[1:], second[1:], strict=True)]
    frame = grid.iloc[start:].reset_index(drop=True)
    frame.columns = pd.MultiIndex.from_tuples(columns)
    return frame, start + 1
