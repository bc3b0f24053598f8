"""The experiment stored in a run directory: where a new run goes by default, and what a resume may change."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from trainer.experiment.config import Experiment
from trainer.experiment.loading import ExperimentError, apply_overrides, experiment_from_dict, load_raw
from trainer.experiment.resources import schedule_overrides
from trainer.runtime.run_dir import CHECKPOINTS_DIR, EXPERIMENT_FILE

# Settings a resume may change: budget, checkpointing, evaluation interval, divergence guard, resources
# and the replay ratio. Everything else (data, model, SAC, reward, filter, seed) defines the problem.
SAFE_ON_RESUME = (
    "description",
    "stopping.*",
    "checkpoint.*",
    "evaluation.interval",
    "divergence.*",
    "resources.*",
    "sac.training_intensity",
)


def default_out_dir(exp: Experiment) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / exp.name / f"{stamp}-seed{exp.seed}"


def _get(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _safe_on_resume(key: str) -> bool:
    """``key`` (dotted, as given to --set) is one of ``SAFE_ON_RESUME``; ``section.*`` covers the section."""
    for safe in SAFE_ON_RESUME:
        section = safe.removesuffix(".*")
        if key == section or (safe.endswith(".*") and key.startswith(f"{section}.")):
            return True
    return False


def experiment_for_resume(checkpoint: Path, overrides: dict[str, Any]) -> tuple[Experiment, dict[str, tuple]]:
    """The experiment a checkpoint was trained with (its run directory's ``experiment.yaml``) and the overrides.

    Returns:
        ``(experiment, changed)``: ``changed`` maps each override that changes a value to ``(old, new)``.

    Raises:
        ExperimentError: no readable ``experiment.yaml``, or an override that a resume may not change
            (``SAFE_ON_RESUME`` lists what may), named with its old and new values.
    """
    exp_file = checkpoint.parent.parent / EXPERIMENT_FILE
    if not exp_file.is_file():
        raise ExperimentError(
            f"{exp_file}: not found; --resume continues a trainer.train run from one of its checkpoints "
            f"(<run dir>/{CHECKPOINTS_DIR}/checkpoint_<iteration>, next to <run dir>/{EXPERIMENT_FILE})"
        )
    raw, _ = load_raw(str(exp_file))
    before = experiment_from_dict(raw, where=str(exp_file)).model_dump(mode="json")
    if isinstance(raw.get("resources"), dict):  # --set resources.schedule=... replaces the recorded runners
        raw = {**raw, "resources": schedule_overrides(raw["resources"], overrides)}
    exp = experiment_from_dict(apply_overrides(raw, overrides), where=str(exp_file))
    after = exp.model_dump(mode="json")
    changed = {k: (_get(before, k), _get(after, k)) for k in overrides if _get(before, k) != _get(after, k)}
    refused = [k for k in changed if not _safe_on_resume(k)]
    if refused:
        shown = ", ".join(f"{k} ({changed[k][0]!r} -> {changed[k][1]!r})" for k in refused)
        raise ExperimentError(
            f"--resume: cannot change {shown}: it changes the problem the checkpoint was trained on; start a new "
            f"run instead (a resume may change {', '.join(SAFE_ON_RESUME)})"
        )
    return exp, changed


def data_changes(state: dict[str, Any], exp: Experiment) -> list[str]:
    """The recorded windows of a checkpoint (``envs.fingerprint``) whose prices differ in the data the experiment
    reads now (empty for a checkpoint written before records were kept)."""
    from envs.fingerprint import changed_windows
    from envs.market import load_market_for
    from trainer.runtime.checkpoint import DATA_KEY

    record = state.get(DATA_KEY)
    return changed_windows(record, load_market_for(exp.data.env_config())) if record else []


def resume_inputs(
    checkpoint: Path, overrides: dict[str, Any], allow_missing_buffer: bool, allow_changed_data: bool = False
) -> tuple[Experiment, int, bool, list[str]]:
    """What a resume from ``checkpoint`` continues with: the checkpoint verified (its replay buffer too, unless
    ``allow_missing_buffer``), and the experiment it was trained with, with the overrides a resume may change.

    Returns:
        ``(experiment, the checkpoint's iteration, restore the replay buffer, notes to print)``.

    Raises:
        CheckpointError: the checkpoint cannot be used.
        ExperimentError: an override a resume may not change, no readable ``experiment.yaml``, or (without
            ``allow_changed_data``) prices of a recorded window that changed since the checkpoint was written.
    """
    from trainer.runtime.checkpoint import resume_state

    state, buffer_note = resume_state(checkpoint, allow_missing_buffer)
    exp, changed = experiment_for_resume(checkpoint, overrides)
    notes = [f"on resume: {k} {old!r} -> {new!r}" for k, (old, new) in changed.items()]
    for change in data_changes(state, exp):
        if not allow_changed_data:
            raise ExperimentError(
                f"--resume {checkpoint}: {change}; the run would go on training on other prices than it started "
                "with: restore the data file, or pass --allow-changed-data to continue on it anyway"
            )
        notes.append(f"warning: {change} (--allow-changed-data)")
    if buffer_note:
        notes.append(f"warning: {buffer_note}")
    return exp, int(state.get("training_iteration") or 0), buffer_note is None, notes
