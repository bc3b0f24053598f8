"""A decision asked for over HTTP: the request's JSON, checked, and the answer ``trainer.decide`` would give.

A request is a JSON object with the recent prices, either as rows (``"prices": [{"date": "YYYY-MM-DD",
"<ticker>": price, ...}, ...]``, validated exactly as a price file is, by ``envs.data.prices_from_frame``) or
as a price file on the server (``"data": "<path>"`` or ``"sp500"``), and optionally ``"holdings"``
(``{"<ticker>": weight, ..., "cash": weight}``, checked as a weights file is), ``"value"`` (the portfolio's
value, for notional trades), ``"as_of"`` (``YYYY-MM-DD``, default today) and ``"max_stale_days"``. The answer
is ``decision_json`` of the same ``decide`` the command calls, so a request and ``trainer.decide --json`` on
the same prices and holdings give the same weights.

Two kinds of refusal, both one line: a request of the wrong shape (not JSON: 400; a missing or unknown field,
a value of the wrong type: 422, ``RequestError``) and inputs that cannot be decided on (``DecisionError``,
``HoldingsError``: 400, with the command's messages).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from envs.data import DataError, PriceData, prices_from_frame
from envs.features import FeatureConfig
from envs.fingerprint import WINDOWS_KEY
from trainer.evaluation.decision import (
    DEFAULT_MAX_STALE_DAYS,
    DecisionError,
    Member,
    decide,
    env_settings,
)
from trainer.evaluation.decision_report import decision_json
from trainer.evaluation.holdings import all_cash, check_value, holdings_from_weights
from trainer.evaluation.policy import Policy
from trainer.runtime.checkpoint import DATA_KEY

BAD_REQUEST = 400  # not JSON, or inputs that cannot be decided on (the command's messages)
UNPROCESSABLE = 422  # JSON of the wrong shape: a field missing, unknown or of the wrong type

PRICES, DATA, HOLDINGS, VALUE, AS_OF, MAX_STALE_DAYS = "prices", "data", "holdings", "value", "as_of", "max_stale_days"
FIELDS = (PRICES, DATA, HOLDINGS, VALUE, AS_OF, MAX_STALE_DAYS)
DATE = "date"  # the date key of a price row
_ROW = '{"date": "YYYY-MM-DD", "<ticker>": price, ...}'


class RequestError(ValueError):
    """A request refused before any decision: ``status`` 400 (not JSON) or 422 (wrong shape)."""

    def __init__(self, message: str, status: int = UNPROCESSABLE) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DecisionRequest:
    """A request's fields, of the right types (their values are checked by the decision itself)."""

    prices: pd.DataFrame | str  # rows as a table (a file's cells), or a price file's path
    holdings: dict[str, float] | None = None
    value: float | None = None
    as_of: pd.Timestamp | None = None
    max_stale_days: int = DEFAULT_MAX_STALE_DAYS


def _type_name(value: Any) -> str:
    return (
        "null"
        if value is None
        else {dict: "an object", list: "a list", str: "text", bool: "true/false"}.get(type(value), "a number")
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _price_rows(rows: Any) -> pd.DataFrame:
    """The rows as a price file's cells: a ``date`` column (text) and one column per ticker (numbers or None)."""
    if not isinstance(rows, list):
        raise RequestError(f"{PRICES}: expected a list of rows {_ROW}, got {_type_name(rows)}")
    if not rows:
        raise RequestError(f"{PRICES}: no rows; give the rows {_ROW} up to the decision date")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RequestError(f"{PRICES}[{i}]: expected an object {_ROW}, got {_type_name(row)}")
        if not isinstance(row.get(DATE), str):
            got = "no date" if DATE not in row else f"the date is {_type_name(row[DATE])}"
            raise RequestError(f"{PRICES}[{i}]: {got}; every row is {_ROW} with the date as text")
    frame = pd.DataFrame.from_records(rows)
    if not all(d.kind in "iuf" for c, d in frame.dtypes.items() if c != DATE):
        # a column of other values (text, true/false, objects; or only nulls): the first cell that is not a
        # price, row by row, is refused (columns of numbers, the usual request, need no look at each cell)
        for i, row in enumerate(rows):
            for ticker, price in row.items():
                if ticker != DATE and price is not None and not _is_number(price):
                    raise RequestError(f"{PRICES}[{i}].{ticker}: expected a price (a number, or null), got {price!r}")
    return frame


def _date(value: Any) -> pd.Timestamp:
    try:
        if not isinstance(value, str):
            raise ValueError
        return pd.Timestamp(value).normalize()
    except ValueError:
        raise RequestError(f"{AS_OF}: expected a date YYYY-MM-DD, got {value!r}") from None


def parse_request(body: bytes | str) -> DecisionRequest:
    """The request's fields from its body.

    Raises:
        RequestError: not JSON (400), or a field missing, unknown or of the wrong type (422).
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RequestError(f"request body: not valid JSON ({reason})", BAD_REQUEST) from None
    if not isinstance(payload, dict):
        got = _type_name(payload)
        raise RequestError(f"request body: expected a JSON object with {PRICES!r} or {DATA!r}, got {got}")
    unknown = [k for k in payload if k not in FIELDS]
    if unknown:
        raise RequestError(f"request body: unknown field {unknown[0]!r}; the fields are {', '.join(FIELDS)}")
    if PRICES in payload and DATA in payload:
        raise RequestError(f"request body: both {PRICES!r} and {DATA!r}; give one of them")
    if PRICES not in payload and DATA not in payload:
        raise RequestError(
            f"request body: no prices; give {PRICES!r} (rows {_ROW}) or {DATA!r} (a price file on the server)"
        )
    if DATA in payload and not isinstance(payload[DATA], str):
        raise RequestError(f"{DATA}: expected a price file's path (text), got {_type_name(payload[DATA])}")
    prices = payload[DATA] if DATA in payload else _price_rows(payload[PRICES])
    holdings = payload.get(HOLDINGS)
    if holdings is not None:
        if not isinstance(holdings, dict):
            raise RequestError(f'{HOLDINGS}: expected an object {{"<ticker>": weight, ..., "cash": weight}}')
        bad = next((t for t, w in holdings.items() if not _is_number(w)), None)
        if bad is not None:
            raise RequestError(f"{HOLDINGS}.{bad}: expected a weight (a number), got {holdings[bad]!r}")
    value = payload.get(VALUE)
    if value is not None and not _is_number(value):
        raise RequestError(f"{VALUE}: expected the portfolio's value (a number), got {value!r}")
    stale = payload.get(MAX_STALE_DAYS, DEFAULT_MAX_STALE_DAYS)
    if not isinstance(stale, int) or isinstance(stale, bool) or stale < 0:
        raise RequestError(f"{MAX_STALE_DAYS}: expected a whole number >= 0, got {stale!r}")
    as_of = payload.get(AS_OF)
    return DecisionRequest(
        prices=prices,
        holdings=holdings,
        value=None if value is None else float(value),
        as_of=None if as_of is None else _date(as_of),
        max_stale_days=stale,
    )


def answer(
    request: DecisionRequest, members: list[Member], loaded: tuple[list[Policy], dict[str, Any]]
) -> dict[str, Any]:
    """``decision_json`` of the decision on the request's prices and holdings (``trainer.decide``'s JSON).

    Raises:
        DecisionError, HoldingsError: inputs that cannot be decided on, in the command's one-line messages.
    """
    tickers = list(loaded[1]["tickers"])
    prices: PriceData | str = request.prices if isinstance(request.prices, str) else _validated(request.prices)
    value = check_value(request.value)
    holdings = None
    if request.holdings is not None:
        holdings = holdings_from_weights(request.holdings, tickers, value, where=HOLDINGS)
    elif value is not None:
        holdings = all_cash(len(tickers), value)
    decision = decide(
        members, prices, holdings, as_of=request.as_of, max_stale_days=request.max_stale_days, loaded=loaded
    )
    return decision_json(decision, holdings)


def _validated(rows: pd.DataFrame) -> PriceData:
    try:  # JSON arrays count from 0: "row 3" is prices[3]
        return prices_from_frame(rows, PRICES, first_row=0)
    except DataError as exc:
        raise DecisionError(str(exc)) from None


def model_info(members: list[Member], state: dict[str, Any], chosen: str) -> dict[str, Any]:
    """What a service decides with: the universe, the checkpoints, the training window and the env settings."""
    record = state.get(DATA_KEY) or {}
    windows = {name: {k: w.get(k) for k in ("start", "end")} for name, w in (record.get(WINDOWS_KEY) or {}).items()}
    lookback = FeatureConfig.of(state["env_config"].get("features")).lookback  # the checkpoint's feature set
    return {
        "tickers": list(state["tickers"]),
        "checkpoint": str(members[0].checkpoint),
        "members": [{"checkpoint": str(m.checkpoint), "agent": m.agent} for m in members],
        "chosen": chosen,
        "training_window": windows.get("train"),
        "windows": windows,
        "trained_on": record.get("source"),
        "settings": env_settings(state),
        "min_price_rows": lookback + 1,
        "experiment": (state.get("experiment") or {}).get("name"),
        "training_iteration": state.get("training_iteration"),
    }
