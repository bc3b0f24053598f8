"""What a rolling round trains (``python -m trainer.rolling``): the experiment checked for rounds, its seeds, and
the experiment each of the round's training runs gets (the round's windows, every checkpoint kept).

A round trains one configuration over its seeds (the experiment's ``seed``, or a ``sweep.search_space.seed``
grid; a population trains K agents per run) and selects on a validation figure, so other swept keys, variants,
a walk-forward fold or split dates of its own are refused, each naming the key.
"""

from __future__ import annotations

from typing import Any

from trainer.experiment.config import SEED_KEY, Experiment
from trainer.experiment.loading import ExperimentError, experiment_from_dict
from trainer.experiment.rolling_config import VALIDATION_PREFIX


def round_seeds(exp: Experiment, where: str) -> list[int]:
    """The seeds a round trains (each one run; a population's first seed).

    Raises:
        ExperimentError: the experiment cannot be a round's (no ``rolling`` section, windows of its own, a
            sweep over more than seeds, a selection metric that is not a validation figure); names ``where``.
    """
    if exp.rolling is None:
        raise ExperimentError(
            f"{where}: no 'rolling' section: a round needs its schedule and promotion rule; add one to the "
            "experiment (e.g. rolling: {every: 63, promote_if: {min_sharpe_minus_ew: 0.0}}, tune_configs/README.md) "
            "or give --set rolling.every=63"
        )
    if exp.data.fold is not None or exp.data.split_dates is not None:
        key = "data.fold" if exp.data.fold is not None else "data.split_dates"
        raise ExperimentError(
            f"{where}: key '{key}': a round sets its own windows (rolling.window, rolling.train_days, "
            f"rolling.validation_days, ending on the last date of --data); remove {key}"
        )
    sweep = exp.sweep
    other = [k for k in sweep.search_space if k != SEED_KEY] + [f"variants.{v}" for v in sweep.variants]
    if other:
        raise ExperimentError(
            f"{where}: key 'sweep.{other[0]}': a round trains one configuration over its seeds; fix the other "
            f"settings (sweep only {SEED_KEY}, with grid_search)"
        )
    if not sweep.metric.startswith(VALIDATION_PREFIX):
        raise ExperimentError(
            f"{where}: key 'sweep.metric': {sweep.metric!r} is not a validation figure; a round selects its "
            f"candidate on its validation window ({VALIDATION_PREFIX}...)"
        )
    domains = sweep.domains(exp.sac.population)
    if SEED_KEY not in domains:
        return [exp.seed]
    kind, seeds = domains[SEED_KEY]
    if kind != "grid_search":
        raise ExperimentError(f"{where}: key 'sweep.search_space.{SEED_KEY}': a round's seeds are a grid_search list")
    return [int(s) for s in seeds]


def round_experiment(
    exp: Experiment, source: str, split_dates: dict[str, list[str]], init_from: str | None
) -> dict[str, Any]:
    """What each training run of a round trains, as a raw experiment (validated): ``exp`` on ``source`` with the
    round's windows, one run (no sweep), every checkpoint kept (the candidate is chosen among them), without
    replay buffers (nothing resumes them), starting from ``init_from``'s networks when given (a warm start)."""
    raw = exp.model_dump(mode="json", exclude={"sweep"})
    raw["data"].update(source=source, split_dates=split_dates)
    raw["checkpoint"].update(num_to_keep=None, save_buffer=False)
    if init_from is not None:
        raw["model"]["init_from"] = init_from
    experiment_from_dict(raw, where="the round's experiment")
    return raw
