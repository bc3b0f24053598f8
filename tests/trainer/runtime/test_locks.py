"""trainer.runtime.locks with real processes: a held lock refuses a second holder (naming the first's pid), a
SIGKILLed holder blocks nobody, a released lock leaves no file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.runtime.locks import LOCK_FILE, LockedError, holder_text, lock_dir

HOLD = """
import sys, time
from pathlib import Path
from trainer.runtime.locks import lock_dir
lock_dir(Path(sys.argv[1]), lambda pid: "busy")
print("locked", flush=True)
time.sleep(600)
"""


def _busy(pid: int | None) -> str:
    return f"taken{holder_text(pid)}"


def _holder(directory: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "locked\n"
    return proc


def test_a_held_lock_refuses_another_process_and_a_killed_holder_blocks_nobody(tmp_path):
    directory = tmp_path / "new" / "run"  # created by the lock
    holder = _holder(directory)
    try:
        with pytest.raises(LockedError) as info:
            lock_dir(directory, _busy)
        assert str(info.value) == f"taken (pid {holder.pid})"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (directory / LOCK_FILE).read_text() == f"{holder.pid}\n"  # left behind by the killed holder ...
    lock = lock_dir(directory, _busy)  # ... and it holds no lock
    assert (directory / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    lock.release()
    assert list(directory.iterdir()) == []  # released: no file left
    lock.release()  # twice is harmless


def test_a_lock_released_while_another_process_opened_its_file_is_not_shared(tmp_path):
    """The holder removes the file and unlocks; a process that opened the old file gets that lock, sees the path
    no longer names it, and locks the new file at the path: never two holders."""
    first = lock_dir(tmp_path, _busy)
    stale = os.open(tmp_path / LOCK_FILE, os.O_RDWR)  # as a process that opened the file before the release
    first.release()
    import fcntl

    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the old inode's lock is free: a naive locker would hold it
    second = lock_dir(tmp_path, _busy)  # lock_dir checks the inode, so it locks the file at the path instead
    assert os.fstat(stale).st_ino != os.stat(tmp_path / LOCK_FILE).st_ino
    with pytest.raises(LockedError):
        lock_dir(tmp_path, _busy)
    os.close(stale)
    second.release()


def test_the_holder_pid_is_unknown_until_written(tmp_path):
    import fcntl

    fd = os.open(tmp_path / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # locked, nothing written yet (another process between flock and write)
    try:
        with pytest.raises(LockedError) as info:
            lock_dir(tmp_path, _busy)
        assert str(info.value) == "taken"
    finally:
        os.close(fd)
