"""Where each value of the env's observation comes from, declared once for the env and the networks.

The observation of ``PortfolioEnv`` is one flat float32 vector, in this order:

1. the per-asset features, asset-major: asset 0's ``per_asset`` features, then asset 1's, ... (``N * F``);
2. the features shared by all assets (market-wide figures; ``S`` values, none in the default set);
3. the current weights: the ``N`` assets, then cash (``N + 1``).

A network that treats the assets alike (one shared encoder per asset) reads the blocks through
``ObservationLayout.split``; a plain MLP reads the flat vector. The layout travels with a checkpoint's model
settings as a plain dict (``to_dict`` / ``from_dict``), so a restored network is built for the same layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T", bound="_Sliceable")


class _Sliceable(Protocol):
    shape: Any

    def __getitem__(self, key: Any) -> Any: ...


@dataclass(frozen=True)
class ObservationLayout:
    """The blocks of the observation vector (see the module's docstring)."""

    n_assets: int
    per_asset: tuple[str, ...]
    shared: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.n_assets < 1:
            raise ValueError(f"an observation needs at least one asset, got n_assets={self.n_assets}")
        object.__setattr__(self, "per_asset", tuple(self.per_asset))
        object.__setattr__(self, "shared", tuple(self.shared))

    @property
    def n_per_asset(self) -> int:
        """``F``: features per asset."""
        return len(self.per_asset)

    @property
    def n_shared(self) -> int:
        """``S``: features shared by all assets."""
        return len(self.shared)

    @property
    def n_features(self) -> int:
        """Feature values in the vector, before the weights: ``N * F + S``."""
        return self.n_assets * self.n_per_asset + self.n_shared

    @property
    def size(self) -> int:
        """Length of the observation vector: ``N * F + S + N + 1``."""
        return self.n_features + self.n_assets + 1

    def split(self, obs: T) -> tuple[Any, Any, Any]:
        """The blocks of a batch of observations ``[..., size]`` (numpy or torch):
        per-asset features ``[..., N, F]``, shared features ``[..., S]``, weights ``[..., N + 1]``."""
        if obs.shape[-1] != self.size:
            raise ValueError(f"observation has {obs.shape[-1]} values; this layout has {self.size}")
        n_asset_values = self.n_assets * self.n_per_asset
        per_asset = obs[..., :n_asset_values]
        per_asset = per_asset.reshape(*per_asset.shape[:-1], self.n_assets, self.n_per_asset)
        return per_asset, obs[..., n_asset_values : self.n_features], obs[..., self.n_features :]

    def to_dict(self) -> dict[str, Any]:
        return {"n_assets": self.n_assets, "per_asset": list(self.per_asset), "shared": list(self.shared)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObservationLayout:
        return cls(int(data["n_assets"]), tuple(data["per_asset"]), tuple(data.get("shared", ())))
