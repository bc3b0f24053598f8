"""What a metric declares (``Metric``) and where metrics live in a training result; the registry of every
metric is ``trainer.metrics.registry``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trainer.metrics.measures import Run

# --- where values live in a training result (RLlib's nested result dict; Tune flattens with "/") ----------
PORTFOLIO = "portfolio"  # our top-level result section
VALIDATION = "validation"  # sub-section of PORTFOLIO holding the deterministic evaluation pass


@dataclass(frozen=True)
class Metric:
    """One metric.

    Attributes:
        key: its key in the result section, the backtest JSON and the summary.
        label: short column label.
        fmt: format spec for tables.
        unit: what the number is measured in.
        higher_is_better: True / False, or None where it is neither (a rate, a count).
        shown: where it is shown (``PROGRESS``, ``GAUGE``, ``REPORT``, ``SUMMARY``, ``BENCHMARK``).
        description: one line for dashboards and docs.
        path: where it lives below the ``portfolio`` result section (default: ``(key,)``).
        compute: for evaluation measures, the function of an evaluation run.
        gauge: the Ray gauge's name where it differs from ``portfolio_<path>``.
        relative: for measures against a benchmark, the function of (daily returns, benchmark's daily returns).
    """

    key: str
    label: str
    fmt: str
    unit: str
    higher_is_better: bool | None
    shown: frozenset[str]
    description: str
    path: tuple[str, ...] = ()
    compute: Callable[[Run], float] | None = None
    gauge: str = ""
    relative: Callable[[NDArray[np.float64], NDArray[np.float64]], float] | None = None

    @property
    def section_path(self) -> tuple[str, ...]:
        return self.path or (self.key,)

    @property
    def tune_key(self) -> str:
        """The flattened key Tune uses for it (``portfolio/...``)."""
        return "/".join((PORTFOLIO, *self.section_path))

    @property
    def gauge_name(self) -> str:
        """The Ray metric name (Prometheus adds the ``ray_`` prefix)."""
        return self.gauge or "portfolio_" + "_".join(self.section_path)

    @property
    def progress_label(self) -> str:
        """Its label in the progress table: validation-pass measures say so."""
        return f"val {self.label}" if self.section_path[:1] == (VALIDATION,) else self.label

    def format(self, value: Any) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "n/a"
        return format(value, self.fmt)

    def read(self, section: dict[str, Any]) -> Any:
        """Its value in a ``portfolio`` result section (None when absent)."""
        node: Any = section
        for part in self.section_path:
            node = node.get(part) if isinstance(node, dict) else None
        return node
