"""What ``trainer.train`` and ``trainer.tune`` check in the driver before Ray starts and before anything is
written: the price data (read and validated once), ticker names the reports need for themselves, whether the
replay buffer and the features fit in memory (``trainer.experiment.memory``, before either is allocated), and
the windows of every fold the run or sweep uses (which computes the features), and a sweep's benchmark
(``sweep.benchmark``) on each of their test windows.

A bad file then gives the data layer's one-line error once, in the driver, instead of every trial or env
runner failing in its own process with a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envs.benchmark import benchmark_returns, load_benchmark, window_days
from envs.data import SP500, TEST, DataError, PriceData, load_prices
from envs.errors import fail
from envs.market import MarketData, load_market_for
from trainer.experiment.config import FOLD_KEY, Experiment
from trainer.experiment.memory import MemoryEstimate, check_memory, estimate_memory
from trainer.experiment.schema import ExperimentError
from trainer.runtime.resources import THIS_MACHINE, available_memory

# The cash position's column beside the tickers in a backtest's weights (trainer.evaluation.backtest_report):
# a ticker of that name would give the table two columns of one name.
CASH = "cash"
RESERVED_TICKERS = (CASH,)


def check_tickers(tickers: Sequence[str], where: str, then: str = "") -> None:
    """Refuse a ticker whose name the backtest's tables use for something else.

    Args:
        tickers: the data's tickers.
        where: the file (or checkpoint) the message names.
        then: what to do after renaming, appended to the fix.

    Raises:
        DataError: naming the ticker and the fix.
    """
    for name in RESERVED_TICKERS:
        if name in tickers:
            raise fail(
                where,
                f"ticker '{name}' has the name of the portfolio's cash position (a column of the backtest's weights "
                f"beside the tickers); rename that column (or that ticker in a long file), e.g. to "
                f"'{name}_asset'{then}",
            )


def checked_prices(exp: Experiment) -> PriceData:
    """The experiment's prices, read and validated as every env will read them, and their tickers checked.

    Raises:
        DataError: the data layer's one-line message, or a reserved ticker name.
    """
    cfg = exp.data.env_config()
    source = str(cfg.get("data", SP500))
    data = load_prices(source, date_format=cfg.get("date_format"), sort_dates=bool(cfg.get("sort_dates", False)))
    check_tickers(data.tickers, source)
    return data


def check_run(exp: Experiment) -> MemoryEstimate:
    """A ``trainer.train`` run's data and memory (this process holds the replay buffer, on this machine).

    Raises:
        ExperimentError: the data layer's message, or a run that cannot fit in memory (the figure and the fix).
    """
    try:
        n_days, n_assets = checked_prices(exp).prices.shape
        est = estimate_memory(exp, n_days, n_assets)
        check_memory(est, available_memory(), THIS_MACHINE)
        load_market_for(exp.data.env_config())
    except DataError as exc:
        raise ExperimentError(str(exc)) from None
    return est


def fits_this_machine(exp: Experiment) -> bool:
    """Whether a ``trainer.train`` run of ``exp`` (its env runners' processes included) passes ``check_run``."""
    try:
        check_run(exp)
    except ExperimentError:
        return False
    return True


def swept_folds(exp: Experiment) -> list[Any]:
    """The walk-forward folds a sweep's trials use (the experiment's own when ``data.fold`` is not swept)."""
    domains = exp.sweep.domains()
    if FOLD_KEY not in domains:
        return [exp.data.fold]
    kind, arg = domains[FOLD_KEY]
    return list(dict.fromkeys(range(arg[0], arg[1]) if kind == "randint" else arg))


def check_sweep(exp: Experiment, where: str, trials: int | None = None, why_trials: str = "") -> MemoryEstimate:
    """A sweep's data, in the driver: the prices once, the memory of ``trials`` trials at once on this machine
    (None: not checked here, the trials run on a cluster's nodes), then the windows of every swept fold.

    Raises:
        ExperimentError: naming ``where`` and ``data`` (and the fold) for bad data; the figure and the fix for
            memory.
    """
    swept = FOLD_KEY in exp.sweep.domains()
    try:
        n_days, n_assets = checked_prices(exp).prices.shape
    except DataError as exc:
        raise ExperimentError(f"{where}: key 'data': {exc}") from None
    est = estimate_memory(exp, n_days, n_assets)
    if trials is not None:
        check_memory(est, available_memory(), THIS_MACHINE, trials, why_trials)
    markets = {}
    for fold in swept_folds(exp):
        try:
            markets[fold] = load_market_for(exp.data.env_config() | {"fold": fold})
        except (DataError, ValueError) as exc:
            fold_text = f" (data.fold={fold})" if swept else ""
            raise ExperimentError(f"{where}: key 'data'{fold_text}: {exc}") from None
    if exp.sweep.benchmark is not None:  # summary only, but refused now rather than after the trials
        check_benchmark(exp.sweep.benchmark, markets, where)
    return est


def check_benchmark(spec: str, markets: dict[Any, MarketData], where: str) -> None:
    """Refuse a ``sweep.benchmark`` that cannot be read or misses a day of the test window of ``markets`` (by
    fold), before any trial starts (the summary pairs every test window with it).

    Raises:
        ExperimentError: one line naming the experiment file, the key, the fold and the benchmark's problem.
    """
    try:
        bench = load_benchmark(spec)
    except DataError as exc:
        raise ExperimentError(f"{where}: key 'sweep.benchmark': {exc}") from None
    for fold, market in markets.items():
        try:
            benchmark_returns(bench, window_days(market, TEST))
        except DataError as exc:
            window = f" (the test window of data.fold={fold})" if fold is not None else ""
            raise ExperimentError(f"{where}: key 'sweep.benchmark'{window}: {exc}") from None
