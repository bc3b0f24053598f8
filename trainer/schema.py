"""What every part of the experiment schema shares: the error that names the file and key, a closed model."""

from __future__ import annotations

import math
import numbers
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo


class ExperimentError(ValueError):
    """A bad experiment file or override; the message names the file and the key."""


class Strict(BaseModel):
    # Infinite or NaN numbers are never meaningful settings (YAML's .inf / .nan, or "inf" via --set).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def auto_or_number(value: Any, info: ValidationInfo) -> Any:
    """Accept ``"auto"`` or a finite real number, with one message for anything else (not one per union member)."""
    if value == "auto" or (
        isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    ):
        return value
    raise ValueError(f"{info.field_name} must be 'auto' or a finite number, got {value!r}")
