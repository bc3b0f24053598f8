"""benchmarks.ceiling: the listed products are exactly those one fused SAC update runs, and their FLOPs."""

from __future__ import annotations

import pytest
import torch
from ray.rllib.core.columns import Columns
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.ceiling import FORWARD, INPUT_GRAD, WEIGHT_GRAD, Gemm, ceiling, sac_update_gemms, update_flops
from envs.portfolio import PortfolioEnv
from trainer.experiment.loading import load_experiment
from trainer.rl.sac_config import build_sac_config


def test_reference_update_flops_by_hand():
    """obs 201, action 21, [256, 256], batch 256: the multiply-adds of every product, counted by hand."""
    b, o, a, h = 256, 201, 21, 256
    actor = o * h + h * h + h * 2 * a  # one pass of the actor's three layers
    critic = (o + a) * h + h * h + h  # one pass of a critic's three layers
    forward = 2 * actor + 2 * critic + 2 * (o + a) * h + 2 * a * h + 4 * (h * h + h)
    backward = 2 * critic + 2 * (h * h + h) + 2 * (h * h + h) + 2 * a * h + actor + (h * h + h * 2 * a)
    expected = 2 * b * (forward + backward)
    assert update_flops(sac_update_gemms(o, a, [h, h], b)) == expected == 825_098_240


@pytest.mark.parametrize("hidden", [[32, 32], [48, 40, 24]])
def test_gemms_are_what_one_fused_update_runs(hidden):
    """torch's FLOP counter over one real FusedSACTorchLearner step equals the list's FLOPs, and the mm /
    addmm split (forward products are addmm with a bias, gradients mm) matches too."""
    exp = load_experiment("smoke", {"model.hidden": hidden})
    config = build_sac_config(exp)
    env = PortfolioEnv(**config.env_config)
    learner = config.build_learner(env=env)
    learner.build()
    rows, obs_dim, act_dim = exp.sac.batch_size, env.observation_space.shape[0], env.action_space.shape[0]
    gen = torch.Generator().manual_seed(0)
    batch = {
        Columns.OBS: torch.randn(rows, obs_dim, generator=gen),
        Columns.NEXT_OBS: torch.randn(rows, obs_dim, generator=gen),
        Columns.ACTIONS: torch.rand(rows, act_dim, generator=gen) * 2 - 1,
        Columns.REWARDS: torch.randn(rows, generator=gen),
        Columns.TERMINATEDS: torch.zeros(rows, dtype=torch.bool),
        "n_step": torch.ones(rows),
        "weights": torch.ones(rows),
    }
    with FlopCounterMode(display=False) as counter:
        learner._update({"default_policy": batch})
    gemms = sac_update_gemms(obs_dim, act_dim, hidden, rows)
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    forward = sum(g.flops for g in gemms if g.kind == FORWARD)
    assert counts == {"aten.addmm": forward, "aten.mm": update_flops(gemms) - forward}


def test_flops_and_ceiling_arithmetic():
    g = Gemm(WEIGHT_GRAD, rows=4, in_features=3, out_features=2, count=5)
    assert g.flops == 2 * 4 * 3 * 2 * 5
    assert update_flops([g, Gemm(INPUT_GRAD, 1, 1, 1)]) == 240 + 2
    out = ceiling([Gemm(FORWARD, 8, 8, 8)], threads=1)
    assert out["ceiling_updates_per_s"] > 0
    assert out["gemm_gflops"] == pytest.approx(2 * 8**3 * out["ceiling_updates_per_s"] / 1e9)
