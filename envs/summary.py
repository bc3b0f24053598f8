"""``python -m envs.data`` (or ``python -m envs.summary``): validate a price source and print what was read,
its splits and, with ``--exp``, an experiment's walk-forward fold windows."""

from __future__ import annotations

import sys
import warnings

from envs.data import SP500, PriceData, SplitRange, load_prices, split_ranges
from envs.errors import fmt_dates
from envs.features import FeatureConfig
from envs.folds import experiment_data_section, experiment_folds, fold_summary


def summary(data: PriceData, splits: dict[str, SplitRange], lookback: int) -> str:
    """Human-readable summary, as printed by ``python -m envs.data``."""
    p = data.prices
    lines = [
        f"source:   {data.source}",
        f"form:     {data.form}",
        f"tickers:  {len(data.tickers)}: {', '.join(data.tickers)}",
        f"dates:    {len(p)} rows, {fmt_dates([p.index[0]])} .. {fmt_dates([p.index[-1]])}",
        f"splits:   (purge gap / feature window = {lookback} rows)",
    ]
    for s in splits.values():
        lines.append(
            f"  {s.name:<10} {s.start_date.date()} .. {s.end_date.date()}  {s.n_rows} rows ({s.n_rows - 1} steps)"
        )
    lines.append("warnings: " + ("none" if not data.warnings else ""))
    lines += [f"  - {w}" for w in data.warnings]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m envs.data [SOURCE] [--date-format FORMAT] [--sort-dates] [--exp NAME]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m envs.data", description="Validate and summarise prices.")
    parser.add_argument(
        "source", nargs="?", default=None, help="'sp500' (default) or a CSV/Parquet path; with --exp, its data.source"
    )
    parser.add_argument(
        "--date-format",
        metavar="FORMAT",
        help="strptime format of the date column, e.g. '%%d/%%m/%%Y' (default: ISO, or the one format that fits)",
    )
    parser.add_argument(
        "--sort-dates", action="store_true", help="sort rows by date instead of refusing dates out of order"
    )
    parser.add_argument("--exp", help="an experiment (tune_configs/NAME.yaml or a .yaml path): print its fold windows")
    args = parser.parse_args(argv)
    lookback = FeatureConfig().lookback
    try:
        folds, split_dates, source = None, None, args.source
        if args.exp is not None:
            folds, exp_source, _ = experiment_folds(args.exp)
            split_dates = experiment_data_section(args.exp)[0].get("split_dates")
            source = source or exp_source
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = load_prices(source or SP500, date_format=args.date_format, sort_dates=args.sort_dates)
        splits = split_ranges(data, lookback, split_dates)
        text = summary(data, splits, lookback)
        if folds is not None:
            text += "\n" + fold_summary(data, folds, lookback)
    except ValueError as exc:  # DataError, or a bad experiment file (the message names it)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
