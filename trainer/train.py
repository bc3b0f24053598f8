"""Train one SAC agent: ``python -m trainer.train --exp NAME``.

Writes into the run directory (``--out``, default ``runs/<exp>/<time>-seed<S>``):

- ``experiment.yaml``: the resolved experiment;
- ``progress.jsonl``: one line of metrics per iteration;
- ``checkpoints/checkpoint_<iteration>``: every ``checkpoint.frequency`` iterations and at the end, each
  written to a temporary directory and renamed, with the replay buffer, the filter statistics and a
  manifest (``trainer.runtime.checkpoint``); only the newest ``checkpoint.num_to_keep`` are kept;
- ``summary.json``: status (``completed``, ``diverged``, ``interrupted``), env steps, last validation
  metrics, the final checkpoint.

A non-empty run directory is refused unless the run continues there (``--resume``) or ``--overwrite`` is
given, which moves the previous run's files to ``previous-run-<time>/`` (nothing is deleted).

``--resume CHECKPOINT [--additional-steps N]`` continues a run (step count, optimisers, filter statistics,
replay buffer) for N more env steps, after checking the checkpoint's manifest. Overrides that only change
the budget, checkpointing, evaluation interval, divergence guard, resources or replay ratio apply
(``SAFE_ON_RESUME``); the others would change the problem the checkpoint was trained on and are refused by
name.

Ctrl-C or SIGTERM finishes the current iteration, writes a final checkpoint, prints the command that
resumes and exits with 128 + the signal number (130, 143). Exit codes: 0 completed, 2 bad input, 3 diverged.
"""

# `python -m trainer.train` imports the package first: trainer/__init__ sets OMP_NUM_THREADS before torch.
from __future__ import annotations

import argparse
import contextlib
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from trainer.experiment.config import Experiment
from trainer.experiment.loading import (
    ExperimentError,
    load_experiment,
    parse_override,
)
from trainer.experiment.stored import default_out_dir, experiment_for_resume
from trainer.metrics import registry as M
from trainer.runtime.checkpoint import CheckpointError
from trainer.runtime.console import quiet_logging
from trainer.runtime.progress import Eta, StopFlag, progress_line
from trainer.runtime.run_dir import (
    CHECKPOINTS_DIR,
    EXPERIMENT_FILE,
    LOG_FILE,
    PREVIOUS_RUN_PREFIX,
    PROGRESS_FILE,
    SUMMARY_FILE,
    SUPERSEDED_FILE,
    RunError,
    claim_run_dir,
    stale_note,
    supersede_progress,
    write_atomic,
)

DEFAULT_EXPERIMENT = "smoke"
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3


def env_steps_of(algo: Any) -> int:
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

    return int(algo.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0) or 0)


def _json_default(x: Any) -> Any:
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def resume_command(checkpoint: Path | str, additional_steps: int | None = None) -> str:
    """The command line that continues a run from ``checkpoint``."""
    more = f" --additional-steps {additional_steps}" if additional_steps else ""
    return f"python -m trainer.train --resume {checkpoint}{more}"


def run_training(
    exp: Experiment,
    out_dir: Path,
    *,
    resume: Path | None = None,
    additional_steps: int | None = None,
    replay_buffer: bool = True,
    stop_flag: StopFlag | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train (or resume) and return the summary written to ``summary.json``.

    Args:
        exp: the experiment (for a resume: the checkpoint's, with the overrides a resume may change).
        out_dir: the run directory, already checked (``main``): progress, checkpoints and summary go there.
        resume: a verified checkpoint to continue from.
        additional_steps: with ``resume``, env steps to add (default ``stopping.env_steps``).
        replay_buffer: with ``resume``, restore the saved replay buffer (False: start with an empty one).
        stop_flag: set by SIGINT/SIGTERM; installed again after Ray starts.
        verbose: show Ray's log output on the terminal.
    """
    import ray

    from trainer.rl.algorithm import PortfolioSAC
    from trainer.rl.sac_config import build_sac_config
    from trainer.runtime.checkpoint import save_atomic
    from trainer.runtime.ray_init import init_ray
    from trainer.runtime.resources import check_request, run_request

    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / CHECKPOINTS_DIR
    stop_flag = stop_flag or StopFlag()
    stop_flag.install()
    if not ray.is_initialized():
        # RAY_ADDRESS joins a cluster; otherwise an embedded local instance on 127.0.0.1.
        init_ray(include_dashboard=False, log_to_driver=False)
        quiet_logging(out_dir / LOG_FILE, verbose)  # ray.init configures its loggers again
    stop_flag.install()  # ray.init replaced the SIGTERM handler
    # The same config a checkpoint was written with (overrides a resume may change included), then its state.
    config = build_sac_config(exp)
    check_request(
        run_request(PortfolioSAC.default_resource_request(config).bundles),
        ray.cluster_resources(),
        "this run",
        "its env runners and learners could never start",
    )
    algo = config.build_algo()
    algo.run_name = out_dir.name  # tags this run's gauges (Prometheus/Grafana)
    status, last_ckpt, reason = M.STATUS_COMPLETED, resume, ""
    try:
        if resume is not None:
            algo.restore_from_path(str(resume), replay_buffer=replay_buffer)
            print(f"resumed {resume} at {env_steps_of(algo):,} env steps, buffer {len(algo.buffer):,} transitions")
            target = env_steps_of(algo) + int(additional_steps or exp.stopping.env_steps)
        else:
            target = exp.stopping.env_steps
        eta = Eta()
        freq, keep, max_iterations = exp.checkpoint.frequency, exp.checkpoint.num_to_keep, exp.stopping.iterations
        iterations_done = 0

        def budget_done() -> bool:
            return env_steps_of(algo) >= target or (max_iterations is not None and iterations_done >= max_iterations)

        def finished() -> bool:
            return bool(stop_flag.signal) or budget_done()

        saved_iteration = None
        with open(out_dir / PROGRESS_FILE, "a") as log:
            while not finished():
                result = algo.train()
                iterations_done += 1
                p = result[M.PORTFOLIO]
                row = {M.TRAINING_ITERATION: algo.iteration, **p}
                log.write(json.dumps(row, default=_json_default) + "\n")
                log.flush()
                print(progress_line(algo.iteration, p, target, eta(p[M.ENV_STEPS], target)), flush=True)
                if p[M.DIVERGED]:
                    status, reason = M.STATUS_DIVERGED, p[M.DIVERGED_REASON]
                    print(
                        f"DIVERGED at {p[M.ENV_STEPS]:,} env steps: {reason}. Training stopped; "
                        f"the last good checkpoint is {last_ckpt or '(none written yet)'}.",
                        flush=True,
                    )
                    break
                # The last iteration is saved once, below, after the final evaluation.
                if freq and algo.iteration % freq == 0 and not finished():
                    last_ckpt = save_atomic(algo, ckpt_dir, algo.iteration, keep)
                    saved_iteration = algo.iteration
        # A signal that came during the periodic save of the last iteration leaves nothing more to save.
        if status != M.STATUS_DIVERGED and iterations_done and saved_iteration != algo.iteration:
            algo.evaluate_deterministic()
            last_ckpt = save_atomic(algo, ckpt_dir, algo.iteration, keep)
        if stop_flag.signal and status != M.STATUS_DIVERGED:
            if budget_done():  # the signal came during the last iteration: the run has all it was asked for
                print(f"{stop_flag.signal} came during the last iteration: the run is complete", flush=True)
            else:
                status, reason = M.STATUS_INTERRUPTED, stop_flag.signal
        summary = {
            "status": status,
            "reason": reason,
            "env_steps": env_steps_of(algo),
            "target_env_steps": target,
            "iterations": algo.iteration,
            "validation": algo.last_evaluation,
            "final_checkpoint": str(last_ckpt) if last_ckpt else None,
            "run_dir": str(out_dir),
        }
        if status == M.STATUS_INTERRUPTED and last_ckpt:
            summary["resume_command"] = resume_command(last_ckpt, max(target - env_steps_of(algo), 0) or None)
        write_atomic(out_dir / SUMMARY_FILE, json.dumps(summary, indent=2, default=_json_default))
        return summary
    finally:
        algo.stop()


def _remove_unstarted_run(out_dir: Path) -> None:
    """Remove what a new run wrote before it could start (its experiment file and log), and the directory it
    created, so that the same command can be run again once the cause is fixed."""
    quiet_logging(None)  # Ray's loggers stop writing to the run's log file (errors still reach the terminal)
    for name in (EXPERIMENT_FILE, LOG_FILE):
        (out_dir / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: something else was written there, keep it
        out_dir.rmdir()


def _check_data(exp: Experiment) -> None:
    """Fail fast, with the data layer's message, before Ray starts."""
    from envs.data import DataError
    from envs.market import load_market_for

    try:
        load_market_for(exp.data.env_config())
    except DataError as exc:
        raise ExperimentError(str(exc)) from None


def _prepare_new_run(args: argparse.Namespace, overrides: dict[str, Any]) -> tuple[Experiment, Path, list[str]]:
    """A new run: the validated experiment, its data checked, its run directory claimed."""
    if args.additional_steps is not None or args.allow_missing_buffer:
        flag = "--additional-steps" if args.additional_steps is not None else "--allow-missing-buffer"
        raise RunError(f"{flag} continues a run: use it with --resume CHECKPOINT")
    exp = load_experiment(args.exp or DEFAULT_EXPERIMENT, overrides, sweep=False)  # one run: no sweep
    _check_data(exp)
    out_dir = (args.out or default_out_dir(exp)).absolute()  # the summary's paths hold wherever it is read from
    return exp, out_dir, claim_run_dir(out_dir, args.overwrite)


def _prepare_resume(args: argparse.Namespace, overrides: dict[str, Any]) -> tuple[Experiment, Path, bool, list[str]]:
    """A resume: the checkpoint verified, the overrides a resume may change applied, the run directory ready.

    Continuing in the checkpoint's own run directory needs it to be the run's latest checkpoint (a later
    one would be overwritten); stale temporary directories are removed and the progress rows of iterations
    that will be redone are moved aside. Another run directory (``--out``) is claimed like a new run's.

    Returns:
        ``(experiment, run directory, restore the replay buffer, notes to print)``.
    """
    from trainer.runtime.checkpoint import checkpoint_iteration, list_checkpoints, remove_stale_temp_dirs, resume_state

    if args.exp is not None:
        raise RunError(
            f"--exp {args.exp} with --resume: a run continues with the experiment it was trained with; drop --exp "
            "(--set changes what a resume may change)"
        )
    if args.additional_steps is not None and args.additional_steps < 1:
        raise RunError(f"--additional-steps must be >= 1, got {args.additional_steps}")
    ckpt = args.resume.resolve()
    state, buffer_note = resume_state(ckpt, args.allow_missing_buffer)
    exp, changed = experiment_for_resume(ckpt, overrides)
    _check_data(exp)
    run_dir, iteration = ckpt.parent.parent, int(state.get("training_iteration") or 0)
    out_dir = (args.out or run_dir).absolute()
    notes = [f"on resume: {k} {old!r} -> {new!r}" for k, (old, new) in changed.items()]
    if buffer_note:
        notes.append(f"warning: {buffer_note}")
    if out_dir.resolve() != run_dir.resolve():
        return exp, out_dir, buffer_note is None, notes + claim_run_dir(out_dir, args.overwrite)
    if args.overwrite:
        raise RunError(f"--overwrite with --resume in the checkpoint's own run directory {run_dir}: drop --overwrite")
    ckpt_dir = run_dir / CHECKPOINTS_DIR
    later = [p.name for p in list_checkpoints(ckpt_dir) if (checkpoint_iteration(p) or 0) > iteration]
    if later:
        raise RunError(
            f"{ckpt}: its run has later checkpoints ({', '.join(later)}); resume from the latest, or continue "
            "from this one in a new run directory with --out DIR"
        )
    notes += [stale_note(p) for p in remove_stale_temp_dirs(ckpt_dir)]
    moved = supersede_progress(run_dir / PROGRESS_FILE, iteration)
    if moved:
        notes.append(
            f"moved {moved} row(s) after iteration {iteration} from {run_dir / PROGRESS_FILE} to "
            f"{run_dir / SUPERSEDED_FILE}: the resumed run redoes those iterations"
        )
    return exp, out_dir, buffer_note is None, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.train", description="Train one SAC portfolio agent.")
    parser.add_argument(
        "--exp",
        help=f"experiment name in tune_configs/ or a YAML path (default {DEFAULT_EXPERIMENT}; not with --resume)",
    )
    parser.add_argument("--data", help="price source: 'sp500' or a CSV/Parquet path (data.source)")
    parser.add_argument("--steps", type=int, help="env steps to train (stopping.env_steps)")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--out", type=Path, help="run directory (default runs/<exp>/<time>-seed<S>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any field")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"start in a non-empty --out: the previous run's files move to {PREVIOUS_RUN_PREFIX}<time>/ there",
    )
    parser.add_argument("--resume", type=Path, help="checkpoint directory to continue from")
    parser.add_argument("--additional-steps", type=int, help="with --resume: env steps to add")
    parser.add_argument(
        "--allow-missing-buffer",
        action="store_true",
        help="with --resume: continue with an empty replay buffer when the saved one is missing or damaged",
    )
    parser.add_argument("--verbose", action="store_true", help="show Ray/RLlib log output on the terminal")
    args = parser.parse_args(argv)
    flag = StopFlag()
    flag.install()  # a signal while inputs are checked or Ray starts stops the run before its first iteration
    try:
        overrides = dict(parse_override(s) for s in args.set)
        if args.data:
            overrides["data.source"] = args.data
        if args.steps is not None:
            overrides["stopping.env_steps"] = args.steps
        if args.seed is not None:
            overrides["seed"] = args.seed
        if args.resume is None:
            (exp, out_dir, notes), replay_buffer = _prepare_new_run(args, overrides), True
            fresh = not out_dir.exists()  # a new run directory: removed again if the run cannot start at all
        else:
            fresh = False
            exp, out_dir, replay_buffer, notes = _prepare_resume(args, overrides)
        # Written before Ray starts: a run stopped at any point can be resumed with what it was given.
        write_atomic(out_dir / EXPERIMENT_FILE, yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False))
    except ValueError as exc:  # ExperimentError, CheckpointError, RunError: one line naming the file or key
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if flag.signal:
        if fresh:
            _remove_unstarted_run(out_dir)
        print(
            f"{flag.signal} received before training started: nothing was trained; run the command again",
            file=sys.stderr,
        )
        return flag.exit_code
    quiet_logging(out_dir / LOG_FILE, args.verbose)
    for note in notes:
        print(note, file=sys.stderr if note.startswith("warning:") else sys.stdout, flush=True)
    print(f"experiment {exp.name} | data {exp.data.source} | seed {exp.seed} | run dir {out_dir}", flush=True)
    resume = args.resume.resolve() if args.resume else None
    try:
        summary = run_training(
            exp,
            out_dir,
            resume=resume,
            additional_steps=args.additional_steps,
            replay_buffer=replay_buffer,
            stop_flag=flag,
            verbose=args.verbose,
        )
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ExperimentError as exc:  # refused before anything trained (resources the cluster does not have)
        if fresh:
            _remove_unstarted_run(out_dir)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"status: {summary['status']}" + (f" ({summary['reason']})" if summary["reason"] else ""))
    print(f"final checkpoint: {summary['final_checkpoint']}")
    final = summary.get("validation") or {}
    if isinstance(final.get(M.SHARPE), int | float) and summary["final_checkpoint"]:
        # the final checkpoint's own deterministic validation pass (the progress lines show earlier ones)
        print(
            f"its validation: Sharpe {final[M.SHARPE]:+.2f} | Sharpe - EW {final.get(M.SHARPE_MINUS_EW, math.nan):+.2f}"
        )
    k = exp.sac.population
    if k is not None and summary["final_checkpoint"]:
        from envs.population import agent_seeds, agents_text

        seeds = ", ".join(f"{i}: seed {s}" for i, s in enumerate(agent_seeds(exp.seed, k)))
        print(
            f"it holds a population of {agents_text(k)} ({seeds}); backtest one with: python -m trainer.backtest "
            f"{shlex.quote(summary['final_checkpoint'])} --agent I"
        )
    print(f"summary: {out_dir / SUMMARY_FILE}")
    if summary["status"] == M.STATUS_INTERRUPTED:
        if summary.get("resume_command"):
            print(f"resume with: {summary['resume_command']}", flush=True)
        else:
            print(
                "no iteration finished, so there is nothing to resume: start the run again (into the same "
                "directory with --overwrite)",
                flush=True,
            )
        return flag.exit_code
    return EXIT_DIVERGED if summary["status"] == M.STATUS_DIVERGED else 0


if __name__ == "__main__":
    sys.exit(main())
