"""The per-asset and attention networks (``model.type``), in plain torch: the actor and the critic.

Both read the observation through its layout (``envs.layout.ObservationLayout``: per-asset features
asset-major, the shared block, then the weights, cash last). Asset ``i``'s input is its features, the shared
features and its weight (the critic adds its action); one encoder, shared by all assets, maps it to an
embedding, and with ``attention`` one or two self-attention layers (pre-norm transformer blocks, no positional
encoding) mix the embeddings across assets. Nothing depends on the assets' order except through their
positions in the output, so reordering the assets reorders the actor's outputs and leaves Q unchanged
(``tests/trainer/evaluation/test_networks.py``):

- actor: each asset's head (``Linear(width, 2)``) gives its Gaussian mean and log-std; cash's head reads the
  pooled embeddings (mean and max over assets) and the cash weight. Output ``[B, 2 * (N + 1)]``: the N + 1
  means (cash last), then the N + 1 log-stds, as RLlib's squashed Gaussian reads them;
- critic: the pooled embeddings of (features, shared, weight, action), the cash weight and cash action, then
  an MLP to one Q value ``[B, 1]``.

The same classes serve the RLlib modules (``trainer.rl.set_modules``, populations through
``torch.func.vmap``), the policy files (``trainer.evaluation.policy_file`` stores ``SetActor``'s parameters by
name with its ``SetSpec``) and the TorchScript and ONNX exports: no data-dependent branches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from envs.layout import ObservationLayout

SET_TYPES = ("per_asset", "attention")
# The activations a network may use (model.activation's choices), with the torch module each one means.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU, "elu": nn.ELU}


def attention_heads(width: int) -> int:
    """Heads of the attention layers over embeddings of ``width``: 4, or the most of 2 and 1 dividing it."""
    return next(h for h in (4, 2, 1) if width % h == 0)


@dataclass(frozen=True)
class SetSpec:
    """Everything that shapes a per-asset or attention network (what a policy file declares)."""

    type: str
    layout: ObservationLayout
    hidden: tuple[int, ...]
    activation: str
    attention_layers: int = 0

    def __post_init__(self) -> None:
        if self.type not in SET_TYPES:
            raise ValueError(f"network type {self.type!r} is not one of {', '.join(SET_TYPES)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not one of {', '.join(sorted(ACTIVATIONS))}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden sizes must be a non-empty list of sizes >= 1, got {list(self.hidden)}")
        layers = self.attention_layers if self.type == "attention" else 0
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "attention_layers", int(layers))

    @property
    def width(self) -> int:
        return self.hidden[-1]

    @property
    def heads(self) -> int:
        return attention_heads(self.width)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(layout=self.layout.to_dict(), hidden=list(self.hidden), heads=self.heads)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SetSpec:
        layout = ObservationLayout.from_dict(data["layout"])
        return cls(str(data["type"]), layout, tuple(data["hidden"]), str(data["activation"]), data["attention_layers"])


def mlp(sizes: list[int], activation: str, last_activation: bool) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``activation`` between them (and after the last one if asked)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_activation:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class AttentionBlock(nn.Module):
    """A pre-norm transformer encoder layer over the assets: ``h + MHA(LN(h))``, then ``h + FFN(LN(h))``."""

    def __init__(self, width: int, heads: int, activation: str) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.ffn = mlp([width, 2 * width, width], activation, last_activation=False)

    def forward(self, h: Tensor) -> Tensor:
        b, n, d = h.shape[0], h.shape[1], h.shape[2]
        qkv = self.qkv(self.norm1(h)).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, heads, N, head_dim] each
        scores = torch.matmul(q, k.transpose(-2, -1)) / (self.head_dim**0.5)  # [B, heads, N, N]
        mixed = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, n, d)
        h = h + self.out(mixed)
        return h + self.ffn(self.norm2(h))


class AssetEncoder(nn.Module):
    """Each asset's inputs (``extra`` values of its own after the features) -> its embedding ``[B, N, width]``."""

    def __init__(self, spec: SetSpec, extra: int) -> None:
        super().__init__()
        layout = spec.layout
        self.n_assets, self.n_per_asset, self.n_shared = layout.n_assets, layout.n_per_asset, layout.n_shared
        self.mlp = mlp([layout.n_per_asset + layout.n_shared + extra, *spec.hidden], spec.activation, True)
        self.blocks = nn.ModuleList(
            [AttentionBlock(spec.width, spec.heads, spec.activation) for _ in range(spec.attention_layers)]
        )

    def inputs(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Each asset's features and shared features ``[B, N, F + S]``, and the weights ``[B, N + 1]``."""
        b, n = obs.shape[0], self.n_assets
        n_features = n * self.n_per_asset + self.n_shared
        x = obs[:, : n * self.n_per_asset].reshape(b, n, self.n_per_asset)
        if self.n_shared > 0:
            shared = obs[:, n * self.n_per_asset : n_features]
            x = torch.cat([x, shared.unsqueeze(1).expand(b, n, self.n_shared)], dim=-1)
        return x, obs[:, n_features:]

    def forward(self, x: Tensor) -> Tensor:
        h = self.mlp(x)
        for block in self.blocks:
            h = block(h)
        return h


def pooled(h: Tensor) -> Tensor:
    """The assets' embeddings summarised, whatever their order: their mean and max ``[B, 2 * width]``."""
    return torch.cat([h.mean(dim=1), h.amax(dim=1)], dim=-1)


class SetActor(nn.Module):
    """``forward(obs [B, layout.size]) -> [B, 2 * (N + 1)]``: the means, then the log-stds (cash last)."""

    def __init__(self, spec: SetSpec) -> None:
        super().__init__()
        self.encoder = AssetEncoder(spec, extra=1)
        self.n_assets = spec.layout.n_assets
        self.asset_head = nn.Linear(spec.width, 2)
        self.cash_head = mlp([2 * spec.width + 1, spec.width, 2], spec.activation, last_activation=False)

    def forward(self, obs: Tensor) -> Tensor:
        x, weights = self.encoder.inputs(obs)
        h = self.encoder(torch.cat([x, weights[:, : self.n_assets].unsqueeze(-1)], dim=-1))
        assets = self.asset_head(h)  # [B, N, 2]
        cash = self.cash_head(torch.cat([pooled(h), weights[:, self.n_assets :]], dim=-1))  # [B, 2]
        return torch.cat([assets[:, :, 0], cash[:, :1], assets[:, :, 1], cash[:, 1:]], dim=-1)


class SetCritic(nn.Module):
    """``forward(obs [B, layout.size], action [B, N + 1]) -> Q [B, 1]``."""

    def __init__(self, spec: SetSpec) -> None:
        super().__init__()
        self.encoder = AssetEncoder(spec, extra=2)
        self.n_assets = spec.layout.n_assets
        self.head = mlp([2 * spec.width + 2, spec.width, 1], spec.activation, last_activation=False)

    def forward(self, obs: Tensor, action: Tensor) -> Tensor:
        x, weights = self.encoder.inputs(obs)
        n = self.n_assets
        own = torch.stack([weights[:, :n], action[:, :n]], dim=-1)
        h = self.encoder(torch.cat([x, own], dim=-1))
        return self.head(torch.cat([pooled(h), weights[:, n:], action[:, n:]], dim=-1))


def actor_shapes(spec: SetSpec) -> dict[str, tuple[int, ...]]:
    """``SetActor(spec)``'s parameters by name and shape, computed without allocating them."""
    with torch.device("meta"):
        return {name: tuple(p.shape) for name, p in SetActor(spec).state_dict().items()}
