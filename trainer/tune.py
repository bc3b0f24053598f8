"""Ray Tune sweeps: ``python -m trainer.tune --exp NAME``.

Runs the experiment's ``sweep`` (architectures x seeds x any SAC hyper-parameter) with ASHA on the
validation Sharpe (time attribute: env steps), checkpoints (frequency, best N by validation Sharpe, at the
end), retries from the last checkpoint on failures, and finishes with a summary across seeds and a
backtest of the best configuration. ``--resume`` continues an interrupted sweep (errored trials too),
``--dry-run`` prints the plan, ``--set key=value`` overrides any experiment field.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError, model_validator

from trainer import metrics as M
from trainer.config import (
    Experiment,
    ExperimentError,
    _format_validation_error,
    _Strict,
    apply_overrides,
    experiment_from_dict,
    load_raw,
    parse_override,
)

# Experiment fields that can be swept, and where each lives in RLlib's config dict (for reading results).
SWEEPABLE: dict[str, tuple[str, ...]] = {
    "seed": ("seed",),
    "model.hidden": ("_model_config", "fcnet_hiddens"),
    "model.activation": ("_model_config", "fcnet_activation"),
    "sac.actor_lr": ("actor_lr",),
    "sac.critic_lr": ("critic_lr",),
    "sac.alpha_lr": ("alpha_lr",),
    "sac.tau": ("tau",),
    "sac.gamma": ("gamma",),
    "sac.initial_alpha": ("initial_alpha",),
    "sac.target_entropy": ("target_entropy",),
    "sac.batch_size": ("train_batch_size_per_learner",),
    "sac.learning_starts": ("num_steps_sampled_before_learning_starts",),
    "sac.training_intensity": ("training_intensity",),
    "sac.buffer_size": ("replay_buffer_config", "capacity"),
}
DOMAINS = ("grid_search", "choice", "uniform", "loguniform", "randint")
STATUS_COMPLETED, STATUS_EARLY, STATUS_DIVERGED, STATUS_ERROR = "completed", "early_stopped", "diverged", "error"


class SchedulerConfig(_Strict):
    type: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(10_000, ge=1)  # env steps before ASHA may stop a trial
    reduction_factor: float = Field(2.0, gt=1)
    max_t: int | None = Field(None, ge=1)  # env steps; default stopping.env_steps


class SweepConfig(_Strict):
    search_space: dict[str, dict[str, Any]] = Field(default_factory=dict)
    num_samples: int = Field(1, ge=1)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    metric: str = M.VALIDATION_SHARPE_METRIC
    mode: Literal["max", "min"] = "max"
    max_concurrent_trials: int | None = Field(None, ge=1)
    max_failures: int = Field(2, ge=0)
    checkpoint_num_to_keep: int = Field(2, ge=1)
    backtest_best: bool = True
    bootstrap_samples: int = Field(2000, ge=100)

    @model_validator(mode="after")
    def _domains(self) -> SweepConfig:
        for key, spec in self.search_space.items():
            if key not in SWEEPABLE:
                raise ValueError(f"search_space key '{key}' cannot be swept; sweepable: {', '.join(SWEEPABLE)}")
            if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DOMAINS:
                raise ValueError(f"search_space.{key} must be one of {{{' | '.join(DOMAINS)}: ...}}, got {spec!r}")
            kind, arg = next(iter(spec.items()))
            if kind in ("grid_search", "choice"):
                if not isinstance(arg, list) or not arg:
                    raise ValueError(f"search_space.{key}.{kind} needs a non-empty list of values")
            else:
                if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(x, int | float) for x in arg)):
                    raise ValueError(f"search_space.{key}.{kind} needs [low, high]")
                if not arg[0] < arg[1]:
                    raise ValueError(f"search_space.{key}.{kind}: low must be < high, got {arg}")
                if kind == "loguniform" and arg[0] <= 0:
                    raise ValueError(f"search_space.{key}.loguniform: low must be > 0, got {arg[0]}")
        return self


def load_sweep(name_or_path: str, overrides: dict[str, Any] | None = None) -> tuple[Experiment, SweepConfig, Path]:
    """Load an experiment with its sweep; every candidate value is validated against the schema."""
    raw, path = load_raw(name_or_path)
    if overrides:
        raw = apply_overrides(raw, overrides)
    exp = experiment_from_dict(raw, where=str(path))
    try:
        sweep = SweepConfig.model_validate(raw.get("sweep") or {})
    except ValidationError as exc:
        raise ExperimentError(_format_validation_error(str(path), exc, prefix="sweep")) from None
    for key, spec in sweep.search_space.items():
        kind, arg = next(iter(spec.items()))
        candidates = arg if kind in ("grid_search", "choice") else list(arg)
        for value in candidates:
            try:
                experiment_from_dict(apply_overrides(raw, {key: value}), where=str(path))
            except ExperimentError as exc:
                detail = str(exc).split(": ", 1)[1]
                raise ExperimentError(
                    f"{path}: key 'sweep.search_space.{key}': value {value!r} is invalid ({detail})"
                ) from None
    return exp, sweep, path


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
    return {key: makers[kind](arg) for key, spec in sweep.search_space.items() for kind, arg in spec.items()}


def n_trials(sweep: SweepConfig) -> int:
    grid = [len(next(iter(s.values()))) for s in sweep.search_space.values() if "grid_search" in s]
    return math.prod(grid) * sweep.num_samples


def build_plan(exp: Experiment, sweep: SweepConfig) -> dict[str, Any]:
    """Everything the sweep will do, for ``--dry-run`` and the log."""
    from trainer.algorithm import PortfolioSAC
    from trainer.config import build_sac_config

    config = build_sac_config(exp, tune_domains(sweep))
    bundles = PortfolioSAC.default_resource_request(config).bundles
    per_trial: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            per_trial[k] = per_trial.get(k, 0) + v
    return {
        "experiment": exp.name,
        "trials": n_trials(sweep),
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
        if self.iterations is not None and result.get("training_iteration", 0) >= self.iterations:
            return True
        return p.get(M.ENV_STEPS, 0) >= self.env_steps

    def stop_all(self) -> bool:
        return False


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def run_sweep(exp: Experiment, sweep: SweepConfig, storage: Path | str, resume: bool = False) -> Any:
    """Run (or resume) the Tuner; returns the ResultGrid."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from trainer.algorithm import PortfolioSAC
    from trainer.config import build_sac_config

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
        metric_columns={
            M.ENV_STEPS_METRIC: "env_steps",
            sweep.metric: "val_sharpe",
            f"{M.PORTFOLIO}/{M.CRITIC_LOSS}": "critic_loss",
            f"{M.PORTFOLIO}/{M.ENTROPY}": "entropy",
            M.DIVERGED_METRIC: "diverged",
        },
        parameter_columns={"_model_config/fcnet_hiddens": "hidden", "seed": "seed"},
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


# --- summary ------------------------------------------------------------------------------------------
def _get(config: dict, path: tuple[str, ...]) -> Any:
    node: Any = config
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _label(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "(single configuration)"


def bootstrap_ci(values: list[float], n: int, rng: np.random.Generator) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean (nan with fewer than 2 values)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if v.size < 2:
        return float("nan"), float("nan")
    means = v[rng.integers(0, v.size, (n, v.size))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _best_checkpoint(result: Any, metric: str, mode: str) -> tuple[str | None, float]:
    from ray.tune.utils import flatten_dict

    best, best_score = None, -math.inf if mode == "max" else math.inf
    for ckpt, metrics in result.best_checkpoints or []:
        flat = flatten_dict(metrics)
        score = flat.get(metric)
        if flat.get(M.DIVERGED_METRIC) or score is None or not np.isfinite(score):
            continue
        if (mode == "max" and score > best_score) or (mode == "min" and score < best_score):
            best, best_score = ckpt.path, float(score)
    return best, best_score


def summarize_sweep(results: Any, exp: Experiment, sweep: SweepConfig, exp_dir: Path) -> dict[str, Any]:
    """Trials table, per-configuration statistics across seeds, baselines, plots, best-config backtest."""
    from envs.portfolio import PortfolioEnv, load_market
    from trainer.baselines import EQUAL_WEIGHT, MAX_SHARPE, MIN_VOLATILITY, run_baselines
    from trainer.evaluation import load_checkpoint_policy, run_policy

    swept = [k for k in sweep.search_space if k != "seed"]
    target = exp.stopping.env_steps
    market = load_market(exp.data.source, exp.data.env_config()["split_dates"])
    env_kwargs = {k: v for k, v in exp.data.env_config().items() if k not in ("data", "split")}
    rows, curves = [], {}
    for result in results:
        config = result.config or {}
        trial_id = Path(result.path).name
        values = {k: _get(config, SWEEPABLE[k]) for k in swept}
        metrics = result.metrics or {}
        p = metrics.get(M.PORTFOLIO, {})
        steps = int(p.get(M.ENV_STEPS, 0) or 0)
        if result.error is not None:
            status = STATUS_ERROR
        elif p.get(M.DIVERGED):
            status = STATUS_DIVERGED
        elif steps >= target or (
            exp.stopping.iterations and metrics.get("training_iteration", 0) >= exp.stopping.iterations
        ):
            status = STATUS_COMPLETED
        else:
            status = STATUS_EARLY
        ckpt, best_val = _best_checkpoint(result, sweep.metric, sweep.mode)
        row = {
            "trial": trial_id,
            "config": _label({k: values[k] for k in swept}),
            **{k: json.dumps(v) if isinstance(v, list) else v for k, v in values.items()},
            "seed": _get(config, SWEEPABLE["seed"]),
            "status": status,
            "env_steps": steps,
            "iterations": int(metrics.get("training_iteration", 0) or 0),
            "best_checkpoint": ckpt,
            "best_checkpoint_validation_sharpe": best_val if ckpt else float("nan"),
            "error": str(result.error).splitlines()[0] if result.error is not None else "",
        }
        for split in ("validation", "test"):
            for key in (M.SHARPE, M.TOTAL_RETURN):
                row[f"{split}_{key}"] = float("nan")
        if ckpt:
            policy, _ = load_checkpoint_policy(ckpt)
            for split in ("validation", "test"):
                run = run_policy(PortfolioEnv(data=market, **{**env_kwargs, "split": split}), policy)
                row[f"{split}_{M.SHARPE}"] = M.sharpe_annualized(run.net_returns)
                row[f"{split}_{M.TOTAL_RETURN}"] = M.total_return(run.net_returns)
        rows.append(row)
        df = result.metrics_dataframe
        if df is not None and M.ENV_STEPS_METRIC in df and sweep.metric in df:
            curves[trial_id] = (df[M.ENV_STEPS_METRIC].to_numpy(), df[sweep.metric].to_numpy(), status)
    trials = pd.DataFrame(rows).sort_values(["config", "seed", "trial"]).reset_index(drop=True)
    trials.to_parquet(exp_dir / "trials.parquet")

    baselines: dict[str, dict[str, float]] = {}
    for split in ("validation", "test"):
        runs = run_baselines(lambda s=split: PortfolioEnv(data=market, **{**env_kwargs, "split": s}), market, split)
        for name in (EQUAL_WEIGHT, MIN_VOLATILITY, MAX_SHARPE):
            r = runs[name].net_returns
            baselines.setdefault(name, {})[f"{split}_{M.SHARPE}"] = M.sharpe_annualized(r)
            baselines[name][f"{split}_{M.TOTAL_RETURN}"] = M.total_return(r)

    rng = np.random.default_rng(0)
    groups = []
    for label, g in trials.groupby("config", sort=True):
        entry: dict[str, Any] = {"config": label, "trials": len(g)}
        for status in (STATUS_COMPLETED, STATUS_EARLY, STATUS_DIVERGED, STATUS_ERROR):
            entry[f"n_{status}"] = int((g["status"] == status).sum())
        for col in ("validation_sharpe", "test_sharpe", "validation_total_return", "test_total_return"):
            v = g[col].to_numpy(dtype=float)
            finite = v[np.isfinite(v)]
            lo, hi = bootstrap_ci(list(finite), sweep.bootstrap_samples, rng)
            entry[col] = {
                "median": float(np.median(finite)) if finite.size else float("nan"),
                "mean": float(finite.mean()) if finite.size else float("nan"),
                "std": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
                "ci95": [lo, hi],
                "n": int(finite.size),
            }
        groups.append(entry)

    best_group = max(
        (g for g in groups if np.isfinite(g["validation_sharpe"]["median"])),
        key=lambda g: g["validation_sharpe"]["median"] * (1 if sweep.mode == "max" else -1),
        default=None,
    )
    best_trial, backtest = None, None
    if best_group is not None:
        cand = trials[(trials["config"] == best_group["config"]) & trials["best_checkpoint"].notna()]
        if len(cand):
            best_trial = cand.sort_values("validation_sharpe", ascending=sweep.mode == "min").iloc[0].to_dict()
    plots = _sweep_plots(curves, trials, baselines, exp_dir, target)
    if best_trial is not None and sweep.backtest_best:
        from trainer.backtest import run_backtest

        backtest = run_backtest(Path(best_trial["best_checkpoint"]), "test", out_dir=exp_dir / "best_backtest")
    summary = {
        "experiment": exp.name,
        "metric": sweep.metric,
        "mode": sweep.mode,
        "env_steps_per_trial": target,
        "trials": json.loads(trials.to_json(orient="records")),
        "configurations": groups,
        "baselines": baselines,
        "best_configuration": best_group["config"] if best_group else None,
        "best_trial": best_trial,
        "best_backtest_report": str(Path(backtest["out_dir"]) / "report.md") if backtest else None,
        "plots": plots,
    }
    from trainer.report import nan_to_none

    (exp_dir / "summary.json").write_text(json.dumps(nan_to_none(summary), indent=2, default=str))
    (exp_dir / "summary.md").write_text(_summary_markdown(summary))
    return summary


def _fmt_stat(s: dict[str, Any]) -> str:
    if not s["n"]:
        return "n/a"
    lo, hi = s["ci95"]
    ci = f" [{lo:+.2f}, {hi:+.2f}]" if np.isfinite(lo) else ""
    return f"{s['median']:+.2f} (mean {s['mean']:+.2f}{ci})"


def _summary_markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# Sweep {summary['experiment']}",
        "",
        f"Selection metric: `{summary['metric']}` ({summary['mode']}), "
        f"{summary['env_steps_per_trial']:,} env steps per trial. Each trial is scored by its best checkpoint; "
        "statistics are across seeds (median, mean and a 95% bootstrap interval of the mean).",
        "",
        "| configuration | trials | completed | early-stopped | diverged | errors | validation Sharpe | test Sharpe | "
        "test total return |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g in summary["configurations"]:
        tr = g["test_total_return"]
        lines.append(
            f"| {g['config']} | {g['trials']} | {g['n_completed']} | {g['n_early_stopped']} | {g['n_diverged']} | "
            f"{g['n_error']} | {_fmt_stat(g['validation_sharpe'])} | {_fmt_stat(g['test_sharpe'])} | "
            f"{tr['median']:+.1%} |"
            if tr["n"]
            else f"| {g['config']} | {g['trials']} | {g['n_completed']} | {g['n_early_stopped']} | "
            f"{g['n_diverged']} | {g['n_error']} | n/a | n/a | n/a |"
        )
    lines += [
        "",
        "Baselines on the same splits and costs (min_volatility / max_sharpe fitted on the training split):",
        "",
    ]
    lines += ["| baseline | validation Sharpe | test Sharpe | test total return |", "|---|---|---|---|"]
    for name, b in summary["baselines"].items():
        lines.append(
            f"| {name} | {b['validation_sharpe']:+.2f} | {b['test_sharpe']:+.2f} | {b['test_total_return']:+.1%} |"
        )
    lines += ["", f"Best configuration (by median validation Sharpe): **{summary['best_configuration']}**"]
    if summary["best_trial"]:
        lines.append(
            f"- best trial: {summary['best_trial']['trial']}, checkpoint `{summary['best_trial']['best_checkpoint']}`"
        )
    if summary["best_backtest_report"]:
        lines.append(f"- test-split backtest of it: `{summary['best_backtest_report']}`")
    lines += [
        "",
        "Trials:",
        "",
        "| trial | configuration | seed | status | env steps | validation Sharpe | test Sharpe |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for t in summary["trials"]:
        v, te = t.get("validation_sharpe"), t.get("test_sharpe")
        lines.append(
            f"| {t['trial']} | {t['config']} | {t['seed']} | {t['status']} | {t['env_steps']:,} | "
            f"{'n/a' if v is None else f'{v:+.2f}'} | {'n/a' if te is None else f'{te:+.2f}'} |"
        )
    lines += ["", *[f"![{name}]({file})" for name, file in summary["plots"].items()], ""]
    return "\n".join(lines)


def _sweep_plots(curves: dict, trials: pd.DataFrame, baselines: dict, exp_dir: Path, target: int) -> dict[str, str]:
    import matplotlib.pyplot as plt

    from trainer.report import save_figure  # also selects the headless backend

    fig, ax = plt.subplots(figsize=(10, 5))
    for trial_id, (steps, vals, status) in sorted(curves.items()):
        finite = np.isfinite(vals)
        (line,) = ax.plot(steps[finite], vals[finite], marker=".", label=f"{trial_id} ({status})")
        if status != STATUS_COMPLETED and finite.any():
            ax.plot(steps[finite][-1], vals[finite][-1], "x", color=line.get_color(), markersize=12, mew=2)
    ax.axvline(target, color="grey", linestyle=":", linewidth=1)
    save_figure(
        fig,
        ax,
        exp_dir / "validation_curves.png",
        title="Validation Sharpe per trial (x = stopped early / diverged)",
        ylabel="validation Sharpe",
        xlabel="env steps",
        legend_size=7,
    )

    fig, ax = plt.subplots(figsize=(10, 5))
    labels = sorted(trials["config"].unique())
    for i, label in enumerate(labels):
        v = trials.loc[trials["config"] == label, "test_sharpe"].to_numpy(dtype=float)
        ax.scatter(np.full(v.size, i) + np.linspace(-0.1, 0.1, max(v.size, 1))[: v.size], v, zorder=3)
    for name, b in baselines.items():
        ax.axhline(b["test_sharpe"], linestyle="--", linewidth=1, label=f"{name} ({b['test_sharpe']:+.2f})")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=15, fontsize=8)
    save_figure(
        fig,
        ax,
        exp_dir / "test_sharpe_by_config.png",
        title="Test Sharpe per configuration, one point per seed, vs baselines",
        ylabel="test Sharpe (best checkpoint)",
    )
    return {
        "Validation Sharpe vs env steps": "validation_curves.png",
        "Test Sharpe by configuration": "test_sharpe_by_config.png",
    }


def _print_summary(summary: dict[str, Any], exp_dir: Path) -> None:
    print(f"\n=== Sweep {summary['experiment']}: results by configuration (across seeds) ===")
    head = (
        f"{'configuration':<40} {'trials':>6} {'done':>5} {'early':>5} {'div':>4} {'err':>4}  "
        "val Sharpe (median)  test Sharpe (median)"
    )
    print(head)
    print("-" * len(head))
    for g in summary["configurations"]:
        v, t = g["validation_sharpe"], g["test_sharpe"]
        print(
            f"{g['config'][:40]:<40} {g['trials']:>6} {g['n_completed']:>5} {g['n_early_stopped']:>5} "
            f"{g['n_diverged']:>4} {g['n_error']:>4}  {v['median']:>+19.2f}  {t['median']:>+20.2f}"
        )
    for name, b in summary["baselines"].items():
        print(
            f"{'baseline: ' + name:<40} {'':>6} {'':>5} {'':>5} {'':>4} {'':>4}  {b['validation_sharpe']:>+19.2f}  "
            f"{b['test_sharpe']:>+20.2f}"
        )
    print(f"\nbest configuration: {summary['best_configuration']}")
    if summary["best_backtest_report"]:
        print(f"backtest report of its best checkpoint (test split): {summary['best_backtest_report']}")
    print(f"summary: {exp_dir / 'summary.md'} | {exp_dir / 'summary.json'} | trials: {exp_dir / 'trials.parquet'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.tune", description="Ray Tune sweep of SAC portfolio agents."
    )
    parser.add_argument("--exp", default="quick", help="experiment in tune_configs/ (or a YAML path)")
    parser.add_argument("--storage", default="results", help="Tune storage: a directory or a URI (s3://, gs://)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted sweep in --storage")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any field")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local instance)")
    args = parser.parse_args(argv)
    try:
        overrides = dict(parse_override(s) for s in args.set)
        exp, sweep, _ = load_sweep(args.exp, overrides)
        plan = build_plan(exp, sweep)
    except ExperimentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_plan(plan), flush=True)
    if args.dry_run:
        return 0
    storage: Path | str = args.storage if "://" in args.storage else Path(args.storage).resolve()
    # Tune's classic progress table (our columns: env steps, validation Sharpe, critic loss, entropy)
    # instead of the new output engine, which ignores progress_reporter and prints every config key.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    from trainer.monitoring import dashboard_access_message, install_grafana_dashboard

    address = args.address or os.environ.get("RAY_ADDRESS")
    # The dashboard stays on 127.0.0.1 (reach a cluster's with `ray dashboard cluster.yaml`).
    # No address: always an embedded local instance ("local"), never a stale `ray start` found on disk.
    local = {"address": "local", "dashboard_host": "127.0.0.1"}
    ctx = ray.init(ignore_reinit_error=True, **({"address": address} if address else local))
    print(f"Ray: {'joined ' + address if address else 'local instance'}", flush=True)
    dashboard = dashboard_access_message(
        getattr(ctx, "dashboard_url", None), joined=bool(address), grafana_dashboard=install_grafana_dashboard()
    )
    print(dashboard, flush=True)
    # SIGTERM gets Tune's graceful SIGINT handling: experiment state saved, resumable with --resume.
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        check_resources(plan, ray.cluster_resources())
        results = run_sweep(exp, sweep, storage, resume=args.resume)
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
    exp_dir = Path(str(_exp_path(storage, exp.name)))
    if "://" in str(storage):
        exp_dir = Path("results_summary") / exp.name
    exp_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize_sweep(results, exp, sweep, exp_dir)
    _print_summary(summary, exp_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
