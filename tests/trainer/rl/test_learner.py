"""FusedSACTorchLearner: one fused step equals one RLlib SAC step from the same state and random numbers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from trainer.experiment.loading import load_experiment
from trainer.rl.learner import FusedSACTorchLearner
from trainer.rl.optim import MergedAdam
from trainer.rl.sac_config import build_sac_config


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


def test_one_call_with_k_batches_is_k_sequential_steps(algo):
    learner = algo.learner_group._learner
    raw = algo._sample_batch(2).policy_batches["default_policy"]
    full = {k: torch.as_tensor(np.asarray(v)) for k, v in raw.items()}
    size = algo.config.train_batch_size_per_learner
    assert len(full["obs"]) == 2 * size
    halves = [{k: v[i * size : (i + 1) * size] for k, v in full.items()} for i in range(2)]
    snapshot = _snapshot(learner)

    def last_losses() -> dict[str, float]:
        return {k: float(learner.metrics.peek(("default_policy", k))) for k in ("qf_loss", "policy_loss")}

    torch.manual_seed(7)
    learner._update({"default_policy": full})
    together, together_losses = _params(learner), last_losses()
    _restore(learner, snapshot)
    torch.manual_seed(7)
    for half in halves:
        learner._update({"default_policy": half})
    apart, apart_losses = _params(learner), last_losses()
    _restore(learner, snapshot)
    torch.manual_seed(7)
    learner._step({"default_policy": full})  # for contrast: one gradient step on all 2 x size rows
    one_big_step = _params(learner)
    _restore(learner, snapshot)

    for name, value in apart.items():
        torch.testing.assert_close(together[name], value, rtol=0, atol=0, msg=name)
    assert together_losses == apart_losses  # the logged metrics are the last step's
    assert not torch.equal(one_big_step["log_alpha"], together["log_alpha"])  # two steps were taken, not one


def test_log_alpha_survives_a_checkpoint_round_trip(algo, tmp_path):
    from trainer.rl.algorithm import PortfolioSAC

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


def _learner_state(learner) -> dict:
    params = _params(learner)
    params["fused"] = learner._fused_plan("default_policy") is not None
    params["distributed"] = torch.distributed.is_initialized()
    return params


def test_two_learners_average_their_gradients_and_stay_identical(ray_session):
    """num_learners=2 (DDP over gloo on CPU): each learner trains on its own half of every batch. The fused step
    bypasses DDP's forward, so without its own all-reduce the two copies would drift apart (0.04 seen)."""
    exp = load_experiment(
        "smoke",
        {"resources.num_learners": 2, "sac.learning_starts": 100, "stopping.steps_per_iteration": 200},
    )
    algo = build_sac_config(exp).build_algo()
    try:
        before = [r.get() for r in algo.learner_group.foreach_learner(_learner_state)]
        algo.train()
        algo.train()
        assert algo.updates_lifetime > 10
        a, b = (r.get() for r in algo.learner_group.foreach_learner(_learner_state))
    finally:
        algo.stop()
    assert a["fused"] and a["distributed"] and b["distributed"]
    for name, value in a.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(b[name], value, rtol=0, atol=0, msg=name)
            assert not torch.equal(value, before[0][name]), name  # it trained (targets and alpha too)


def test_merged_adam_step_equals_each_optimizer_stepping(monkeypatch):
    import trainer.rl.optim as optim_mod

    calls = []
    real_adam = optim_mod.adam
    monkeypatch.setattr(optim_mod, "adam", lambda *a, **k: calls.append(k["lr"]) or real_adam(*a, **k))
    torch.manual_seed(0)

    nets_a = [torch.nn.Linear(5, 3), torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)]
    nets_b = copy.deepcopy(nets_a)
    lrs = (1e-3, 1e-3, 3e-4)  # two share settings (one fused call), one differs (a second call)

    def adams(nets):
        return [torch.optim.Adam(n.parameters(), lr=lr, fused=True) for n, lr in zip(nets, lrs, strict=True)]

    opts_a, opts_b = adams(nets_a), adams(nets_b)
    merged = MergedAdam(opts_a)
    x = torch.randn(16, 5)

    def step_both():
        for nets, opts in ((nets_a, opts_a), (nets_b, opts_b)):
            if opts is opts_a:
                merged.zero_grad()
            else:
                for opt in opts:
                    opt.zero_grad()
            (nets[2](torch.relu(nets[1](torch.relu(nets[0](x))))) ** 2).mean().backward()
            if opts is opts_a:
                merged.step()
            else:
                for opt in opts:
                    opt.step()

    def assert_same(n_steps):
        for a, b in zip(nets_a, nets_b, strict=True):
            for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
                torch.testing.assert_close(pa, pb, rtol=0, atol=0)
                assert pa.grad is not None
        for oa, ob in zip(opts_a, opts_b, strict=True):
            for pa, pb in zip(oa.param_groups[0]["params"], ob.param_groups[0]["params"], strict=True):
                assert float(oa.state[pa]["step"]) == float(ob.state[pb]["step"]) == n_steps
                torch.testing.assert_close(oa.state[pa]["exp_avg_sq"], ob.state[pb]["exp_avg_sq"], rtol=0, atol=0)

    for _ in range(3):  # the first step initialises the states through opt.step(), then the merged calls
        step_both()
    assert calls == [1e-3, 3e-4, 1e-3, 3e-4]  # steps 2 and 3: one fused call per set of settings
    assert_same(3)

    # A learning-rate schedule changes a group's lr: the merged calls follow (three settings now).
    for opt in (opts_a[1], opts_b[1]):
        opt.param_groups[0]["lr"] = 5e-4
    calls.clear()
    step_both()
    assert sorted(calls) == [3e-4, 5e-4, 1e-3]
    assert_same(4)

    # A restored checkpoint replaces the optimizers' states (new moment tensors): the merged calls must step
    # those, not the ones they were built from.
    saved = [copy.deepcopy(o.state_dict()) for o in opts_b]
    step_both()
    step_both()
    for opt_a, opt_b, state in zip(opts_a, opts_b, saved, strict=True):
        opt_a.load_state_dict(copy.deepcopy(state))  # a copy each: loading shares the dict's tensors
        opt_b.load_state_dict(copy.deepcopy(state))
    for a, b in zip(nets_a, nets_b, strict=True):  # parameters back in step with each other too
        with torch.no_grad():
            for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
                pa.copy_(pb)
    calls.clear()
    step_both()
    assert len(calls) == 3
    assert_same(5)
