"""Portfolio environment package (Gymnasium only; Ray is optional here).

Importing ``envs`` registers the environment as Gymnasium id ``Portfolio-v0`` and, when Ray is installed,
under the same name in Ray Tune's env registry, so RLlib configs can say ``.environment("Portfolio-v0",
env_config={...})``. The Ray registration is guarded: this package has no hard Ray dependency (design:
``envs/`` is usable with Gymnasium alone).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import gymnasium as gym

ENV_ID = "Portfolio-v0"
POPULATION_ENV_ID = "PortfolioPopulation-v0"  # K copies side by side, one per agent (envs.population)

__all__ = [
    "ENV_ID",
    "POPULATION_ENV_ID",
    "DataError",
    "FeatureConfig",
    "FoldSpec",
    "MarketData",
    "PopulationEnv",
    "PortfolioEnv",
    "PortfolioSettings",
    "PriceData",
    "compute_features",
    "fold_windows",
    "load_features",
    "load_market",
    "load_market_for",
    "load_prices",
    "make_env",
    "make_population_env",
    "split_ranges",
]


# Submodules are imported lazily so that `python -m envs.data` does not import itself twice.
_LAZY = {
    "DataError": "envs.data",
    "PriceData": "envs.data",
    "load_prices": "envs.data",
    "split_ranges": "envs.data",
    "FeatureConfig": "envs.features",
    "compute_features": "envs.features",
    "load_features": "envs.features",
    "FoldSpec": "envs.folds",
    "fold_windows": "envs.folds",
    "MarketData": "envs.market",
    "load_market": "envs.market",
    "load_market_for": "envs.market",
    "PortfolioEnv": "envs.portfolio",
    "PopulationEnv": "envs.population",
    "PortfolioSettings": "envs.settings",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'envs' has no attribute {name!r}")


def make_env(config: dict[str, Any] | None = None) -> Any:
    """Build a ``PortfolioEnv`` from a (small) config dict, e.g. Ray's ``EnvContext``.

    The dict holds the env's keyword arguments: ``data``, ``split``, the windows (``split_dates`` or
    ``folds`` + ``fold``) and the flat settings of ``envs.settings.PortfolioSettings``.
    """
    from envs.portfolio import PortfolioEnv

    return PortfolioEnv(**dict(config or {}))


def make_population_env(config: dict[str, Any] | None = None) -> Any:
    """Build a ``PopulationEnv`` from a small config dict: ``make_env``'s plus ``population_seeds``."""
    from envs.population import make_population_env as make

    return make(config)


def _register() -> None:
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="envs.portfolio:PortfolioEnv", disable_env_checker=True)
    if POPULATION_ENV_ID not in gym.registry:
        gym.register(id=POPULATION_ENV_ID, entry_point="envs.population:PopulationEnv", disable_env_checker=True)
    if importlib.util.find_spec("ray") is not None:
        from ray.tune.registry import register_env

        register_env(ENV_ID, make_env)
        register_env(POPULATION_ENV_ID, make_population_env)


_register()
