"""Which policies a decision uses, from what the user points at: a checkpoint, a run, or a sweep or study.

- a checkpoint directory (``.../checkpoint_NNNNNN``): its policy; of a population checkpoint, one agent
  (``agent``) or all of them averaged (``ensemble``);
- a ``trainer.train`` run directory (it holds ``checkpoints/``): its latest checkpoint, as above;
- a ``trainer.tune`` sweep or study directory (it holds ``summary.json``): the selected configuration (chosen
  on validation windows), each of its seeds' (or population agents') best checkpoint in the fold whose test
  window is the latest, averaged as the study's seed ensemble is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainer.evaluation.decision import DecisionError, Member, population_members
from trainer.runtime.checkpoint import CheckpointError, list_checkpoints, read_state
from trainer.runtime.registry import RegistryError, live_model
from trainer.runtime.run_dir import CHECKPOINTS_DIR

SUMMARY_FILE = "summary.json"


def _population_choice(checkpoint: Path, agent: int | None, ensemble: bool) -> list[Member]:
    if agent is not None and ensemble:
        raise DecisionError("--agent and --ensemble: choose one agent, or the average of them all")
    if not ensemble:
        return [Member(checkpoint, agent)]
    try:
        state = read_state(checkpoint)
    except CheckpointError as exc:
        raise DecisionError(str(exc)) from None
    return population_members(checkpoint, state)


def _sweep_members(sweep_dir: Path) -> tuple[list[Member], str]:
    try:
        summary = json.loads((sweep_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise DecisionError(
            f"{sweep_dir / SUMMARY_FILE}: cannot be read ({exc}); run trainer.tune there again"
        ) from None
    best = summary.get("best_configuration")
    if best is None:
        raise DecisionError(
            f"{sweep_dir / SUMMARY_FILE}: no configuration was selected (no trial has a scored checkpoint)"
        )
    rows = [t for t in summary.get("trials", []) if t.get("config") == best and t.get("best_checkpoint")]
    if not rows:
        raise DecisionError(f"{sweep_dir / SUMMARY_FILE}: configuration {best!r} has no checkpoint to decide with")
    test_end: dict[Any, str] = {f.get("fold"): (f.get("test") or [""])[-1] for f in summary.get("folds", [])}
    latest = max({r.get("fold") for r in rows}, key=lambda fold: (test_end.get(fold, ""), str(fold)))
    members = [Member(Path(r["best_checkpoint"]), r.get("agent")) for r in rows if r.get("fold") == latest]
    fold = "" if latest is None else f", fold {latest} (the latest test window)"
    return members, f"the selected configuration {best}{fold}: {len(members)} seed(s) averaged"


def resolve(path: Path | str, agent: int | None = None, ensemble: bool = False) -> tuple[list[Member], str]:
    """The members of a decision, and a line saying what was chosen.

    Raises:
        DecisionError: a path that is none of the above, or an agent choice that does not fit it.
    """
    path = Path(path).resolve()
    if not path.exists():
        raise DecisionError(
            f"{path}: not found; pass a checkpoint (runs/.../checkpoint_NNNNNN), a run directory or a sweep directory"
        )
    if (path / SUMMARY_FILE).is_file() and not (path / CHECKPOINTS_DIR).is_dir():
        if agent is not None or ensemble:
            raise DecisionError(f"{path}: a sweep's decision averages the selected configuration's seeds; drop --agent")
        return _sweep_members(path)
    if (path / CHECKPOINTS_DIR).is_dir():
        found = list_checkpoints(path / CHECKPOINTS_DIR)
        if not found:
            raise DecisionError(f"{path / CHECKPOINTS_DIR}: the run has no checkpoint yet")
        members = _population_choice(found[-1], agent, ensemble)
        return members, f"the run's latest checkpoint {found[-1].name}"
    return _population_choice(path, agent, ensemble), f"checkpoint {path.name}"


def live_members(registry: Path) -> tuple[list[Member], str]:
    """The live model of a ``trainer.rolling`` registry (its own agent of a population), and its description.

    Raises:
        DecisionError: no registry there, no live model yet, or its checkpoint is missing.
    """
    try:
        live = live_model(registry)
    except RegistryError as exc:
        raise DecisionError(str(exc)) from None
    return [Member(live.checkpoint, live.agent)], f"the live model of {registry} (round {live.round})"


def members_of(
    source: Path | None, registry: Path | None, agent: int | None = None, ensemble: bool = False
) -> tuple[list[Member], str]:
    """The policies a command decides with: SOURCE's (``resolve``), or the live model of ``registry``.

    Raises:
        DecisionError: both or neither given, ``agent``/``ensemble`` with a registry, or ``resolve``'s and
            ``live_members``' problems.
    """
    if (source is None) == (registry is None):
        raise DecisionError("give SOURCE (a checkpoint, run or sweep directory) or --registry DIR, one of them")
    if registry is None:
        return resolve(source, agent, ensemble)
    if agent is not None or ensemble:
        raise DecisionError("--registry decides with the live model (its own agent); drop --agent / --ensemble")
    return live_members(registry)
