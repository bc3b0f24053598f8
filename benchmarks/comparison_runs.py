"""The comparison runs: Stable-Baselines3 SAC (``benchmarks.sb3_reference`` in a subprocess, from a throwaway
install, at each thread count) and a bare eager-PyTorch SAC update script, both on the reference configuration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.trainer_runs import env_dims


def _sb3(sb3_path: str, steps: int, threads: int) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([sb3_path, str(root), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = str(threads)
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.sb3_reference", "--steps", str(steps), "--threads", str(threads)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
    )
    if res.returncode == 0:
        return json.loads(res.stdout.strip().splitlines()[-1])
    return {"sb3_error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}


def sb3_turn(sb3_path: str, steps: int, thread_counts: list[int]) -> dict[str, Any]:
    """SB3 at each thread count (nothing of ours running), and the best of them."""
    row: dict[str, Any] = {}
    for threads in thread_counts:
        out = _sb3(sb3_path, steps, threads)
        if "sb3_error" in out:
            row[f"sb3_error_{threads}_threads"] = out["sb3_error"]
            continue
        row[f"sb3_trained_samples_per_s_{threads}_threads"] = out["sb3_trained_samples_per_s"]
    per_count = {t: f"sb3_trained_samples_per_s_{t}_threads" for t in thread_counts}
    measured = {t: row[key] for t, key in per_count.items() if key in row}
    if measured:
        best = max(measured, key=measured.__getitem__)
        row.update(sb3_trained_samples_per_s=measured[best], sb3_best_threads=float(best))
    return row


def sb3_before_and_after(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """One round's SB3 figures from its turn before ours and its turn after: each turn's under ``sb3_before_``
    and ``sb3_after_``, and SB3 at its best thread count in its better turn unsuffixed (what ours is divided
    by: a slow minute during one of SB3's turns does not count against it)."""
    row: dict[str, Any] = {}
    for when, turn in (("before", before), ("after", after)):
        row.update({k.replace("sb3_", f"sb3_{when}_", 1): v for k, v in turn.items()})
    turns = [t for t in (before, after) if "sb3_trained_samples_per_s" in t]
    if turns:
        best = max(turns, key=lambda t: t["sb3_trained_samples_per_s"])
        row.update(
            sb3_trained_samples_per_s=best["sb3_trained_samples_per_s"], sb3_best_threads=best["sb3_best_threads"]
        )
        for key, value in best.items():
            if key.startswith("sb3_trained_samples_per_s_"):
                row[key] = value
    return row


def raw_eager_turn(script: Path) -> str:
    """The output of a bare eager-PyTorch SAC update script (arguments: threads, batch, obs and action sizes)."""
    args = ["1", "256", *(str(n) for n in env_dims())]
    res = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    return res.stdout.strip()
