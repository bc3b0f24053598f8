"""FusedSACTorchLearner: one fused step equals one RLlib SAC step from the same state and random numbers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from trainer.config import build_sac_config, load_experiment
from trainer.learner import FusedSACTorchLearner


@pytest.fixture(scope="module")
def algo(ray_session):
    exp = load_experiment("smoke", {"sac.learning_starts": 100, "stopping.steps_per_iteration": 200})
    algo = build_sac_config(exp).build_algo()
    algo.train()  # fill the buffer and the observation statistics, do some updates
    yield algo
    algo.stop()


def _params(learner) -> dict[str, torch.Tensor]:
    module = learner.module["default_policy"]
    out = {name: p.detach().clone() for name, p in module.named_parameters()}
    out["log_alpha"] = learner.curr_log_alpha["default_policy"].detach().clone()
    return out


def _snapshot(learner) -> tuple[dict, dict]:
    return _params(learner), {n: copy.deepcopy(o.state_dict()) for n, o in learner._named_optimizers.items()}


def _restore(learner, snapshot) -> None:
    params, optimizers = snapshot
    module = learner.module["default_policy"]
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(params[name])
        learner.curr_log_alpha["default_policy"].copy_(params["log_alpha"])
    for name, opt in learner._named_optimizers.items():
        opt.load_state_dict(optimizers[name])


def test_fused_step_matches_rllib_sac_step(algo):
    learner = algo.learner_group._learner
    assert isinstance(learner, FusedSACTorchLearner)
    assert learner._fused_plan("default_policy") is not None  # the fast path is taken for our critics
    raw = algo._sample_batch(1).policy_batches["default_policy"]
    batch = {"default_policy": {k: torch.as_tensor(np.asarray(v)) for k, v in raw.items()}}
    snapshot = _snapshot(learner)
    keys = ("qf_loss", "qf_twin_loss", "policy_loss", "alpha_loss")

    def losses() -> dict[str, float]:
        return {k: float(torch.as_tensor(learner.metrics.peek(("default_policy", k))).detach()) for k in keys}

    torch.manual_seed(123)
    learner._update(batch)
    fused, fused_losses = _params(learner), losses()

    _restore(learner, snapshot)
    torch.manual_seed(123)
    super(FusedSACTorchLearner, learner)._update(batch)  # RLlib's own SAC update ...
    learner._polyak("default_policy")  # ... and its target update
    reference, reference_losses = _params(learner), losses()

    assert fused_losses == pytest.approx(reference_losses, rel=1e-5)
    before = snapshot[0]
    for name, value in reference.items():
        torch.testing.assert_close(fused[name], value, rtol=1e-5, atol=1e-6, msg=name)
        assert not torch.equal(value, before[name]), name  # every parameter moved (policy, critics, targets, alpha)


def test_log_alpha_survives_a_checkpoint_round_trip(algo, tmp_path):
    from trainer.algorithm import PortfolioSAC

    learner = algo.learner_group._learner
    with torch.no_grad():
        learner.curr_log_alpha["default_policy"].fill_(-1.2345)
    path = algo.save_to_path(str(tmp_path / "ckpt"))
    restored = PortfolioSAC.from_checkpoint(path)
    try:
        value = float(restored.learner_group._learner.curr_log_alpha["default_policy"].detach()[0])
        assert value == pytest.approx(-1.2345, abs=1e-6)  # RLlib's SAC would restart at log(initial_alpha)=0
    finally:
        restored.stop()
