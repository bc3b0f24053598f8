"""python -m trainer.rolling through the real CLI on small synthetic data: a first round promoted, a round refused
by a strict gate, a warm-started round, a rollback, decide on the live model, an interrupted round, and every
refusal in one line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from envs.data import load_prices
from tests.conftest import cli_env, signal_at, synthetic_prices, write_wide_csv
from trainer.evaluation.baselines import EQUAL_WEIGHT
from trainer.evaluation.simulation import simulate
from trainer.metrics import registry as M
from trainer.metrics.measures import sharpe_annualized
from trainer.runtime import registry as R

# a round trains one seed of a tiny network for 600 env steps (a few seconds), windows of 60 validation rows
TINY = {
    "stopping.env_steps": 600,
    "stopping.steps_per_iteration": 200,
    "sac.learning_starts": 100,
    "model.hidden": "[16]",
    "sweep.search_space": "{}",
    "rolling.validation_days": 60,
    "rolling.train_days": 100,
    "rolling.every": 60,
}
LENIENT = {"rolling.promote_if.min_sharpe_minus_ew": -100, "rolling.promote_if.beat_live": "false"}
STRICT = {"rolling.promote_if.min_sharpe_minus_ew": 100}
LOOKBACK = 60


def _sets(*extra: dict) -> list[str]:
    merged = {**TINY, **{k: v for d in extra for k, v in d.items()}}
    return [arg for k, v in merged.items() for arg in ("--set", f"{k}={v}")]


def _rolling(ray: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "trainer.rolling", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=cli_env(ray), timeout=timeout)


def _round(
    ray: str, registry: Path, data: str, *extra: dict, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    res = _rolling(ray, "--exp", "rolling", "--data", data, "--registry", str(registry), *_sets(*extra), *flags)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    return res


def _files(registry: Path) -> dict[str, bytes]:
    """Every live.json and round.json of the registry, by path: what must survive an interruption or refusal."""
    found = [registry / "live.json", *sorted(registry.glob("rounds/*/round.json"))]
    return {str(p.relative_to(registry)): p.read_bytes() for p in found if p.exists()}


@pytest.fixture(scope="module")
def history(ray_session, tmp_path_factory):
    """A registry after two rounds: the first (prices to row 400) promoted, the second (60 rows later) refused by a
    strict gate. Returns the registry, the price files and both outputs."""
    base = tmp_path_factory.mktemp("rolling")
    prices = synthetic_prices(n_days=520, n_assets=3, seed=2)
    files = {n: write_wide_csv(base / f"p{n}.csv", prices.iloc[:n]) for n in (400, 460, 520)}
    registry = base / "registry"
    first = _round(ray_session, registry, files[400], LENIENT)
    live_after_first = (registry / "live.json").read_bytes()
    second = _round(ray_session, registry, files[460], STRICT)
    return {
        "registry": registry,
        "files": files,
        "first": first,
        "second": second,
        "live_after_first": live_after_first,
        "base": base,
    }


def test_a_first_round_is_promoted_on_its_own_windows(history):
    registry, data = history["registry"], history["files"][400]
    dates = load_prices(data).prices.index
    day = str(dates[-1].date())
    record = json.loads((registry / "rounds" / day / "round.json").read_text())
    # the windows by hand: validation = the last 60 rows; training ends the 60-row purge gap before it and
    # (expanding) starts at the first row with complete features
    assert record["windows"] == {
        "train": [str(dates[LOOKBACK].date()), str(dates[400 - 60 - LOOKBACK - 1].date())],
        "validation": [str(dates[400 - 60].date()), day],
    }
    assert record["date"] == day and record["status"] == "decided" and record["promoted"] is True
    assert record["live_before"] is None and "beat_live" not in record["reason"]  # a first round has no live model
    assert record["reason"].startswith("promoted: Sharpe - EW ") and record["reason"].endswith(
        ">= -100.000 (min_sharpe_minus_ew)"
    )
    ckpt = registry / record["checkpoint"]
    assert ckpt.parent == registry / "rounds" / day / "runs" / "seed0" / "checkpoints"
    live = json.loads((registry / "live.json").read_text())
    assert live["round"] == day and live["checkpoint"] == record["checkpoint"] and live["previous"] is None
    assert live["reason"] == "promoted by the gate"
    out = history["first"].stdout
    assert f"PROMOTED: round {day} is live" in out and "gate on the validation window" in out
    # the candidate is the run's best checkpoint by the sweep metric (validation Sharpe - EW), as a sweep selects
    scores = {
        p: json.loads((p / "portfolio_state.json").read_text())["last_evaluation"][M.SHARPE_MINUS_EW]
        for p in sorted(ckpt.parent.glob("checkpoint_*"))
    }
    assert len(scores) >= 2 and scores[ckpt] == max(scores.values()) == record["selection"]["score"]
    # the candidate's validation score is the gate's Sharpe - EW: the same deterministic pass on the same days
    assert record["figures"]["sharpe_minus_ew"] == pytest.approx(record["selection"]["score"], abs=1e-9)


def test_a_strict_gate_refuses_and_the_live_model_stays(history):
    registry, data = history["registry"], history["files"][460]
    dates = load_prices(data).prices.index
    day, first_day = str(dates[-1].date()), str(dates[399].date())
    record = json.loads((registry / "rounds" / day / "round.json").read_text())
    assert record["promoted"] is False and record["status"] == "decided" and record["live_before"] == first_day
    assert (registry / "live.json").read_bytes() == history["live_after_first"]
    f = record["figures"]
    assert f["window"] == [str(dates[460 - 60].date()), day] and f["days"] == 59
    assert (
        record["reason"].startswith("not promoted: Sharpe - EW ")
        and "< +100.000 (min_sharpe_minus_ew)" in record["reason"]
    )
    assert [c["name"] for c in record["checks"]] == ["min_sharpe_minus_ew", "beat_live"]
    # the figures are differences of the paired runs' Sharpe ratios ...
    assert f["sharpe_minus_ew"] == pytest.approx(f["candidate"][M.SHARPE] - f["equal_weight"][M.SHARPE], abs=1e-12)
    assert f["sharpe_minus_live"] == pytest.approx(f["candidate"][M.SHARPE] - f["live"][M.SHARPE], abs=1e-12)
    assert f["sharpe_minus_ew_ci95"][0] < f["sharpe_minus_ew_ci95"][1]
    # ... and the same as a backtest of the candidate on that window, Equal Weight from the baselines' own code
    sim = simulate(registry / record["checkpoint"], "validation")
    assert f["candidate"][M.SHARPE] == pytest.approx(M.performance(sim.runs["sac"])[M.SHARPE], abs=1e-12)
    assert f["equal_weight"][M.SHARPE] == pytest.approx(M.performance(sim.runs[EQUAL_WEIGHT])[M.SHARPE], abs=1e-12)
    # the live model on the new window: its own checkpoint run over the round's windows
    live_ckpt = registry / json.loads(history["live_after_first"])["checkpoint"]
    live = simulate(live_ckpt, "validation", data=data, split_dates=record["windows"], baselines=False)
    assert f["live"][M.SHARPE] == pytest.approx(M.performance(live.runs["sac"])[M.SHARPE], abs=1e-12)
    assert "NOT PROMOTED: Sharpe - EW" in history["second"].stdout
    assert f"round {first_day} stays live" in history["second"].stdout


def test_warm_start_rollback_and_decide_on_the_live_model(history, ray_session, tmp_path):
    registry, files = history["registry"], history["files"]
    first = json.loads(history["live_after_first"])["round"]
    day = str(load_prices(files[520]).prices.index[-1].date())
    _round(ray_session, registry, files[520], LENIENT, {"rolling.warm_start": "true"})
    record = json.loads((registry / "rounds" / day / "round.json").read_text())
    assert record["promoted"] is True and record["warm_start_from"] == first
    trained = yaml.safe_load((registry / "rounds" / day / "experiment.yaml").read_text())
    assert trained["model"]["init_from"] == str(
        (registry / json.loads(history["live_after_first"])["checkpoint"]).resolve()
    )
    assert json.loads((registry / "live.json").read_text())["round"] == day
    # the refused round never passed the gate: it cannot be made live
    refused = str(load_prices(files[460]).prices.index[-1].date())
    before = _files(registry)
    res = _rolling(ray_session, "--registry", str(registry), "--rollback", refused)
    assert res.returncode == 2 and res.stdout == ""
    reason = json.loads((registry / "rounds" / refused / "round.json").read_text())["reason"]
    assert res.stderr == (
        f"error: round {refused}: never passed the gate ({reason}); only a round that was promoted can be made live "
        f"again (promoted rounds: {first}, {day})\n"
    )
    assert _files(registry) == before
    # back to the first round, in one command
    res = _rolling(ray_session, "--registry", str(registry), "--rollback", first)
    assert res.returncode == 0, res.stderr
    live = json.loads((registry / "live.json").read_text())
    assert live["round"] == first and live["previous"] == day and live["reason"] == f"rollback to round {first}"
    assert live["checkpoint"] == json.loads(history["live_after_first"])["checkpoint"]
    assert res.stdout == f"round {first} is live again (checkpoint {live['checkpoint']}); it replaced round {day}\n"
    assert [json.loads(line)["round"] for line in (registry / "history.jsonl").read_text().splitlines()] == [
        first,
        day,
        first,
    ]
    res = _rolling(ray_session, "--registry", str(registry), "--rollback", first)
    assert res.returncode == 0 and res.stdout == f"round {first} is already live: nothing changed\n"
    # trainer.decide --registry decides with the live model and names its checkpoint
    out = tmp_path / "decisions"
    cmd = [sys.executable, "-m", "trainer.decide", "--registry", str(registry), "--data", files[520]]
    res = subprocess.run([*cmd, "--as-of", day, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    decision = json.loads((out / f"decision_{day}.json").read_text())
    assert decision["checkpoint"] == str((registry / live["checkpoint"]).resolve())
    assert f"the live model of {registry} (round {first})" in res.stdout


def test_an_interrupted_round_keeps_every_record_and_runs_again(history, ray_session):
    registry, data = history["registry"], history["files"][520]
    day = str(load_prices(data).prices.index[-1].date())
    before = _files(registry)
    decided_on_day = (registry / "rounds" / day).is_dir()  # by the warm-start test, when it ran first
    longer = {"stopping.env_steps": 100000}  # still training when the signal comes
    cmd = [sys.executable, "-m", "trainer.rolling", "--exp", "rolling", "--data", data, "--registry", str(registry)]
    cmd += [*_sets(LENIENT, longer), "--force"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(ray_session))
    # while it trains, another writer of the registry is refused at once
    rollback = ("--registry", str(registry), "--rollback", day)
    output, err, locked = signal_at(proc, "[iter    1]", signal.SIGINT, lambda: _rolling(ray_session, *rollback))
    assert proc.returncode == 130, output[-3000:] + err[-3000:]
    assert locked is not None and locked.returncode == 2
    assert locked.stderr == (
        f"error: --registry {registry}: another round or rollback (process {proc.pid}) is writing to it; wait for it "
        "to finish (two rounds never write one registry at once)\n"
    )
    # a round decided on this date before (the warm-start test's) keeps its ID and record: this one is the next
    round_id = next(rid for rid, rec in R.rounds(registry) if rec["status"] == "interrupted")
    assert round_id == (f"{day}_2" if decided_on_day else day)
    assert _files(registry) == {
        **before,
        f"rounds/{round_id}/round.json": (registry / "rounds" / round_id / "round.json").read_bytes(),
    }
    record = json.loads((registry / "rounds" / round_id / "round.json").read_text())
    assert record["status"] == "interrupted" and record["promoted"] is False and record["checkpoint"] is None
    assert record["reason"] == "interrupted by SIGINT while training"
    assert "SIGINT received: finishing this iteration" in output
    assert err.endswith(
        f"round {round_id} interrupted: the live model and every recorded round are unchanged; run the same command "
        "again to start this round again\n"
    )
    summary = json.loads((registry / "rounds" / round_id / "runs" / "seed0" / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    # the same round again (a shorter budget): it starts over in the same folder, the first attempt kept aside
    res = _round(ray_session, registry, data, LENIENT, flags=("--force",))
    assert f"round {round_id} was interrupted: started again" in res.stdout
    record = json.loads((registry / "rounds" / round_id / "round.json").read_text())
    assert record["status"] == "decided" and record["promoted"] is True
    aside = list((registry / "rounds" / round_id).glob("previous-attempt-*"))
    assert len(aside) == 1 and (aside[0] / "runs" / "seed0" / "summary.json").is_file()
    assert json.loads((registry / "live.json").read_text())["round"] == round_id
    for path, content in before.items():  # every earlier round's record is intact
        if path != "live.json":
            assert (registry / path).read_bytes() == content


def test_every_bad_input_is_one_line_and_writes_nothing(history, ray_session, tmp_path):
    registry, files = history["registry"], history["files"]
    before = _files(registry)
    short = write_wide_csv(tmp_path / "short.csv", synthetic_prices(n_days=250, n_assets=3, seed=2))
    smoke = Path(__file__).resolve().parents[2] / "tune_configs" / "smoke.yaml"
    rolling = smoke.with_name("rolling.yaml")
    days = [str(load_prices(files[n]).prices.index[-1].date()) for n in (400, 460, 520)]
    last = days[-1]
    # the registry's rounds in date order (then in the order they ran), whichever of this module's tests ran before
    recorded = R.rounds(registry)
    rounds = ", ".join(rid for rid, _ in recorded)
    latest, latest_date = [(rid, rec["date"]) for rid, rec in recorded if rec["status"] == "decided"][-1]
    short_end = load_prices(short).prices.index[-1].date()
    other = write_wide_csv(
        tmp_path / "other.csv", synthetic_prices(n_days=600, n_assets=3, seed=3).rename(columns={"A2": "B2"})
    )
    a_file = tmp_path / "registry.txt"
    a_file.write_text("not a registry")
    empty = tmp_path / "empty"
    (empty / "rounds").mkdir(parents=True)
    base = ("--registry", str(registry))
    cases = [
        ((*base, "--rollback", "1999-01-01"), f"round '1999-01-01': not in registry {registry} (its rounds: {rounds})"),
        (
            ("--registry", str(a_file), "--rollback", last),
            f"--registry {a_file}: a file, not a directory; give the registry's directory",
        ),
        (
            ("--registry", str(tmp_path / "none"), "--rollback", last),
            f"--registry {tmp_path / 'none'}: no registry there (no rounds/ folder); a first round creates it: "
            f"python -m trainer.rolling --exp NAME --data PRICES --registry {tmp_path / 'none'}",
        ),
        (
            (*base, "--rollback", last, "--exp", "rolling"),
            "--rollback ROUND takes only --registry DIR (no --exp, --data, --set, --force or --simulate)",
        ),
        ((*base, "--data", files[520]), "a round needs --exp NAME and --data PRICES (or --rollback ROUND alone)"),
        (
            (*base, "--exp", "smoke", "--data", files[520]),
            f"{smoke}: no 'rolling' section: a round needs its schedule and promotion rule; add one to the experiment "
            "(e.g. rolling: {every: 63, promote_if: {min_sharpe_minus_ew: 0.0}}, tune_configs/README.md) or give --set "
            "rolling.every=63",
        ),
        (
            (
                *base,
                "--exp",
                "rolling",
                "--data",
                files[520],
                "--set",
                "sweep.search_space={model.hidden: {grid_search: [[16], [32]]}}",
            ),
            f"{rolling} with --set sweep.search_space={{model.hidden: {{grid_search: [[16], [32]]}}}}: key "
            "'sweep.model.hidden': a round trains one configuration over its seeds; fix the other settings (sweep only "
            "seed, with grid_search)",
        ),
        (
            (*base, "--exp", "rolling", "--data", files[520], "--set", "data.fold=0"),
            f"{rolling} with --set data.fold=0: key 'data.fold': a round sets its own windows (rolling.window, "
            "rolling.train_days, rolling.validation_days, ending on the last date of --data); remove data.fold",
        ),
        (
            (*base, "--exp", "rolling", "--data", files[520], "--set", "rolling.promote_if.beat_live=maybe"),
            f"{rolling} with rolling.promote_if.beat_live=maybe, data.source={files[520]} from the command line: key "
            "'rolling.promote_if.beat_live': Input should be a valid boolean, unable to interpret input",
        ),
        (
            (*base, "--exp", "rolling", "--data", files[520], "--set", "rolling.every=0"),
            f"{rolling} with rolling.every=0, data.source={files[520]} from the command line: key 'rolling.every': "
            "Input should be greater than or equal to 1",
        ),
        (
            (*base, "--exp", "rolling", "--data", short),
            f"{short}: a rolling round needs 1128 rows up to its date (60 feature lookback + 756 train + 60 purge + "
            f"252 validation), the data has 250 rows (2010-01-04..{short_end}); use shorter windows "
            "(rolling.train_days, rolling.validation_days) or more history",
        ),
        (
            (*base, "--exp", "rolling", "--data", files[400], *_sets()),
            f"--data {files[400]}: it ends on {days[0]}, before the last round {latest} ({latest_date}); a round needs "
            "prices up to a later date",
        ),
        (
            (*base, "--exp", "rolling", "--data", other, *_sets(), "--force"),
            f"--data {other}: its tickers (A0, A1, B2) are not the live model's (round "
            f"{json.loads((registry / 'live.json').read_text())['round']}: A0, A1, A2); a registry holds one universe: "
            "use another --registry for this one",
        ),
    ]
    replay = (*base, "--exp", "rolling", "--data", files[520], "--simulate")
    cases += [
        (replay, "--simulate needs --start DATE (the first round's date) and takes no --force"),
        (
            (*replay, "--start", "2030-01-01"),
            f"--start 2030-01-01: after the last date of --data {files[520]} ({last})",
        ),
        (
            (*replay, "--start", days[1], *_sets()),
            f"--registry {registry}: it holds rounds outside this replay ({days[0]}); replay into a new registry (the "
            "same command continues its own replay)",
        ),
        (
            (*base, "--exp", "rolling", "--data", files[520], "--start", days[0]),
            "--start goes with --simulate (a replay of rounds over history)",
        ),
    ]
    for args, message in cases:
        res = _rolling(ray_session, *args)
        assert (res.returncode, res.stderr, res.stdout) == (2, f"error: {message}\n", ""), args
        assert _files(registry) == before, args
    # a round that is not due trains nothing and says when it is
    res = _rolling(ray_session, *base, "--exp", "rolling", "--data", files[520], *_sets({"rolling.every": 63}))
    passed = int((load_prices(files[520]).prices.index > latest_date).sum())  # 60, or 0 after a round on that date
    assert res.returncode == 0 and res.stdout == (
        f"no round due: {passed} trading day(s) since round {latest} ({latest_date}), rolling.every is 63; the next "
        f"round is due after {63 - passed} more (--force runs one now)\n"
    )
    assert _files(registry) == before
    # a round's checkpoint has no test window (its test is the future): a backtest of it says so
    ckpt = registry / json.loads((registry / "live.json").read_text())["checkpoint"]
    res = subprocess.run(
        [sys.executable, "-m", "trainer.backtest", str(ckpt)], capture_output=True, text=True, timeout=300
    )
    assert (res.returncode, res.stderr) == (
        2,
        f"error: {ckpt.resolve()}: its windows have no test window (only train, validation: it was trained with split "
        "dates without test, as a rolling round is); evaluate another split, or other windows (--fold)\n",
    )
    # decide --registry: a registry without a live model, and a file
    cmd = [sys.executable, "-m", "trainer.decide", "--data", files[520], "--registry"]
    for where, message in (
        (empty, f"--registry {empty}: no live model yet (no round has been promoted; see rounds/*/round.json)"),
        (a_file, f"--registry {a_file}: a file, not a directory; give the registry's directory"),
    ):
        res = subprocess.run([*cmd, str(where)], capture_output=True, text=True, timeout=120)
        assert (res.returncode, res.stderr) == (2, f"error: {message}\n")


def test_a_replayed_history_stitches_the_live_models_day_by_day(ray_session, tmp_path):
    import pandas as pd

    data = write_wide_csv(tmp_path / "prices.csv", synthetic_prices(n_days=580, n_assets=3, seed=2))
    dates = load_prices(data).prices.index
    registry = tmp_path / "replay"
    # rounds on rows 399, 459, 519 and 579 (every 60 rows from --start); each promoted unless it trails the live
    # model, so the live model changes inside the replayed window
    args = (
        "--exp",
        "rolling",
        "--data",
        data,
        "--registry",
        str(registry),
        "--simulate",
        "--start",
        str(dates[399].date()),
    )
    res = _rolling(ray_session, *args, *_sets({"rolling.promote_if.min_sharpe_minus_ew": -100}), timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    days = [str(dates[i].date()) for i in (399, 459, 519, 579)]
    records = {d: json.loads((registry / "rounds" / d / "round.json").read_text()) for d in days}
    for i, day in zip((399, 459, 519, 579), days, strict=True):
        # each round saw the prices up to its date and nothing after: its own file, its windows ending there
        seen = pd.read_parquet(registry / "prices" / f"{day}.parquet").set_index("date")
        pd.testing.assert_frame_equal(seen, load_prices(data).prices.iloc[: i + 1], check_names=False, check_freq=False)
        assert records[day]["windows"]["validation"][1] == day and records[day]["data"].endswith(f"{day}.parquet")
    summary = json.loads((registry / "simulation.json").read_text())
    promoted = [d for d in days if records[d]["promoted"]]
    assert promoted[0] == days[0] and summary["live"] == [[d, d] for d in promoted]
    assert [r["promoted"] for r in summary["rounds"]] == [records[d]["promoted"] for d in days]
    f = summary["figures"]
    assert f["window"] == [days[0], days[-1]] and f["days"] == 180
    returns = pd.read_csv(registry / "simulation_returns.csv", index_col="date", parse_dates=True)
    assert list(returns.index) == list(dates[400:580])  # each day's return, earned from the day before
    # until the second live model's first decision, the stitched record is the first model's, day for day
    switch = next((d for d in promoted[1:] if d != days[-1]), None)
    until = returns.index <= pd.Timestamp(switch) if switch else slice(None)
    assert (returns.loc[until, "live_models"] == returns.loc[until, "never_retrained"]).all()
    for name in ("live_models", "never_retrained", "equal_weight"):
        assert f[name][M.SHARPE] == pytest.approx(sharpe_annualized(returns[name].to_numpy()), abs=1e-9)
    assert f["sharpe_minus_equal_weight"] == pytest.approx(f["live_models"][M.SHARPE] - f["equal_weight"][M.SHARPE])
    assert f"replayed {days[0]} .. {days[-1]} (180 days): 4 round(s), {len(promoted)} promotion(s)" in res.stdout
    # the same command again continues the replay: every decided round is kept, the record is the same
    again = _rolling(ray_session, *args, *_sets({"rolling.promote_if.min_sharpe_minus_ew": -100}))
    assert again.returncode == 0, again.stderr[-2000:]
    assert all(f"round {d}: decided in an earlier run of this replay, kept" in again.stdout for d in days)
    assert json.loads((registry / "simulation.json").read_text()) == summary


def test_a_population_round_promotes_its_best_agent_and_warm_starts_the_next(ray_session, tmp_path):
    prices = synthetic_prices(n_days=460, n_assets=3, seed=5)
    files = {n: write_wide_csv(tmp_path / f"p{n}.csv", prices.iloc[:n]) for n in (400, 460)}
    registry = tmp_path / "registry"
    population = {"sac.population": 2, "seed": 7}
    _round(ray_session, registry, files[400], LENIENT, population)
    live = json.loads((registry / "live.json").read_text())
    record = json.loads((registry / "rounds" / live["round"] / "round.json").read_text())
    # the better agent by its own validation score in the kept checkpoints, never the agents' median
    ckpt = registry / record["checkpoint"]
    scores = {
        (p.name, i): e[M.SHARPE_MINUS_EW]
        for p in sorted(ckpt.parent.glob("checkpoint_*"))
        for i, e in enumerate(json.loads((p / "portfolio_state.json").read_text())["agent_evaluations"])
    }
    assert scores[(ckpt.name, record["agent"])] == max(scores.values()) == record["selection"]["score"]
    assert live["agent"] == record["agent"] and record["seed"] == 7 + record["agent"]
    # the next round starts both agents from the live population's networks and compares with its live agent
    _round(ray_session, registry, files[460], LENIENT, population, {"rolling.warm_start": "true"})
    day = str(load_prices(files[460]).prices.index[-1].date())
    second = json.loads((registry / "rounds" / day / "round.json").read_text())
    assert second["warm_start_from"] == live["round"] and "live" in second["figures"]
    # decide with the live agent
    out = tmp_path / "decisions"
    cmd = [sys.executable, "-m", "trainer.decide", "--registry", str(registry), "--data", files[460]]
    res = subprocess.run([*cmd, "--as-of", day, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    now = json.loads((registry / "live.json").read_text())
    decision = json.loads((out / f"decision_{day}.json").read_text())
    assert decision["members"] == [{"checkpoint": str((registry / now["checkpoint"]).resolve()), "agent": now["agent"]}]
