"""Our checkpoints, in one place: layout, validity checks, atomic save, and loading the frozen policy.

A checkpoint is RLlib's checkpoint directory (``rllib_checkpoint.json`` and the component folders) plus our
files: ``portfolio_state.json`` (counters, last evaluation, tickers, the env config and experiment, training
curves) and the replay buffer (``trainer.buffer``). ``PortfolioSAC.save_to_path`` writes them;
``save_atomic`` writes the whole directory under a temporary name and renames it, so a checkpoint directory
either is complete or does not exist. ``load_policy`` restores the deterministic policy with the observation
filter statistics frozen as saved, without building an Algorithm or a Ray cluster.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from trainer.evaluation import Policy, make_policy

STATE_FILE = "portfolio_state.json"
RLLIB_CHECKPOINT_FILE = "rllib_checkpoint.json"
CHECKPOINT_PREFIX = "checkpoint_"
_TMP_PREFIX = ".tmp-"


class CheckpointError(ValueError):
    """A missing, foreign or unusable checkpoint; the message names the directory and the fix."""


def read_state(path: Path | str) -> dict[str, Any]:
    """Check that ``path`` is a checkpoint of this project and return its ``portfolio_state.json``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found; pass a checkpoint directory (runs/.../checkpoint_NNNNNN)")
    if not path.is_dir() or not (path / RLLIB_CHECKPOINT_FILE).exists():
        raise CheckpointError(f"{path}: not an RLlib checkpoint directory (no {RLLIB_CHECKPOINT_FILE})")
    state_file = path / STATE_FILE
    if not state_file.exists():
        raise CheckpointError(
            f"{path}: not a checkpoint of this project (no {STATE_FILE}); train it with trainer.train or trainer.tune"
        )
    try:
        state = json.loads(state_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{state_file}: damaged ({exc}); use another checkpoint of the run") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{state_file}: damaged (not a JSON object); use another checkpoint of the run")
    return state


def read_usable_state(path: Path | str) -> dict[str, Any]:
    """``read_state``, refusing a checkpoint written after training diverged (its policy is not usable)."""
    state = read_state(path)
    if state.get("diverged"):
        raise CheckpointError(
            f"{path}: this checkpoint was written after training diverged ({state['diverged']}); "
            "use an earlier checkpoint of the run"
        )
    return state


def write_state(path: Path | str, state: dict[str, Any]) -> None:
    """Write ``portfolio_state.json`` into a checkpoint directory."""
    (Path(path) / STATE_FILE).write_text(json.dumps(state, indent=2, default=str))


def save_atomic(algo: Any, checkpoint_dir: Path, iteration: int, num_to_keep: int | None) -> Path:
    """Save ``algo`` to ``checkpoint_dir/checkpoint_<iteration>`` via a temporary directory and a rename.

    Keeps the newest ``num_to_keep`` checkpoints of the directory (all when None).
    """
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir / f"{CHECKPOINT_PREFIX}{iteration:06d}"
    tmp = checkpoint_dir / f"{_TMP_PREFIX}{final.name}-{time.time_ns()}"
    algo.save_to_path(str(tmp))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    if num_to_keep:
        for old in list_checkpoints(checkpoint_dir)[:-num_to_keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """The complete checkpoints of a run's checkpoint directory, oldest first."""
    return sorted(p for p in checkpoint_dir.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir())


def load_policy(checkpoint: Path | str) -> tuple[Policy, dict[str, Any]]:
    """Restore the RL module and the frozen filter statistics of a checkpoint, without building an Algorithm.

    Returns:
        ``(policy, portfolio_state)``: the deterministic policy on raw observations and the checkpoint's
        ``portfolio_state.json``.
    """
    from ray.rllib.core import (
        COMPONENT_ENV_RUNNER,
        COMPONENT_ENV_TO_MODULE_CONNECTOR,
        COMPONENT_LEARNER,
        COMPONENT_LEARNER_GROUP,
        COMPONENT_RL_MODULE,
        DEFAULT_MODULE_ID,
    )
    from ray.rllib.core.rl_module.rl_module import RLModule

    from trainer.connectors import FrozenObsFilter, find_obs_filter

    ck = Path(checkpoint)
    state = read_state(ck)
    module = RLModule.from_checkpoint(
        ck / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID
    )
    e2m_dir = ck / COMPONENT_ENV_RUNNER / COMPONENT_ENV_TO_MODULE_CONNECTOR
    filt = None
    if e2m_dir.exists():
        from ray.rllib.connectors.env_to_module import EnvToModulePipeline

        filt = find_obs_filter(EnvToModulePipeline.from_checkpoint(e2m_dir))
    return make_policy(module, FrozenObsFilter.of(filt)), state
