"""The ``rolling`` section of an experiment: how often a rolling round retrains, on which windows, and the
promotion rule that decides whether its candidate replaces the live model (``python -m trainer.rolling``).

A round for date D (the last date of its prices) validates on the last ``validation_days`` rows up to D and
trains on the window before them, ``expanding`` from the start of the data or ``rolling`` over the last
``train_days`` rows, with the feature lookback as the purge gap between them (``envs.folds.round_ranges``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from envs.folds import SCHEME_EXPANDING, SCHEMES, FoldSpec
from trainer.experiment.schema import Strict
from trainer.metrics import registry as M

# What a threshold is compared with: the paired Sharpe difference itself, or the lower end of its 95%
# block-bootstrap interval (a one-sided test at 2.5%: the gate then promotes only what is significantly better).
ESTIMATE = "estimate"
CI_LOW = "ci_low"
# a round selects its candidate on its validation window: sweep.metric must be one of these figures
VALIDATION_PREFIX = f"{M.PORTFOLIO}/{M.VALIDATION}/"


class PromoteIf(Strict):
    """The promotion rule: every condition that is set must hold on the round's validation window."""

    # the candidate's Sharpe minus Equal Weight's over the same days and costs must be at least this (None: any)
    min_sharpe_minus_ew: float | None = 0.0
    # the candidate's Sharpe must be above the live model's on the same days (a first round has no live model)
    beat_live: bool = True
    # the candidate's mean daily turnover (L1 over the asset weights) must be at most this (None: any)
    max_turnover_per_day: float | None = Field(None, gt=0)
    compare: Literal[ESTIMATE, CI_LOW] = ESTIMATE  # type: ignore[valid-type]


class RollingConfig(Strict):
    """A rolling round's schedule, windows and promotion rule."""

    every: int = Field(63, ge=1)  # trading days (rows of the prices) between rounds
    window: Literal[SCHEMES] = SCHEME_EXPANDING  # type: ignore[valid-type]
    validation_days: int = FoldSpec.validation_days
    train_days: int = FoldSpec.train_days  # rolling: the window; expanding: the minimum
    # start the candidate from the live model's network weights (its observation filter restarts on the new
    # training window, as every fold's does)
    warm_start: bool = False
    promote_if: PromoteIf = Field(default_factory=PromoteIf)

    @field_validator("validation_days", "train_days")
    @classmethod
    def _days(cls, v: Any, info: ValidationInfo) -> Any:
        return FoldSpec.check(str(info.field_name), v)
