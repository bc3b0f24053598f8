"""A run's directory: what ``trainer.train`` writes there, claiming it for a new run, and resuming in it.

A run first locks its directory (``trainer.runtime.locks``), then checks it: a new run refuses a non-empty
directory unless ``--overwrite`` (which moves the previous run's own files aside and deletes nothing); a resume
in the run's own directory needs its latest checkpoint. Nothing is changed until the run is accepted (the
cluster can place it, the algorithm is built): then the previous run's files are moved aside, or, on a resume,
killed saves' temporary directories are removed and the progress rows of iterations after the checkpoint move
to ``progress.superseded.jsonl`` so each iteration is listed once (what a resume may change:
``trainer.experiment.stored``). A run refused before that leaves the directory as it found it (``RunLock.undo``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.metrics import registry as M
from trainer.runtime.locks import LOCK_FILE, holder_text, lock_dir

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


class WriteFailed(Exception):
    """A file of a running run could not be written (a full disk, a quota); the message names the file, the
    run's last complete checkpoint and how to continue."""


def json_default(x: Any) -> Any:
    """For ``json.dumps`` of a run's metrics: numbers (numpy's too) as floats, anything else as text."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a write that failed (a full disk) leaves no partial file
        raise


# --- the run directory ---------------------------------------------------------------------------------------
class RunLock:
    """A run directory this command holds (``lock_run_dir``), and how to leave it as it was found."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.fresh = not out_dir.exists()  # created by this command: removed again if the run never starts
        self._lock = lock_dir(
            out_dir,
            lambda pid: (
                f"{out_dir}: another trainer.train run is writing there{holder_text(pid)}; wait for it to "
                "finish, or pass another --out"
            ),
        )
        # Library log output until the run is accepted goes to a temporary file outside the run directory (Ray's
        # start-up included), then joins the run's log: a refused run leaves no line in its directory.
        fd, name = tempfile.mkstemp(prefix=f"{out_dir.name}-", suffix=f"-{LOG_FILE}")
        os.close(fd)
        self.pending_log = Path(name)
        self.accepted = False  # set once the run starts changing the directory
        self._prepare: Callable[[], list[str]] = list

    def check(self, overwrite: bool, resume: Path | None = None, iteration: int = 0) -> None:
        """Check the directory now that no other run can write there (nothing is changed yet).

        A new run (or a resume into another ``--out``) needs it empty unless ``overwrite`` (``check_run_dir``); a
        resume in the checkpoint's own run directory needs the run's latest checkpoint (``check_resume_dir``).

        Raises:
            RunError: naming the directory and the fix.
        """
        out_dir = self.out_dir
        if resume is None or out_dir.resolve() != resume.parent.parent.resolve():
            check_run_dir(out_dir, overwrite)
            self._prepare = lambda: move_previous_run(out_dir)
            return
        if overwrite:
            raise RunError(
                f"--overwrite with --resume in the checkpoint's own run directory {out_dir}: drop --overwrite"
            )
        check_resume_dir(resume, iteration)
        self._prepare = lambda: prepare_resume_dir(out_dir, iteration)

    def accept(self, experiment_text: str, verbose: bool = False) -> list[str]:
        """The run starts: the directory is made ready (``check``'s plan), the run's experiment written there (a
        resume's with its overrides) and the log so far appended to the run's log, which takes the library log
        output from now on. Returns notes on what was moved or removed."""
        from trainer.runtime.console import quiet_logging

        self.accepted = True
        notes = self._prepare()
        write_atomic(self.out_dir / EXPERIMENT_FILE, experiment_text)
        with open(self.out_dir / LOG_FILE, "ab") as log:
            log.write(self.pending_log.read_bytes())
        quiet_logging(self.out_dir / LOG_FILE, verbose)
        self.pending_log.unlink(missing_ok=True)
        return notes

    def undo(self) -> None:
        """For a run refused before it was accepted: its lock goes, and the directory if it created it."""
        from trainer.runtime.console import quiet_logging

        quiet_logging(None)  # library log output stops going to the pending log (errors still reach the terminal)
        self.release()
        if self.fresh:
            with contextlib.suppress(OSError):  # not empty: something else was written there, keep it
                self.out_dir.rmdir()

    def release(self) -> None:
        self._lock.release()
        self.pending_log.unlink(missing_ok=True)


def lock_run_dir(out_dir: Path) -> RunLock:
    """Create ``out_dir`` if needed and hold its lock for this command's life.

    Raises:
        LockedError: another ``trainer.train`` holds it (its process id is named).
    """
    return RunLock(out_dir)


def _entries(out_dir: Path) -> list[Path]:
    return sorted(p for p in out_dir.iterdir() if p.name != LOCK_FILE) if out_dir.is_dir() else []


def check_run_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a run directory a new run cannot use (a file, or another run's files without ``overwrite``).

    Raises:
        RunError: naming the directory, what is in it and the fix.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"{out_dir}: not a directory; pass a directory as --out")
    entries = _entries(out_dir)
    if entries and not overwrite:
        shown = ", ".join(p.name for p in entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise RunError(
            f"{out_dir}: run directory is not empty ({shown}); pass another --out, continue its run with "
            "--resume <checkpoint>, or pass --overwrite to start over there (the previous run's files are moved "
            f"to {PREVIOUS_RUN_PREFIX}<time>/, nothing is deleted)"
        )


def move_previous_run(out_dir: Path) -> list[str]:
    """Make a checked ``out_dir`` (``check_run_dir``) ready for a new run; returns notes on what was moved.

    Stale temporary checkpoint directories are removed and the previous run's own entries (``RUN_ENTRIES`` and
    ``backtest_*``) move to ``previous-run-<time>/``; other files stay where they are.
    """
    from trainer.runtime.checkpoint import remove_stale_temp_dirs

    entries = _entries(out_dir)
    if not entries:
        return []
    notes = [stale_note(p) for p in remove_stale_temp_dirs(out_dir / CHECKPOINTS_DIR)]
    ours = [p for p in entries if p.name in RUN_ENTRIES or p.name.startswith(BACKTEST_PREFIX)]
    if ours:
        dest = out_dir / f"{PREVIOUS_RUN_PREFIX}{dt.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
        dest.mkdir()
        for p in ours:
            p.rename(dest / p.name)
        notes.append(f"--overwrite: moved the previous run's {', '.join(p.name for p in ours)} to {dest}")
    return notes


def check_resume_dir(checkpoint: Path, iteration: int) -> None:
    """A resume in the checkpoint's own run directory continues from the run's latest checkpoint only.

    Raises:
        RunError: a later checkpoint would be overwritten; naming them and the fix.
    """
    from trainer.runtime.checkpoint import checkpoint_iteration, list_checkpoints

    later = [p.name for p in list_checkpoints(checkpoint.parent) if (checkpoint_iteration(p) or 0) > iteration]
    if later:
        raise RunError(
            f"{checkpoint}: its run has later checkpoints ({', '.join(later)}); resume from the latest, or "
            "continue from this one in a new run directory with --out DIR"
        )


def prepare_resume_dir(run_dir: Path, iteration: int) -> list[str]:
    """Once a resume in its own run directory is accepted: remove killed saves' temporary directories and
    move the progress rows of the iterations it redoes aside. Returns notes on what was done."""
    from trainer.runtime.checkpoint import remove_stale_temp_dirs

    notes = [stale_note(p) for p in remove_stale_temp_dirs(run_dir / CHECKPOINTS_DIR)]
    moved = supersede_progress(run_dir / PROGRESS_FILE, iteration)
    if moved:
        notes.append(
            f"moved {moved} row(s) after iteration {iteration} from {run_dir / PROGRESS_FILE} to "
            f"{run_dir / SUPERSEDED_FILE}: the resumed run redoes those iterations"
        )
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


def resume_command(checkpoint: Path | str, additional_steps: int | None = None) -> str:
    """The command line that continues a run from ``checkpoint``."""
    more = f" --additional-steps {additional_steps}" if additional_steps else ""
    return f"python -m trainer.train --resume {checkpoint}{more}"


def write_failed(path: Path, exc: OSError, iteration: int, last_ckpt: Path | None, remaining: int) -> str:
    """The message of a run stopped because ``path`` could not be written, with how to continue.

    Args:
        path: the file or checkpoint that could not be written.
        exc: why.
        iteration: the iteration the run reached.
        last_ckpt: the run's last complete checkpoint (None: none was written).
        remaining: env steps of the run's budget after ``last_ckpt``.
    """
    head = f"{path}: not written ({exc.strerror or exc}); training stopped at iteration {iteration}"
    if last_ckpt is None:
        return f"{head}; no checkpoint was written: make room, then start the run again (--overwrite in that --out)"
    return (
        f"{head}; the last complete checkpoint is {last_ckpt}, intact: make room, then continue with: "
        f"{resume_command(last_ckpt, max(remaining, 0) or None)}"
    )
