"""A long run's terminal: one progress line per iteration with its ETA, and a Ctrl-C / SIGTERM that finishes
the iteration and writes a final checkpoint instead of losing them."""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
from typing import Any

from trainer.metrics import registry as M

NOT_STARTED = "{} received before training started: nothing was trained; run the command again"


class StoppedBeforeStart(Exception):
    """A signal came before a run was built (while its schedule was timed): nothing was trained or written."""


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between iterations."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def signal(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            print(f"\n{signal.Signals(signum).name} received again: still finishing the checkpoint...", flush=True)
            return
        self.signum = signum
        print(
            f"\n{self.signal} received: finishing this iteration, then writing a final checkpoint...",
            flush=True,
        )

    def install(self) -> None:
        """Handle SIGINT and SIGTERM. Call again after ``ray.init``, which installs its own SIGTERM
        handler (it exits at once, losing the iteration and the final checkpoint)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self)
            signal.signal(signal.SIGTERM, self)

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process stopped by a signal: 128 + its number."""
        return 128 + (self.signum or 0)


def _fmt_eta(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    return str(dt.timedelta(seconds=int(seconds)))


def progress_line(iteration: int, p: dict[str, Any], target: int, eta_s: float) -> str:
    """One line per iteration: progress, ETA, then the registry's progress metrics."""
    steps = p[M.ENV_STEPS]
    cells = [f"[iter {iteration:4d}] env steps {steps:,}/{target:,} ({min(100.0, 100 * steps / max(target, 1)):3.0f}%)"]
    cells.append(f"ETA {_fmt_eta(eta_s)}")
    for m in M.shown_in(M.PROGRESS):
        if m.key != M.ENV_STEPS:
            cells.append(f"{m.progress_label} {m.format(m.read(p))}")
    return " | ".join(cells)


class Eta:
    """Remaining time from the env-step rate since the end of the first iteration (start-up excluded)."""

    def __init__(self) -> None:
        self._start: tuple[float, int] | None = None

    def __call__(self, steps: int, target: int) -> float:
        now = time.perf_counter()
        if self._start is None:
            self._start = (now, steps)
            return float("inf")
        elapsed, done = now - self._start[0], steps - self._start[1]
        return (target - steps) * elapsed / done if done > 0 and elapsed > 0 else float("inf")
