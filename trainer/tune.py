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
import signal
import sys
from pathlib import Path
from typing import Any

from trainer import metrics as M
from trainer.config import SWEEPABLE, Experiment, ExperimentError, SweepConfig, load_experiment, parse_override


def tune_domains(sweep: SweepConfig) -> dict[str, Any]:
    """The search space as Ray Tune domains keyed by experiment field."""
    from ray import tune

    makers = {
        "grid_search": tune.grid_search,
        "choice": tune.choice,
        "uniform": lambda a: tune.uniform(*a),
        "loguniform": lambda a: tune.loguniform(*a),
        "randint": lambda a: tune.randint(*a),
    }
    return {key: makers[kind](arg) for key, (kind, arg) in sweep.domains().items()}


def build_plan(exp: Experiment) -> dict[str, Any]:
    """Everything the sweep will do, for ``--dry-run`` and the log."""
    from trainer.algorithm import PortfolioSAC
    from trainer.sac_config import build_sac_config

    sweep = exp.sweep
    config = build_sac_config(exp, tune_domains(sweep))
    bundles = PortfolioSAC.default_resource_request(config).bundles
    per_trial: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            per_trial[k] = per_trial.get(k, 0) + v
    return {
        "experiment": exp.name,
        "trials": sweep.n_trials(),
        "search_space": sweep.search_space,
        "num_samples": sweep.num_samples,
        "scheduler": sweep.scheduler.model_dump() | {"max_t": sweep.scheduler.max_t or exp.stopping.env_steps},
        "metric": sweep.metric,
        "mode": sweep.mode,
        "env_steps_per_trial": exp.stopping.env_steps,
        "resources_per_trial": per_trial,
        "placement_bundles": bundles,
        "max_concurrent_trials": sweep.max_concurrent_trials,
        "max_failures": sweep.max_failures,
        "data": exp.data.source,
    }


def format_plan(plan: dict[str, Any]) -> str:
    lines = [f"experiment {plan['experiment']}: {plan['trials']} trial(s) on {plan['data']}"]
    for key, spec in plan["search_space"].items():
        lines.append(f"  {key}: {spec}")
    if plan["num_samples"] > 1:
        lines.append(f"  num_samples: {plan['num_samples']}")
    s = plan["scheduler"]
    if s["type"] == "asha":
        detail = (
            f"(time = env steps, grace {s['grace_period']:,}, reduction {s['reduction_factor']:g}, "
            f"max_t {s['max_t']:,})"
        )
    else:
        detail = "(no early stopping)"
    lines.append(f"scheduler: {s['type']} {detail}; metric {plan['metric']} ({plan['mode']})")
    lines.append(f"budget: {plan['env_steps_per_trial']:,} env steps per trial")
    res = ", ".join(f"{k}: {v:g}" for k, v in plan["resources_per_trial"].items())
    lines.append(f"resources per trial: {res} (bundles {plan['placement_bundles']})")
    lines.append(
        f"concurrency: {plan['max_concurrent_trials'] or 'as resources allow'}; retries: {plan['max_failures']}"
    )
    return "\n".join(lines)


def check_resources(plan: dict[str, Any], cluster: dict[str, float]) -> None:
    """Fail before Tune waits forever on a request the cluster can never satisfy."""
    for key, need in plan["resources_per_trial"].items():
        have = cluster.get(key, 0.0)
        if need > have:
            hint = "set resources.num_gpus_per_learner=0" if key == "GPU" else "lower resources.* in the experiment"
            raise ExperimentError(
                f"each trial needs {key}={need:g} but the Ray cluster has {key}={have:g} in total; "
                f"no trial could ever start ({hint}, e.g. --set resources.num_gpus_per_learner=0, or add nodes)"
            )


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
    return f"trial_{trial.trial_id}"


def run_sweep(exp: Experiment, storage: Path | str, resume: bool = False) -> Any:
    """Run (or resume) the Tuner; returns the ResultGrid."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from trainer.algorithm import PortfolioSAC
    from trainer.sac_config import build_sac_config

    sweep = exp.sweep
    exp_path = _exp_path(storage, exp.name)
    if resume:
        if not tune.Tuner.can_restore(str(exp_path)):
            raise ExperimentError(f"{exp_path}: no sweep to resume there (run without --resume first)")
        tuner = tune.Tuner.restore(str(exp_path), trainable=PortfolioSAC, resume_unfinished=True, resume_errored=True)
        return tuner.fit()
    s = sweep.scheduler
    if s.type == "asha":
        scheduler = ASHAScheduler(
            time_attr=M.ENV_STEPS_METRIC,
            max_t=s.max_t or exp.stopping.env_steps,
            grace_period=s.grace_period,
            reduction_factor=s.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    freq = exp.checkpoint.frequency
    reporter = tune.CLIReporter(
        metric_columns={sweep.metric: "score"} | {m.tune_key: m.progress_label for m in M.shown_in(M.PROGRESS)},
        parameter_columns={SWEEPABLE_PATHS[k]: k for k in sweep.search_space},
        max_report_frequency=30,
    )
    tuner = tune.Tuner(
        PortfolioSAC,
        param_space=build_sac_config(exp, tune_domains(sweep)),
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
            verbose=1,
        ),
    )
    return tuner.fit()


def unfinished_trials(exp_path: Path | str) -> list[str]:
    """Trials the saved experiment state still lists as pending/running/paused (an interrupted sweep).

    ``Tuner.fit`` returns normally after Ctrl-C and its ResultGrid reports the stopped trials as terminated;
    the experiment state written at the interruption keeps their real status.
    """
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(exp_path))
    return [t.trial_id for t in analysis.trials if t.status not in ("TERMINATED", "ERROR")]


def _exp_path(storage: Path | str, name: str) -> Path | str:
    return f"{str(storage).rstrip('/')}/{name}" if "://" in str(storage) else Path(storage) / name


# Tune's flattened parameter names of each sweepable key, for the progress table.
SWEEPABLE_PATHS = {key: "/".join(path) for key, path in SWEEPABLE.items()}


def main(argv: list[str] | None = None) -> int:
    from trainer.console import quiet_logging
    from trainer.sweep_report import summarize_sweep
    from trainer.sweep_tables import print_summary

    parser = argparse.ArgumentParser(
        prog="python -m trainer.tune", description="Ray Tune sweep of SAC portfolio agents."
    )
    parser.add_argument("--exp", default="quick", help="experiment in tune_configs/ (or a YAML path)")
    parser.add_argument("--storage", default="results", help="Tune storage: a directory or a URI (s3://, gs://)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted sweep in --storage")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any field")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local instance)")
    parser.add_argument("--verbose", action="store_true", help="show Ray/RLlib log output on the terminal")
    args = parser.parse_args(argv)
    try:
        overrides = dict(parse_override(s) for s in args.set)
        exp = load_experiment(args.exp, overrides)
        plan = build_plan(exp)
    except ExperimentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_plan(plan), flush=True)
    if args.dry_run:
        return 0
    storage: Path | str = args.storage if "://" in args.storage else Path(args.storage).resolve()
    # Summaries of a sweep stored on a URI go to a local folder.
    exp_dir = Path("results_summary") / exp.name if "://" in str(storage) else Path(storage) / exp.name
    quiet_logging(exp_dir / "driver.log", args.verbose)
    # Tune's classic progress table (our columns: env steps, validation Sharpe, critic loss, entropy)
    # instead of the new output engine, which ignores progress_reporter and prints every config key.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    from trainer.ray_init import cluster_address, init_ray

    address = cluster_address(args.address)
    # No address: an embedded local instance on 127.0.0.1 (dashboard included), never a stale `ray start`.
    ctx = init_ray(address, ignore_reinit_error=True, log_to_driver=args.verbose)
    quiet_logging(exp_dir / "driver.log", args.verbose)  # ray.init configures its loggers again
    url = getattr(ctx, "dashboard_url", None)
    print(
        f"Ray: {'joined ' + address if address else 'local instance'}; dashboard: "
        f"{'http://' + url if url else 'not running'}",
        flush=True,
    )
    # SIGTERM gets Tune's graceful SIGINT handling: experiment state saved, resumable with --resume.
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        check_resources(plan, ray.cluster_resources())
        results = run_sweep(exp, storage, resume=args.resume)
    except ExperimentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    unfinished = unfinished_trials(_exp_path(storage, exp.name))
    if unfinished:
        sets = "".join(f" --set {s}" for s in args.set)
        resume = f"python -m trainer.tune --exp {args.exp} --storage {args.storage}{sets} --resume"
        print(
            f"\nsweep interrupted: {len(results) - len(unfinished)} of {len(results)} trials finished; the state "
            f"is saved in {_exp_path(storage, exp.name)}. Continue with:\n  {resume}",
            flush=True,
        )
        return 130
    exp_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize_sweep(results, exp, exp_dir)
    print_summary(summary, exp_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
