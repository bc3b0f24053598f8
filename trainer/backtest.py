"""Backtest a checkpoint against classical portfolios: ``python -m trainer.backtest CHECKPOINT``.

Restores the policy and the frozen observation-filter statistics from the checkpoint (no Ray cluster),
runs the deterministic policy (tanh of the Gaussian mean) over the whole split through the same env and
costs as training, and simulates Equal Weight, Buy-and-Hold, Minimum Volatility and Maximum Sharpe
(fitted on the training split only), plus the look-ahead variants fitted on the split itself (labelled).

Writes into ``--out`` (default ``<checkpoint>/../../backtest_<split>``): ``backtest.json``,
``values.parquet`` (daily value of every strategy), ``weights.parquet`` (the agent's daily weights),
``equity.png``, ``drawdowns.png``, ``weights.png``, ``training.png``, ``report.md`` and ``report.html``.

Two things never pass silently: an evaluated window that overlaps the checkpoint's training window (other
``--data``, or another ``--fold``: the agent saw those days) is warned about on the terminal, in the report
and in ``backtest.json``; a baseline that cannot be fitted is listed as not fitted, with the reason.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from envs.market import MarketData, load_market_for
from envs.population import SEEDS_KEY
from envs.portfolio import PortfolioEnv
from envs.settings import PortfolioSettings
from trainer import metrics as M
from trainer import report as R
from trainer.baselines import DESCRIPTIONS, LOOKAHEAD, run_baselines
from trainer.checkpoint import CheckpointError, load_policy, population_seeds
from trainer.console import quiet_logging
from trainer.evaluation import EvalRun, run_policy

SAC = "sac"


class BacktestError(ValueError):
    """A bad checkpoint or data for a backtest; the message says which and how to fix it."""


@dataclass
class Simulation:
    """A checkpoint's deterministic policy (and optionally the baselines) run over one split.

    ``not_fitted`` names the baselines that could not be fitted, with the reason; ``warnings`` says what
    makes the result not out-of-sample (an evaluated window that overlaps the training window).
    """

    checkpoint: Path
    split: str
    state: dict[str, Any]
    env_config: dict[str, Any]
    market: MarketData
    runs: dict[str, EvalRun]
    not_fitted: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    agent: int | None = None  # which agent of a population checkpoint (None: a single agent)
    seed: int | None = None  # that agent's seed


def _window(market: MarketData, split: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    rng = market.splits[split]
    return market.dates[rng.start], market.dates[rng.end]


def _span(window: tuple[pd.Timestamp, pd.Timestamp]) -> str:
    return f"{window[0].date()} .. {window[1].date()}"


def _describe(env_cfg: dict[str, Any]) -> str:
    fold = env_cfg.get("fold")
    return f"{env_cfg.get('data')}" + (f", fold {fold}" if fold is not None else "")


def training_overlap(state: dict[str, Any], env_cfg: dict[str, Any], market: MarketData, split: str) -> str | None:
    """A warning when the evaluated window overlaps the checkpoint's training window, else None.

    The training window is that of the checkpoint's own env config (its data, split dates or fold); the
    evaluated one is ``split`` of ``market`` (maybe other data or another fold). Days in both were seen in
    training, so the result is not out-of-sample.
    """
    from envs.data import DataError

    train_cfg = dict(state["env_config"])
    try:
        trained = _window(market if _same_windows(train_cfg, env_cfg) else load_market_for(train_cfg), "train")
    except (DataError, ValueError) as exc:
        return (
            f"cannot check that the {split} window is outside the checkpoint's training window: its training "
            f"data cannot be loaded ({exc})"
        )
    evaluated = _window(market, split)
    if evaluated[0] > trained[1] or evaluated[1] < trained[0]:
        return None
    return (
        f"the {split} window {_span(evaluated)} ({_describe(env_cfg)}) overlaps the checkpoint's training window "
        f"{_span(trained)} ({_describe(train_cfg)}): the agent was trained on some of these days, so this is "
        f"NOT an out-of-sample result; evaluate on days after {trained[1].date()} or before {trained[0].date()}"
    )


def _same_windows(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("data", "split_dates", "folds", "fold", "date_format", "sort_dates")
    return all(a.get(k) == b.get(k) for k in keys)


def simulate(
    checkpoint: Path | str,
    split: str = "test",
    data: str | None = None,
    cost_bps: float | None = None,
    baselines: bool = True,
    fold: int | None = None,
    agent: int | None = None,
) -> Simulation:
    """Run the checkpoint's policy (frozen filter, tanh of the mean) and, with ``baselines``, every baseline.

    The one evaluation of a checkpoint: ``run_backtest`` and the sweep report both use it.

    Args:
        checkpoint: a checkpoint directory.
        split: the window to evaluate (``"test"`` or ``"validation"``).
        data: other prices with the same tickers (default: the training data).
        cost_bps: other transaction costs (default: the training costs).
        baselines: also run the classical baselines.
        fold: evaluate on this walk-forward fold's windows (of the checkpoint's fold layout) instead of the
            checkpoint's own windows.
        agent: of a population checkpoint (``sac.population``), the agent to run (0 .. K-1); required there,
            refused for a single agent.
    """
    from envs.data import DataError

    checkpoint = Path(checkpoint).resolve()
    if cost_bps is not None:
        try:
            PortfolioSettings.check("cost_bps", cost_bps)
        except ValueError as exc:
            raise BacktestError(f"--cost-bps {cost_bps!r}: {exc}") from None
    try:
        # verified (manifest: sizes and hashes) and restored once for the policy and its state
        policy, state = load_policy(checkpoint, usable=True, agent=agent)
    except CheckpointError as exc:
        raise BacktestError(str(exc)) from None
    env_cfg = dict(state["env_config"])
    env_cfg.pop(SEEDS_KEY, None)  # a population's agent runs alone, in one env of its own
    if data is not None:
        env_cfg["data"] = data
    if cost_bps is not None:
        env_cfg["cost_bps"] = float(cost_bps)
    if fold is not None:
        env_cfg["fold"], env_cfg["split_dates"] = fold, None  # a fold's windows replace the split dates
    env_cfg["split"] = split
    try:
        market = load_market_for(env_cfg)
    except (DataError, ValueError) as exc:
        raise BacktestError(f"{checkpoint}: {exc}" if fold is not None else str(exc)) from None
    if list(market.tickers) != list(state["tickers"]):
        raise BacktestError(
            f"{checkpoint}: trained on {len(state['tickers'])} assets ({', '.join(state['tickers'][:5])}...) but "
            f"{env_cfg['data']} has {len(market.tickers)} ({', '.join(market.tickers[:5])}...); backtest on data "
            "with the same tickers in the same order"
        )
    env_kwargs = {k: v for k, v in env_cfg.items() if k != "data"}

    def make_env() -> PortfolioEnv:
        return PortfolioEnv(data=market, **env_kwargs)

    runs = {SAC: run_policy(make_env(), policy)}
    not_fitted: dict[str, str] = {}
    if baselines:
        baseline_runs = run_baselines(make_env, market, split)
        runs.update(baseline_runs)
        not_fitted = baseline_runs.not_fitted
    overlap = training_overlap(state, env_cfg, market, split)
    seeds = population_seeds(state)
    return Simulation(
        checkpoint,
        split,
        state,
        env_cfg,
        market,
        runs,
        not_fitted,
        [overlap] if overlap else [],
        agent,
        seeds[agent] if seeds and agent is not None else None,
    )


def default_report_name(
    checkpoint: Path, split: str, data: str | None, cost_bps: float | None, fold: int | None, agent: int | None
) -> str:
    """The report folder's name in the run directory: what was backtested, so that backtests of other
    checkpoints, agents, folds, costs or data sit side by side instead of replacing one another
    (``backtest_test_checkpoint_000010``, ``..._agent1``, ``..._cost5bps``, ``..._fold2``, ``..._data-<file>``)."""
    name = f"backtest_{split}_{checkpoint.name}"
    if agent is not None:
        name += f"_agent{agent}"
    if fold is not None:
        name += f"_fold{fold}"
    if cost_bps is not None:
        name += f"_cost{cost_bps:g}bps"
    if data is not None:
        name += f"_data-{Path(data).stem}"
    return name


def run_backtest(
    checkpoint: Path,
    split: str = "test",
    data: str | None = None,
    cost_bps: float | None = None,
    out_dir: Path | None = None,
    fold: int | None = None,
    agent: int | None = None,
) -> dict[str, Any]:
    """Backtest ``checkpoint`` on ``split``, write the report; returns the ``backtest.json`` content.

    ``agent`` picks one agent of a population checkpoint (see ``simulate``). Without ``out_dir`` the report goes
    to ``<run dir>/<default_report_name(...)>``.
    """
    sim = simulate(checkpoint, split, data, cost_bps, fold=fold, agent=agent)
    checkpoint, state, env_cfg, market, runs = sim.checkpoint, sim.state, sim.env_config, sim.market, sim.runs
    strategies = {name: M.performance(r) for name, r in runs.items()}
    for name in strategies:
        strategies[name]["lookahead"] = name in LOOKAHEAD

    out_dir = (
        Path(out_dir)
        if out_dir
        else checkpoint.parent.parent / default_report_name(checkpoint, split, data, cost_bps, fold, agent)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    sac_run = runs[SAC]
    dates = market.dates[sac_run.step_indices + 1]  # value after holding from day t to t+1
    values = pd.DataFrame({name: r.values for name, r in runs.items()}, index=dates)
    values.index.name = "date"
    values.to_parquet(out_dir / "values.parquet")
    weights = pd.DataFrame(sac_run.weights, columns=[*market.tickers, "cash"], index=market.dates[sac_run.step_indices])
    weights.index.name = "date"
    weights.to_parquet(out_dir / "weights.parquet")

    rng = market.splits[split]
    first, last = market.dates[rng.start], market.dates[rng.end]
    plots = {
        "Equity curves": R.plot_equity(values, out_dir / "equity.png", f"{split} split, after costs").name,
        "Drawdowns": R.plot_drawdowns(values, out_dir / "drawdowns.png").name,
        "Agent weights": R.plot_weights(weights, out_dir / "weights.png").name,
        "Training curves": R.plot_training(state.get("history") or [], out_dir / "training.png").name,
    }
    facts = [
        *(f"WARNING: {w}" for w in sim.warnings),
        f"checkpoint: {checkpoint}",
        *([_agent_line(sim)] if sim.agent is not None else []),
        f"data: {env_cfg['data']} ({len(market.tickers)} assets); split: {split}, {first.date()} .. {last.date()} "
        f"({rng.n_rows - 1} trading days)",
        f"costs: {env_cfg['cost_bps']:g} bp on turnover, paid from the portfolio value; daily rebalancing for all",
        f"agent: deterministic SAC policy (tanh of the Gaussian mean), observation filter frozen at the "
        f"checkpoint ({state.get('obs_filter_count', 0):,} observations)",
        "baselines min_volatility / max_sharpe were fitted on the training split only; the *_lookahead "
        "variants were fitted on this split itself and SAW THE FUTURE (shown for reference, not a fair comparison)",
        *(f"{name}: NOT FITTED, {reason}" for name, reason in sim.not_fitted.items()),
    ]
    descriptions = {SAC: "the trained agent", **DESCRIPTIONS}
    R.write_report(
        out_dir,
        title=f"Backtest ({split})" + (" - OVERLAPS THE TRAINING WINDOW" if sim.warnings else ""),
        facts=facts,
        strategies=strategies,
        descriptions=descriptions,
        plots=plots,
    )
    result = {
        "strategies": strategies,
        "split": split,
        "dates": {"start": str(first.date()), "end": str(last.date()), "n_days": int(rng.n_rows - 1)},
        "checkpoint": str(checkpoint),
        "data": env_cfg["data"],
        "cost_bps": env_cfg["cost_bps"],
        "tickers": list(market.tickers),
        "fold": env_cfg.get("fold"),
        "agent": sim.agent,
        "seed": sim.seed,
        "not_fitted": sim.not_fitted,
        "warnings": sim.warnings,
        "out_dir": str(out_dir),
    }
    (out_dir / "backtest.json").write_text(json.dumps(R.nan_to_none(result), indent=2))
    return result


def _agent_line(sim: Simulation) -> str:
    n = len(population_seeds(sim.state) or [])
    return f"agent {sim.agent} (seed {sim.seed}) of a population of {n} trained together (sac.population)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.backtest", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--split", choices=["test", "validation"], default="test")
    parser.add_argument("--data", help="price source (default: the one the checkpoint was trained on)")
    parser.add_argument("--cost-bps", type=float, help="transaction costs (default: the training costs)")
    parser.add_argument(
        "--fold", type=int, help="evaluate on this walk-forward fold's windows (default: the checkpoint's own)"
    )
    parser.add_argument(
        "--agent", type=int, help="of a population checkpoint (sac.population): the agent to backtest, 0 .. K-1"
    )
    parser.add_argument("--out", type=Path, help="output directory")
    parser.add_argument("--verbose", action="store_true", help="show Ray/RLlib log output on the terminal")
    args = parser.parse_args(argv)
    # RLlib's notices while restoring the module (deprecations) are not for the terminal; errors still are.
    quiet_logging(None, args.verbose)
    try:
        result = run_backtest(args.checkpoint, args.split, args.data, args.cost_bps, args.out, args.fold, args.agent)
    except BacktestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for warning in result["warnings"]:
        print(f"WARNING: {warning}", file=sys.stderr)
    d = result["dates"]
    agent = f" of agent {result['agent']} (seed {result['seed']})" if result["agent"] is not None else ""
    print(
        f"Backtest{agent} on the {result['split']} split {d['start']} .. {d['end']} ({d['n_days']} days), "
        f"{result['cost_bps']:g} bp costs"
    )
    print(R.text_table(result["strategies"]))
    print("(*_lookahead baselines were fitted on this split: they saw the future)")
    for name, reason in result["not_fitted"].items():
        print(f"{name}: not fitted, {reason}")
    out = Path(result["out_dir"])
    print(f"report: {out / 'report.md'} | {out / 'report.html'} | json: {out / 'backtest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
