"""The process's thread settings, in one place: ``OMP_NUM_THREADS`` for every process of ours, and the
learner's torch thread count.

On a 2-core machine torch's default thread pool in the learner process makes small SAC updates ~9x slower
(docs/rllib-notes.md, threads), so every process runs one thread per process unless the user set
``OMP_NUM_THREADS``. ``trainer/__init__`` imports this module first, so the variable is set before anything
of ours imports torch; ``worker_environment`` passes the same value to Ray's workers, and the learner sets
its own count (the CPUs Ray grants it) with ``set_torch_threads``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
OMP_NUM_THREADS = os.environ["OMP_NUM_THREADS"]


def worker_environment() -> dict[str, str]:
    """The environment variables Ray's worker processes (env runners, remote learners) start with."""
    return {"OMP_NUM_THREADS": OMP_NUM_THREADS}


def set_torch_threads(threads: int) -> None:
    """Set this process's torch intra-op threads (the learner: the CPUs Ray granted it)."""
    import torch

    torch.set_num_threads(int(threads))
