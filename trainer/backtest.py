"""Backtest a checkpoint against classical portfolios: ``python -m trainer.backtest CHECKPOINT``.

Restores the policy and the frozen observation-filter statistics from the checkpoint (no Ray cluster),
runs the deterministic policy (tanh of the Gaussian mean) over the whole split through the same env and
costs as training, and simulates Equal Weight, Buy-and-Hold, Minimum Volatility and Maximum Sharpe
(fitted on the training split only), plus the look-ahead variants fitted on the split itself (labelled).

Writes into ``--out`` (default ``<checkpoint>/../../backtest_<split>``): ``backtest.json``,
``values.parquet`` (daily value of every strategy), ``weights.parquet`` (the agent's daily weights),
``equity.png``, ``drawdowns.png``, ``weights.png``, ``training.png``, ``report.md`` and ``report.html``.

The policy is read from the checkpoint's ``policy/`` files (JSON and plain arrays), never from RLlib's
pickles, so backtesting someone else's checkpoint cannot run code from it. A checkpoint of an older version
has no ``policy/``: ``--trust-pickle`` writes it once from RLlib's pickles (which can run code: only for a
checkpoint you trust), and every later backtest reads it without pickle.

Two things never pass silently: an evaluated window that overlaps the checkpoint's training window (other
``--data``, or another ``--fold``: the agent saw those days) is warned about on the terminal, in the report
and in ``backtest.json``; a baseline that cannot be fitted is listed as not fitted, with the reason.

An output folder that cannot be written (a file in its path) is refused before the simulation runs (exit 2), as
is a checkpoint trained on a ticker named ``cash`` (the weights' cash column); a report that cannot be written
(a full disk) is a one-line error naming the folder (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from envs.data import DataError
from trainer.evaluation import report as R
from trainer.evaluation.backtest_report import default_report_name, run_backtest
from trainer.evaluation.relative import relative_text
from trainer.evaluation.simulation import BacktestError
from trainer.experiment.preflight import check_tickers
from trainer.runtime.checkpoint import CheckpointError, read_state
from trainer.runtime.console import quiet_logging
from trainer.runtime.errors import ExperimentError
from trainer.runtime.paths import check_output_dir, os_error_text

EXIT_WRITE_FAILED = 1
EXIT_BAD_INPUT = 2


def check_before_simulating(args: argparse.Namespace) -> Path:
    """What can be refused before the simulation runs: an output folder that cannot be written, and a checkpoint
    trained on a ticker whose name the report's tables need (a damaged or foreign checkpoint is left to the
    simulation, which names the file). Returns the output folder.

    Raises:
        ExperimentError: the output folder; DataError: the ticker.
    """
    checkpoint = args.checkpoint.resolve()
    out = args.out or checkpoint.parent.parent / default_report_name(
        checkpoint, args.split, args.data, args.cost_bps, args.fold, args.agent
    )
    check_output_dir(out, "--out")
    try:
        tickers = read_state(checkpoint).get("tickers") or []
    except (CheckpointError, OSError):
        return out
    check_tickers([str(t) for t in tickers], f"{checkpoint}: its training data", ", and train again")
    return out


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
    parser.add_argument(
        "--benchmark",
        metavar="sp500|FILE:COLUMN",
        help="also compare every strategy with this price series over the same days (excess return, tracking "
        "error, information ratio, beta): 'sp500' is skfolio's bundled S&P 500 index, FILE:COLUMN a column of a "
        "CSV/Parquet price file (off by default)",
    )
    parser.add_argument("--out", type=Path, help="output directory")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="a checkpoint of an older version without policy/ files: write them once from RLlib's pickles, "
        "which can run code (only for a checkpoint you trust)",
    )
    parser.add_argument("--verbose", action="store_true", help="show Ray/RLlib log output on the terminal")
    args = parser.parse_args(argv)
    # RLlib's notices (deprecations, while --trust-pickle restores its module) are not for the terminal; errors are.
    quiet_logging(None, args.verbose)
    out = args.out
    try:
        out = check_before_simulating(args)
        if args.trust_pickle:
            from trainer.rl.policy_export import convert_checkpoint

            written = convert_checkpoint(args.checkpoint)
            if written is not None:
                print(f"wrote {written} from RLlib's pickles (--trust-pickle); later backtests read it without pickle")
        result = run_backtest(
            args.checkpoint, args.split, args.data, args.cost_bps, out, args.fold, args.agent, args.benchmark
        )
    except (BacktestError, CheckpointError, ExperimentError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # a full disk while the report was written
        print(f"error: {out}: not written ({os_error_text(exc)}): make room, then backtest again", file=sys.stderr)
        return EXIT_WRITE_FAILED
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
    if result["benchmark"] is not None:
        print(relative_text(result["benchmark"], d["n_days"]))
    out = Path(result["out_dir"])
    print(f"report: {out / 'report.md'} | {out / 'report.html'} | json: {out / 'backtest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
