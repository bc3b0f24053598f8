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
given, which moves the previous run's files to ``previous-run-<time>/`` (nothing is deleted). The run holds a
lock on its directory (``trainer.runtime.locks``): a second run into it at the same time is refused. A run
refused before it starts (bad input, resources or memory it cannot have) changes nothing there.

``--resume CHECKPOINT [--additional-steps N]`` continues a run (step count, optimisers, filter statistics,
replay buffer) for N more env steps, after checking the checkpoint's manifest. Overrides that only change
the budget, checkpointing, evaluation interval, divergence guard, resources or replay ratio apply
(``SAFE_ON_RESUME``); the others would change the problem the checkpoint was trained on and are refused by
name.

Ctrl-C or SIGTERM finishes the current iteration, writes a final checkpoint, prints the command that
resumes and exits with 128 + the signal number (130, 143). Exit codes: 0 completed, 1 a file of the run could
not be written (a full disk: the message names the last complete checkpoint and the command that continues),
2 bad input, 3 diverged.
"""

# `python -m trainer.train` imports the package first: trainer/__init__ sets OMP_NUM_THREADS before torch.
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from trainer.experiment.config import Experiment
from trainer.experiment.loading import ExperimentError, parse_override
from trainer.experiment.memory import BUFFER_SIZE_KEY, POPULATION_KEY
from trainer.experiment.preflight import fits_this_machine
from trainer.experiment.run_inputs import DEFAULT_EXPERIMENT, prepare_new_run, prepare_resume
from trainer.metrics import registry as M
from trainer.runtime.checkpoint import CHECKPOINT_PREFIX, CheckpointError
from trainer.runtime.console import quiet_logging
from trainer.runtime.paths import os_error_text
from trainer.runtime.progress import NOT_STARTED, Eta, StopFlag, StoppedBeforeStart, progress_line
from trainer.runtime.run_dir import (
    CHECKPOINTS_DIR,
    EXPERIMENT_FILE,
    LOG_FILE,
    PREVIOUS_RUN_PREFIX,
    PROGRESS_FILE,
    SUMMARY_FILE,
    RunError,
    RunLock,
    WriteFailed,
    json_default,
    lock_run_dir,
    resume_command,
    write_atomic,
    write_failed,
)
from trainer.runtime.tracking import Store, TrainingTracker, add_argument, flatten, open_store, require_mlflow

EXIT_WRITE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3


def env_steps_of(algo: Any) -> int:
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

    return int(algo.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0) or 0)


def run_training(
    exp: Experiment,
    out_dir: Path,
    *,
    resume: Path | None = None,
    additional_steps: int | None = None,
    replay_buffer: bool = True,
    stop_flag: StopFlag | None = None,
    verbose: bool = True,
    on_start: Callable[[Experiment], None] | None = None,
    log_file: Path | None = None,
    on_iteration: Callable[[int, dict[str, Any]], None] | None = None,
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
        on_start: called with the experiment as it runs (its schedule decided, ``trainer.rl.schedule``) once the
            run is accepted (the cluster can place it, it is built and restored), before it writes anything into
            ``out_dir``: a refusal before then changes nothing there.
        log_file: where library log output goes until ``on_start`` (default ``out_dir``'s ``train.log``).
        on_iteration: called with each iteration's number and ``portfolio`` section (MLflow tracking).

    Raises:
        WriteFailed: a file of the run could not be written (a full disk); the message names the last complete
            checkpoint and the command that continues from it.
    """
    import ray

    from trainer.rl.algorithm import PortfolioSAC
    from trainer.rl.sac_config import build_sac_config
    from trainer.rl.schedule import choose, side_by_side
    from trainer.runtime.checkpoint import save_atomic
    from trainer.runtime.ray_init import cluster_address, init_ray
    from trainer.runtime.resources import check_request, run_request

    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / CHECKPOINTS_DIR
    stop_flag = stop_flag or StopFlag()
    stop_flag.install()
    own_cpus = 1  # the CPUs the schedule may share out: a joined cluster's placement is its owner's
    if not ray.is_initialized():
        # RAY_ADDRESS joins a cluster; otherwise an embedded local instance on 127.0.0.1.
        own = cluster_address() is None
        init_ray(include_dashboard=False, log_to_driver=False)
        quiet_logging(log_file or out_dir / LOG_FILE, verbose)  # ray.init configures its loggers again
        if own and resume is None:  # a resume keeps the schedule its run recorded
            own_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    stop_flag.install()  # ray.init replaced the SIGTERM handler
    exp = choose(
        exp, own_cpus, fits=fits_this_machine, stopped=lambda: bool(stop_flag.signal), side_by_side_fn=side_by_side
    )
    if stop_flag.signal:
        raise StoppedBeforeStart(stop_flag.signal)
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
    writing: Path | None = None  # the file being written: an OSError while it is written stops the run (WriteFailed)
    try:
        if resume is not None:
            algo.restore_from_path(str(resume), replay_buffer=replay_buffer)
            print(f"resumed {resume} at {env_steps_of(algo):,} env steps, buffer {len(algo.buffer):,} transitions")
            target = env_steps_of(algo) + int(additional_steps or exp.stopping.env_steps)
        else:
            target = exp.stopping.env_steps
        saved_steps = env_steps_of(algo)  # at the last complete checkpoint
        if on_start is not None:
            on_start(exp)
        eta = Eta()
        freq, keep, max_iterations = exp.checkpoint.frequency, exp.checkpoint.num_to_keep, exp.stopping.iterations
        iterations_done = 0

        def budget_done() -> bool:
            return env_steps_of(algo) >= target or (max_iterations is not None and iterations_done >= max_iterations)

        def finished() -> bool:
            return bool(stop_flag.signal) or budget_done()

        saved_iteration = None
        writing = out_dir / PROGRESS_FILE
        with open(writing, "a") as log:
            writing = None
            while not finished():
                result = algo.train()
                iterations_done += 1
                p = result[M.PORTFOLIO]
                row = {M.TRAINING_ITERATION: algo.iteration, **p}
                writing = out_dir / PROGRESS_FILE
                log.write(json.dumps(row, default=json_default) + "\n")
                log.flush()
                writing = None
                print(progress_line(algo.iteration, p, target, eta(p[M.ENV_STEPS], target)), flush=True)
                if on_iteration is not None:
                    on_iteration(algo.iteration, p)
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
                    writing = ckpt_dir / f"{CHECKPOINT_PREFIX}{algo.iteration:06d}"
                    last_ckpt = save_atomic(algo, ckpt_dir, algo.iteration, keep)
                    writing, saved_iteration, saved_steps = None, algo.iteration, env_steps_of(algo)
        # A signal that came during the periodic save of the last iteration leaves nothing more to save.
        if status != M.STATUS_DIVERGED and iterations_done and saved_iteration != algo.iteration:
            algo.evaluate_deterministic()
            writing = ckpt_dir / f"{CHECKPOINT_PREFIX}{algo.iteration:06d}"
            last_ckpt = save_atomic(algo, ckpt_dir, algo.iteration, keep)
            writing, saved_steps = None, env_steps_of(algo)
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
        writing = out_dir / SUMMARY_FILE
        write_atomic(writing, json.dumps(summary, indent=2, default=json_default))
        return summary
    except OSError as exc:
        if writing is None:
            raise
        raise WriteFailed(write_failed(writing, exc, algo.iteration, last_ckpt, target - saved_steps)) from None
    finally:
        algo.stop()


def _accept(run: RunLock, exp: Experiment, verbose: bool) -> None:
    """The run starts: its directory made ready, its experiment and log written (``RunLock.accept``)."""
    for note in run.accept(yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False), verbose):
        print(note, flush=True)


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
    parser.add_argument(
        "--allow-changed-data",
        action="store_true",
        help="with --resume: continue although the prices of the checkpoint's windows changed since it was written",
    )
    parser.add_argument("--verbose", action="store_true", help="show Ray/RLlib log output on the terminal")
    add_argument(parser, "the run directory")
    args = parser.parse_args(argv)
    flag = StopFlag()
    flag.install()  # a signal while inputs are checked or Ray starts stops the run before its first iteration
    try:
        if args.mlflow is not None:
            require_mlflow()  # before anything is read: the one-line install command
        overrides = dict(parse_override(s) for s in args.set)
        if args.data:
            overrides["data.source"] = args.data
        if args.steps is not None:
            overrides["stopping.env_steps"] = args.steps
        if args.seed is not None:
            overrides["seed"] = args.seed
        prepare = prepare_new_run if args.resume is None else prepare_resume
        exp, out_dir, iteration, replay_buffer, notes = prepare(args, overrides)
        store = open_store(args.mlflow, out_dir)  # a server that does not answer is refused before any work
        # Held until the command ends: a second run into this directory is refused, not run over this one.
        run = lock_run_dir(out_dir)
    except (ValueError, OSError) as exc:  # ExperimentError, CheckpointError, RunError, a directory not created
        print(f"error: {os_error_text(exc) if isinstance(exc, OSError) else exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return _run(args, flag, exp, run, iteration, replay_buffer, notes, store)
    finally:
        run.release()


def _run(
    args: argparse.Namespace,
    flag: StopFlag,
    exp: Experiment,
    run: RunLock,
    iteration: int,
    replay_buffer: bool,
    notes: list[str],
    store: Store | None = None,
) -> int:
    """The run in its locked directory: the directory checked, then trained; the exit code."""
    try:
        run.check(args.overwrite, args.resume.resolve() if args.resume else None, iteration)
    except RunError as exc:
        run.undo()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if flag.signal:
        run.undo()
        print(NOT_STARTED.format(flag.signal), file=sys.stderr)
        return flag.exit_code
    quiet_logging(run.pending_log, args.verbose)
    for note in notes:
        print(note, file=sys.stderr if note.startswith("warning:") else sys.stdout, flush=True)
    print(f"experiment {exp.name} | data {exp.data.source} | seed {exp.seed} | run dir {run.out_dir}", flush=True)
    tracker, summary = TrainingTracker.of(store, exp.name, run.out_dir), None

    def accepted(running: Experiment) -> None:
        _accept(run, running, args.verbose)
        if tracker is not None:  # the run's local store is created once its directory is ready
            tracker.start(flatten(running.model_dump(mode="json")))

    try:
        summary = run_training(
            exp,
            run.out_dir,
            resume=args.resume.resolve() if args.resume else None,
            additional_steps=args.additional_steps,
            replay_buffer=replay_buffer,
            stop_flag=flag,
            verbose=args.verbose,
            on_start=accepted,
            log_file=run.pending_log,
            on_iteration=tracker.iteration if tracker is not None else None,
        )
    except (CheckpointError, ExperimentError, MemoryError) as exc:  # refused (resources), or could not be built
        if not run.accepted:
            run.undo()  # a refused run changes nothing: the same command runs again once the cause is fixed
        memory = f"out of memory ({exc}); lower {BUFFER_SIZE_KEY} or {POPULATION_KEY}"
        print(f"error: {memory if isinstance(exc, MemoryError) else exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except WriteFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    except StoppedBeforeStart as exc:
        run.undo()
        print(NOT_STARTED.format(exc), file=sys.stderr)
        return flag.exit_code
    except BaseException:
        if not run.accepted:
            run.undo()  # an unexpected error before the run started leaves nothing either
        raise
    finally:
        if tracker is not None:
            tracker.end(summary, [run.out_dir / f for f in (SUMMARY_FILE, EXPERIMENT_FILE, PROGRESS_FILE)])
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
    print(f"summary: {run.out_dir / SUMMARY_FILE}")
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
