"""One agent's deterministic policy from its policy files, in plain torch: frozen filter, actor, tanh of the mean.

``PolicyNetwork`` is built from ``trainer.evaluation.policy_file.PolicyFiles`` alone (no RLlib, no training
code) and computes, on a batch of raw observations, what that module's docstring specifies: the same action as
RLlib's SAC actor (``DefaultSACTorchRLModule``: ``pi_encoder`` then ``pi``; a per-asset or attention
``trainer.evaluation.networks.SetActor``; or one agent of ``PopulationSACModule``) gives as ``tanh`` of its
Gaussian mean, on observations normalised by the frozen filter (tested against each to float tolerance). It
holds everything in parameters and buffers and scripts with ``torch.jit.script``, so an exported policy needs
torch alone.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from trainer.evaluation.networks import SetActor
from trainer.evaluation.policy_file import ACTIVATIONS, PolicyFiles


class MLPActor(nn.Module):
    """An MLP actor's layers: ``activation`` after every linear layer but the last."""

    def __init__(self, layers: list[tuple[NDArray[np.float32], NDArray[np.float32]]], activation: str) -> None:
        super().__init__()
        self.linears = nn.ModuleList()
        for weight, bias in layers:
            linear = nn.Linear(weight.shape[1], weight.shape[0])
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(weight))
                linear.bias.copy_(torch.from_numpy(bias))
            self.linears.append(linear)
        self.activation = ACTIVATIONS[activation]()
        self.n_hidden = len(layers) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, linear in enumerate(self.linears):
            x = linear(x)
            if i < self.n_hidden:
                x = self.activation(x)
        return x


def actor_of(files: PolicyFiles, agent: int) -> nn.Module:
    """Agent ``agent``'s actor (observations normalised -> the Gaussian's means then log-stds), as declared."""
    spec = files.set_spec
    if spec is None:
        return MLPActor(files.layers(agent), files.network["activation"])
    actor = SetActor(spec)
    actor.load_state_dict({name: torch.from_numpy(np.array(v)) for name, v in files.actor_params(agent).items()})
    return actor


class PolicyNetwork(nn.Module):
    """Agent ``agent``'s policy of ``files``: ``forward(raw_obs [B, obs_dim]) -> actions [B, act_dim]``."""

    def __init__(self, files: PolicyFiles, agent: int = 0) -> None:
        super().__init__()
        if not 0 <= agent < files.n_agents:
            raise ValueError(f"agent {agent} is out of range: the policy has {files.n_agents} agent(s)")
        self.act_dim = int(files.network["act_dim"])
        self.actor = actor_of(files, agent)
        filt = files.obs_filter(agent)
        self.normalise = filt is not None
        self.clip = float(filt.clip) if filt is not None and filt.clip else 0.0
        obs_dim = int(files.network["obs_dim"])
        mean = filt.mean if filt is not None else np.zeros(obs_dim, np.float32)
        # the same float32 divisor as trainer.evaluation.obs_filter.normalize_with
        scale = np.asarray(filt.std + filt.epsilon, np.float32) if filt is not None else np.ones(obs_dim, np.float32)
        self.register_buffer("filter_mean", torch.from_numpy(np.asarray(mean, np.float32).copy()))
        self.register_buffer("filter_scale", torch.from_numpy(scale.copy()))
        self.eval()

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs
        if self.normalise:
            x = (x - self.filter_mean) / self.filter_scale
            if self.clip > 0:
                x = torch.clamp(x, -self.clip, self.clip)
        return torch.tanh(self.actor(x)[:, : self.act_dim])

    @torch.no_grad()
    def act(self, raw_obs: NDArray[np.float32]) -> NDArray[np.float32]:
        """The action for one raw observation ``[obs_dim]``."""
        return self(torch.as_tensor(np.atleast_2d(raw_obs), dtype=torch.float32))[0].numpy()
