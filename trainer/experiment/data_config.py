"""The ``data`` section of an experiment: prices, windows (split dates or walk-forward folds), env settings.

The portfolio settings mirror ``envs.settings.PortfolioSettings`` and the folds ``envs.folds.FoldSpec``, which
declare their defaults and rules once; ``DataConfig.env_config`` is what each env runner builds its env from.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from envs.data import SP500, SPLITS, TRAIN
from envs.folds import SCHEMES, FoldSpec
from envs.rewards import REWARD_NAMES
from envs.settings import ACTIONS, SETTING_NAMES, TILT_REFERENCES, PortfolioSettings
from trainer.experiment.schema import Strict


class FoldsConfig(Strict):
    """Walk-forward folds (``envs.folds.FoldSpec``: defaults and rules live there)."""

    n_folds: int = FoldSpec.n_folds
    scheme: Literal[SCHEMES] = FoldSpec.scheme  # type: ignore[valid-type]
    test_days: int = FoldSpec.test_days
    validation_days: int = FoldSpec.validation_days
    train_days: int = FoldSpec.train_days  # rolling: the window; expanding: the minimum
    end: dt.date | None = None  # the last test window ends on or before this date (None: the data end)

    @field_validator("n_folds", "test_days", "validation_days", "train_days")
    @classmethod
    def _check(cls, v: Any, info: ValidationInfo) -> Any:
        return FoldSpec.check(str(info.field_name), v)

    def spec(self) -> FoldSpec:
        return FoldSpec.from_mapping(self.model_dump(mode="json"))


class DataConfig(Strict):
    """Which prices, which windows, which costs, actions and reward: passed to the env (small values only).

    The portfolio settings mirror ``envs.settings.PortfolioSettings``, which declares their defaults and
    validates them (one rule, one message, whether the env is built from YAML or from a dict).
    """

    source: str = SP500
    date_format: str | None = None  # strptime format of the file's dates; None = ISO or the one that fits
    sort_dates: bool = False  # sort rows by date instead of refusing dates that are not increasing
    split_dates: dict[Literal[SPLITS], tuple[dt.date, dt.date]] | None = None  # type: ignore[valid-type]
    folds: FoldsConfig = Field(default_factory=FoldsConfig)
    fold: int | None = Field(None, strict=True)  # a walk-forward fold of ``folds`` instead of the plain split
    cost_bps: float = PortfolioSettings.cost_bps
    reward: Literal[REWARD_NAMES] = PortfolioSettings.reward  # type: ignore[valid-type]
    episode_len: int = PortfolioSettings.episode_len
    temperature: float = PortfolioSettings.temperature
    action: Literal[ACTIONS] = PortfolioSettings.action  # type: ignore[valid-type]
    tilt_reference: Literal[TILT_REFERENCES] = PortfolioSettings.tilt_reference  # type: ignore[valid-type]
    tilt_scale: float = PortfolioSettings.tilt_scale
    no_trade_band: float = PortfolioSettings.no_trade_band
    rebalance_fraction: float = PortfolioSettings.rebalance_fraction
    max_weight: float | None = PortfolioSettings.max_weight  # position limits (envs.limits); None: none
    max_cash: float | None = PortfolioSettings.max_cash
    max_turnover: float | None = PortfolioSettings.max_turnover
    # the observed feature sets, one of envs.settings.FEATURE_SETS ("asset+rank+market": the names joined by +)
    features: str = PortfolioSettings.features

    @field_validator("source")
    @classmethod
    def _absolute_path(cls, v: str) -> str:
        # A relative file path is the user's current directory's file. Made absolute here, so that Ray's trial
        # and env-runner processes (which run in other directories) and a later resume or backtest from
        # elsewhere read the same file, and the run's saved experiment.yaml names it unambiguously.
        if v == SP500 or "://" in v:
            return v
        return str(Path(v).expanduser().absolute())

    @field_validator("split_dates")
    @classmethod
    def _all_splits(cls, v: dict | None) -> dict | None:
        # without test: no test window (a rolling round's windows: its test is the future)
        if v is not None and set(v) not in (set(SPLITS), set(SPLITS[:-1])):
            raise ValueError(
                f"give all three of {', '.join(SPLITS[:-1])} and {SPLITS[-1]} as [start, end] (or {SPLITS[0]} and "
                f"{SPLITS[1]} only: no {SPLITS[-1]} window)"
            )
        return v

    @field_validator("features", mode="before")  # before the type: a list or number gets the choices too
    @classmethod
    def _features(cls, v: Any) -> Any:
        return PortfolioSettings.check("features", v)

    @field_validator(*SETTING_NAMES)  # after the type: the names of a Literal pass its check too
    @classmethod
    def _setting(cls, v: Any, info: ValidationInfo) -> Any:
        return PortfolioSettings.check(str(info.field_name), v)

    @model_validator(mode="after")
    def _fold_in_range(self) -> DataConfig:
        if self.fold is not None:
            if self.split_dates is not None:
                raise ValueError(
                    "give data.split_dates or data.fold, not both: a fold's windows replace the split dates"
                )
            if not 0 <= self.fold < self.folds.n_folds:
                raise ValueError(
                    f"data.fold must be in 0..{self.folds.n_folds - 1} (data.folds.n_folds is {self.folds.n_folds}), "
                    f"got {self.fold}"
                )
        return self

    def settings(self) -> PortfolioSettings:
        """The env's portfolio settings."""
        return PortfolioSettings(**{name: getattr(self, name) for name in SETTING_NAMES})

    def env_config(self, split: str = TRAIN) -> dict[str, Any]:
        """The env's keyword arguments (see ``envs.portfolio.PortfolioEnv``): small values only, so each env
        runner loads the prices and computes its windows (the plain split or fold ``fold``) itself."""
        dates = None
        if self.split_dates is not None:
            dates = {k: [a.isoformat(), b.isoformat()] for k, (a, b) in self.split_dates.items()}
        return {
            "data": self.source,
            "date_format": self.date_format,
            "sort_dates": self.sort_dates,
            "split": split,
            "split_dates": dates,
            "folds": self.folds.spec().as_dict(),
            "fold": self.fold,
            **self.settings().as_dict(),
        }
