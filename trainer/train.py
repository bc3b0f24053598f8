"""Train one SAC agent: ``python -m trainer.train --exp NAME``.

Writes into the run directory (``--out``, default ``runs/<exp>/<time>-seed<S>``):

- ``experiment.yaml``: the resolved experiment;
- ``progress.jsonl``: one line of metrics per iteration;
- ``checkpoints/checkpoint_<iteration>``: every ``checkpoint.frequency`` iterations and at the end, each
  written to a temporary directory and renamed, with the replay buffer and the filter statistics;
- ``summary.json``: status (``completed``, ``diverged``, ``interrupted``), env steps, last validation
  metrics, the final checkpoint.

``--resume CHECKPOINT --additional-steps N`` continues a run (step count, optimisers, filter statistics,
replay buffer) for N more env steps. Ctrl-C or SIGTERM finishes the current iteration, writes a final
checkpoint and exits cleanly.
"""

# `python -m trainer.train` imports the package first: trainer/__init__ sets OMP_NUM_THREADS before torch.
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from trainer import metrics as M
from trainer.config import Experiment, ExperimentError, load_experiment, parse_override
from trainer.console import quiet_logging


class _StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between iterations."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        self.signal = signal.Signals(signum).name
        print(
            f"\n{self.signal} received: finishing this iteration, then writing a final checkpoint...",
            flush=True,
        )


def env_steps_of(algo: Any) -> int:
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

    return int(algo.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0) or 0)


def _fmt_eta(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    return str(dt.timedelta(seconds=int(seconds)))


def progress_line(iteration: int, p: dict[str, Any], target: int, eta_s: float) -> str:
    """One line per iteration: progress, ETA, then the registry's progress metrics."""
    steps = p[M.ENV_STEPS]
    cells = [f"[iter {iteration:4d}] env steps {steps:,}/{target:,} ({100 * steps / max(target, 1):3.0f}%)"]
    cells.append(f"ETA {_fmt_eta(eta_s)}")
    for m in M.shown_in(M.PROGRESS):
        if m.key != M.ENV_STEPS:
            cells.append(f"{m.progress_label} {m.format(m.read(p))}")
    return " | ".join(cells)


class _Eta:
    """Remaining time from the env-step rate since the end of the first iteration (start-up excluded)."""

    def __init__(self) -> None:
        self._start: tuple[float, int] | None = None

    def __call__(self, steps: int, target: int) -> float:
        now = time.perf_counter()
        if self._start is None:
            self._start = (now, steps)
            return float("inf")
        elapsed, done = now - self._start[0], steps - self._start[1]
        return (target - steps) * elapsed / done if done > 0 and elapsed > 0 else float("inf")


def _json_default(x: Any) -> Any:
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def run_training(
    exp: Experiment,
    out_dir: Path,
    *,
    resume: Path | None = None,
    additional_steps: int | None = None,
    stop_flag: _StopFlag | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train (or resume) and return the summary written to ``summary.json``."""
    import ray

    from trainer.algorithm import PortfolioSAC
    from trainer.checkpoint import save_atomic
    from trainer.sac_config import build_sac_config

    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / "checkpoints"
    if not ray.is_initialized():
        # RAY_ADDRESS joins a cluster; otherwise an embedded local instance, never a stale `ray start`.
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False, log_to_driver=False)
        quiet_logging(out_dir / "train.log", verbose)  # ray.init configures its loggers again
    if resume is not None:
        algo = PortfolioSAC.from_checkpoint(str(resume))
        target = env_steps_of(algo) + int(additional_steps or exp.stopping.env_steps)
        print(f"resumed {resume} at {env_steps_of(algo):,} env steps, buffer {len(algo.buffer):,} transitions")
    else:
        (out_dir / "experiment.yaml").write_text(yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False))
        algo = build_sac_config(exp).build_algo()
        target = exp.stopping.env_steps
    algo.run_name = out_dir.name  # tags this run's gauges (Prometheus/Grafana)
    stop_flag = stop_flag or _StopFlag()
    status, last_ckpt, reason = M.STATUS_COMPLETED, None, ""
    eta = _Eta()
    freq, keep = exp.checkpoint.frequency, exp.checkpoint.num_to_keep
    iterations_done = 0
    try:
        with open(out_dir / "progress.jsonl", "a") as log:
            while env_steps_of(algo) < target:
                if exp.stopping.iterations is not None and iterations_done >= exp.stopping.iterations:
                    break
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
                if stop_flag.signal:
                    status = M.STATUS_INTERRUPTED
                    break
                if freq and algo.iteration % freq == 0:
                    last_ckpt = save_atomic(algo, ckpt_dir, algo.iteration, keep)
        if status != M.STATUS_DIVERGED:
            algo.evaluate_deterministic()
            last_ckpt = save_atomic(algo, ckpt_dir, algo.iteration, keep)
        summary = {
            "status": status,
            "reason": reason,
            "env_steps": env_steps_of(algo),
            "iterations": algo.iteration,
            "validation": algo.last_evaluation,
            "final_checkpoint": str(last_ckpt) if last_ckpt else None,
            "run_dir": str(out_dir),
        }
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
        return summary
    finally:
        algo.stop()


def default_out_dir(exp: Experiment) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / exp.name / f"{stamp}-seed{exp.seed}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.train", description="Train one SAC portfolio agent.")
    parser.add_argument("--exp", default="smoke", help="experiment name in tune_configs/ or a YAML path")
    parser.add_argument("--data", help="price source: 'sp500' or a CSV/Parquet path (data.source)")
    parser.add_argument("--steps", type=int, help="env steps to train (stopping.env_steps)")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--out", type=Path, help="run directory (default runs/<exp>/<time>-seed<S>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any field")
    parser.add_argument("--resume", type=Path, help="checkpoint directory to continue from")
    parser.add_argument("--additional-steps", type=int, help="with --resume: env steps to add")
    parser.add_argument("--verbose", action="store_true", help="show Ray/RLlib log output on the terminal")
    args = parser.parse_args(argv)
    try:
        overrides = dict(parse_override(s) for s in args.set)
        if args.data:
            overrides["data.source"] = args.data
        if args.steps is not None:
            overrides["stopping.env_steps"] = args.steps
        if args.seed is not None:
            overrides["seed"] = args.seed
        if args.resume is not None:
            args.resume = args.resume.resolve()
            exp = _experiment_of_checkpoint(args.resume, overrides)
        else:
            exp = load_experiment(args.exp, overrides)
        _check_data(exp)
    except (ExperimentError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out_dir = args.out or (args.resume.parent.parent if args.resume else default_out_dir(exp))
    quiet_logging(out_dir / "train.log", args.verbose)
    flag = _StopFlag()
    signal.signal(signal.SIGINT, flag)
    signal.signal(signal.SIGTERM, flag)
    print(f"experiment {exp.name} | data {exp.data.source} | seed {exp.seed} | run dir {out_dir}", flush=True)
    summary = run_training(
        exp, out_dir, resume=args.resume, additional_steps=args.additional_steps, stop_flag=flag, verbose=args.verbose
    )
    print(f"status: {summary['status']}" + (f" ({summary['reason']})" if summary["reason"] else ""))
    print(f"final checkpoint: {summary['final_checkpoint']}")
    print(f"summary: {out_dir / 'summary.json'}")
    return 0 if summary["status"] != M.STATUS_DIVERGED else 3


def _experiment_of_checkpoint(ckpt: Path, overrides: dict[str, Any]) -> Experiment:
    """The experiment a checkpoint was trained with (its run dir's experiment.yaml)."""
    from trainer.checkpoint import CheckpointError, read_state
    from trainer.config import apply_overrides, experiment_from_dict

    try:
        read_state(ckpt)
    except CheckpointError as exc:
        raise ExperimentError(str(exc)) from None
    exp_file = ckpt.parent.parent / "experiment.yaml"
    raw = yaml.safe_load(exp_file.read_text()) if exp_file.exists() else {}
    return experiment_from_dict(apply_overrides(raw, overrides), where=str(exp_file))


def _check_data(exp: Experiment) -> None:
    """Fail fast, with the data layer's message, before Ray starts."""
    from envs.data import DataError
    from envs.market import load_market_for

    try:
        load_market_for(exp.data.env_config())
    except DataError as exc:
        raise ExperimentError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
