"""One writer per directory: an OS advisory lock held for a command's life.

``trainer.train`` locks its run directory and ``trainer.tune`` its sweep directory before they look at what is
there, so two commands started into one directory at once cannot both pass the checks and then write over each
other: the second is refused at once, naming the first one's process. The lock is ``fcntl.flock`` on a file in
the directory: the operating system releases it when the holder's process ends, however it ends (a SIGKILL or a
crash included), so a killed command never blocks the next one; the file it leaves behind holds no lock.

It protects local folders (and a network file system that implements ``flock``). Object storage (``s3://``,
``gs://``) has no such lock: a sweep stored there locks its local summary folder only, so two sweeps of one
experiment started from this machine exclude each other, but two machines writing one bucket are not detected.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from trainer.runtime.errors import ExperimentError

LOCK_FILE = ".lock"  # in the locked directory; never moved, listed or counted as the directory's content


class LockedError(ExperimentError):
    """Another live process holds the directory's lock; the message names it and what to do instead."""


class DirLock:
    """The held lock of one directory (``lock_dir``); ``release`` gives it back."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    def release(self) -> None:
        """Remove the lock file, then unlock. Removing it first, while still held, is safe: a process that
        opened the old file and gets its lock afterwards sees that the path no longer names it and retries
        (``lock_dir``)."""
        if self._fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)  # closing the last descriptor releases the flock
        self._fd = -1


def _holder_pid(fd: int) -> int | None:
    """The process id the holder wrote into the lock file (None when it has not written it yet)."""
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").split()
    except OSError:
        return None
    return int(text[0]) if text and text[0].isdigit() else None


def lock_dir(directory: Path, busy: Callable[[int | None], str]) -> DirLock:
    """Create ``directory`` if needed and take its lock, without waiting.

    Args:
        directory: the directory to lock.
        busy: the refusal's message, given the holder's process id (None when unknown).

    Raises:
        LockedError: another process holds the lock.
        OSError: the directory or its lock file cannot be created (the caller checked the path first).
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder_pid(fd)
            os.close(fd)
            raise LockedError(busy(pid)) from None
        # The holder may have released (and removed) the file between our open and our flock: the lock counts
        # only if the path still names the file we locked.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return DirLock(path, fd)


def holder_text(pid: int | None) -> str:
    """`` (pid N)`` for a refusal's message, or nothing when the holder's id is not known."""
    return f" (pid {pid})" if pid is not None else ""
