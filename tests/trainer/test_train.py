"""trainer.train / PortfolioSAC on a local Ray instance: smoke run, checkpoints, restore, resume,
deterministic evaluation, normalisation consistency, divergence guard, interruption, learning."""

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
import pytest
import torch

from envs.folds import CONFIG_DIR
from tests.conftest import checkpoints as _checkpoints
from tests.conftest import cli_env, synthetic_prices, write_wide_csv
from tests.conftest import train_cli as _train_cli
from trainer.experiment.loading import load_experiment
from trainer.rl.sac_config import build_sac_config


def test_smoke_run_writes_progress_checkpoints_and_summary(smoke_run):
    out, stdout = smoke_run
    assert "[iter    1] env steps 300/1,500" in stdout and "val Sharpe" in stdout and "critic loss" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["env_steps"] == 1500
    assert summary["final_checkpoint"] == str(out / "checkpoints" / "checkpoint_000005")
    final = summary["validation"]  # the final checkpoint's own validation pass, shown after the progress lines
    assert f"its validation: Sharpe {final['sharpe']:+.2f} | Sharpe - EW {final['sharpe_minus_ew']:+.2f}" in stdout
    assert [p.name for p in _checkpoints(out)] == [
        "checkpoint_000002",
        "checkpoint_000004",
        "checkpoint_000005",
    ]
    rows = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [300, 600, 900, 1200, 1500]
    last = rows[-1]
    for key in (
        "critic_loss",
        "actor_loss",
        "alpha",
        "entropy",
        "episode_return_mean",
        "env_steps_per_s",
        "trained_samples_per_s",
        "train_episode_sharpe",
        "train_episode_final_value",
        "train_episode_turnover",
    ):
        assert np.isfinite(last[key]), key
    assert set(last["validation"]) == {
        "sharpe",
        "total_return",
        "max_drawdown",
        "turnover_per_day",
        "total_costs",
        "sharpe_minus_ew",
    }
    assert not list((out / "checkpoints").glob(".tmp-*"))  # temp dirs renamed, none left behind


def test_progress_line_shows_steps_budget_and_a_percentage_capped_at_100():
    from trainer.metrics.registry import ENV_STEPS
    from trainer.runtime.progress import progress_line

    assert progress_line(2, {ENV_STEPS: 600}, 1500, 12.0).startswith(
        "[iter    2] env steps 600/1,500 ( 40%) | ETA 0:00:12 |"
    )
    # a budget below one iteration's steps: the whole iteration runs, the line says 100%, not 6000%
    assert progress_line(1, {ENV_STEPS: 300}, 5, float("nan")).startswith(
        "[iter    1] env steps 300/5 (100%) | ETA ? |"
    )


def test_restore_gives_identical_deterministic_actions(smoke_run, ray_session):
    from envs.portfolio import PortfolioEnv
    from trainer.evaluation.policy import load_policy, policy_from_algorithm
    from trainer.evaluation.runs import run_policy
    from trainer.rl.algorithm import PortfolioSAC

    out, _ = smoke_run
    ckpt = _checkpoints(out)[-1]
    algo = PortfolioSAC.from_checkpoint(str(ckpt))
    try:
        live = policy_from_algorithm(algo)
        restored, state = load_policy(ckpt)  # module + frozen filter, no Algorithm
        env = PortfolioEnv(split="validation")
        obs, _ = env.reset(seed=0)
        for _ in range(50):
            a1, a2 = live(obs), restored(obs)
            np.testing.assert_array_equal(a1, a2)
            obs, *_ = env.step(a1)
        # the checkpoint's validation pass is reproduced exactly by the restored policy
        again = run_policy(PortfolioEnv(split="validation"), restored)
        from trainer.metrics.registry import SHARPE_MINUS_EW, summarize

        saved = {k: v for k, v in state["last_evaluation"].items() if k != SHARPE_MINUS_EW}
        assert summarize(again) == pytest.approx(saved, rel=1e-12)
    finally:
        algo.stop()


def test_deterministic_action_is_tanh_of_mean_by_hand(smoke_run):
    """Forward the restored policy net by hand in numpy and compare with the evaluation policy."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    from trainer.evaluation.policy import load_policy

    out, _ = smoke_run
    ckpt = _checkpoints(out)[-1]
    policy, _ = load_policy(ckpt)
    module = RLModule.from_checkpoint(ckpt / "learner_group" / "learner" / "rl_module" / "default_policy")
    layers = [
        m for m in list(module.pi_encoder.modules()) + list(module.pi.modules()) if isinstance(m, torch.nn.Linear)
    ]
    assert len(layers) == 3  # [32, 32] hidden + the head
    from ray.rllib.connectors.env_to_module import EnvToModulePipeline

    from trainer.rl.connectors import find_obs_filter

    filt = find_obs_filter(EnvToModulePipeline.from_checkpoint(ckpt / "env_runner" / "env_to_module_connector"))
    from envs.portfolio import PortfolioEnv

    obs, _ = PortfolioEnv(split="test").reset(seed=0)
    x = filt._filters[None](obs, update=False).astype(np.float64)  # RLlib's own filter, frozen
    for i, layer in enumerate(layers):
        x = layer.weight.detach().numpy().astype(np.float64) @ x + layer.bias.detach().numpy()
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)  # relu
    mean = x[: len(x) // 2]
    np.testing.assert_allclose(policy(obs), np.tanh(mean), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.tanh(mean), np.clip(mean, -1, 1))  # RLlib's explore=False would differ


def test_buffer_holds_raw_obs_and_samples_are_normalised_like_the_policy_sees_them(ray_session):
    exp = load_experiment("smoke", {"stopping.steps_per_iteration": 300})
    algo = build_sac_config(exp).build_algo()
    try:
        algo.train()
        buf = algo.buffer
        # raw: the last 21 entries are the portfolio weights (>= 0, sum to 1), not normalised values
        w = buf.obs[: len(buf), -21:]
        assert (w >= 0).all() and np.allclose(w.sum(axis=1), 1.0, atol=1e-5)
        buf.rng = np.random.default_rng(123)
        batch = algo._sample_batch().policy_batches["default_policy"]
        buf.rng = np.random.default_rng(123)
        raw = buf.sample(exp.sac.batch_size)
        filt = algo.obs_filter()._filters[None]
        before = filt.running_stats.num_pushes
        # what the policy would see for the same raw observations, through RLlib's own filter call
        seen = np.stack([filt(o, update=False) for o in raw["obs"]])
        seen_next = np.stack([filt(o, update=False) for o in raw["next_obs"]])
        # float32 arithmetic at sample time vs RLlib's float64: equal to float32 rounding
        np.testing.assert_allclose(batch["obs"], seen, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(batch["new_obs"], seen_next, rtol=1e-6, atol=1e-6)
        assert np.abs(seen).max() > 1.0  # normalised values of real spread, so the tolerance is a real check
        assert filt.running_stats.num_pushes == before  # sampling never updates the statistics
        np.testing.assert_array_equal(batch["rewards"], np.clip(raw["rewards"], -20, 20))
    finally:
        algo.stop()


def test_reward_clipping_applies_to_the_buffer(ray_session):
    exp = load_experiment("smoke", {"reward.clip": 0.05, "sac.learning_starts": 10_000})
    algo = build_sac_config(exp).build_algo()
    try:
        algo.train()
        r = algo.buffer.rewards[: len(algo.buffer)]
        assert r.max() <= 0.05 and r.min() >= -0.05
        assert np.isclose(np.abs(r), 0.05).mean() > 0.5  # the env's rewards are mostly larger than 0.05
    finally:
        algo.stop()


def test_resume_continues_steps_buffer_and_filter(smoke_run, ray_session, tmp_path):
    out, _ = smoke_run
    ckpt = _checkpoints(out)[-1]
    state = json.loads((ckpt / "portfolio_state.json").read_text())
    with np.load(ckpt / "replay_buffer.npz") as data:
        saved_buffer = len(data["rewards"])
    assert saved_buffer == 1500
    res = _train_cli(tmp_path / "resumed", ray_session, "--resume", str(ckpt), "--additional-steps", "600")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "resumed" in res.stdout and "at 1,500 env steps, buffer 1,500 transitions" in res.stdout
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert summary["env_steps"] == 2100 and summary["iterations"] == 7
    # the new run directory continues the numbering and can itself be resumed (its experiment.yaml)
    rows = (tmp_path / "resumed" / "progress.jsonl").read_text().splitlines()
    assert [json.loads(r)["training_iteration"] for r in rows] == [6, 7]
    assert (tmp_path / "resumed" / "experiment.yaml").read_text() == (out / "experiment.yaml").read_text()
    # on a joined cluster the runner settings decide the schedule, and the run records it
    assert "  schedule: local\n" in (out / "experiment.yaml").read_text()
    new_ckpt = Path(summary["final_checkpoint"])
    new_state = json.loads((new_ckpt / "portfolio_state.json").read_text())
    with np.load(new_ckpt / "replay_buffer.npz") as data:
        assert len(data["rewards"]) == 2100  # 1500 restored + 600 new (capacity 5000)
        assert data["added_lifetime"] == 2100
    assert new_state["obs_filter_count"] > state["obs_filter_count"] >= 1500


def test_divergence_guard_stops_with_status_and_keeps_last_good_checkpoint(ray_session, tmp_path):
    out = tmp_path / "div"
    res = _train_cli(out, ray_session, "--exp", "smoke", "--set", "divergence.max_critic_loss=1e-6")
    assert res.returncode == 3, res.stdout[-2000:] + res.stderr[-2000:]
    assert "DIVERGED at 300 env steps: qf_loss = " in res.stdout
    assert "exceeds divergence.max_critic_loss = 1e-06" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["final_checkpoint"] is None
    assert _checkpoints(out) == []  # no checkpoint of a diverged state


def test_run_request_counts_the_actors_and_a_local_learners_gpu():
    from trainer.runtime.resources import run_request

    assert run_request([{"CPU": 1.0}]) == {}  # everything in this process
    assert run_request([{"CPU": 1.0}] * 4) == {"CPU": 3.0}  # three env runners
    assert run_request([{"CPU": 1.0, "GPU": 1.0, "learner": 1.0}, {"CPU": 1.0, "rollout": 1.0}]) == {
        "GPU": 1.0,
        "CPU": 1.0,
        "rollout": 1.0,
    }
    assert run_request([{"CPU": 1.0}, {"GPU": 0.5}, {"GPU": 0.5}]) == {"GPU": 1.0}  # two remote learners


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "resources.num_env_runners=3",
            "this run needs CPU=3 but the Ray cluster has CPU=2 in total; its env runners and learners could never "
            "start (it takes one CPU per env runner and per remote learner: use fewer, e.g. --set "
            "resources.num_env_runners=1; or add nodes that have it)",
        ),
        (
            "resources.num_gpus_per_learner=1",
            "this run needs GPU=1 but the Ray cluster has GPU=0 in total; its env runners and learners could never "
            "start (train on CPUs with --set resources.num_gpus_per_learner=0; or add nodes that have it)",
        ),
    ],
)
def test_a_run_the_cluster_cannot_place_is_refused_in_one_line_and_leaves_nothing(
    ray_session, tmp_path, setting, message
):
    out = tmp_path / "run"
    res = _train_cli(out, ray_session, "--exp", "smoke", "--set", setting, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == f"error: {message}"
    assert not out.exists()  # the same command runs again once the setting is fixed


def test_a_signal_while_the_inputs_are_checked_leaves_no_run_directory(tmp_path, monkeypatch, signals_restored, capsys):
    import trainer.experiment.run_inputs as inputs
    import trainer.train as T

    check = inputs.check_run

    def check_then_signal(exp):
        check(exp)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C before training started

    monkeypatch.setattr(inputs, "check_run", check_then_signal)
    out = tmp_path / "run"
    assert T.main(["--exp", "smoke", "--out", str(out)]) == 130
    assert (
        capsys.readouterr().err
        == "SIGINT received before training started: nothing was trained; run the command again\n"
    )
    assert not out.exists()  # so the same command runs again


def test_a_signal_during_the_last_iteration_still_completes_the_run(
    ray_session, tmp_path, monkeypatch, signals_restored
):
    from trainer.rl.algorithm import PortfolioSAC
    from trainer.runtime.progress import StopFlag
    from trainer.train import run_training

    flag, original = StopFlag(), PortfolioSAC.train

    def train_then_signal(self):
        result = original(self)
        flag.signum = signal.SIGINT  # as if Ctrl-C came while the (only) iteration ran
        return result

    monkeypatch.setattr(PortfolioSAC, "train", train_then_signal)
    exp = load_experiment("smoke", {"stopping.env_steps": 300}, sweep=False)
    summary = run_training(exp, tmp_path / "run", stop_flag=flag, verbose=False)
    assert summary["status"] == "completed" and summary["reason"] == "" and summary["env_steps"] == 300
    assert "resume_command" not in summary and summary["final_checkpoint"].endswith("checkpoint_000001")


def test_sigint_writes_final_checkpoint_and_says_how_to_resume(ray_session, tmp_path):
    out = tmp_path / "int"
    cmd = [sys.executable, "-m", "trainer.train", "--exp", "smoke", "--steps", "100000", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env(ray_session))
    lines = []
    deadline = time.time() + 240
    while time.time() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith("[iter    1]"):
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=240)
    output = "".join(lines) + rest
    assert proc.returncode == 130, output[-3000:]  # 128 + SIGINT: the shell's convention for an interrupted job
    assert "SIGINT received" in output and "status: interrupted (SIGINT)" in output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["env_steps"] < 100000
    ckpt = Path(summary["final_checkpoint"])
    assert (ckpt / "rllib_checkpoint.json").exists() and (ckpt / "replay_buffer.npz").exists()
    resume = f"python -m trainer.train --resume {ckpt} --additional-steps {100000 - summary['env_steps']}"
    assert summary["resume_command"] == resume and output.endswith(f"resume with: {resume}\n")


def test_learns_dominant_asset_and_beats_equal_weight(ray_session, tmp_path):
    """Synthetic market: asset A0 drifts up (+0.3%/day), the others down; the agent must find A0."""
    from envs.portfolio import PortfolioEnv
    from trainer.evaluation.policy import load_policy
    from trainer.evaluation.runs import run_policy
    from trainer.metrics.registry import sharpe_annualized

    prices = synthetic_prices(n_days=1000, n_assets=4, seed=0, drifts=[0.003, -0.002, -0.002, -0.002])
    data = write_wide_csv(tmp_path / "synthetic.csv", prices)
    out = tmp_path / "learn"
    res = _train_cli(
        out,
        ray_session,
        "--exp",
        "smoke",
        "--data",
        data,
        "--steps",
        "1500",
        "--set",
        "sac.training_intensity=64",
        "--set",
        "sac.initial_alpha=0.1",
        "--set",
        "model.hidden=[64, 64]",
        "--set",
        "stopping.steps_per_iteration=500",
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    policy, _ = load_policy(_checkpoints(out)[-1])
    agent = run_policy(PortfolioEnv(data=data, split="validation"), policy)
    equal = run_policy(PortfolioEnv(data=data, split="validation"), lambda o: np.zeros(5, np.float32))
    assert agent.weights[:, 0].mean() > 0.6  # most of the weight on the dominant asset
    assert sharpe_annualized(agent.net_returns) > sharpe_annualized(equal.net_returns) + 1.0
    assert agent.values[-1] > equal.values[-1]


def test_overlapped_sampling_keeps_the_replay_ratio(ray_session):
    """resources.overlap_sampling: a remote runner samples the next round while the learner trains."""
    exp = load_experiment(
        "smoke",
        {"resources.num_env_runners": 1, "resources.overlap_sampling": True, "stopping.steps_per_iteration": 300},
    )
    algo = build_sac_config(exp).build_algo()
    try:
        steps = [algo.train()["portfolio"]["env_steps"] for _ in range(3)]
        assert steps == sorted(steps) and steps[-1] >= 900
        assert len(algo.buffer) == steps[-1]  # every sampled round reached the buffer
        learning = steps[-1] - exp.sac.learning_starts
        expected = learning * exp.sac.training_intensity / exp.sac.batch_size
        assert abs(algo.updates_lifetime - expected) <= 1 + exp.sac.rollout_fragment_length  # the same replay ratio
        assert np.isfinite(algo.train()["portfolio"]["critic_loss"])
    finally:
        algo.stop()
    with pytest.raises(Exception, match="overlap_sampling needs num_env_runners >= 1"):
        load_experiment("smoke", {"resources.overlap_sampling": True})


def _train_alone(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``trainer.train ARGS`` as a user starts it (no RAY_ADDRESS: it would start its own Ray instance)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "trainer.train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=cwd)


def test_a_run_that_cannot_fit_in_memory_is_refused_before_ray_starts_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    res = _train_alone(["--out", str(out), "--set", "sac.buffer_size=1000000000000"])
    assert res.returncode == 2 and res.stdout == ""  # refused before Ray started (it prints the run's first line)
    # the available figure is this machine's at the time; the rest is fixed by the smoke experiment on sp500
    assert re.fullmatch(
        r"error: this run needs about 1\.7 PB of memory \(replay buffer 1\.7 PB: sac\.buffer_size "
        r"1,000,000,000,000 transitions x 1,700 bytes; features 8\.6 MB \(8,313 days x 20 assets, 1 process\); 2 "
        r"env copies 3\.1 MB\) but this machine has [0-9.]+ [MGT]B available; lower sac\.buffer_size \(at most "
        r"[0-9,]+ transitions fit\)\n",
        res.stderr,
    ), res.stderr
    assert not out.exists()  # nothing written: the same command runs once the setting is fixed


def test_an_output_path_through_a_file_is_refused_before_anything_starts(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    res = _train_alone(["--out", str(afile / "run")])
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == (
        f"error: {afile / 'run'}: {afile} is a file, not a directory; pass a directory (or a new path) as --out\n"
    )
    # the default run directory (runs/<exp>/<time>-seed<S>) where 'runs' is a file
    (tmp_path / "runs").write_text("not a folder")
    res = _train_alone(["--exp", "smoke"], cwd=tmp_path)
    assert res.returncode == 2 and res.stdout == ""
    assert re.fullmatch(
        rf"error: {re.escape(str(tmp_path))}/runs/smoke/\d{{8}}-\d{{6}}-seed0: {re.escape(str(tmp_path))}/runs is a "
        r"file, not a directory; pass a directory \(or a new path\) as --out\n",
        res.stderr,
    ), res.stderr
    assert afile.read_text() == "mine" and (tmp_path / "runs").read_text() == "not a folder"


def test_a_ticker_named_cash_is_refused_at_data_load(tmp_path):
    prices = synthetic_prices()
    prices.columns = ["A0", " cash", "A2"]  # as written in the header; the data layer strips names
    csv = write_wide_csv(tmp_path / "cash.csv", prices)
    res = _train_alone(["--data", csv, "--out", str(tmp_path / "run")])
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == (
        f"error: {csv}: ticker 'cash' has the name of the portfolio's cash position (a column of the backtest's "
        "weights beside the tickers); rename that column (or that ticker in a long file), e.g. to 'cash_asset'\n"
    )
    assert not (tmp_path / "run").exists()
    prices.columns = ["A0", "CASH", "A2"]  # a real ticker (names are case-sensitive): no collision
    csv = write_wide_csv(tmp_path / "upper.csv", prices)
    from trainer.experiment.preflight import checked_prices

    assert checked_prices(load_experiment("smoke", {"data.source": csv}, sweep=False)).tickers == ["A0", "CASH", "A2"]


def test_a_bad_feature_set_is_refused_in_one_line_naming_the_key_the_value_and_the_choices(tmp_path):
    out = tmp_path / "run"
    res = _train_alone(["--out", str(out), "--set", "data.features=asset+volume"])
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == (
        f"error: {CONFIG_DIR / 'smoke.yaml'} with data.features=asset+volume from the command line: key "
        "'data.features': Value error, features must be one of asset, asset+rank, asset+market, asset+rank+market, "
        "got 'asset+volume'\n"
    )
    assert not out.exists()
