"""What every part of the experiment schema shares: the error that names the file and key, a closed model."""

from __future__ import annotations

import math
import numbers
import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from trainer.runtime.errors import ExperimentError

__all__ = ["ExperimentError", "Strict", "auto_or_number", "benchmark_spec", "value_types"]


class Strict(BaseModel):
    # Infinite or NaN numbers are never meaningful settings (YAML's .inf / .nan, or "inf" via --set).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads true / false as 1 / 0 for a number field: a boolean there is a mistake
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field and any(t in (int, float) for t in value_types(field.annotation)):
            raise ValueError(f"{info.field_name} must be a number, got {str(value).lower()}")
        return value


def value_types(annotation: Any) -> list[Any]:
    """The types a field's annotation admits besides None: ``int | None`` -> ``[int]``, ``float`` -> ``[float]``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def auto_or_number(value: Any, info: ValidationInfo) -> Any:
    """Accept ``"auto"`` or a finite real number, with one message for anything else (not one per union member)."""
    if value == "auto" or (
        isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    ):
        return value
    raise ValueError(f"{info.field_name} must be 'auto' or a finite number, got {value!r}")


def benchmark_spec(value: str | None) -> str | None:
    """A benchmark series in its form, ``sp500`` or ``FILE:COLUMN`` (``envs.benchmark``), or None; the file is read
    where the benchmark is used (a sweep's driver checks it covers every test window before any trial starts)."""
    from envs.benchmark import parse_benchmark

    if value is not None:
        parse_benchmark(value)
    return value
