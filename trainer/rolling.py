"""Rolling retraining with a promotion gate: ``python -m trainer.rolling --exp NAME --data PRICES --registry DIR``.

One round, for the last date D of PRICES:

1. **Windows** (``envs.folds.round_ranges``): validation is the last ``rolling.validation_days`` rows up to D;
   training ends the feature lookback (the purge gap) before it, ``expanding`` from the start of the data or
   ``rolling`` over the last ``rolling.train_days`` rows. There is no test window: the round's test is the
   future, the days its model trades after D.
2. **Training**: ``python -m trainer.train`` for each seed of the experiment (its ``seed``, or the seeds of a
   ``sweep.search_space.seed`` grid; a population trains its K agents in one run), into
   ``rounds/<ID>/runs/seed<S>/``, every checkpoint kept and without the replay buffer. With
   ``rolling.warm_start`` each run starts from the live model's network weights (``model.init_from``).
3. **Selection and gate** (``trainer.evaluation.gate``): the candidate is the best checkpoint (a population's
   best agent) by ``sweep.metric`` on validation, as a sweep selects; it is compared with Equal Weight and the
   live model on the validation window, paired day by day, and ``rolling.promote_if`` decides.
4. **Record** (``trainer.runtime.registry``): ``rounds/<ID>/round.json`` holds the decision and its figures;
   on promotion ``live.json`` is replaced atomically. A round is not due (exit 0, nothing trained) until
   ``rolling.every`` trading days have passed since the last decided round, unless ``--force``.

``--rollback ROUND`` makes an earlier promoted round's model live again. ``--simulate --start DATE`` replays
rounds from DATE every ``rolling.every`` rows, each on the prices up to its date only (a Parquet file per round
under ``prices/``), then reports the live models' track record stitched day by day against Equal Weight and
never retraining (``trainer.evaluation.stitch``); the same command continues an interrupted replay.

Ctrl-C or SIGTERM stops the training run at the end of its iteration, records the round as interrupted (the
live model and every other round are untouched) and exits 130 / 143; the same command starts the round again.
Exit codes: 0 decided (promoted or not) or not due, 1 no usable candidate or a training run that failed, 2 bad
input, 130 / 143 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import yaml

from envs.data import FORM_WIDE, DataError, PriceData, load_prices
from envs.features import FeatureConfig
from envs.folds import resolve_experiment_path, round_ranges, window_dates
from trainer.experiment.config import Experiment
from trainer.experiment.loading import ExperimentError, load_experiment, parse_override
from trainer.experiment.rolling_config import VALIDATION_PREFIX
from trainer.experiment.rounds import round_experiment, round_seeds
from trainer.metrics import registry as M
from trainer.runtime import registry as R
from trainer.runtime.checkpoint import CheckpointError, list_checkpoints, read_state
from trainer.runtime.child import ForwardingStopFlag, run_child
from trainer.runtime.mlflow_registry import child_args, record_round
from trainer.runtime.run_dir import CHECKPOINTS_DIR, EXPERIMENT_FILE, write_atomic
from trainer.runtime.tracking import Store, add_argument, open_store

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3  # trainer.train's
RUNS_DIR = "runs"
PRICES_DIR = "prices"  # a replay's price files, one per round: the prices up to its date


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer.rolling", description=__doc__.splitlines()[0])
    p.add_argument("--registry", type=Path, required=True, help="the registry directory (created by a first round)")
    p.add_argument("--exp", help="experiment name in tune_configs/ or a YAML path; it needs a rolling section")
    p.add_argument("--data", help="prices that end on the round's date (CSV/Parquet, or sp500)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any field")
    p.add_argument("--force", action="store_true", help="run the round even if rolling.every days have not passed")
    p.add_argument("--rollback", metavar="ROUND", help="make this earlier promoted round's model live again")
    p.add_argument("--simulate", action="store_true", help="replay rounds over history (with --start) as if live")
    p.add_argument(
        "--start", type=_date, help="with --simulate: the first round's date (then every rolling.every days)"
    )
    add_argument(p, "the registry directory (rounds: their model versions in MLflow's model registry)")
    return p


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


# --- inputs ---------------------------------------------------------------------------------------------------
def _load(args: argparse.Namespace) -> tuple[Experiment, list[int], PriceData, str]:
    """The validated experiment, its seeds, the round's prices and the experiment's name for messages."""
    if args.exp is None or args.data is None:
        raise ExperimentError("a round needs --exp NAME and --data PRICES (or --rollback ROUND alone)")
    overrides = dict(parse_override(s) for s in args.set)
    overrides["data.source"] = args.data
    exp = load_experiment(args.exp, overrides)
    where = str(resolve_experiment_path(args.exp)) + (f" with --set {', '.join(args.set)}" if args.set else "")
    seeds = round_seeds(exp, where)
    try:
        data = load_prices(exp.data.source, date_format=exp.data.date_format, sort_dates=exp.data.sort_dates)
    except DataError as exc:
        raise ExperimentError(str(exc)) from None
    return exp, seeds, data, where


def _windows(exp: Experiment, data: PriceData) -> dict[str, list[str]]:
    rolling = exp.rolling
    assert rolling is not None
    try:
        ranges = round_ranges(
            data,
            FeatureConfig.of(exp.data.features).lookback,
            rolling.validation_days,
            rolling.train_days,
            rolling.window,
        )
    except DataError as exc:
        raise ExperimentError(str(exc)) from None
    return window_dates(ranges)


def _not_due(registry: Path, data: PriceData, every: int) -> str | None:
    """Why no round is due on the prices' last date (None: it is), from the last decided round."""
    decided = [(rid, rec) for rid, rec in R.rounds(registry) if rec.get("status") == R.STATUS_DECIDED]
    if not decided:
        return None
    last_id, last = decided[-1]
    dates = data.prices.index
    last_date = dt.date.fromisoformat(str(last["date"]))
    if dates[-1].date() < last_date:
        raise ExperimentError(
            f"--data {data.source}: it ends on {dates[-1].date()}, before the last round {last_id} ({last_date}); a "
            "round needs prices up to a later date"
        )
    passed = int((dates.date > last_date).sum())
    if passed >= every:
        return None
    return (
        f"no round due: {passed} trading day(s) since round {last_id} ({last_date}), rolling.every is {every}; "
        f"the next round is due after {every - passed} more (--force runs one now)"
    )


def _check_live_universe(live: R.LiveModel | None, data: PriceData) -> None:
    if live is None:
        return
    try:
        tickers = read_state(live.checkpoint).get("tickers") or []
    except CheckpointError as exc:
        raise ExperimentError(f"the live model (round {live.round}): {exc}") from None
    if sorted(tickers) != sorted(data.tickers):
        raise ExperimentError(
            f"--data {data.source}: its tickers ({', '.join(data.tickers)}) are not the live model's (round "
            f"{live.round}: {', '.join(tickers)}); a registry holds one universe: use another --registry for this one"
        )


# --- training and the decision -------------------------------------------------------------------------------
def _train(
    folder: Path, seeds: list[int], flag: ForwardingStopFlag, store: Store | None
) -> tuple[str, int, str | None]:
    """Train every seed's run: ``(status, exit code, error line)``; status completed, interrupted or failed."""
    for seed in seeds:
        if flag.signum is not None:
            return M.STATUS_INTERRUPTED, flag.exit_code, None
        out = folder / RUNS_DIR / f"seed{seed}"
        print(f"--- training seed {seed} into {out}", flush=True)
        cmd = [sys.executable, "-m", "trainer.train", "--exp", str(folder / EXPERIMENT_FILE), "--out", str(out)]
        result = run_child([*cmd, "--seed", str(seed), *child_args(store)], flag)
        if flag.signum is not None or result.returncode in (130, 143):
            return M.STATUS_INTERRUPTED, flag.exit_code if flag.signum else result.returncode, None
        if result.returncode not in (0, EXIT_DIVERGED):  # a diverged run's earlier checkpoints stay candidates
            error = result.error or f"the training run of seed {seed} failed (exit {result.returncode}; see above)"
            return R.STATUS_FAILED, result.returncode, error
    return M.STATUS_COMPLETED, 0, None


def _candidates(folder: Path) -> list[tuple[Path, int]]:
    out = []
    for run in sorted((folder / RUNS_DIR).glob("seed*")):
        seed = int(run.name.removeprefix("seed"))
        out.extend((ckpt, seed) for ckpt in list_checkpoints(run / CHECKPOINTS_DIR))
    return out


def _decide(
    registry: Path, round_id: str, record: dict[str, Any], exp: Experiment, live: R.LiveModel | None, source: str
) -> int:
    """Select the candidate, run the gate, record the decision and (on promotion) make it live."""
    # imported here: torch and skfolio come with them, and a refused command never needs them
    from trainer.evaluation.gate import gate_text, run_gate, select_candidate
    from trainer.evaluation.simulation import BacktestError

    assert exp.rolling is not None
    folder = R.round_dir(registry, round_id)
    candidate = select_candidate(_candidates(folder), exp.sweep.metric, exp.sweep.mode)
    if candidate is None:
        record.update(status=R.STATUS_DECIDED, reason="not promoted: no checkpoint with a finite validation score")
        R.write_round(registry, round_id, record)
        print(f"error: round {round_id}: {record['reason']} (every run diverged?); the live model is unchanged")
        return EXIT_FAILED
    agent = f", agent {candidate.agent}" if candidate.agent is not None else ""
    print(
        f"candidate: seed {candidate.seed}{agent}, {candidate.checkpoint.name} "
        f"({exp.sweep.metric.removeprefix(VALIDATION_PREFIX)} {candidate.score:+.3f} on validation)"
    )
    try:
        gate = run_gate(
            candidate,
            (live.checkpoint, live.agent) if live else None,
            source,
            record["windows"],
            exp.rolling.promote_if,
            exp.sweep.bootstrap_samples,
        )
    except BacktestError as exc:
        record.update(status=R.STATUS_FAILED, reason=f"gate failed: {exc}")
        R.write_round(registry, round_id, record)
        print(f"error: round {round_id}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(gate_text(gate.figures, live.round if live else None))
    record.update(
        status=R.STATUS_DECIDED,
        promoted=gate.promoted,
        reason=gate.reason,
        checkpoint=R.relative(registry, candidate.checkpoint),
        agent=candidate.agent,
        seed=candidate.seed,
        selection={"metric": exp.sweep.metric, "mode": exp.sweep.mode, "score": candidate.score},
        figures=gate.figures,
        checks=[{"name": n, "passed": ok, "text": t} for n, ok, t in gate.checks],
        finished=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    )
    R.write_round(registry, round_id, record)
    if gate.promoted:
        R.set_live(registry, round_id, record, "promoted by the gate")
        print(f"PROMOTED: round {round_id} is live ({gate.reason.removeprefix('promoted: ')})")
    else:
        stays = f"round {live.round} stays live" if live else "no model is live yet"
        print(f"NOT PROMOTED: {gate.reason.removeprefix('not promoted: ')}; {stays}")
    print(f"record: {folder / R.ROUND_FILE}")
    return 0


def _round(
    registry: Path,
    exp: Experiment,
    seeds: list[int],
    data: PriceData,
    source: str,
    flag: ForwardingStopFlag,
    store: Store | None = None,
) -> int:
    """One round on ``data`` (read from ``source`` by its runs), the registry's lock held: start it, train,
    decide. Returns the command's exit code."""
    assert exp.rolling is not None
    split_dates = _windows(exp, data)
    live = R.live_model(registry) if R.live_record(registry) else None
    _check_live_universe(live, data)
    init_from = str(live.checkpoint) if exp.rolling.warm_start and live is not None else None
    raw = round_experiment(exp, source, split_dates, init_from)
    round_id, notes = R.start_round(registry, str(data.prices.index[-1].date()))
    folder = R.round_dir(registry, round_id)
    for note in notes:
        print(note)
    write_atomic(folder / EXPERIMENT_FILE, yaml.safe_dump(raw, sort_keys=False))
    record = R.read_round(registry, round_id)
    record.update(
        experiment=exp.name,
        data=source,
        windows=split_dates,
        seeds=seeds,
        population=exp.sac.population,
        warm_start_from=live.round if init_from else None,
        live_before=live.round if live else None,
        rule=exp.rolling.promote_if.model_dump(mode="json"),
    )
    R.write_round(registry, round_id, record)
    print(
        f"round {round_id}: {exp.name} on {source} | train {split_dates['train'][0]} .. {split_dates['train'][1]} | "
        f"validation {split_dates['validation'][0]} .. {split_dates['validation'][1]} | seeds "
        f"{', '.join(map(str, seeds))} | live {live.round if live else 'none'}",
        flush=True,
    )
    status, code, error = _train(folder, seeds, flag, store)
    if status == M.STATUS_INTERRUPTED:
        record.update(status=status, reason=f"interrupted by {flag.signal or 'a signal'} while training")
        R.write_round(registry, round_id, record)
        print(
            f"round {round_id} interrupted: the live model and every recorded round are unchanged; run the same "
            "command again to start this round again",
            file=sys.stderr,
        )
        return code
    if status == R.STATUS_FAILED:
        record.update(status=status, reason=f"training failed: {error}")
        R.write_round(registry, round_id, record)
        print(f"error: round {round_id}: {error}; the live model is unchanged", file=sys.stderr)
        return EXIT_BAD_INPUT if code == EXIT_BAD_INPUT else EXIT_FAILED
    code = _decide(registry, round_id, record, exp, live, source)
    record_round(store, registry, round_id)  # with --mlflow: its model version, and the alias live
    return code


def run_round(args: argparse.Namespace, flag: ForwardingStopFlag) -> int:
    registry = R.registry_dir(args.registry, must_exist=False)
    exp, seeds, data, _ = _load(args)
    assert exp.rolling is not None
    _windows(exp, data)  # prices too short are refused before anything is written
    with R.registry_lock(registry):
        (registry / R.ROUNDS_DIR).mkdir(exist_ok=True)
        if not args.force and (why := _not_due(registry, data, exp.rolling.every)):
            print(why)
            return 0
        return _round(registry, exp, seeds, data, exp.data.source, flag, args.store)


def _prefix(data: PriceData, rows: int, path: Path) -> PriceData:
    """The first ``rows`` rows of ``data``, written to ``path`` (Parquet: the float64 prices exactly) for the
    round's training runs to read, as the prices a live round on that date would have had."""
    prices = data.prices.iloc[:rows]
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = prices.rename_axis("date").reset_index()
        tmp = path.with_name(f".{path.name}.tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)
    return PriceData(str(path), FORM_WIDE, prices, [])


def run_simulation(args: argparse.Namespace, flag: ForwardingStopFlag) -> int:
    """Replay rounds from ``--start`` every ``rolling.every`` rows, each on the prices up to its date only, then
    the live models' track record against Equal Weight and never retraining (``trainer.evaluation.stitch``)."""
    if args.start is None or args.force:
        raise ExperimentError("--simulate needs --start DATE (the first round's date) and takes no --force")
    registry = R.registry_dir(args.registry, must_exist=False)
    exp, seeds, data, _ = _load(args)
    assert exp.rolling is not None
    dates = data.prices.index
    first = int(dates.searchsorted(dt.datetime.combine(args.start, dt.time())))
    if first >= len(dates):
        raise ExperimentError(f"--start {args.start}: after the last date of --data {data.source} ({dates[-1].date()})")
    schedule = [str(dates[i].date()) for i in range(first, len(dates), exp.rolling.every)]
    _windows(exp, PriceData(data.source, data.form, data.prices.iloc[: first + 1], []))  # the first round fits
    with R.registry_lock(registry):
        (registry / R.ROUNDS_DIR).mkdir(exist_ok=True)
        foreign = sorted({str(rec.get("date")) for _, rec in R.rounds(registry)} - set(schedule))
        if foreign:
            raise R.RegistryError(
                f"--registry {registry}: it holds rounds outside this replay ({', '.join(foreign[:3])}); replay into a "
                "new registry (the same command continues its own replay)"
            )
        for day in schedule:
            if any(rec.get("date") == day and rec.get("status") == R.STATUS_DECIDED for _, rec in R.rounds(registry)):
                print(f"round {day}: decided in an earlier run of this replay, kept")
                continue
            rows = int(dates.searchsorted(dt.datetime.fromisoformat(day))) + 1
            prices = _prefix(data, rows, registry / PRICES_DIR / f"{day}.parquet")
            code = _round(registry, exp, seeds, prices, prices.source, flag, args.store)
            if code != 0:
                return code
        from trainer.evaluation.stitch import replay_report

        print(replay_report(registry, data, len(schedule), exp.sweep.bootstrap_samples))
        return 0


def run_rollback(args: argparse.Namespace) -> int:
    if args.exp or args.data or args.set or args.force or args.simulate or args.start:
        raise R.RegistryError(
            "--rollback ROUND takes only --registry DIR (no --exp, --data, --set, --force or --simulate)"
        )
    registry = R.registry_dir(args.registry, must_exist=True)
    with R.registry_lock(registry):
        before = R.live_record(registry)
        live, changed = R.rollback(registry, args.rollback)
        record_round(args.store, registry, None)  # with --mlflow: the alias live follows
    if not changed:
        print(f"round {args.rollback} is already live: nothing changed")
        return 0
    was = before.get("round") if before else "none"
    print(f"round {live['round']} is live again (checkpoint {live['checkpoint']}); it replaced round {was}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    flag = ForwardingStopFlag()
    flag.install()
    try:
        # --mlflow: MLflow installed and the store reached before anything is read (one line: the fix)
        args.store = open_store(args.mlflow, R.registry_dir(args.registry, must_exist=False))
        if args.rollback is not None:
            return run_rollback(args)
        if args.simulate:
            return run_simulation(args, flag)
        if args.start is not None:
            raise ExperimentError("--start goes with --simulate (a replay of rounds over history)")
        return run_round(args, flag)
    except ValueError as exc:  # ExperimentError, RegistryError: one line naming the file, key or round
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
