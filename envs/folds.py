"""Walk-forward folds: ``k`` train / validation / test windows over one price table.

Layout (all lengths in rows of the price table, i.e. trading days; ``L`` is the feature lookback, which is
also the purge gap, exactly as in :func:`envs.data.split_ranges`):

- The test windows are laid back to back at the end of the data: the last fold's test window ends on the
  data's last date (or on the last date ``<= end`` when ``end`` is given), the fold before it ends the day
  before that one starts, and so on. Test windows of different folds never overlap.
- Each fold's validation window ends ``L`` rows before its test window starts, and its training window
  ends ``L`` rows before its validation window starts, so no feature window holds prices of two windows.
- Training windows are ``expanding`` (from row ``L``, the first row with complete features, so each fold
  trains on all the history before its validation window; ``train_days`` is then the minimum length) or
  ``rolling`` (the last ``train_days`` rows before the purge gap).

Fold ``k`` therefore tests on later data than fold ``k - 1`` and, in the expanding scheme, trains on
everything fold ``k - 1`` trained on plus fold ``k - 1``'s later days. Data too short for fold 0 is
refused with the numbers (:class:`envs.data.DataError`).

Experiments are YAML files in :data:`CONFIG_DIR`; ``data.folds`` there describes the folds
(:class:`FoldSpec`) and ``data.fold`` picks one for a run. This module reads the ``data`` section with
pyyaml only (``envs`` never imports the trainer).
"""

from __future__ import annotations

import datetime as dt
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from envs.data import FORM_BUNDLED, MIN_SPLIT_ROWS, SPLITS, DataError, PriceData, SplitRange

# The experiments directory (one YAML file per experiment); the trainer's schema reads the same constant.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "tune_configs"

SCHEME_EXPANDING = "expanding"
SCHEME_ROLLING = "rolling"
SCHEMES = (SCHEME_EXPANDING, SCHEME_ROLLING)
_DAY_FIELDS = ("test_days", "validation_days", "train_days")


def _iso_date(value: Any) -> str:
    """``value`` (a date, datetime or ISO string) as ``YYYY-MM-DD``; ValueError if it is none of these."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        return dt.date.fromisoformat(value.strip()).isoformat()
    raise ValueError(value)


@dataclass(frozen=True)
class FoldSpec:
    """How to cut the data into walk-forward folds (see the module docstring for the layout).

    Attributes:
        n_folds: number of folds (>= 1).
        scheme: ``"expanding"`` or ``"rolling"`` training windows.
        test_days: rows in each fold's test window.
        validation_days: rows in each fold's validation window.
        train_days: rows in each rolling training window; the minimum for expanding ones.
        end: ISO date on or before which the last test window ends; ``None`` = the data's last date.
    """

    n_folds: int = 3
    scheme: str = SCHEME_EXPANDING
    test_days: int = 252
    validation_days: int = 252
    train_days: int = 756
    end: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            self.check(f.name, getattr(self, f.name))
        if self.end is not None:
            object.__setattr__(self, "end", _iso_date(self.end))

    @staticmethod
    def check(name: str, value: Any) -> Any:
        """Validate one field; returns it unchanged or raises a ValueError naming it."""
        is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if name == "n_folds" and not (is_int and value >= 1):
            raise ValueError(f"n_folds must be an integer >= 1, got {value!r}")
        if name == "scheme" and value not in SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got {value!r}")
        if name in _DAY_FIELDS and not (is_int and value >= MIN_SPLIT_ROWS):
            raise ValueError(f"{name} must be an integer >= {MIN_SPLIT_ROWS} (trading days), got {value!r}")
        if name == "end" and value is not None:
            try:
                _iso_date(value)
            except ValueError:
                raise ValueError(f"end must be an ISO date like 2020-12-31 or null, got {value!r}") from None
        return value

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> FoldSpec:
        """A spec from a plain dict (YAML, Ray's ``env_config``); ``None`` = the defaults; unknown keys are errors."""
        values = dict(values or {})
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown folds key(s) {', '.join(unknown)}; valid: {', '.join(names)}")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_fold_spec(folds: FoldSpec | Mapping[str, Any] | None) -> FoldSpec:
    """``folds`` as a :class:`FoldSpec` (``None`` = the defaults)."""
    return folds if isinstance(folds, FoldSpec) else FoldSpec.from_mapping(folds)


def _where(data: PriceData) -> str:
    return "sp500 (bundled)" if data.form == FORM_BUNDLED else data.source


def fold_ranges(data: PriceData, lookback: int, folds: FoldSpec) -> list[dict[str, SplitRange]]:
    """Every fold's row ranges, as :func:`envs.data.split_ranges` gives them for one split.

    Args:
        data: validated prices.
        lookback: the feature window in rows; also the purge gap between windows.
        folds: the fold layout.

    Raises:
        DataError: ``folds.end`` after the data's last date, or data too short for the first fold.
    """
    dates = data.prices.index
    where = _where(data)
    if folds.end is None:
        last = len(dates) - 1
    else:
        end = pd.Timestamp(folds.end)
        if end > dates[-1]:
            raise DataError(
                f"{where}: folds end {folds.end} is after the data's last date {dates[-1].date()}; "
                "use an earlier end or null (the data's end)"
            )
        last = int(dates.searchsorted(end, side="right")) - 1
    n, test, val, train = folds.n_folds, folds.test_days, folds.validation_days, folds.train_days
    need = 3 * lookback + train + val + n * test
    have = last + 1
    if have < need:
        upto = f"up to {dates[last].date()}" if last >= 0 else f"before {folds.end}"
        span = f" ({dates[0].date()}..{dates[last].date()})" if last >= 0 else ""
        raise DataError(
            f"{where}: {n} {folds.scheme} walk-forward fold(s) need {need} rows {upto} ({lookback} feature "
            f"lookback + {train} train + {lookback} purge + {val} validation + {lookback} purge + {n} x {test} "
            f"test), the data has {have} rows{span}; use fewer or shorter folds (data.folds) or more history"
        )
    out = []
    for k in range(n):
        test_end = last - (n - 1 - k) * test
        test_start = test_end - test + 1
        val_end = test_start - lookback - 1
        val_start = val_end - val + 1
        train_end = val_start - lookback - 1
        train_start = lookback if folds.scheme == SCHEME_EXPANDING else train_end - train + 1
        rows = dict(zip(SPLITS, ((train_start, train_end), (val_start, val_end), (test_start, test_end)), strict=True))
        out.append({name: SplitRange(name, a, b, dates[a], dates[b]) for name, (a, b) in rows.items()})
    return out


def round_ranges(
    data: PriceData, lookback: int, validation_days: int, train_days: int, scheme: str
) -> dict[str, SplitRange]:
    """The windows of a rolling round on ``data``, whose last date is the round's date D: no test window.

    The validation window is the last ``validation_days`` rows (it ends on D); the training window ends
    ``lookback`` rows (the purge gap) before it starts and is ``expanding`` (from row ``lookback``, the first
    with complete features; at least ``train_days`` rows) or ``rolling`` (the last ``train_days`` rows). So a
    round is a walk-forward fold whose test window is the future: the days after D, when its model trades.
    As split dates (:func:`window_dates`), :func:`envs.data.split_ranges` gives back these very rows.

    Raises:
        DataError: fewer rows than the windows need (the message has the numbers and the fix).
    """
    dates = data.prices.index
    n = len(dates)
    need = 2 * lookback + train_days + validation_days
    if n < need:
        span = f" ({dates[0].date()}..{dates[-1].date()})" if n else ""
        raise DataError(
            f"{_where(data)}: a rolling round needs {need} rows up to its date ({lookback} feature lookback + "
            f"{train_days} train + {lookback} purge + {validation_days} validation), the data has {n} rows{span}; "
            "use shorter windows (rolling.train_days, rolling.validation_days) or more history"
        )
    val_start = n - validation_days
    train_end = val_start - lookback - 1
    train_start = lookback if scheme == SCHEME_EXPANDING else train_end - train_days + 1
    rows = {SPLITS[0]: (train_start, train_end), SPLITS[1]: (val_start, n - 1)}
    return {name: SplitRange(name, a, b, dates[a], dates[b]) for name, (a, b) in rows.items()}


def window_dates(ranges: Mapping[str, SplitRange]) -> dict[str, list[str]]:
    """Windows as inclusive ISO dates ``{"train": [start, end], ...}``: split dates that select them again."""
    return {name: [rng.start_date.date().isoformat(), rng.end_date.date().isoformat()] for name, rng in ranges.items()}


def check_fold(fold: Any, folds: FoldSpec) -> int:
    """``fold`` as an index into ``folds``; a ValueError names the valid range."""
    if not (isinstance(fold, numbers.Integral) and not isinstance(fold, bool) and 0 <= int(fold) < folds.n_folds):
        raise ValueError(
            f"fold must be an integer in 0..{folds.n_folds - 1} (folds.n_folds is {folds.n_folds}), got {fold!r}"
        )
    return int(fold)


def fold_windows(
    data: PriceData, folds: FoldSpec | Mapping[str, Any] | None = None, lookback: int | None = None
) -> list[dict[str, Any]]:
    """Every fold's windows as inclusive ISO dates (what ``summary.json`` records as ``folds``).

    Args:
        data: validated prices.
        folds: the fold layout (a :class:`FoldSpec`, its dict, or ``None`` for the defaults).
        lookback: the purge gap in rows; ``None`` = the features' lookback (``FeatureConfig().lookback``),
            which is what :func:`envs.market.load_market` uses.

    Returns:
        ``[{"fold": k, "train": [start, end], "validation": [start, end], "test": [start, end]}, ...]``.
    """
    if lookback is None:
        from envs.features import FeatureConfig

        lookback = FeatureConfig().lookback
    return [
        {"fold": k, **window_dates(splits)} for k, splits in enumerate(fold_ranges(data, lookback, as_fold_spec(folds)))
    ]


def resolve_experiment_path(name_or_path: str) -> Path:
    """``smoke`` -> ``CONFIG_DIR/smoke.yaml``; a ``.yaml``/``.yml`` path is used as given."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        return p
    return CONFIG_DIR / f"{name_or_path}.yaml"


def experiment_data_section(name_or_path: str) -> tuple[dict[str, Any], Path]:
    """The ``data`` section of an experiment file (``{}`` if absent) and the file's path.

    Raises:
        ValueError: a missing or unreadable file, or a ``data`` section that is not a mapping; the message
            names the file.
    """
    import yaml

    path = resolve_experiment_path(name_or_path)
    if not path.exists():
        found = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise ValueError(f"{path}: experiment not found; available: {found} (or a .yaml path)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    data = raw.get("data") if isinstance(raw, dict) else None
    if data is None:
        return {}, path
    if not isinstance(data, dict):
        raise ValueError(f"{path}: key 'data' must be a mapping, got {type(data).__name__}")
    return data, path


def experiment_folds(name_or_path: str) -> tuple[FoldSpec, str | None, Path]:
    """The fold layout, the data source (``None`` if the file gives none) and the path of an experiment."""
    data, path = experiment_data_section(name_or_path)
    folds = data.get("folds")
    if folds is not None and not isinstance(folds, dict):
        raise ValueError(f"{path}: key 'data.folds' must be a mapping, got {type(folds).__name__}")
    try:
        spec = FoldSpec.from_mapping(folds)
    except ValueError as exc:
        raise ValueError(f"{path}: key 'data.folds': {exc}") from None
    source = data.get("source")
    return spec, None if source is None else str(source), path


def fold_summary(data: PriceData, folds: FoldSpec, lookback: int) -> str:
    """Human-readable fold windows, as printed by ``python -m envs.data SOURCE --exp NAME``."""
    train = f"train {folds.train_days}" if folds.scheme == SCHEME_ROLLING else f"train >= {folds.train_days}"
    lines = [
        f"folds:    {folds.n_folds} {folds.scheme}, test {folds.test_days} / validation {folds.validation_days} / "
        f"{train} rows, purge gap {lookback} rows, last test ends {folds.end or 'at the data end'}"
    ]
    for k, splits in enumerate(fold_ranges(data, lookback, folds)):
        parts = [f"{s.name} {s.start_date.date()} .. {s.end_date.date()} ({s.n_rows})" for s in splits.values()]
        lines.append(f"  fold {k}   " + "   ".join(parts))
    return "\n".join(lines)
