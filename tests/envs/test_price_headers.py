"""envs.price_headers through envs.data: one spelling per ticker, and two-level (field, ticker) headers."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from envs.data import DataError, load_prices
from tests.conftest import synthetic_prices

FIELDS = ["Adj Close", "Close", "High", "Low", "Open", "Volume"]
FLATTEN = "flatten the header to one line: a 'date' column and one price column per ticker"


def _err(path) -> str:
    with pytest.raises(DataError) as info:
        load_prices(str(path))
    return str(info.value)


def _load_with_notes(path) -> tuple:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_prices(str(path))
    return data, [str(w.message) for w in caught]


def _yfinance_frame(fields: list[str] = FIELDS, n_days: int = 300) -> pd.DataFrame:
    """What ``yfinance.download(["AAPL", "MSFT"])`` returns: (Price, Ticker) columns, a 'Date' index; each field
    holds its own numbers (field k is the base prices times k + 1), so the test sees which one was read."""
    base = synthetic_prices(n_days=n_days, n_assets=2).set_axis(["AAPL", "MSFT"], axis=1).rename_axis("Date")
    columns = pd.MultiIndex.from_product([fields, ["AAPL", "MSFT"]], names=["Price", "Ticker"])
    values = np.concatenate([base.to_numpy() * (k + 1) for k in range(len(fields))], axis=1)
    return pd.DataFrame(values, index=base.index, columns=columns)


def _expected(frame: pd.DataFrame, field: str) -> np.ndarray:
    return frame[field][["AAPL", "MSFT"]].to_numpy()


# --- one spelling per ticker -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "shown"),
    [
        ("date,AAPL,aapl", "columns 2 ('AAPL') and 3 ('aapl') differ only in case"),
        ("date,AAPL,MSFT,AAPL ", "columns 2 ('AAPL') and 4 ('AAPL ') differ only in spaces"),
        ("date,AAPL, aapl", "columns 2 ('AAPL') and 3 (' aapl') differ only in case and spaces"),
    ],
)
def test_wide_csv_names_differing_only_in_case_or_spaces_refused(tmp_path, header, shown):
    path = tmp_path / "p.csv"
    n = header.count(",")
    path.write_text(f"{header}\n2020-01-02,{','.join(['1'] * n)}\n2020-01-03,{','.join(['2'] * n)}\n")
    assert _err(path) == f"{path}: {shown}: the same name twice; keep one column per ticker"


@pytest.mark.parametrize(
    ("names", "shown"),
    [
        (["AAPL", "aapl"], "columns 2 ('AAPL') and 3 ('aapl') differ only in case"),
        (["AAPL", "AAPL "], "columns 2 ('AAPL') and 3 ('AAPL ') differ only in spaces"),
    ],
)
def test_wide_parquet_names_differing_only_in_case_or_spaces_refused(tmp_path, names, shown):
    path = tmp_path / "p.parquet"
    synthetic_prices(n_days=50, n_assets=2).rename_axis("date").set_axis(names, axis=1).to_parquet(path)
    assert _err(path) == f"{path}: {shown}: the same name twice; keep one column per ticker"


@pytest.mark.parametrize(
    ("last_rows", "shown"),
    [
        ("2020-01-03,AAPL,1.1\n2020-01-03,aapl,2.1\n", "'AAPL' (row 2) and 'aapl' (row 5), that differ only in case"),
        ("2020-01-03,AAPL ,1.1\n", "'AAPL' (row 2) and 'AAPL ' (row 4), that differ only in spaces"),
    ],
)
def test_long_form_ticker_written_two_ways_refused(tmp_path, last_rows, shown):
    path = tmp_path / "l.csv"
    path.write_text(f"date,ticker,close\n2020-01-02,AAPL,1\n2020-01-02,MSFT,2\n{last_rows}")
    expected = f"{path}: column 'ticker' writes one ticker two ways, {shown}; write each ticker one way"
    assert _err(path) == expected
    res = subprocess.run([sys.executable, "-m", "envs.data", str(path)], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip() == f"error: {expected}"


def test_long_form_tickers_padded_the_same_way_every_time_pass(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text(
        "date,ticker,close\n2020-01-02, AAPL,1\n2020-01-02,MSFT,2\n2020-01-03, AAPL,1.1\n2020-01-03,MSFT,2\n"
    )
    assert load_prices(str(path)).tickers == ["AAPL", "MSFT"]


def test_long_form_prefers_the_adjusted_close_and_says_so(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text(
        "date,ticker,close,adj_close\n2020-01-02,A,10,5\n2020-01-02,B,20,4\n2020-01-03,A,11,5.5\n2020-01-03,B,21,4.2\n"
    )
    data, notes = _load_with_notes(path)
    assert data.prices.to_numpy().tolist() == [[5.0, 4.0], [5.5, 4.2]]
    assert notes == [f"{path}: prices read from column 'adj_close', not 'close' (an adjusted close before a close)"]


# --- two-level headers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "unused"),
    [(FIELDS, "Adj Close", "Close, High, Low, Open, Volume"), (FIELDS[1:], "Close", "High, Low, Open, Volume")],
)
@pytest.mark.parametrize("writer", ["parquet", "parquet_date_column", "csv", "csv_ticker_first"])
def test_yfinance_layouts_are_read(tmp_path, fields, field, unused, writer):
    frame = _yfinance_frame(fields)
    if writer == "parquet":
        path = tmp_path / "yf.parquet"
        frame.to_parquet(path)
    elif writer == "parquet_date_column":  # the dates as a ('Date', '') column
        path = tmp_path / "yf.parquet"
        frame.reset_index().to_parquet(path)
    elif writer == "csv":  # three header lines: Price,..., Ticker,..., Date,,,
        path = tmp_path / "yf.csv"
        frame.to_csv(path)
    else:  # yfinance.download(..., group_by="ticker"): (Ticker, Price)
        path = tmp_path / "yf.csv"
        frame.swaplevel(axis=1).sort_index(axis=1).to_csv(path)
    data, notes = _load_with_notes(path)
    assert data.tickers == ["AAPL", "MSFT"] and data.form == "wide"
    assert data.prices.index.equals(frame.index.rename(data.prices.index.name))
    np.testing.assert_allclose(data.prices.to_numpy(), _expected(frame, field), rtol=1e-12)
    order = "ticker, field" if writer == "csv_ticker_first" else "field, ticker"
    assert notes == [
        f"{path}: two-level header read as ({order}): prices from '{field}' for 2 tickers ({unused} not used)"
    ]


def test_two_level_csv_without_the_index_line_and_its_row_numbers(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("date,Close,Close\n,AAPL,MSFT\n2020-01-02,1,2\n2020-01-03,1.1,2.1\n")
    data, notes = _load_with_notes(path)
    assert data.prices.to_numpy().tolist() == [[1.0, 2.0], [1.1, 2.1]]
    assert notes == [f"{path}: two-level header read as (field, ticker): prices from 'Close' for 2 tickers"]
    path.write_text("Price,Close,Close\nTicker,AAPL,MSFT\nDate,,\n2020-01-02,1,2\nnot a date,1.1,2.1\n")
    assert _err(path) == (
        f"{path}: column 'date' has a value that is not a date in row 5: 'not a date'; use ISO dates like 2020-01-31 "
        "or give the format, e.g. '%d/%m/%Y': data.date_format in an experiment (--set data.date_format=%d/%m/%Y), "
        "--date-format with python -m envs.data"
    )


def test_two_level_header_through_the_cli(tmp_path):
    path = tmp_path / "yf.parquet"
    _yfinance_frame(n_days=600).to_parquet(path)
    res = subprocess.run([sys.executable, "-m", "envs.data", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "tickers:  2: AAPL, MSFT" in res.stdout
    assert res.stdout.endswith(
        "warnings: \n  - two-level header read as (field, ticker): prices from 'Adj Close' for 2 tickers (Close, High, "
        "Low, Open, Volume not used)\n"
    )


def test_two_level_headers_that_cannot_be_read(tmp_path):
    frame = _yfinance_frame(["Open", "High", "Volume"], n_days=20)
    path = tmp_path / "no_close.parquet"
    frame.to_parquet(path)
    assert _err(path) == (
        f"{path}: the header has two levels (e.g. ('Open', 'AAPL')) and neither names a price field (Adj Close, "
        f"Close or Price); {FLATTEN}"
    )
    frame = _yfinance_frame(["Adj Close", "Close"], n_days=20).drop(columns=[("Adj Close", "MSFT")])
    path = tmp_path / "missing.parquet"
    frame.to_parquet(path)
    assert _err(path) == (
        f"{path}: ticker 'MSFT' has no 'Adj Close' column in the two-level header; give every ticker a 'Adj Close' "
        "column, or remove the ticker"
    )
    frame = _yfinance_frame(["Close"], n_days=20)
    frame.columns = pd.MultiIndex.from_tuples([(*c, "x") for c in frame.columns])
    path = tmp_path / "three.parquet"
    frame.to_parquet(path)
    assert _err(path) == f"{path}: the header has 3 levels (e.g. ('Close', 'AAPL', 'x')); {FLATTEN}"
    frame = _yfinance_frame(["Close"], n_days=20)
    frame.columns = pd.MultiIndex.from_tuples([("Close", "AAPL"), ("Close", "aapl")])
    path = tmp_path / "case.parquet"
    frame.to_parquet(path)
    assert _err(path) == (
        f"{path}: columns 2 ('AAPL') and 3 ('aapl') differ only in case: the same name twice; keep one column per "
        "ticker"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a ticker written two ways in the second header line
        (
            "Price,Close,Close\nTicker,AAPL,AAPL \nDate,,\n2020-01-02,1,2\n2020-01-03,1.1,2.1\n",
            "columns 2 ('AAPL') and 3 ('AAPL ') differ only in spaces: the same name twice; keep one column per ticker",
        ),
        # a repeated field name over a data row: one header line, not a second one of tickers
        (
            "date,Close,Close\n2020-01-02,1,2\n2020-01-03,1,2\n",
            "column 'Close' appears twice in the header (columns 2 and 3); keep one column per ticker",
        ),
    ],
)
def test_two_level_csv_headers_refused(tmp_path, text, expected):
    path = tmp_path / "p.csv"
    path.write_text(text)
    assert _err(path) == f"{path}: {expected}"
