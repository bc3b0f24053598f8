"""Populations in sweeps: seed grouping, per-agent summary rows, per-agent checkpoints and backtests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import cli_env, tune_args
from trainer.experiment.config import population_first_seeds
from trainer.experiment.loading import ExperimentError, load_experiment
from trainer.tune import build_plan, format_plan, tune_domains

QUICK = "tune_configs/quick.yaml"


# --- seed grouping (unit) -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seeds", "k", "first"),
    [
        ([0, 1, 2, 3, 4, 5], 3, [0, 3]),
        ([5, 4, 3, 2], 2, [2, 4]),
        ([7, 8], 2, [7]),
        ([0, 1, 2, 4, 5, 6], 3, [0, 4]),
        ([3, 9], 1, [3, 9]),
    ],
)
def test_a_seed_grid_splits_into_populations_of_consecutive_seeds(seeds, k, first):
    assert population_first_seeds(seeds, k) == first


def test_a_seed_grid_that_does_not_split_is_refused_with_the_fix():
    with pytest.raises(ValueError) as info:
        population_first_seeds([0, 1, 2, 3, 5, 6], 3)
    assert str(info.value) == (
        "sweep.search_space.seed: grid_search [0, 1, 2, 3, 5, 6] does not split into populations of "
        "sac.population=3 consecutive seeds (a trial trains seeds s .. s+2); list whole runs of 3, e.g. "
        "grid_search: [0, 1, 2, 3, 4, 5]"
    )


def test_population_sweep_runs_one_trial_per_population_and_the_plan_shows_the_agents():
    exp = load_experiment(
        "quick", {"sac.population": 3, "sweep.search_space.seed": {"grid_search": [0, 1, 2, 3, 4, 5]}}
    )
    assert exp.sweep.domains(3)["seed"] == ("grid_search", [0, 3])
    assert exp.sweep.n_trials(3) == 2 * 2  # 2 architectures x 2 populations
    assert exp.sweep.n_trials() == 2 * 6  # the same sweep of single agents
    assert tune_domains(exp.sweep, 3)["seed"] == {"grid_search": [0, 3]}
    plan = build_plan(exp)
    assert plan["trials"] == 4 and plan["agents_per_trial"] == 3 and plan["trial_seeds"] == [0, 3]
    text = format_plan(plan)
    assert text.startswith("experiment quick: 4 trial(s) x 3 agents (a population of seeds s .. s+2 per trial)")
    assert "  seed: {'grid_search': [0, 1, 2, 3, 4, 5]} -> 2 population(s) from seeds [0, 3]" in text


def test_a_population_without_a_swept_seed_is_one_trial_per_grid_point():
    exp = load_experiment("smoke", {"sac.population": 4})
    plan = build_plan(exp)
    assert plan["trials"] == 2 and plan["agents_per_trial"] == 4 and plan["trial_seeds"] is None
    text = format_plan(plan)
    assert text.startswith("experiment smoke: 2 trial(s) x 4 agents (a population of seeds s .. s+3 per trial)")
    assert "  model.hidden: {'grid_search': [[32, 32], [16]]}\n" in text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"sweep.search_space.seed": {"grid_search": [0, 2]}},
            "sweep.search_space.seed: grid_search [0, 2] does not split into populations of sac.population=2 "
            "consecutive seeds (a trial trains seeds s .. s+1); list whole runs of 2, e.g. grid_search: [0, 1]",
        ),
        (
            {"sweep.search_space.seed": {"grid_search": [0, 1, 1, 2]}},
            "sweep.search_space.seed: grid_search [0, 1, 1, 2] repeats a seed; list each once",
        ),
        (
            {"sweep.search_space.seed": {"choice": [0, 1]}},
            "sweep.search_space.seed: choice with sac.population=2 is not supported (a trial trains K consecutive "
            "seeds, and drawn seeds could overlap); sweep seeds with grid_search of whole runs of 2, e.g. "
            "grid_search: [0, 1, 2, 3]",
        ),
        (
            {"sweep.search_space.seed": {"randint": [0, 10]}},
            "sweep.search_space.seed: randint with sac.population=2 is not supported (a trial trains K consecutive "
            "seeds, and drawn seeds could overlap); sweep seeds with grid_search of whole runs of 2, e.g. "
            "grid_search: [0, 1, 2, 3]",
        ),
        (
            {"sweep.metric": "portfolio/critic_loss", "sweep.mode": "min"},
            "sweep.metric 'portfolio/critic_loss' is the population's, not each agent's: with sac.population, "
            "select on a validation metric (portfolio/validation/...) so that every agent is ranked by its own",
        ),
    ],
)
def test_population_sweeps_that_cannot_work_are_refused_at_load_time(overrides, message):
    overrides = {"sac.population": 2, **overrides}
    with pytest.raises(ExperimentError) as info:
        load_experiment("quick", overrides)
    # the message names the file and the values that came from the command line
    settings = ", ".join(f"{key}={value}" for key, value in overrides.items())
    assert str(info.value).endswith(f"{QUICK} with {settings} from the command line: {message}")


def test_the_tune_cli_refuses_a_bad_population_seed_grid_in_one_line(tmp_path):
    sets = ["--set", "sac.population=3", "--set", "sweep.search_space.seed={grid_search: [0, 1, 2, 3]}"]
    res = subprocess.run(
        [sys.executable, "-m", "trainer.tune", "--exp", "quick", "--storage", str(tmp_path), "--dry-run", *sets],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: ") and "grid_search [0, 1, 2, 3] does not split into populations" in line


# --- a population checkpoint: per-agent policies -------------------------------------------------------------
def test_an_agent_of_a_population_checkpoint_acts_as_the_live_population_did(population_run):
    from trainer.evaluation.policy import load_policy

    ckpt, observations, actions, (obs_dim, act_dim) = population_run
    assert observations.shape[1] == 2 * obs_dim and actions.shape[1] == 2 * act_dim
    for agent in (0, 1):
        policy, state = load_policy(ckpt, agent=agent)
        assert state["population_seeds"] == [4, 5]
        own = np.array([policy(obs[agent * obs_dim : (agent + 1) * obs_dim]) for obs in observations])
        np.testing.assert_allclose(own, actions[:, agent * act_dim : (agent + 1) * act_dim], rtol=0, atol=1e-6)
    # the agents differ (own seeds): a wrong slice would not pass the comparison above
    assert not np.allclose(actions[:, :act_dim], actions[:, act_dim:])


def test_choosing_an_agent_is_required_checked_and_refused_where_it_makes_no_sense(population_run, tmp_path):
    from trainer.evaluation.policy import load_policy
    from trainer.evaluation.simulation import BacktestError, simulate
    from trainer.runtime import checkpoint as C

    ckpt = population_run[0]
    with pytest.raises(C.CheckpointError) as info:
        load_policy(ckpt)
    assert str(info.value) == (
        f"{ckpt}: a population of 2 agents; choose one with --agent I (agent=I): 0 (seed 4), 1 (seed 5)"
    )
    with pytest.raises(BacktestError) as info:
        simulate(ckpt, "validation", agent=2)
    assert str(info.value) == (f"{ckpt}: agent 2 is out of range: the population has 2 agents, 0 (seed 4), 1 (seed 5)")
    with pytest.raises(C.CheckpointError, match="agent -1 is out of range"):
        load_policy(ckpt, agent=-1)
    # the same checkpoint as a single agent's (no population in its state), re-sealed by a new manifest
    single = tmp_path / "checkpoint_000001"
    shutil.copytree(ckpt, single)
    state = json.loads((single / C.STATE_FILE).read_text())
    del state["population_seeds"]
    C.write_state(single, state)
    C.write_manifest(single)
    with pytest.raises(C.CheckpointError) as info:
        load_policy(single, agent=0)
    assert str(info.value) == (
        f"{single}: a single-agent checkpoint has no agent 0 (only a population's checkpoint, sac.population, "
        "does); drop --agent (agent=) to use its one policy"
    )
    # an agent that had diverged when the checkpoint was written is not usable
    state["population_seeds"], state["diverged_agents"] = [4, 5], {"1": "qf_loss is nan (non-finite)"}
    C.write_state(single, state)
    C.write_manifest(single)
    with pytest.raises(BacktestError) as info:
        simulate(single, "validation", agent=1)
    assert str(info.value) == (
        f"{single}: agent 1 (seed 5) had diverged when this checkpoint was written (qf_loss is nan (non-finite)); "
        "use another agent or an earlier checkpoint of the run"
    )


def test_backtest_cli_backtests_one_agent_and_says_which(population_run, tmp_path, capsys):
    from trainer.backtest import main

    ckpt = population_run[0]
    assert main([str(ckpt), "--split", "validation", "--agent", "1", "--out", str(tmp_path / "bt")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Backtest of agent 1 (seed 5) on the validation split")
    result = json.loads((tmp_path / "bt" / "backtest.json").read_text())
    assert result["agent"] == 1 and result["seed"] == 5
    assert "agent 1 (seed 5) of a population of 2 trained together" in (tmp_path / "bt" / "report.md").read_text()
    assert main([str(ckpt), "--split", "validation"]) == 2
    assert "a population of 2 agents; choose one with --agent I" in capsys.readouterr().err


# --- a real tiny population sweep -----------------------------------------------------------------------------
def test_tiny_population_sweep_summary_has_one_row_per_agent(ray_session, tmp_path):
    from trainer.runtime import checkpoint as C

    args = tune_args(
        tmp_path,
        "sac.population=2",
        "sweep.search_space={seed: {grid_search: [0, 1]}}",
        "stopping.env_steps=400",
        "stopping.steps_per_iteration=200",
        "sac.learning_starts=100",
        "model.hidden=[16]",
        "checkpoint.frequency=1",
        "sweep.scheduler={type: fifo}",
    )
    res = subprocess.run(
        [sys.executable, "-m", "trainer.tune", *args],
        capture_output=True,
        text=True,
        env=cli_env(ray_session),
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "experiment smoke: 1 trial(s) x 2 agents" in res.stdout
    exp_dir = tmp_path / "smoke"
    summary = json.loads((exp_dir / "summary.json").read_text())
    trials = pd.DataFrame(summary["trials"])
    assert len(trials) == 2 and list(trials["seed"]) == [0, 1] and list(trials["agent"]) == [0, 1]
    (tune_trial,) = {t.split("/")[0] for t in trials["trial"]}
    assert list(trials["trial"]) == [f"{tune_trial}/agent0", f"{tune_trial}/agent1"]
    for _, t in trials.iterrows():
        # each agent's best checkpoint is the kept one with its own best validation score
        kept = [p for p in (tmp_path / "smoke" / tune_trial).glob("checkpoint_*")]
        scores = {
            str(p): json.loads((p / C.STATE_FILE).read_text())["agent_evaluations"][t["agent"]]["sharpe"] for p in kept
        }
        assert t["best_checkpoint"] in scores
        assert t["best_checkpoint_score"] == pytest.approx(max(scores.values()))
        assert np.isfinite(t["test_sharpe"]) and t["status"] == "completed"
    (config,) = summary["configurations"]
    assert config["n_seeds"] == 2 and config["trials"] == 2 and config["test_sharpe"]["n"] == 2
    assert config["ensemble"]["folds"][0]["seeds"] == 2
    assert summary["best_trial"]["agent"] in (0, 1)
    best_bt = json.loads((exp_dir / "best_backtest" / "backtest.json").read_text())
    assert best_bt["agent"] == summary["best_trial"]["agent"] and best_bt["seed"] == summary["best_trial"]["seed"]
    returns = pd.read_parquet(exp_dir / "test_returns.parquet")
    assert set(returns["trial"]) == set(trials["trial"])
    assert f"--agent {summary['best_trial']['agent']}" in (exp_dir / "summary.md").read_text()


def test_an_agents_best_checkpoint_skips_a_damaged_one(tmp_path, capsys):
    from types import SimpleNamespace

    from trainer.evaluation.sweep_trials import agent_best_checkpoint
    from trainer.metrics import registry as M
    from trainer.runtime.checkpoint import write_manifest, write_state

    good, damaged, better = (tmp_path / name for name in ("good", "damaged", "better"))
    for path, score in ((good, 0.1), (damaged, 9.0), (better, 0.4)):
        path.mkdir()
        (path / "rllib_checkpoint.json").write_text("{}")  # what marks an RLlib checkpoint directory
        write_state(path, {"agent_evaluations": [{M.SHARPE_MINUS_EW: -1.0}, {M.SHARPE_MINUS_EW: score}]})
        write_manifest(path)
    (damaged / "portfolio_state.json").write_text("{}")  # no longer what the manifest says
    result = SimpleNamespace(best_checkpoints=[(SimpleNamespace(path=str(p)), {}) for p in (good, damaged, better)])
    ckpt, score = agent_best_checkpoint(result, 1, M.VALIDATION_SHARPE_MINUS_EW_METRIC, "max")
    assert (ckpt, score) == (str(better), 0.4)
    assert capsys.readouterr().err.startswith(f"warning: agent 1: skipping a damaged checkpoint: {damaged}")
