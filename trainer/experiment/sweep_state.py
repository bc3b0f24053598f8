"""A sweep's state on disk: the experiment it was started with, what a resume may change, how its trials ended.

``trainer.tune`` refuses a new sweep over a stored one and a ``--resume`` with a changed experiment (Tune would
resume trials with the configs it saved, so a change would apply only in part); ``trial_statuses`` and
``sweep_outcome`` turn Tune's saved state into the command's exit status.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainer.experiment.config import Experiment
from trainer.experiment.schema import ExperimentError

# The validated experiment a sweep was started with, in its directory: ``--resume`` must run the same one.
EXPERIMENT_FILE = "experiment.json"
# Settings only the driver's summary reads: they may change between a sweep and its resumption.
SUMMARY_ONLY_KEYS = ("name", "description", "sweep.backtest_best", "sweep.bootstrap_samples", "sweep.benchmark")
TRIAL_DIR_PREFIX = "trial_"


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key != "search_space":
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def save_experiment(exp: Experiment, exp_dir: Path) -> None:
    """Record the validated experiment a sweep starts with, for the check on ``--resume``."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / EXPERIMENT_FILE).write_text(json.dumps(exp.model_dump(mode="json"), indent=2))


def check_same_experiment(exp: Experiment, exp_dir: Path) -> None:
    """Refuse to resume a sweep with an experiment that differs from the one it was started with.

    Tune resumes trials with the configs it saved; a changed experiment would apply only in part (new
    trials, the driver's code objects), so every difference that reaches a trial is an error naming it.
    """
    saved_file = exp_dir / EXPERIMENT_FILE
    if not saved_file.exists():
        return
    saved, now = _flat(json.loads(saved_file.read_text())), _flat(exp.model_dump(mode="json"))
    changed = [
        f"{key} ({saved.get(key)!r} -> {now.get(key)!r})"
        for key in sorted(set(saved) | set(now))
        if key not in SUMMARY_ONLY_KEYS and saved.get(key) != now.get(key)
    ]
    if changed:
        raise ExperimentError(
            f"{saved_file}: --resume continues the sweep as it was started, but the experiment now differs in "
            f"{'; '.join(changed)}; resume with the same experiment file and --set options, or start a new "
            "sweep in another --storage"
        )


def check_storage(exp_path: Path | str, resume: bool) -> None:
    """A new sweep never writes over an existing one; ``--resume`` needs one."""
    from ray import tune

    exists = tune.Tuner.can_restore(str(exp_path))
    if resume and not exists:
        raise ExperimentError(f"{exp_path}: no sweep to resume there (run without --resume first)")
    if not resume and exists:
        raise ExperimentError(
            f"{exp_path}: a sweep of this experiment is already stored there; continue it with --resume, or "
            "start a new one with another --storage (nothing was changed)"
        )


def trial_statuses(exp_path: Path | str, results: Any) -> dict[str, str]:
    """Each created trial's status (``TERMINATED``, ``ERROR``, ``PENDING``...), by trial id.

    ``Tuner.fit`` returns normally after Ctrl-C and its ResultGrid reports the stopped trials as terminated;
    the experiment state written at the interruption keeps their real status. That state can still list a
    trial whose process died as running (Tune does not re-save a trial whose actor is already gone), so the
    ResultGrid's errors take precedence.
    """
    from ray.tune import ExperimentAnalysis

    statuses = {t.trial_id: t.status for t in ExperimentAnalysis(str(exp_path)).trials}
    for result in results:
        if result.error is not None:
            statuses[Path(result.path).name.removeprefix(TRIAL_DIR_PREFIX)] = "ERROR"
    return statuses


def sweep_outcome(statuses: dict[str, str], n_trials: int) -> tuple[str, int]:
    """What became of a sweep: ``("interrupted" | "failed" | "done", trials finished)``.

    Interrupted: a created trial is not finished, or trials were never created (the interruption came
    before they started). Failed: every trial ended in an error.
    """
    finished = sum(s in ("TERMINATED", "ERROR") for s in statuses.values())
    if finished < max(n_trials, len(statuses)):
        return "interrupted", finished
    if statuses and all(s == "ERROR" for s in statuses.values()):
        return "failed", finished
    return "done", finished
