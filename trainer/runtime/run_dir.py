"""A run's directory: what ``trainer.train`` writes there, claiming it for a new run, and resuming in it.

A new run refuses a non-empty directory unless ``--overwrite`` (which moves the previous run's own files
aside and deletes nothing). On a resume, the progress rows of iterations after its checkpoint move to
``progress.superseded.jsonl`` so each iteration is listed once (what a resume may change:
``trainer.experiment.stored``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from trainer.metrics import registry as M

EXPERIMENT_FILE = "experiment.yaml"
PROGRESS_FILE = "progress.jsonl"
SUPERSEDED_FILE = "progress.superseded.jsonl"  # rows of iterations redone after a resume
SUMMARY_FILE = "summary.json"
LOG_FILE = "train.log"
CHECKPOINTS_DIR = "checkpoints"
# What a run writes into its run directory (with the backtests' default output): --overwrite moves these.
RUN_ENTRIES = (EXPERIMENT_FILE, PROGRESS_FILE, SUPERSEDED_FILE, SUMMARY_FILE, LOG_FILE, CHECKPOINTS_DIR)
BACKTEST_PREFIX = "backtest_"
PREVIOUS_RUN_PREFIX = "previous-run-"


class RunError(ValueError):
    """A run directory or resume request that cannot be honoured; the message says which and the fix."""


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- the run directory ---------------------------------------------------------------------------------------
def claim_run_dir(out_dir: Path, overwrite: bool) -> list[str]:
    """Make ``out_dir`` ready for a new run; returns notes on what was moved or removed.

    A missing or empty directory is used as it is. A non-empty one is refused unless ``overwrite``: then
    stale temporary checkpoint directories are removed and the previous run's own entries (``RUN_ENTRIES``
    and ``backtest_*``) move to ``previous-run-<time>/``; other files stay where they are.

    Raises:
        RunError: the directory is not empty and ``overwrite`` is False.
    """
    from trainer.runtime.checkpoint import remove_stale_temp_dirs

    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"{out_dir}: not a directory; pass a directory as --out")
    entries = sorted(out_dir.iterdir()) if out_dir.is_dir() else []
    if not entries:
        return []
    if not overwrite:
        shown = ", ".join(p.name for p in entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise RunError(
            f"{out_dir}: run directory is not empty ({shown}); pass another --out, continue its run with "
            "--resume <checkpoint>, or pass --overwrite to start over there (the previous run's files are moved "
            f"to {PREVIOUS_RUN_PREFIX}<time>/, nothing is deleted)"
        )
    notes = [stale_note(p) for p in remove_stale_temp_dirs(out_dir / CHECKPOINTS_DIR)]
    ours = [p for p in entries if p.name in RUN_ENTRIES or p.name.startswith(BACKTEST_PREFIX)]
    if ours:
        dest = out_dir / f"{PREVIOUS_RUN_PREFIX}{dt.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
        dest.mkdir()
        for p in ours:
            p.rename(dest / p.name)
        notes.append(f"--overwrite: moved the previous run's {', '.join(p.name for p in ours)} to {dest}")
    return notes


def stale_note(path: Path) -> str:
    return f"removed {path}: a temporary checkpoint directory left by a save that was killed"


def supersede_progress(progress: Path, iteration: int) -> int:
    """Before resuming from ``iteration``: move the later rows of ``progress`` to ``progress.superseded.jsonl``.

    Those iterations are redone from the checkpoint, so ``progress.jsonl`` keeps one row per iteration, in
    order. An unreadable row (a line cut by a kill) moves too. Returns the number of rows moved.
    """
    if not progress.exists():
        return 0
    keep, moved = [], []
    for line in progress.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row_iteration = int(json.loads(line)[M.TRAINING_ITERATION])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            moved.append(line)
            continue
        (keep if row_iteration <= iteration else moved).append(line)
    if moved:
        with open(progress.with_name(SUPERSEDED_FILE), "a") as fh:
            fh.write("".join(f"{line}\n" for line in moved))
        write_atomic(progress, "".join(f"{line}\n" for line in keep))
    return len(moved)
