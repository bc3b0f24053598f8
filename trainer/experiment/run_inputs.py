"""What a ``trainer.train`` run starts from, checked before Ray starts: a new run's experiment, or a resume's
checkpoint and the overrides a resume may change, with the run directory's path, the data and the memory
checked (``trainer.experiment.preflight``). Every problem is a ``RunError`` or ``ExperimentError`` in one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from trainer.experiment.config import Experiment
from trainer.experiment.loading import load_experiment
from trainer.experiment.preflight import check_run
from trainer.experiment.stored import default_out_dir, resume_inputs
from trainer.runtime.paths import check_output_dir
from trainer.runtime.run_dir import RunError

DEFAULT_EXPERIMENT = "smoke"  # trainer.train without --exp


def prepare_new_run(
    args: argparse.Namespace, overrides: dict[str, Any]
) -> tuple[Experiment, Path, int, bool, list[str]]:
    """A new run: the validated experiment, its data and memory checked, its run directory's path checked
    (returned as ``prepare_resume`` returns a resume's)."""
    given = {
        "--additional-steps": args.additional_steps is not None,
        "--allow-missing-buffer": args.allow_missing_buffer,
        "--allow-changed-data": args.allow_changed_data,
    }
    flag = next((f for f, on in given.items() if on), None)
    if flag:
        raise RunError(f"{flag} continues a run: use it with --resume CHECKPOINT")
    exp = load_experiment(args.exp or DEFAULT_EXPERIMENT, overrides, sweep=False)  # one run: no sweep
    out_dir = (args.out or default_out_dir(exp)).absolute()  # the summary's paths hold wherever it is read from
    check_output_dir(out_dir, "--out")
    check_run(exp)
    return exp, out_dir, 0, True, []


def prepare_resume(
    args: argparse.Namespace, overrides: dict[str, Any]
) -> tuple[Experiment, Path, int, bool, list[str]]:
    """A resume: the checkpoint verified, the overrides a resume may change applied, its data and memory checked.

    Returns:
        ``(experiment, run directory, the checkpoint's iteration, restore the replay buffer, notes to print)``.
    """
    if args.exp is not None:
        raise RunError(
            f"--exp {args.exp} with --resume: a run continues with the experiment it was trained with; drop --exp "
            "(--set changes what a resume may change)"
        )
    if args.additional_steps is not None and args.additional_steps < 1:
        raise RunError(f"--additional-steps must be >= 1, got {args.additional_steps}")
    ckpt = args.resume.resolve()
    exp, iteration, replay_buffer, notes = resume_inputs(
        ckpt, overrides, args.allow_missing_buffer, args.allow_changed_data
    )
    out_dir = (args.out or ckpt.parent.parent).absolute()
    check_output_dir(out_dir, "--out")
    check_run(exp)
    return exp, out_dir, iteration, replay_buffer, notes
