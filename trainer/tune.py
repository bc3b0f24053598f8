"""Ray Tune sweeps: ``python -m trainer.tune --exp NAME``.

Runs the experiment's ``sweep`` (architectures x seeds x any SAC hyper-parameter) with ASHA on the
validation Sharpe (time attribute: env steps), checkpoints (frequency, best N by validation Sharpe, at the
end), retries from the last checkpoint on failures, and finishes with a summary across seeds and a
backtest of the best configuration. ``--resume`` continues an interrupted sweep (errored trials too),
``--dry-run`` prints the plan, ``--set key=value`` overrides any experiment field.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from trainer.experiment.config import SEED_KEY, SWEEPABLE, Experiment
from trainer.experiment.loading import ExperimentError, load_experiment, parse_override, resolve_experiment_path
from trainer.experiment.memory import MemoryEstimate, check_memory, describe, sweep_trials_at_once
from trainer.experiment.preflight import check_sweep
from trainer.experiment.sweep_plan import format_plan, tune_domains
from trainer.experiment.sweep_state import (
    TRIAL_DIR_PREFIX,
    check_same_experiment,
    check_storage,
    save_experiment,
    sweep_outcome,
    trial_statuses,
)
from trainer.metrics import registry as M
from trainer.runtime.locks import LOCK_FILE, holder_text, lock_dir
from trainer.runtime.paths import check_output_dir, check_remote_storage, is_uri, os_error_text
from trainer.runtime.resources import THIS_MACHINE, available_memory, check_request
from trainer.runtime.sweep_progress import SweepReporter
from trainer.runtime.tracking import Store, add_argument, open_store, require_mlflow

DRIVER_LOG = "driver.log"


def build_plan(exp: Experiment) -> dict[str, Any]:
    """Everything the sweep will do, for ``--dry-run`` and the log."""
    from trainer.rl.algorithm import PortfolioSAC
    from trainer.rl.sac_config import build_sac_config

    sweep = exp.sweep
    population = exp.sac.population
    config = build_sac_config(exp, tune_domains(sweep, population))
    bundles = PortfolioSAC.default_resource_request(config).bundles
    per_trial: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            per_trial[k] = per_trial.get(k, 0) + v
    return {
        "experiment": exp.name,
        "trials": sweep.n_trials(population),
        "agents_per_trial": population or 1,
        "trial_seeds": sweep.domains(population).get(SEED_KEY, ("", None))[1] if population else None,
        "search_space": sweep.search_space,
        "variants": sweep.variants,
        "num_samples": sweep.num_samples,
        "scheduler": sweep.scheduler.model_dump()
        | {"max_t": exp.asha_max_t(), "grace_period": exp.asha_grace_period()},
        "metric": sweep.metric,
        "mode": sweep.mode,
        "env_steps_per_trial": exp.stopping.env_steps,
        "env_steps_per_iteration": exp.stopping.steps_per_iteration,
        "resources_per_trial": per_trial,
        "placement_bundles": bundles,
        "max_concurrent_trials": sweep.max_concurrent_trials,
        "max_failures": sweep.max_failures,
        "data": exp.data.source,
    }


def check_resources(plan: dict[str, Any], cluster: dict[str, float]) -> None:
    """Fail before Tune waits forever on a request the cluster can never satisfy."""
    check_request(plan["resources_per_trial"], cluster, "each trial", "no trial could ever start")


def _outermost_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet: what this command creates (None: it exists)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _remove_unstarted(exp_dir: Path, created: Path | None) -> None:
    """Remove the folders this command created (``created``: the outermost, e.g. a new --storage) when nothing
    but the sweep's driver log (and lock) was written there."""
    if created and exp_dir.is_dir() and {p.name for p in exp_dir.iterdir()} <= {DRIVER_LOG, LOCK_FILE}:
        shutil.rmtree(created)


def _stopper_base() -> type:
    from ray.tune import Stopper

    return Stopper


class DivergenceOrBudgetStopper(_stopper_base()):
    """Stops a trial at its env-step budget, at ``stopping.iterations``, or when it diverged."""

    def __init__(self, env_steps: int, iterations: int | None) -> None:
        self.env_steps, self.iterations = env_steps, iterations

    def __call__(self, trial_id: str, result: dict) -> bool:
        p = result.get(M.PORTFOLIO, {})
        if p.get(M.DIVERGED):
            return True
        if self.iterations is not None and result.get(M.TRAINING_ITERATION, 0) >= self.iterations:
            return True
        return p.get(M.ENV_STEPS, 0) >= self.env_steps

    def stop_all(self) -> bool:
        return False


def _trial_dirname(trial: Any) -> str:
    return f"{TRIAL_DIR_PREFIX}{trial.trial_id}"


def run_sweep(exp: Experiment, storage: Path | str, resume: bool = False, callbacks: list | None = None) -> Any:
    """Run (or resume: Tune restores the callbacks the sweep started with) the Tuner; returns the ResultGrid."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from trainer.rl.algorithm import PortfolioSAC
    from trainer.rl.sac_config import build_sac_config

    sweep = exp.sweep
    exp_path = _exp_path(storage, exp.name)
    # Tune saves code objects of the param space (classes, connector factories) as placeholders; trials
    # not yet created when a sweep was interrupted need them again, so the resumed Tuner gets the space.
    param_space = build_sac_config(exp, tune_domains(sweep, exp.sac.population))
    if resume:
        tuner = tune.Tuner.restore(
            str(exp_path),
            trainable=PortfolioSAC,
            param_space=param_space,
            resume_unfinished=True,
            resume_errored=True,
        )
        return tuner.fit()
    s = sweep.scheduler
    if s.type == "asha":
        scheduler = ASHAScheduler(
            time_attr=M.ENV_STEPS_METRIC,
            max_t=exp.asha_max_t(),
            grace_period=exp.asha_grace_period(),
            reduction_factor=s.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    freq = exp.checkpoint.frequency
    reporter = SweepReporter(
        str(exp_path),
        metric_columns={sweep.metric: "score"} | {m.tune_key: m.progress_label for m in M.shown_in(M.PROGRESS)},
        parameter_columns={
            SWEEPABLE_PATHS[k]: k for k in [*sweep.search_space, *(k for v in sweep.variants.values() for k in v)]
        },
        max_report_frequency=30,
    )
    tuner = tune.Tuner(
        PortfolioSAC,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=sweep.metric,
            mode=sweep.mode,
            scheduler=scheduler,
            num_samples=sweep.num_samples,
            max_concurrent_trials=sweep.max_concurrent_trials,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=exp.name,
            storage_path=str(storage),
            stop=DivergenceOrBudgetStopper(exp.stopping.env_steps, exp.stopping.iterations),
            checkpoint_config=tune.CheckpointConfig(
                checkpoint_frequency=freq,
                num_to_keep=sweep.checkpoint_num_to_keep,
                checkpoint_score_attribute=sweep.metric,
                checkpoint_score_order=sweep.mode,
                checkpoint_at_end=True,
            ),
            failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
            progress_reporter=reporter,
            callbacks=callbacks,
            verbose=1,
        ),
    )
    return tuner.fit()


def _exp_path(storage: Path | str, name: str) -> Path | str:
    return f"{str(storage).rstrip('/')}/{name}" if "://" in str(storage) else Path(storage) / name


# Tune's flattened parameter names of each sweepable key, for the progress table.
SWEEPABLE_PATHS = {key: "/".join(path) for key, path in SWEEPABLE.items()}


def main(argv: list[str] | None = None) -> int:
    from trainer.runtime.console import quiet_logging
    from trainer.runtime.ray_init import cluster_address, is_loopback

    parser = argparse.ArgumentParser(
        prog="python -m trainer.tune", description="Ray Tune sweep of SAC portfolio agents."
    )
    parser.add_argument("--exp", default="quick", help="experiment in tune_configs/ (or a YAML path)")
    parser.add_argument(
        "--storage",
        default="results",
        help="Tune storage: a directory or a URI (s3://, gs://); default: results (in this folder)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the interrupted sweep in --storage")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--data", help="price source: 'sp500' or a CSV/Parquet path (sets data.source)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any field")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local instance)")
    parser.add_argument("--verbose", action="store_true", help="show Ray/RLlib log output on the terminal")
    add_argument(parser, "the sweep's directory")
    args = parser.parse_args(argv)
    remote = is_uri(args.storage)
    storage: Path | str = args.storage if remote else Path(args.storage).resolve()
    address = cluster_address(args.address)
    here = address is None or is_loopback(address)  # the trials run on this machine: their memory is its memory
    try:
        if args.mlflow is not None:
            require_mlflow()  # before anything is read: the one-line install command
        overrides = dict(parse_override(s) for s in args.set)
        if args.data:
            overrides["data.source"] = args.data
        exp = load_experiment(args.exp, overrides)
        trials, why = sweep_trials_at_once(exp) if here else (None, "")
        est = check_sweep(exp, str(resolve_experiment_path(args.exp)), trials, why)
        # Ray, RLlib and Tune add their terminal log handlers when first imported: before quiet_logging routes them
        import ray.rllib
        import ray.tune  # noqa: F401

        quiet_logging(None, args.verbose)  # building the plan builds RLlib's config: its notices stay off the terminal
        plan = build_plan(exp) | {"memory": describe(est, here)}
    except ExperimentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_plan(plan), flush=True)
    if args.dry_run:
        return 0
    # Summaries of a sweep stored on a URI go to a local folder.
    exp_dir = Path("results_summary") / exp.name if remote else Path(storage) / exp.name
    new_dir = _outermost_missing(exp_dir.absolute())
    try:
        if remote:
            check_remote_storage(args.storage, "--storage")
        check_output_dir(exp_dir, "--storage")
        store = open_store(args.mlflow, exp_dir.absolute())  # a server that does not answer: refused now
        # Held until the command ends: a second sweep into this directory is refused, not run over this one.
        lock = lock_dir(
            exp_dir,
            lambda pid: (
                f"{exp_dir}: another trainer.tune is running a sweep of {exp.name} there{holder_text(pid)}; "
                "wait for it to finish, or use another --storage"
            ),
        )
    except (ExperimentError, OSError) as exc:  # OSError: the directory could not be created (a full disk)
        print(f"error: {os_error_text(exc) if isinstance(exc, OSError) else exc}", file=sys.stderr)
        return 2
    try:
        return _sweep(args, exp, plan, est if here else None, storage, exp_dir, new_dir, address, store)
    finally:
        lock.release()


def _sweep(
    args: argparse.Namespace,
    exp: Experiment,
    plan: dict[str, Any],
    est: MemoryEstimate | None,
    storage: Path | str,
    exp_dir: Path,
    new_dir: Path | None,
    address: str | None,
    store: Store | None = None,
) -> int:
    """The sweep, in its locked directory: Ray, the checks that need the cluster (``est``: the memory of a trial,
    None when the trials run on a cluster's nodes), Tune, the summary."""
    from trainer.evaluation.sweep_report import summarize_sweep
    from trainer.evaluation.sweep_tables import print_summary
    from trainer.runtime.console import quiet_logging

    exp_path = _exp_path(storage, exp.name)
    try:
        check_storage(exp_path, args.resume)
        if args.resume:
            check_same_experiment(exp, exp_dir)
    except ExperimentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        _remove_unstarted(exp_dir, new_dir)
        return 2
    quiet_logging(exp_dir / DRIVER_LOG, args.verbose)
    # Tune's classic progress table (our columns: env steps, validation Sharpe, critic loss, entropy)
    # instead of the new output engine, which ignores progress_reporter and prints every config key.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    from trainer.runtime.monitoring import dashboard_access_message, install_grafana_dashboard
    from trainer.runtime.ray_init import init_ray

    # A Ctrl-C while Ray starts is remembered and acted on once it is up (in the middle of Ray's start-up it
    # would be lost, and the sweep would run to its end).
    startup_signals: list[int] = []
    previous_handler = signal.signal(signal.SIGINT, lambda signum, _: startup_signals.append(signum))
    try:
        # No address: an embedded local instance on 127.0.0.1 (dashboard included), never a stale `ray start`.
        ctx = init_ray(address, ignore_reinit_error=True, log_to_driver=args.verbose)
    except ExperimentError as exc:  # an address nothing answers on
        print(f"error: {exc}", file=sys.stderr)
        _remove_unstarted(exp_dir, new_dir)
        return 2
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    if startup_signals:
        print("\nSIGINT received while Ray started: no trial ran; run the command again", file=sys.stderr)
        _remove_unstarted(exp_dir, new_dir)
        return 130
    quiet_logging(exp_dir / DRIVER_LOG, args.verbose)  # ray.init configures its loggers again
    print(f"Ray: {'joined ' + address if address else 'local instance'}", flush=True)
    dashboard = dashboard_access_message(
        getattr(ctx, "dashboard_url", None), joined=bool(address), grafana_dashboard=install_grafana_dashboard()
    )
    print(dashboard, flush=True)
    # SIGTERM gets Tune's graceful SIGINT handling: experiment state saved, resumable with --resume.
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    # quoted, so the line can be pasted into a shell as it is (--set values may hold spaces and braces)
    sets = (f" --data {shlex.quote(args.data)}" if args.data else "") + "".join(
        f" --set {shlex.quote(s)}" for s in args.set
    )
    resume = (
        f"python -m trainer.tune --exp {shlex.quote(args.exp)} --storage {shlex.quote(args.storage)}{sets} --resume"
    )
    try:
        cluster = ray.cluster_resources()
        check_resources(plan, cluster)
        if est is not None:  # the trials run on this machine, and how many at once is known now
            trials, why = sweep_trials_at_once(exp, plan["resources_per_trial"], cluster)
            check_memory(est, available_memory(), THIS_MACHINE, trials, why)
        if not args.resume:
            save_experiment(exp, exp_dir)
        tracker = None
        if store is not None:
            from trainer.experiment.sweep_tracking import SweepTracker  # imports MLflow: only with --mlflow

            tracker = SweepTracker(store, exp, exp_dir.absolute())
        results = run_sweep(exp, storage, args.resume, tracker.callbacks() if tracker else None)
    except ExperimentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        _remove_unstarted(exp_dir, new_dir)  # nothing started: leave no directory of our own behind
        return 2
    except OSError as exc:  # a full disk or a storage that went away while Tune wrote its state
        print(
            f"error: {os_error_text(exc)}; the sweep's state is in {exp_path}; continue with:\n  {resume}",
            file=sys.stderr,
        )
        return 1
    # Tune leaves its SIGINT handler installed after the sweep (it would swallow a Ctrl-C from here on)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    n_trials = exp.sweep.n_trials(exp.sac.population)
    outcome, finished = sweep_outcome(trial_statuses(exp_path, results), n_trials)
    if outcome == "interrupted":
        if tracker is not None:
            tracker.end(None, outcome)
        print(
            f"\nsweep interrupted: {finished} of {n_trials} trials finished; the state is saved in {exp_path}. "
            f"Continue with:\n  {resume}",
            flush=True,
        )
        return 130
    exp_dir.mkdir(parents=True, exist_ok=True)
    summary = None
    try:
        summary = summarize_sweep(results, exp, exp_dir)
        print_summary(summary, exp_dir)
    except KeyboardInterrupt:
        print(
            f"\nSIGINT received while the summary was written: the trials are saved in {exp_path}; write the "
            f"summary again with:\n  {resume}",
            file=sys.stderr,
        )
        return 130
    except OSError as exc:
        print(
            f"error: {os_error_text(exc)}: the summary is incomplete; the trials are saved in {exp_path}; write the "
            f"summary again with:\n  {resume}",
            file=sys.stderr,
        )
        return 1
    finally:
        if tracker is not None:  # the report's files and figures on the sweep's MLflow run, which ends here
            tracker.end(summary, outcome)
    if outcome == "failed":
        first = next((str(r.error).splitlines()[0] for r in results if r.error is not None), "")
        print(
            f"\nerror: all {n_trials} trial(s) of the sweep failed (first: {first}); each trial's error is in "
            f"{exp_path}/trial_*/error.txt. Fix the cause, then retry them from their last checkpoints with "
            "--resume",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
