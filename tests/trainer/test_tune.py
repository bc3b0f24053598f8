"""trainer.tune: dry runs, sweep schema errors, a real smoke sweep with ASHA and its summary, resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import cli_env, synthetic_prices, tune_args, write_wide_csv
from tests.conftest import tune_results as _results
from trainer.evaluation.sweep_report import latest_history
from trainer.experiment.config import SELECTION_METRICS, SweepConfig
from trainer.experiment.loading import CONFIG_DIR, ExperimentError, available_experiments, load_experiment
from trainer.experiment.preflight import check_sweep
from trainer.experiment.sweep_state import sweep_outcome
from trainer.metrics.registry import ENV_STEPS_METRIC
from trainer.runtime.locks import LOCK_FILE
from trainer.tune import DivergenceOrBudgetStopper, build_plan, check_resources


def _tune(
    args: list[str], ray_address: str | None = None, timeout: int = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    env = cli_env(ray_address) if ray_address else None
    return subprocess.run(
        [sys.executable, "-m", "trainer.tune", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd
    )


@pytest.mark.parametrize("name", available_experiments())
def test_every_shipped_experiment_passes_dry_run(name):
    res = _tune(["--exp", name, "--dry-run"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"experiment {name}: " in res.stdout and "resources per trial:" in res.stdout


def test_dry_run_shows_grid_size_and_resources():
    plan = build_plan(load_experiment("arch_sweep"))
    assert plan["trials"] == 12
    assert plan["resources_per_trial"] == {"CPU": 3.0, "GPU": 0.5, "learner": 1.0, "rollout": 2.0}
    assert plan["scheduler"]["max_t"] == 1_000_000
    assert build_plan(load_experiment("seed_sweep"))["trials"] == 10


@pytest.mark.parametrize(
    ("sweep_yaml", "message"),
    [
        ("  serach_space: {}\n", "key 'sweep.serach_space': unknown key"),
        (
            "  search_space:\n    sac.rollout_fragment_length: {grid_search: [1, 2]}\n",
            "key 'sweep': Value error, search_space key 'sac.rollout_fragment_length' cannot be swept; sweepable: "
            "seed, model.hidden, model.activation, model.type, model.attention_layers, sac.actor_lr, sac.critic_lr, "
            "sac.alpha_lr, sac.tau, sac.gamma, sac.initial_alpha, sac.target_entropy, sac.batch_size, "
            "sac.learning_starts, sac.training_intensity, sac.buffer_size, data.fold, data.cost_bps, "
            "data.episode_len, data.reward, data.temperature, data.action, data.tilt_reference, data.tilt_scale, "
            "data.no_trade_band, data.rebalance_fraction, data.max_weight, data.max_cash, data.max_turnover, "
            "data.features",
        ),
        (
            "  search_space:\n    sac.tau: {normal: [0, 1]}\n",
            "key 'sweep': Value error, search_space.sac.tau must be one of "
            "{grid_search | choice | uniform | loguniform | randint: ...}, got {'normal': [0, 1]}",
        ),
        (
            "  search_space:\n    sac.actor_lr: {loguniform: [0, 0.1]}\n",
            "key 'sweep': Value error, search_space.sac.actor_lr.loguniform: low must be > 0, got 0",
        ),
        (
            "  search_space:\n    model.hidden: {grid_search: [[64, 64], [0]]}\n",
            "key 'sweep.search_space.model.hidden': value [0] is invalid (key 'model.hidden': Value error, every "
            "hidden layer size must be >= 1)",
        ),
        ("  num_samples: 0\n", "key 'sweep.num_samples': Input should be greater than or equal to 1"),
        (
            "  num_samples: 3\n  search_space:\n    seed: {grid_search: [0, 1]}\n",
            "key 'sweep': Value error, num_samples=3 repeats every trial of a search space without random "
            "domains: the 3 copies would have the same settings and seed and train the same agent; to train more "
            "seeds sweep them (seed: {grid_search: [0, 1, 2]}) and set num_samples: 1",
        ),
        (
            "  num_samples: 2\n",
            "key 'sweep': Value error, num_samples=2 repeats every trial of a search space without random "
            "domains: the 2 copies would have the same settings and seed and train the same agent; to train more "
            "seeds sweep them (seed: {grid_search: [0, 1, 2]}) and set num_samples: 1",
        ),
    ],
)
def test_bad_sweep_files_give_exact_errors(tmp_path, sweep_yaml, message):
    path = tmp_path / "bad.yaml"
    path.write_text("stopping: {env_steps: 100}\nsweep:\n" + sweep_yaml)
    with pytest.raises(ExperimentError) as info:
        load_experiment(str(path))
    assert str(info.value).startswith(f"{path}: {message}")
    res = _tune(["--exp", str(path), "--dry-run"])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith(f"error: {path}: ")


def test_set_overrides_are_validated():
    res = _tune(["--exp", "quick", "--dry-run", "--set", "sac.gamma=2"])
    assert res.returncode == 2
    assert "key 'sac.gamma': Input should be less than or equal to 1" in res.stderr
    ok = _tune(["--exp", "quick", "--dry-run", "--set", "stopping.env_steps=2000"])
    assert ok.returncode == 0 and "budget: 2,000 env steps per trial\n" in ok.stdout
    # quick's iterations are 500 env steps: a trial runs whole iterations, up to the one that reaches its budget
    odd = _tune(["--exp", "quick", "--dry-run", "--set", "stopping.env_steps=2100"])
    assert "budget: 2,100 env steps per trial (whole iterations of 500: 2,500)\n" in odd.stdout


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            "    sac.batch_size: {grid_search: [64, 512]}\n    sac.buffer_size: {grid_search: [256, 10000]}\n",
            "key 'sweep.search_space': the combination sac.batch_size=512, sac.buffer_size=256 is invalid (key "
            "'sac': Value error, buffer_size (256) must be >= batch_size (512)); change the search space so that "
            "no trial gets it",
        ),
        (
            "    sac.batch_size: {randint: [64, 513]}\n    sac.buffer_size: {grid_search: [300, 10000]}\n",
            "key 'sweep.search_space': the combination sac.batch_size=512, sac.buffer_size=300 is invalid (key "
            "'sac': Value error, buffer_size (300) must be >= batch_size (512)); change the search space so that "
            "no trial gets it",
        ),
        (
            "    sac.batch_size: {uniform: [32, 256]}\n",
            "key 'sweep': Value error, search_space.sac.batch_size.uniform samples real numbers but sac.batch_size "
            "is an integer; use randint: [low, high) or grid_search for sac.batch_size",
        ),
        (
            "    data.fold: {loguniform: [1, 2]}\n",
            "key 'sweep': Value error, search_space.data.fold.loguniform samples real numbers but data.fold is an "
            "integer; use randint: [low, high) or grid_search for data.fold",
        ),
        (
            "    sac.batch_size: {randint: [16.5, 64]}\n",
            "key 'sweep': Value error, search_space.sac.batch_size.randint needs integer [low, high) bounds, got "
            "[16.5, 64]",
        ),
        (
            "    sac.tau: {uniform: [0.001, 2]}\n",
            "key 'sweep.search_space.sac.tau': uniform bound 2 is invalid (key 'sac.tau': Input should be less "
            "than or equal to 1)",
        ),
        (
            "    data.cost_bps: {uniform: [0, 2000]}\n",
            "key 'sweep.search_space.data.cost_bps': uniform bound 2000 is invalid (key 'data.cost_bps': Value "
            "error, cost_bps must be a finite number in [0, 1000] basis points, got 2000.0)",
        ),
        (
            "    data.fold: {randint: [0, 4]}\n",
            "key 'sweep.search_space.data.fold': randint value 3 is invalid (key 'data': Value error, data.fold "
            "must be in 0..2 (data.folds.n_folds is 3), got 3)",
        ),
        (
            "    sac.tau: {uniform: [0.001, .inf]}\n",
            "key 'sweep': Value error, search_space.sac.tau.uniform: the bounds must be finite numbers, got "
            "[0.001, inf]",
        ),
    ],
)
def test_every_config_a_sweep_can_produce_is_validated(tmp_path, space, message):
    path = tmp_path / "sweep.yaml"
    path.write_text("stopping: {env_steps: 1000}\nsweep:\n  search_space:\n" + space)
    with pytest.raises(ExperimentError) as info:
        load_experiment(str(path))
    assert str(info.value) == f"{path}: {message}"


def test_sweep_points_are_the_grid_with_every_range_at_both_ends():
    sweep = SweepConfig(
        search_space={
            "sac.batch_size": {"randint": [16, 65]},
            "sac.buffer_size": {"grid_search": [1000, 2000]},
            "sac.tau": {"uniform": [0.001, 0.01]},
        }
    )
    points = [tuple(p.values()) for p in sweep.points()]
    assert points == [
        (b, s, t) for b in (16, 64) for s in (1000, 2000) for t in (0.001, 0.01)
    ]  # randint's upper end is exclusive


def test_impossible_sweep_combination_is_refused_by_the_cli_before_anything_starts(tmp_path):
    path = tmp_path / "combo.yaml"
    path.write_text(
        "sweep:\n  search_space:\n    sac.batch_size: {grid_search: [64, 512]}\n"
        "    sac.buffer_size: {grid_search: [256, 10000]}\n"
    )
    res = _tune(["--exp", str(path), "--storage", str(tmp_path / "runs")])
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stdout == ""
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {path}: key 'sweep.search_space': the combination sac.batch_size=512, ")
    assert not (tmp_path / "runs").exists()


def test_dry_run_checks_the_data_before_any_trial(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("date,A,B\n2020-01-01,1,2\n2020-01-02,x,3\n")
    expected = (
        f"error: {CONFIG_DIR / 'smoke.yaml'}: key 'data': {bad}: ticker 'A' has a non-numeric price 'x' on "
        "2020-01-02; prices must be numbers"
    )
    res = _tune(["--exp", "smoke", "--dry-run", "--set", f"data.source={bad}"])
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stdout == ""
    assert res.stderr.strip().splitlines()[-1] == expected
    # the real run stops at the same check, before Ray or any trial starts
    res = _tune(["--exp", "smoke", "--storage", str(tmp_path / "runs"), "--set", f"data.source={bad}"])
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stdout == ""
    assert res.stderr.strip().splitlines()[-1] == expected
    assert not (tmp_path / "runs").exists()


def test_every_swept_fold_is_checked_in_the_driver(price_csv):
    prices = synthetic_prices()
    first, last = prices.index[0].date(), prices.index[-1].date()
    folds = {"data.source": price_csv, "sweep.search_space": {"data.fold": {"grid_search": [0, 1]}}}
    with pytest.raises(ExperimentError) as info:
        check_sweep(load_experiment("smoke", folds), "exp.yaml")
    assert str(info.value) == (
        f"exp.yaml: key 'data' (data.fold=0): {price_csv}: 3 expanding walk-forward fold(s) need 1944 rows up to "
        f"{last} (60 feature lookback + 756 train + 60 purge + 252 validation + 60 purge + 3 x 252 test), the "
        f"data has 600 rows ({first}..{last}); use fewer or shorter folds (data.folds) or more history"
    )
    small = {"data.folds": {"n_folds": 2, "test_days": 60, "validation_days": 60, "train_days": 200}}
    check_sweep(load_experiment("smoke", folds | small), "exp.yaml")  # both folds fit: no error


def test_sweep_outcome():
    assert sweep_outcome({"a": "TERMINATED", "b": "TERMINATED"}, 2) == ("done", 2)
    assert sweep_outcome({"a": "TERMINATED", "b": "ERROR"}, 2) == ("done", 2)  # some failed: summary shows them
    assert sweep_outcome({"a": "ERROR", "b": "ERROR"}, 2) == ("failed", 2)
    assert sweep_outcome({"a": "TERMINATED", "b": "RUNNING"}, 2) == ("interrupted", 1)
    assert sweep_outcome({"a": "TERMINATED"}, 3) == ("interrupted", 1)  # trials never created
    assert sweep_outcome({"a": "ERROR"}, 3) == ("interrupted", 1)


def test_asha_grace_period_above_the_budget_is_refused_by_the_dry_run():
    res = _tune(["--exp", "smoke", "--dry-run", "--set", "stopping.env_steps=200"])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: {CONFIG_DIR / 'smoke.yaml'} with stopping.env_steps=200 from the command line: "
        "sweep.scheduler.grace_period (300) is above stopping.env_steps (200): "
        "ASHA may stop a trial only after the grace period and runs it for at most stopping.env_steps env steps; "
        "lower sweep.scheduler.grace_period or raise stopping.env_steps"
    )


def test_impossible_resource_request_is_reported_before_tune_waits():
    with pytest.raises(ExperimentError) as info:
        check_resources(build_plan(load_experiment("arch_sweep")), {"CPU": 2.0})
    assert str(info.value) == (
        "each trial needs CPU=3 but the Ray cluster has CPU=2 in total; no trial could ever start (it takes one "
        "CPU per env runner and per remote learner: use fewer, e.g. --set resources.num_env_runners=1; or add nodes "
        "that have it)"
    )
    cpu_only = {"resources.num_gpus_per_learner": 0}
    with pytest.raises(ExperimentError) as info:
        check_resources(build_plan(load_experiment("arch_sweep", cpu_only)), {"CPU": 8.0})
    assert str(info.value) == (
        "each trial needs learner=1 but the Ray cluster has learner=0 in total; no trial could ever start ('learner' "
        "is a custom resource the experiment asks for (resources.custom_resources_per_learner, "
        "resources.custom_resources_per_env_runner): on nodes without it, --set them to {}; or add nodes that have it)"
    )
    exp2 = load_experiment("arch_sweep", {"resources.num_env_runners": 0})
    with pytest.raises(ExperimentError, match=r"each trial needs GPU=0\.5 but the Ray cluster has GPU=0"):
        check_resources(build_plan(exp2), {"CPU": 2.0})


def test_stopper():
    stop = DivergenceOrBudgetStopper(env_steps=1000, iterations=None)
    assert not stop("t", {"portfolio": {"env_steps": 999, "diverged": False}})
    assert stop("t", {"portfolio": {"env_steps": 1000, "diverged": False}})
    assert stop("t", {"portfolio": {"env_steps": 10, "diverged": True}})
    by_iterations = DivergenceOrBudgetStopper(env_steps=10**9, iterations=3)
    assert not by_iterations("t", {"training_iteration": 2, "portfolio": {"env_steps": 5}})
    assert by_iterations("t", {"training_iteration": 3, "portfolio": {"env_steps": 5}})


def _trial_progress(exp_dir: Path) -> dict[str, pd.DataFrame]:
    return {p.parent.name: pd.read_csv(p) for p in sorted(exp_dir.glob("trial_*/progress.csv"))}


def test_smoke_sweep_end_to_end(ray_session, tmp_path):
    res = _tune(["--exp", "smoke", "--storage", str(tmp_path)], ray_session)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    exp_dir = tmp_path / "smoke"
    assert "=== Sweep smoke: results by configuration" in res.stdout and "best configuration (by" in res.stdout
    summary = json.loads((exp_dir / "summary.json").read_text())
    trials = pd.read_parquet(exp_dir / "trials.parquet")
    progress = _trial_progress(exp_dir)
    assert len(trials) == 2 and set(trials["trial"]) == set(progress)
    for df in progress.values():  # every metric a sweep may select on is in every training result
        assert set(SELECTION_METRICS) <= set(df.columns)
    # consistent with Tune's own results
    for _, row in trials.iterrows():
        df = progress[row["trial"]]
        assert row["env_steps"] == df["portfolio/env_steps"].iloc[-1]
        assert row["iterations"] == df["training_iteration"].iloc[-1]
        assert len(list((exp_dir / row["trial"]).glob("checkpoint_*"))) >= 1  # checkpoints kept per trial
        assert Path(row["best_checkpoint"]).parent.name == row["trial"]
        # kept checkpoints are a subset of the reported iterations, so the best score is at most the best seen
        assert row["best_checkpoint_score"] <= df["portfolio/validation/sharpe"].max() + 1e-9
        assert np.isclose(df["portfolio/validation/sharpe"], row["best_checkpoint_score"], atol=1e-9).any()
    # ASHA: trials run one after the other and seeded, so its decisions are reproducible; with grace 300
    # and reduction 2 the second trial continues only if it is at least as good as the first at each rung.
    early = trials[trials["status"] == "early_stopped"]
    if len(early) == 0:
        first, second = (progress[t] for t in sorted(progress))
        for rung in (300, 600, 1200):
            a = first.loc[first["portfolio/env_steps"] >= rung, "portfolio/validation/sharpe"].iloc[0]
            b = second.loc[second["portfolio/env_steps"] >= rung, "portfolio/validation/sharpe"].iloc[0]
            assert b >= a, "ASHA should have stopped the second trial"
    else:
        assert (early["env_steps"] < 1500).all()
        assert summary["configurations"][0]["n_early_stopped"] + summary["configurations"][1]["n_early_stopped"] == 1
    assert {g["config"] for g in summary["configurations"]} == {"model.hidden=[32, 32]", "model.hidden=[16]"}
    ew_test = summary["baselines"]["equal_weight"]["test_sharpe"]
    for g in summary["configurations"]:
        assert g["trials"] == 1 and set(g["test_sharpe"]) == {"median", "q25", "q75", "mean", "n"}
        assert g["n_seeds"] == 1 and g["n_folds"] == 1
        (row,) = [t for t in summary["trials"] if t["config"] == g["config"]]
        # paired with Equal Weight over the same days and costs
        assert row["test_sharpe_minus_ew"] == pytest.approx(row["test_sharpe"] - ew_test, abs=1e-9)
        assert g["test_sharpe_minus_ew"]["median"] == pytest.approx(row["test_sharpe_minus_ew"], abs=1e-9)
        assert g["beat_ew_fraction"] == float(row["test_sharpe_minus_ew"] > 0)
        lo, hi = g["test_sharpe_minus_ew"]["ci95"]
        assert lo <= hi
    assert set(summary["baselines"]) == {"equal_weight", "min_volatility", "max_sharpe"}
    report = Path(summary["best_backtest_report"])
    assert report.exists() and "| sac |" in report.read_text()
    for png in ("validation_curves.png", "test_sharpe_by_fold.png"):
        assert (exp_dir / png).stat().st_size > 10_000
    assert "| configuration | seeds x folds |" in (exp_dir / "summary.md").read_text()


def _popen_tune(args: list[str], ray_address: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "trainer.tune", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env(ray_address))


def test_sweep_interrupted_before_all_trials_started_resumes_without_redoing_finished_ones(ray_session, tmp_path):
    """3 trials one at a time (FIFO): SIGINT when the first has finished and the second is half-way, so the
    third was never created. Resume creates it, continues the second from its checkpoint, leaves the first."""
    # 8 iterations of 300 env steps: the second trial is past its first checkpoint and unfinished for several
    # iterations, wide enough a window for the poll below on a fast or a loaded machine
    exp_dir, budget = tmp_path / "smoke", 2400
    args = tune_args(
        tmp_path,
        "sweep.scheduler.type=fifo",
        "sweep.search_space={seed: {grid_search: [0, 1, 2]}}",
        f"stopping.env_steps={budget}",
    )
    proc = _popen_tune(args, ray_session)
    deadline = time.time() + 400
    first_done = None
    while time.time() < deadline and proc.poll() is None:
        results = _results(exp_dir) if exp_dir.exists() else {}
        done = [t for t, rows in results.items() if rows and rows[-1]["portfolio"]["env_steps"] >= budget]
        # half-way: past the checkpoint of iteration 2 (600 env steps), not finished; iteration 3's row is
        # written after that checkpoint was saved (iteration 2's row can be seen before)
        running = [t for t, rows in results.items() if len(rows) >= 3 and rows[-1]["portfolio"]["env_steps"] < budget]
        if done and running:
            first_done = done[0]
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.1)
    out, _ = proc.communicate(timeout=300)
    assert first_done is not None, out[-3000:]
    assert proc.returncode == 130, out[-3000:]
    # the second trial may still finish while Tune stops (a loaded machine): 1 or 2 of 3, never the third
    finished = re.search(r"sweep interrupted: (\d) of 3 trials finished", out)
    assert finished and finished.group(1) in ("1", "2"), out[-3000:]
    # the printed command can be pasted into a shell: the --set values are quoted
    assert (
        f"--set 'sweep.search_space={{seed: {{grid_search: [0, 1, 2]}}}}' --set stopping.env_steps={budget} --resume"
        in out
    )
    before = _results(exp_dir)
    assert len(before) == 2  # the third trial was never created

    # a new sweep into the same storage would overwrite it: refused, nothing changed
    res = _tune(args)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: {exp_dir}: a sweep of this experiment is already stored there; continue it with --resume, or "
        "start a new one with another --storage (nothing was changed)"
    )
    # resuming with a changed experiment would apply the change to some trials only: refused
    res = _tune([*args, "--set", "sac.batch_size=32", "--resume"])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: {exp_dir / 'experiment.json'}: --resume continues the sweep as it was started, but the "
        "experiment now differs in sac.batch_size (64 -> 32); resume with the same experiment file and --set "
        "options, or start a new sweep in another --storage"
    )
    assert _results(exp_dir) == before

    res = _tune([*args, "--resume"], ray_session)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    after = _results(exp_dir)
    assert len(after) == 3  # the missing trial was created, no finished one again
    assert after[first_done] == before[first_done]  # the finished trial was not run again
    (second,) = set(before) - {first_done}
    (third,) = set(after) - set(before)
    # continued from its checkpoint, not from zero: Tune appends the repeated iterations after the checkpoint
    # (even iterations) to the interrupted run's rows, and the sweep's curves keep the final run's rows
    steps = [r["portfolio"]["env_steps"] for r in after[second]]
    restart = next((i for i in range(1, len(steps)) if steps[i] <= steps[i - 1]), len(steps))
    assert steps[:restart] == list(range(300, 300 * restart + 1, 300))
    resumed = steps[restart:] or steps[len(before[second]) :]
    if resumed:  # empty when the second trial finished while Tune stopped
        assert resumed[0] > 600 and (resumed[0] - 300) % 600 == 0, steps
        assert resumed == list(range(resumed[0], budget + 1, 300)), steps
    history = latest_history(pd.DataFrame({ENV_STEPS_METRIC: steps}))
    assert history[ENV_STEPS_METRIC].tolist() == list(range(300, budget + 1, 300))
    assert [r["portfolio"]["env_steps"] for r in after[third]] == list(range(300, budget + 1, 300))
    assert sorted(r[0]["config"]["seed"] for r in after.values()) == [0, 1, 2]
    summary = json.loads((exp_dir / "summary.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["completed"] * 3


def test_sweep_whose_trials_all_failed_exits_non_zero(ray_session, tmp_path):
    """One trial, no retries; its process is killed (a real fault): the summary is written, the exit is 1."""
    exp_dir = tmp_path / "smoke"
    args = ["--exp", "smoke", "--storage", str(tmp_path), "--set", "sweep.search_space={}"]
    args += ["--set", "sweep.max_failures=0", "--set", "stopping.env_steps=1000000"]
    proc = _popen_tune(args, ray_session)
    deadline = time.time() + 300
    killed = None
    while time.time() < deadline and proc.poll() is None:
        rows = next(iter(_results(exp_dir).values()), []) if exp_dir.exists() else []
        if rows:
            killed = rows[-1]["pid"]  # the trial's own process
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.1)
    out, _ = proc.communicate(timeout=300)
    assert killed is not None, out[-3000:]
    assert proc.returncode == 1, out[-3000:]
    assert "error: all 1 trial(s) of the sweep failed (first: " in out
    assert f"each trial's error is in {exp_dir}/trial_*/error.txt" in out and "--resume" in out
    summary = json.loads((exp_dir / "summary.json").read_text())
    (trial,) = summary["trials"]
    assert trial["status"] == "error" and trial["error"]  # its checkpoints, if any, are still evaluated
    assert "**1 of 1 trial(s) failed**" in (exp_dir / "summary.md").read_text()


def test_batch_size_sweep_labels_and_unfittable_baseline(ray_session, tmp_path):
    """Summary labels and the progress table name the swept key (sac.batch_size); on data where every asset
    lost money in the training window, Maximum Sharpe is reported as not fitted and the rest is written.
    The data file and the storage are given relative to the current directory, as users type them (the
    trials run in other directories)."""
    from envs.market import load_market

    data = write_wide_csv(tmp_path / "losing.csv", synthetic_prices(n_days=600, seed=3, drifts=[-0.003] * 3))
    exp_dir = tmp_path / "runs" / "smoke"
    args = ["--exp", "smoke", "--storage", "runs", "--set", "data.source=losing.csv"]
    args += [
        "--set",
        "sweep.search_space={sac.batch_size: {grid_search: [16, 32]}}",
        "--set",
        "sweep.scheduler.type=fifo",
    ]
    args += ["--set", "stopping.env_steps=600", "--set", "sac.learning_starts=100"]
    res = _tune(args, ray_session, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    header = next(line for line in res.stdout.splitlines() if line.startswith("| Trial name"))
    assert [c.strip() for c in header.strip("|").split("|")][:4] == ["Trial name", "status", "loc", "sac.batch_size"]
    # the best-trial line names the experiment's key and the results' folder, not RLlib's path or /tmp/ray
    assert "_train_batch_size_per_learner" not in res.stdout and "Result logdir" not in res.stdout
    assert re.search(r"^Current best trial: .*parameters=\{'sac.batch_size': (16|32)\}", res.stdout, re.M)
    assert f"Results: {exp_dir}" in res.stdout
    summary = json.loads((exp_dir / "summary.json").read_text())
    assert [g["config"] for g in summary["configurations"]] == ["sac.batch_size=16", "sac.batch_size=32"]
    trials = pd.read_parquet(exp_dir / "trials.parquet")
    assert trials["sac.batch_size"].tolist() == [16, 32]
    train = load_market(data).splits["train"]
    reason = (
        f"every asset's mean daily return in the training window {train.start_date.date()} .. "
        f"{train.end_date.date()} is <= 0, so no long-only portfolio has a positive Sharpe ratio to maximise"
    )
    assert summary["baselines_not_fitted"] == {"max_sharpe": [reason]}
    assert set(summary["baselines"]) == {"equal_weight", "min_volatility"}
    assert f"baseline max_sharpe: not fitted, {reason}" in res.stdout
    assert f"| max_sharpe | not fitted: {reason} | | |" in (exp_dir / "summary.md").read_text()
    backtest = json.loads((exp_dir / "best_backtest" / "backtest.json").read_text())
    assert backtest["not_fitted"]["max_sharpe"] == reason and "max_sharpe" not in backtest["strategies"]
    assert {"sac", "equal_weight", "min_volatility"} <= set(backtest["strategies"])


def test_gpu_request_on_cpu_only_cluster_is_a_clear_error(ray_session, tmp_path):
    storage = tmp_path / "new" / "results"  # a storage this command creates: removed again when refused
    res = _tune(["--exp", "smoke", "--storage", str(storage), "--set", "resources.num_gpus_per_learner=1"], ray_session)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().endswith(
        "error: each trial needs GPU=1 but the Ray cluster has GPU=0 in total; no trial could ever start "
        "(train on CPUs with --set resources.num_gpus_per_learner=0; or add nodes that have it)"
    )
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written, no empty folder left


def test_latest_history_keeps_the_rows_of_the_run_that_resumed_from_a_checkpoint():
    """Rows Tune appended before a resume from an earlier checkpoint give way to the repeated iterations."""
    df = pd.DataFrame(
        {
            ENV_STEPS_METRIC: [300, 600, 900, 1200, 900, 1200, 1500, 300, 600],
            "score": [1.0, 2.0, 3.0, 4.0, 30.0, 40.0, 50.0, -1.0, -2.0],
        }
    )
    # the last two rows restarted from zero, so only they describe the run that produced the final state
    assert latest_history(df)["score"].tolist() == [-1.0, -2.0]
    kept = latest_history(df.iloc[:7])
    assert kept[ENV_STEPS_METRIC].tolist() == [300, 600, 900, 1200, 1500]
    assert kept["score"].tolist() == [1.0, 2.0, 30.0, 40.0, 50.0]
    assert latest_history(df.iloc[:4]).equals(df.iloc[:4])


_PATCHED_TUNE = """
import os, signal, sys
import trainer.runtime.ray_init, trainer.evaluation.sweep_report, trainer.tune

def interrupt(function):
    def wrapper(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C as this step begins
        return function(*args, **kwargs)
    return wrapper

target = sys.argv[1]
module = trainer.runtime.ray_init if target == "init_ray" else trainer.evaluation.sweep_report
setattr(module, target, interrupt(getattr(module, target)))
sys.exit(trainer.tune.main(sys.argv[2:]))
"""


def _tune_interrupted_at(target: str, args: list[str], ray_address: str, tmp_path: Path):
    """``trainer.tune ARGS`` with a SIGINT sent to itself as ``target`` (``init_ray``/``summarize_sweep``) starts."""
    script = tmp_path / "patched_tune.py"
    script.write_text(_PATCHED_TUNE)
    return subprocess.run(
        [sys.executable, str(script), target, *args],
        capture_output=True,
        text=True,
        env=cli_env(ray_address),
        timeout=600,
    )


def test_ctrl_c_while_ray_starts_stops_before_any_trial(ray_session, tmp_path):
    res = _tune_interrupted_at(
        "init_ray", tune_args(tmp_path / "runs", "stopping.env_steps=600"), ray_session, tmp_path
    )
    assert res.returncode == 130, res.stdout[-3000:] + res.stderr[-3000:]
    assert (
        res.stderr.strip().splitlines()[-1] == "SIGINT received while Ray started: no trial ran; run the command again"
    )
    assert not (tmp_path / "runs" / "smoke").exists()


def test_ctrl_c_while_the_summary_is_written_exits_130_and_resume_writes_it(ray_session, tmp_path):
    args = tune_args(tmp_path / "runs", "stopping.env_steps=600", "sweep.scheduler.type=fifo")
    res = _tune_interrupted_at("summarize_sweep", args, ray_session, tmp_path)
    assert res.returncode == 130, res.stdout[-3000:] + res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    exp_dir = tmp_path / "runs" / "smoke"
    assert lines[-2] == (
        f"SIGINT received while the summary was written: the trials are saved in {exp_dir}; write the summary "
        "again with:"
    )
    resume = (
        f"python -m trainer.tune --exp smoke --storage {tmp_path / 'runs'} --set stopping.env_steps=600 "
        "--set sweep.scheduler.type=fifo --resume"
    )
    assert lines[-1].strip() == resume
    assert not (exp_dir / "summary.json").exists()
    res = _tune([*args, "--resume"], ray_session)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((exp_dir / "summary.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["completed", "completed"]


def test_configurations_whose_trials_failed_before_reporting_keep_their_labels(ray_session, tmp_path, price_csv):
    """Two configurations whose trials fail before their first result (their price file disappears after the
    command checked it): Tune's results carry no config for them, yet the summary names each configuration,
    its seed and a plain one-line error (no terminal colour codes)."""
    exp_dir = tmp_path / "smoke"
    args = tune_args(
        tmp_path,
        "sweep.search_space={model.hidden: {grid_search: [[8], [16]]}}",
        "sweep.max_failures=0",
        "seed=4",
    )
    proc = _popen_tune([*args, "--data", price_csv], ray_session)
    first = proc.stdout.readline()
    assert first.startswith("experiment smoke:"), first
    Path(price_csv).unlink()  # checked by the command; each trial loads it itself, and now cannot
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out[-3000:]
    summary = json.loads((exp_dir / "summary.json").read_text())
    trials = sorted(summary["trials"], key=lambda t: t["config"])
    assert [(t["config"], t["seed"], t["status"]) for t in trials] == [
        ("model.hidden=[16]", 4, "error"),
        ("model.hidden=[8]", 4, "error"),
    ]
    for t in trials:  # the underlying cause, not Ray's actor-death wrapper
        assert t["error"].startswith("envs.errors.DataError: ") and t["error"].endswith(
            "file not found; pass 'sp500' for the bundled data or the path of a CSV/Parquet file"
        ), t["error"]
    text = (exp_dir / "summary.md").read_text()
    assert "\x1b[" not in text and "None" not in text
    assert "**One seed per configuration**" in text and "**One test window**" in text


# --- memory, storage and concurrency ---------------------------------------------------------------------------
SMOKE_PARTS = (
    r"replay buffer {buffer}: sac\.buffer_size {transitions} transitions x 1,700 bytes; features 8\.6 MB \(8,313 "
    r"days x 20 assets, 1 process\); 2 env copies 3\.1 MB"
)
AVAILABLE = r"this machine has [0-9.]+ [MGT]B available"


def test_the_plan_shows_the_memory_and_a_sweep_that_cannot_fit_is_refused_before_ray(tmp_path):
    res = _tune(["--exp", "smoke", "--dry-run"])
    assert res.returncode == 0, res.stderr[-2000:]
    parts = SMOKE_PARTS.format(buffer=r"8\.5 MB", transitions="5,000")
    assert re.search(rf"^memory: about 20\.2 MB per trial \({parts}\); {AVAILABLE}$", res.stdout, re.M), res.stdout
    big = ["--exp", "smoke", "--storage", str(tmp_path / "runs"), "--set", "sac.buffer_size=1000000000000"]
    parts = SMOKE_PARTS.format(buffer=r"1\.7 PB", transitions="1,000,000,000,000")
    for args in ([*big, "--dry-run"], big):
        res = _tune(args)
        assert res.returncode == 2 and res.stdout == "" and "Traceback" not in res.stderr
        assert re.fullmatch(
            rf"error: each trial of the sweep needs about 1\.7 PB of memory \({parts}\) but {AVAILABLE}; lower "
            r"sac\.buffer_size \(at most [0-9,]+ transitions fit\)",
            res.stderr.strip().splitlines()[-1],
        ), res.stderr[-2000:]
    assert not (tmp_path / "runs").exists()


def test_trials_that_fit_alone_but_not_together_are_refused_once_ray_is_up(ray_session, tmp_path):
    """Before Ray starts one trial fits; once the cluster (2 CPUs) shows that both trials run at once, the sweep is
    refused before any trial starts, offering one at a time. Nothing is allocated: the figures are estimates."""
    import psutil

    transitions = int(0.6 * psutil.virtual_memory().available) // 1700
    args = tune_args(tmp_path, f"sac.buffer_size={transitions}", "sweep.max_concurrent_trials=null")
    res = _tune(args, ray_session, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stdout[-2000:] + res.stderr[-2000:]
    assert f"Ray: joined {ray_session}" in res.stdout
    assert re.fullmatch(
        r"error: the sweep needs about [0-9.]+ GB of memory: 2 trial\(s\) at once \(all 2 trials of the sweep\) of "
        rf"about [0-9.]+ GB each \({SMOKE_PARTS.format(buffer='[0-9.]+ GB', transitions=f'{transitions:,}')}\) but "
        rf"{AVAILABLE}; lower sac\.buffer_size \(at most [0-9,]+ transitions fit\) or set "
        r"sweep\.max_concurrent_trials=1",
        res.stderr.strip().splitlines()[-1],
    ), res.stderr[-2000:]
    assert not (tmp_path / "smoke").exists()  # nothing started, nothing left


def test_a_file_as_storage_and_a_ticker_named_cash_are_refused_before_anything_starts(tmp_path):
    afile = tmp_path / "results"
    afile.write_text("mine")
    res = _tune(["--exp", "smoke", "--storage", str(afile)])
    assert res.returncode == 2 and "Ray:" not in res.stdout and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: {afile / 'smoke'}: {afile} is a file, not a directory; pass a directory (or a new path) as --storage"
    )
    assert afile.read_text() == "mine"
    prices = synthetic_prices()
    prices.columns = ["A0", "cash", "A2"]
    csv = write_wide_csv(tmp_path / "cash.csv", prices)
    res = _tune(["--exp", "smoke", "--dry-run", "--data", csv])
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: {CONFIG_DIR / 'smoke.yaml'}: key 'data': {csv}: ticker 'cash' has the name of the portfolio's cash "
        "position (a column of the backtest's weights beside the tickers); rename that column (or that ticker in a "
        "long file), e.g. to 'cash_asset'"
    )


_UNREACHABLE_S3 = """
import sys
import pyarrow.fs

class Unreachable:  # what pyarrow raises for a bucket whose name does not resolve, without any network traffic
    @staticmethod
    def from_uri(uri):
        raise OSError("When resolving region for bucket 'no-such-bucket': AWS Error NETWORK_CONNECTION during "
                      "HeadBucket operation: curlCode: 6, Couldn't resolve host name")

pyarrow.fs.FileSystem = Unreachable
import trainer.tune
sys.exit(trainer.tune.main(sys.argv[1:]))
"""


def test_an_unreachable_remote_storage_is_refused_at_once(tmp_path):
    script = tmp_path / "unreachable.py"
    script.write_text(_UNREACHABLE_S3)
    start = time.time()
    res = subprocess.run(
        [sys.executable, str(script), "--exp", "smoke", "--storage", "s3://no-such-bucket/sweeps"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1] == (
        "error: s3://no-such-bucket/sweeps: cannot reach this storage (When resolving region for bucket "
        "'no-such-bucket': AWS Error NETWORK_CONNECTION during HeadBucket operation: curlCode: 6, Couldn't resolve "
        "host name); check the bucket name, the credentials and the network, or pass a local folder as --storage"
    )
    assert "Ray:" not in res.stdout and not (tmp_path / "results_summary").exists()  # before Ray, nothing written
    assert time.time() - start < 120


def test_two_sweeps_into_one_storage_at_once_the_second_is_refused_and_the_first_finishes(ray_session, tmp_path):
    args = tune_args(tmp_path, "stopping.env_steps=900", "sweep.scheduler.type=fifo")
    exp_dir = tmp_path / "smoke"
    first = _popen_tune(args, ray_session)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and first.poll() is None and not (exp_dir / LOCK_FILE).exists():
            time.sleep(0.1)
        second = _tune(args, ray_session, timeout=120)
        still_running = first.poll() is None
        out, _ = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert still_running, "the first sweep ended before the second was refused: raise its stopping.env_steps"
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert second.stderr.strip().splitlines()[-1] == (
        f"error: {exp_dir}: another trainer.tune is running a sweep of smoke there (pid {first.pid}); wait for it to "
        "finish, or use another --storage"
    )
    assert first.returncode == 0, out[-3000:]
    summary = json.loads((exp_dir / "summary.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["completed", "completed"]  # both of its own trials
    assert not (exp_dir / LOCK_FILE).exists()
