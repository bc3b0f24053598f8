"""``model.type`` per_asset and attention end to end on small data: a real training run through the CLI, its
checkpoint restored (the same actions, and training goes on), its policy file acting as the live module, a
backtest, a population of two, ``decide`` equal to the backtest day by day and the export equal to ``decide``
(TorchScript and ONNX)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.data import PriceData, load_prices
from tests.conftest import checkpoints, cli_env, synthetic_prices, train_cli, write_wide_csv
from tests.trainer.conftest import TINY_TRAIN
from tests.trainer.evaluation.test_decision import _backtest_days
from trainer.evaluation.decision import Member, decide, load_members
from trainer.evaluation.holdings import Holdings
from trainer.evaluation.networks import SET_TYPES
from trainer.evaluation.policy import load_policy, policy_from_algorithm
from trainer.experiment.loading import load_experiment
from trainer.experiment.stored import experiment_for_resume
from trainer.rl.sac_config import build_sac_config
from trainer.rl.set_modules import SetNet

PARITY = 1e-6


@pytest.fixture(scope="module", params=SET_TYPES)
def typed_run(request, ray_session, tmp_path_factory):
    """A short real run of one model type on 4 synthetic assets (no-trade band and limits on); its price file."""
    base = tmp_path_factory.mktemp(request.param)
    data = write_wide_csv(base / "prices.csv", synthetic_prices(n_days=700, n_assets=4, seed=2))
    sets = {
        "model.type": request.param,
        "model.hidden": "[16]",
        "model.attention_layers": 2,
        "data.no_trade_band": 0.01,
        "data.max_weight": 0.4,
    }
    args = [a for key, value in sets.items() for a in ("--set", f"{key}={value}")]
    res = train_cli(base / "run", ray_session, "--exp", "smoke", "--data", data, "--steps", "400", *args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return request.param, checkpoints(base / "run"), data


def _observations(env, policy, n: int = 30) -> list[np.ndarray]:
    obs, _ = env.reset(seed=0)
    out = []
    for _ in range(n):
        out.append(obs)
        obs, *_ = env.step(policy(obs))
    return out


def test_a_checkpoint_restores_the_same_network_and_actions_and_trains_on(typed_run):
    kind, ckpts, _ = typed_run
    exp, _ = experiment_for_resume(ckpts[-1], {})
    assert exp.model.type == kind
    algo = build_sac_config(exp).build_algo()
    try:
        algo.restore_from_path(ckpts[-1])
        module = algo.get_module()
        assert isinstance(module.pi_encoder, SetNet)  # rebuilt from the run's model config (its layout)
        assert [b.heads for b in module.pi_encoder.net.encoder.blocks] == ([4, 4] if kind == "attention" else [])
        live = policy_from_algorithm(algo)
        from_file, _ = load_policy(ckpts[-1])
        observations = _observations(algo._eval_env, from_file)
        for obs in observations:
            np.testing.assert_allclose(live(obs), from_file(obs), atol=1e-6)
        before = {k: v.clone() for k, v in module.pi_encoder.state_dict().items()}
        result = algo.train()  # the fused update on the restored optimizers
        assert np.isfinite(result["learners"]["default_policy"]["qf_loss"])
        after = algo.get_module().pi_encoder.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before)
    finally:
        algo.stop()


def test_the_backtest_runs_on_the_policy_file(typed_run, ray_session, tmp_path):
    _, ckpts, _ = typed_run
    res = subprocess.run(
        [sys.executable, "-m", "trainer.backtest", str(ckpts[-1]), "--out", str(tmp_path / "bt")],
        capture_output=True,
        text=True,
        env=cli_env(ray_session),
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert any((tmp_path / "bt").iterdir())


def test_decide_is_the_backtest_and_the_export_is_decide_every_day(typed_run, tmp_path):
    _, ckpts, data = typed_run
    onnx = importlib.util.find_spec("onnx") is not None
    cmd = [sys.executable, "-m", "trainer.export", str(ckpts[-1]), "--out", str(tmp_path / "policy.pt")]
    res = subprocess.run(
        cmd + (["--onnx", str(tmp_path / "policy.onnx")] if onnx else []), capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    exported = torch.jit.load(str(tmp_path / "policy.pt"))
    session = None
    if onnx and importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(tmp_path / "policy.onnx"), providers=["CPUExecutionProvider"])
    members = [Member(ckpts[-1])]
    loaded = load_members(members)
    prices = load_prices(data)
    days = _backtest_days(members)
    assert len(days) > 20
    for t, held, traded in days:
        upto = PriceData(prices.source, prices.form, prices.prices.iloc[: t + 1], [])
        target = decide(members, upto, Holdings(held, None, None, "test"), as_of=upto.prices.index[-1], loaded=loaded)
        np.testing.assert_array_equal(target.target, traded)
        rows = upto.prices.to_numpy(dtype=np.float64).copy()
        out = exported(torch.from_numpy(rows), torch.from_numpy(held.copy())).numpy()
        assert np.abs(out - traded).max() <= PARITY
        if session is not None:
            assert np.abs(session.run(None, {"prices": rows, "weights": held})[0] - traded).max() <= PARITY


@pytest.mark.parametrize("kind", SET_TYPES)
def test_a_population_of_two_trains_saves_and_each_agent_acts_as_its_file(ray_session, tmp_path, kind):
    exp = load_experiment("smoke", {**TINY_TRAIN, "model.type": kind}, sweep=False)
    algo = build_sac_config(exp).build_algo()
    try:
        algo.train()
        algo.save_to_path(str(tmp_path / "ck"))
        live, env = policy_from_algorithm(algo), algo._eval_env
        obs, _ = env.reset(seed=0)
        k, dim = 2, env.envs[0].observation_space.shape[0]
        agents = [load_policy(tmp_path / "ck", agent=i)[0] for i in range(k)]
        for _ in range(10):
            action = live(obs)
            own = np.concatenate([agents[i](obs[i * dim : (i + 1) * dim]) for i in range(k)])
            np.testing.assert_allclose(action, own, atol=1e-6)
            obs, *_ = env.step(action)
        # the two agents are different networks (their own seeds)
        params = algo.get_module().pi_encoder.net.asset_head.weight
        assert params.shape[0] == k and not torch.equal(params[0], params[1])
    finally:
        algo.stop()


def test_the_cli_resumes_a_run_of_each_type(typed_run, ray_session, tmp_path):
    kind, ckpts, data = typed_run
    before = json.loads((ckpts[-1].parent.parent / "summary.json").read_text())
    res = train_cli(tmp_path / "resumed", ray_session, "--resume", str(ckpts[-1]), "--additional-steps", "300")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "resumed" in res.stdout
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert (
        summary["status"] == "completed" and summary["env_steps"] == before["env_steps"] + 300
    )  # one iteration of 300
    resumed = Path(summary["final_checkpoint"])
    exp, _ = experiment_for_resume(resumed, {})
    assert exp.model.type == kind  # the same network, trained on
    policy, _ = load_policy(resumed)  # its policy files are that network's
    market = load_prices(data)
    assert policy is not None and market.tickers == ["A0", "A1", "A2", "A3"]
