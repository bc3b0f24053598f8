"""Tomorrow's trades from a trained agent: ``python -m trainer.decide CHECKPOINT_OR_DIR --data PRICES``.

``--registry DIR`` instead of the checkpoint decides with the live model of a ``trainer.rolling`` registry
(``live.json``: the JSON's ``checkpoint`` names it).

Decides through the backtest's own code (``trainer.evaluation.decision``): the same reader and validation of
the prices as training, the env's features, the frozen observation filter, the deterministic action, the action
mapping, the no-trade band and the position limits. Prints the trades and writes ``decision_<date>.json`` and
``decision_<date>.md`` into ``--out`` (``--json FILE`` chooses the JSON's path). Every refusal is one line naming
the file, ticker or date and the fix (exit 2), and nothing is written then.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from trainer.evaluation.decision import (
    DEFAULT_MAX_STALE_DAYS,
    DecisionError,
    Member,
    decide,
    load_members,
    read_prices,
)
from trainer.evaluation.decision_report import decision_json, decision_text, write_decision
from trainer.evaluation.decision_sources import members_of
from trainer.evaluation.holdings import HoldingsError, all_cash, check_value, read_holdings
from trainer.runtime.cli_types import whole_number
from trainer.runtime.console import quiet_logging

EXIT_BAD_INPUT = 2


def _date(text: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(text).normalize()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer.decide", description=__doc__.splitlines()[0])
    p.add_argument(
        "source", type=Path, nargs="?", help="a checkpoint, a trainer.train run directory, or a sweep/study directory"
    )
    p.add_argument("--registry", type=Path, help="instead of SOURCE: the live model of a trainer.rolling registry")
    p.add_argument("--data", required=True, help="prices ending on the decision date (CSV/Parquet, or sp500)")
    p.add_argument("--holdings", type=Path, help="CSV ticker,weight or ticker,shares (with a cash row); default: cash")
    p.add_argument("--value", type=float, help="the portfolio's value in currency (with weights): notional trades")
    p.add_argument("--as-of", type=_date, help="today's date for the staleness check (default: today)")
    p.add_argument(
        "--max-stale-days",
        type=whole_number(0),
        default=DEFAULT_MAX_STALE_DAYS,
        help=f"business days the last price may be older than --as-of (default {DEFAULT_MAX_STALE_DAYS})",
    )
    p.add_argument("--agent", type=int, help="of a population checkpoint: the agent to decide with, 0 .. K-1")
    p.add_argument("--ensemble", action="store_true", help="of a population checkpoint: average every agent")
    p.add_argument("--out", type=Path, default=Path("decisions"), help="folder for the files (default: ./decisions)")
    p.add_argument("--json", type=Path, help="path of the JSON file (default: OUT/decision_<date>.json)")
    p.add_argument("--verbose", action="store_true", help="show Ray/RLlib log output on the terminal")
    return p


def _check_outputs(args: argparse.Namespace) -> None:
    """Folders that cannot be written are refused before anything is computed."""
    if args.out.exists() and not args.out.is_dir():
        raise DecisionError(f"--out {args.out}: a file is in the way; give a folder for the decision files")
    if args.json is not None and (args.json.is_dir() or not args.json.parent.is_dir()):
        raise DecisionError(f"--json {args.json}: give a file in an existing folder")


def _members(args: argparse.Namespace) -> tuple[list[Member], str]:
    """The policies to decide with: SOURCE's, or the live model of ``--registry``."""
    return members_of(args.source, args.registry, args.agent, args.ensemble)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    quiet_logging(None, args.verbose)
    try:
        _check_outputs(args)
        value = check_value(args.value)
        members, chosen = _members(args)
        loaded = load_members(members)
        state = loaded[1]
        data = read_prices(args.data, state)  # read once: the holdings' prices and the decision's
        holdings = None
        if args.holdings is not None:
            last = data.prices[list(state["tickers"])].iloc[-1].to_numpy()
            holdings = read_holdings(args.holdings, list(state["tickers"]), last, value)
        elif value is not None:
            holdings = all_cash(len(state["tickers"]), value)
        decision = decide(members, data, holdings, as_of=args.as_of, max_stale_days=args.max_stale_days, loaded=loaded)
    except (DecisionError, HoldingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    result = decision_json(decision, holdings)
    if holdings is None:
        print("holdings: none given (--holdings), so the portfolio is taken to be all cash", file=sys.stderr)
    for warning in decision.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    print(f"Decision for {result['date']} (the new weights are held from {result['holding_day']}): {chosen}")
    print(decision_text(result))
    stem = f"decision_{result['date']}"
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.json or args.out / f"{stem}.json"
    write_decision(result, chosen, json_path, args.out / f"{stem}.md")
    print(f"json: {json_path} | report: {args.out / f'{stem}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
