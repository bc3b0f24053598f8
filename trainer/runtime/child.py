"""A command run as a child process that a Ctrl-C or SIGTERM of ours reaches exactly once.

A command that runs another one (``trainer.rolling`` runs ``trainer.train`` per seed) wants the child to stop
the way it stops on its own (finish the iteration, save a final checkpoint, exit 130 / 143), and to know that
it did. The child runs in its own session, so a Ctrl-C at the terminal reaches only us; we forward SIGINT and
SIGTERM to it. On Linux the child also gets SIGTERM if we are killed (SIGKILL), so that it never trains on
alone. Its stdout is ours; its stderr is copied to ours line by line, except its ``error: ...`` line (the
one-line refusal of bad input), which is returned for the caller to report once.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trainer.runtime.progress import StopFlag

ERROR_PREFIX = "error: "
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ForwardingStopFlag(StopFlag):
    """A ``StopFlag`` that also passes each SIGINT / SIGTERM on to the running child."""

    def __init__(self) -> None:
        super().__init__()
        self.child: subprocess.Popen | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        super().__call__(signum, frame)
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signum)


@dataclass(frozen=True)
class ChildResult:
    """How the child ended: its exit code and its ``error: ...`` line (without the prefix), if it printed one."""

    returncode: int
    error: str | None


def _die_with_parent() -> None:
    """In the child, before it runs: SIGTERM when the parent dies (Linux; elsewhere nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def run_child(cmd: Sequence[str], flag: ForwardingStopFlag, env: dict[str, str] | None = None) -> ChildResult:
    """Run ``cmd`` to its end, forwarding our signals to it through ``flag`` (installed by the caller).

    A signal that came before the child started is passed on as soon as it runs, so the child stops at its
    first chance (``trainer.train`` then exits before training anything).
    """
    sys.stdout.flush()
    child = subprocess.Popen(
        list(cmd),
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    flag.child = child
    if flag.signum is not None:
        child.send_signal(flag.signum)
    errors: list[str] = []

    def copy_stderr() -> None:
        assert child.stderr is not None
        for line in child.stderr:
            if line.startswith(ERROR_PREFIX):
                errors.append(line.rstrip("\n").removeprefix(ERROR_PREFIX))
            else:
                sys.stderr.write(line)
                sys.stderr.flush()

    reader = threading.Thread(target=copy_stderr, daemon=True)
    reader.start()
    try:
        returncode = child.wait()
    finally:
        reader.join(timeout=10)
        flag.child = None
    return ChildResult(returncode, errors[-1] if errors else None)
