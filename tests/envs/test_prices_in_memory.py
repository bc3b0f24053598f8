"""envs.data.prices_from_frame: prices already in memory go through a file's validation, word for word."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from envs.data import DataError, load_prices, prices_from_frame
from tests.conftest import synthetic_prices, write_wide_csv


def _as_rows(text: str) -> pd.DataFrame:
    """A CSV's cells as a service receives them: numbers where the CSV holds numbers, text otherwise, and
    empty cells missing."""
    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    return frame.map(lambda cell: None if cell == "" else _number_or_text(cell))


def _number_or_text(cell: str) -> float | str:
    try:
        return float(cell)
    except ValueError:
        return cell


def test_rows_give_the_file_prices_exactly(tmp_path):
    prices = synthetic_prices(n_days=120, n_assets=3, seed=4)
    path = write_wide_csv(tmp_path / "p.csv", prices)
    rows = [{"date": str(d.date()), **{t: float(v) for t, v in row.items()}} for d, row in prices.iterrows()]
    data = prices_from_frame(pd.DataFrame.from_records(rows), "prices")
    from_file = load_prices(path)
    assert data.source == "prices" and data.form == "wide" and data.tickers == ["A0", "A1", "A2"]
    pd.testing.assert_frame_equal(data.prices, from_file.prices)  # JSON floats round-trip exactly, as CSV's do
    long = prices.rename_axis("date").reset_index().melt(id_vars="date", var_name="ticker", value_name="close")
    long["date"] = long["date"].dt.strftime("%Y-%m-%d")
    assert prices_from_frame(long, "prices").form == "long"
    np.testing.assert_array_equal(prices_from_frame(long, "prices").prices.to_numpy(), from_file.prices.to_numpy())


@pytest.mark.parametrize(
    "text",
    [
        "date,A,B\n2020-01-02,1,2\n2020-01-01,1,2\n",  # dates going backwards
        "date,A,B\n2020-01-01,1,2\n2020-01-02,1,2\n2020-01-02,1,2\n",  # a date twice
        "date,A,B\n2020-01-01,1,2\n2020-01-02,,2\n2020-01-03,1,2\n",  # a gap after trading started
        "date,A,B\n2020-01-01,1,2\n2020-01-02,abc,2\n",  # not a number
        "date,A,B\n2020-01-01,1,-2\n2020-01-02,1,2\n",  # not positive
        "date,A,B\n2020-01-01,1,2\n2020-01-02,100,2\n",  # an impossible one-day move
        "date,A,a\n2020-01-01,1,2\n2020-01-02,1,2\n",  # two spellings of one ticker
        "date,A\n2020-01-01,1\n2020-01-02,1\n",  # one asset
        "when,A,B\n2020-01-01,1,2\n",  # no date column
        "date,A,B\n2020-01-01,1,2\n2020-13-45,1,2\n",  # not a date
        "date,A,B\n2020-01-01,1,2\n2020-01-08,1,2\n2020-01-15,1,2\n2020-01-22,1,2\n2020-01-29,1,2\n",  # weekly
    ],
)
def test_every_refusal_is_the_files_message(tmp_path, text):
    path = tmp_path / "p.csv"
    path.write_text(text)
    with pytest.raises(DataError) as from_file:
        load_prices(str(path))
    with pytest.raises(DataError) as from_rows:
        prices_from_frame(_as_rows(text), str(path), first_row=2)  # a CSV's first data row is its line 2
    assert str(from_rows.value) == str(from_file.value)


def test_rows_are_numbered_as_the_caller_says_and_a_late_starter_is_trimmed_with_a_warning():
    rows = _as_rows("date,A,B\n2020-01-02,1,2\n2020-01-01,1,2\n")
    with pytest.raises(DataError) as info:
        prices_from_frame(rows, "prices", first_row=0)
    assert str(info.value).startswith(
        "prices: dates are not in increasing order: row 1 (2020-01-01) comes after row 0 (2020-01-02); "
    )
    late = _as_rows("date,A,B\n2020-01-01,1,\n2020-01-02,1,2\n2020-01-03,1,2\n")
    with pytest.warns(UserWarning, match="prices: ticker 'B' starts on 2020-01-02: history trimmed"):
        data = prices_from_frame(late, "prices")
    assert data.prices.to_numpy().tolist() == [[1.0, 2.0], [1.0, 2.0]]
    with pytest.raises(DataError) as empty:
        prices_from_frame(pd.DataFrame(), "prices")
    assert str(empty.value) == "prices: table has no rows or no columns; expected a date column and price columns"


def test_numeric_columns_read_at_once_equal_the_column_by_column_path():
    prices = synthetic_prices(n_days=80, n_assets=4, seed=9)
    rows = pd.DataFrame({"date": [str(d.date()) for d in prices.index], **{t: prices[t].to_numpy() for t in prices}})
    rows["A1"] = rows["A1"].round().astype("int64")  # whole numbers: an int column
    as_text = rows.astype({t: object for t in prices})  # the same cells as Python objects: the per-column path
    fast, slow = prices_from_frame(rows, "prices"), prices_from_frame(as_text, "prices")
    pd.testing.assert_frame_equal(fast.prices, slow.prices)
    assert fast.prices.dtypes.eq("float64").all() and list(fast.prices.columns) == ["A0", "A1", "A2", "A3"]


def test_plain_iso_dates_read_at_once_equal_the_general_path(monkeypatch):
    from envs import price_dates

    cells = pd.Series(["2021-03-01", "2021-03-02", "2021-03-04"], dtype=object)
    fast = price_dates.parse_dates(cells, "prices", "date", 0, None, [])
    monkeypatch.setattr(price_dates, "_plain_iso_dates", lambda values, date_format: None)
    slow = price_dates.parse_dates(cells, "prices", "date", 0, None, [])
    pd.testing.assert_index_equal(fast, slow, exact=True)
    monkeypatch.undo()
    # ISO-looking text that is no date takes the general path, and its message
    with pytest.raises(DataError, match=r"prices: column 'date' has a value that is not a date in row 1: '2021-13-02'"):
        price_dates.parse_dates(pd.Series(["2021-03-01", "2021-13-02"]), "prices", "date", 0, None, [])
