"""The per-asset and attention networks (``model.type``): equivariant to the assets' order, with shared features;
their policy files round-trip (TorchScript included) and a bad declaration is refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from envs.layout import ObservationLayout
from trainer.evaluation.networks import SET_TYPES, SetActor, SetCritic, SetSpec, actor_shapes, attention_heads
from trainer.evaluation.obs_filter import FrozenObsFilter
from trainer.evaluation.policy_file import POLICY_JSON, SET_FORMAT_VERSION, read_policy_files, write_policy_files
from trainer.evaluation.policy_net import PolicyNetwork
from trainer.runtime.checkpoint import CheckpointError

# 5 assets, 3 features each, 2 shared (market) features: the shared block is not empty
LAYOUT = ObservationLayout(5, ("r1", "r5", "vol"), ("mkt_r1", "mkt_vol"))
PERM = [3, 0, 4, 1, 2]


def _spec(kind: str, layers: int = 2) -> SetSpec:
    return SetSpec(kind, LAYOUT, (16, 8), "relu", layers)


def _permuted(obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same observations and actions with the assets reordered (features, weights and actions; cash stays last)."""
    per_asset, shared, weights = LAYOUT.split(obs)
    n = LAYOUT.n_assets
    obs_p = torch.cat([per_asset[:, PERM].reshape(len(obs), -1), shared, weights[:, PERM], weights[:, n:]], dim=-1)
    return obs_p, torch.cat([action[:, PERM], action[:, n:]], dim=-1)


@pytest.mark.parametrize("kind", SET_TYPES)
def test_reordering_the_assets_reorders_the_actor_and_leaves_q_unchanged(kind):
    torch.manual_seed(0)
    actor, critic = SetActor(_spec(kind)), SetCritic(_spec(kind))
    obs, action = torch.randn(64, LAYOUT.size), torch.rand(64, LAYOUT.n_assets + 1) * 2 - 1
    obs_p, action_p = _permuted(obs, action)
    out, out_p = actor(obs), actor(obs_p)
    n = LAYOUT.n_assets
    assert out.shape == (64, 2 * (n + 1))
    mean, log_std = out[:, : n + 1], out[:, n + 1 :]
    mean_p, log_std_p = out_p[:, : n + 1], out_p[:, n + 1 :]
    for a, b in ((mean, mean_p), (log_std, log_std_p)):
        torch.testing.assert_close(a[:, PERM], b[:, :n], atol=1e-6, rtol=1e-5)  # each asset's own head
        torch.testing.assert_close(a[:, n], b[:, n], atol=1e-6, rtol=1e-5)  # cash: from the pooled summary
    torch.testing.assert_close(critic(obs, action), critic(obs_p, action_p), atol=1e-6, rtol=1e-5)
    # and the networks do read what they should: other shared features, weights or actions change the outputs
    changed = obs.clone()
    changed[:, LAYOUT.n_assets * LAYOUT.n_per_asset] += 1.0  # a shared feature
    assert not torch.allclose(actor(changed), out)
    assert not torch.allclose(critic(obs, action.flip(-1)), critic(obs, action))


def test_attention_mixes_assets_and_per_asset_does_not():
    """An asset's mean depends on another asset's features only through attention (per_asset: only via cash)."""
    torch.manual_seed(1)
    obs = torch.randn(8, LAYOUT.size)
    other = obs.clone()
    other[:, 0] += 3.0  # asset 0's first feature
    for kind, mixes in (("per_asset", False), ("attention", True)):
        actor = SetActor(_spec(kind))
        moved = (actor(other) - actor(obs))[:, 1 : LAYOUT.n_assets].abs().max().item()
        assert (moved > 1e-4) is mixes, (kind, moved)


def test_heads_and_declared_sizes():
    assert [attention_heads(w) for w in (256, 6, 7, 16)] == [4, 2, 1, 4]
    spec = _spec("attention", 1)
    assert spec.to_dict()["heads"] == 4 and SetSpec.from_dict(spec.to_dict()) == spec
    assert _spec("per_asset").attention_layers == 0  # the layers setting is read by attention only
    real = {name: tuple(p.shape) for name, p in SetActor(spec).state_dict().items()}
    assert actor_shapes(spec) == real


def _files(tmp_path, kind: str, k: int = 2):
    torch.manual_seed(2)
    spec = _spec(kind)
    actors = [SetActor(spec) for _ in range(k)]
    params = {name: np.stack([a.state_dict()[name].numpy() for a in actors]) for name in actors[0].state_dict()}
    rng = np.random.default_rng(0)
    filt = FrozenObsFilter(
        rng.normal(size=k * LAYOUT.size).astype(np.float32),
        rng.uniform(0.5, 2, k * LAYOUT.size).astype(np.float32),
        5.0,
    )
    info = {
        "seeds": list(range(k)),
        "filter_count": 10,
        "tickers": [f"A{i}" for i in range(LAYOUT.n_assets)],
        "env_config": {},
        "windows": {},
        "training_iteration": 1,
    }
    write_policy_files(tmp_path, params, "relu", filt, info, set_spec=spec)
    return actors, filt


@pytest.mark.parametrize("kind", SET_TYPES)
def test_a_set_actors_policy_file_acts_as_the_actor_and_scripts(tmp_path, kind):
    actors, filt = _files(tmp_path, kind)
    files = read_policy_files(tmp_path, ["policy/policy.json", "policy/weights.npz"])
    assert files.spec["format_version"] == SET_FORMAT_VERSION and files.network["type"] == kind
    obs = np.random.default_rng(1).normal(size=(32, LAYOUT.size)).astype(np.float32)
    for agent, actor in enumerate(actors):
        net = PolicyNetwork(files, agent)
        own = FrozenObsFilter(filt.mean.reshape(2, -1)[agent], filt.std.reshape(2, -1)[agent], filt.clip, filt.epsilon)
        with torch.no_grad():
            expected = torch.tanh(actor(torch.from_numpy(own(obs)))[:, : LAYOUT.n_assets + 1]).numpy()
            np.testing.assert_allclose(net(torch.from_numpy(obs)).numpy(), expected, atol=1e-6)
            scripted = torch.jit.script(net)
            np.testing.assert_array_equal(scripted(torch.from_numpy(obs)).numpy(), net(torch.from_numpy(obs)).numpy())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda n: n.update(type="lstm"), "network.type 'lstm' is not one of per_asset, attention"),
        (lambda n: n.update(heads=2), "network.heads must be 4 for width 8"),
        (lambda n: n.update(attention_layers=3), "network.attention_layers 3 does not fit network.type attention"),
        (lambda n: n.update(obs_dim=7), "network.obs_dim 7 and act_dim 6 are not the layout's 23 and 6"),
        (lambda n: n.update(hidden=[16, 8, 8]), "holds arrays"),  # the arrays no longer fit the declaration
        (lambda n: n["layout"].update(per_asset="r1"), "network.layout must hold n_assets >= 1"),
    ],
)
def test_a_bad_declaration_is_refused_by_name(tmp_path, edit, message):
    _files(tmp_path, "attention")
    path = tmp_path / POLICY_JSON
    spec = json.loads(path.read_text())
    edit(spec["network"])
    path.write_text(json.dumps(spec))
    with pytest.raises(CheckpointError) as err:
        read_policy_files(tmp_path, ["policy/policy.json", "policy/weights.npz"])
    assert str(err.value).startswith(str(path)) or str(err.value).startswith(str(tmp_path / "policy"))
    assert message in str(err.value) and "\n" not in str(err.value)
