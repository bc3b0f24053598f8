"""A checkpoint's policy files (``trainer.evaluation.policy_file``) taken from RLlib's modules: written at every
save (``PortfolioSAC.save_to_path``) and, once, for a checkpoint of an older version that lacks them
(``convert_checkpoint``, ``trainer.backtest --trust-pickle``).

This lives in ``trainer.rl`` because it reads RLlib's modules (``DefaultSACTorchRLModule``, our
``PopulationSACModule``), which evaluation never imports; the file format, its writer and its reader are
``trainer.evaluation.policy_file``, so this module only decides what goes in. The actor's layers are found by
walking the module's own ``pi_encoder`` and ``pi`` (linear layers with the model's activation after every one
but the last: RLlib's encoder, whose output layer has the activation too, then the linear head); a per-asset
or attention actor (``trainer.rl.set_modules``) is written as its parameters by name with its architecture;
their values come from the learner's weights, which are what RLlib's checkpoint holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch import nn

from envs.market import MarketData, load_market_for
from envs.population import SEEDS_KEY
from trainer.evaluation.obs_filter import FrozenObsFilter, find_obs_filter
from trainer.evaluation.policy_file import ACTIVATIONS, has_policy_files, write_policy_files
from trainer.rl.population import PopulationLinear
from trainer.rl.set_modules import is_set_module, set_spec
from trainer.runtime import checkpoint as C

Layers = list[tuple[NDArray[np.float32], NDArray[np.float32]]]


def _array(value: Any) -> NDArray[np.float32]:
    if hasattr(value, "detach"):  # a tensor (maybe on a GPU)
        value = value.detach().cpu().numpy()
    return np.asarray(value, np.float32)


def actor_layers(module: Any, weights: Mapping[str, Any]) -> tuple[Layers, str]:
    """The actor's layers, agent-major (``(weight [K, out, in], bias [K, out])``), and its activation's name.

    Args:
        module: the RL module (a single agent's or a population's; an inference-only copy will do): its
            layers' order, types and names.
        weights: its state by parameter name (the learner's, as RLlib checkpoints it): the values.

    Raises:
        ValueError: the actor is not a chain of linear layers with the model's activation between them (a
            layer this format cannot express).
    """
    activation = str(module.model_config["fcnet_activation"]).lower()
    if activation not in ACTIVATIONS:
        raise ValueError(f"a policy file cannot hold activation {activation!r} (one of {', '.join(ACTIVATIONS)})")
    expected = repr(ACTIVATIONS[activation]())  # the class and its settings (ELU's alpha)
    layers: Layers = []
    kinds: list[str] = []
    for prefix in ("pi_encoder", "pi"):
        for name, leaf in getattr(module, prefix).named_modules(prefix=prefix):
            if next(leaf.children(), None) is not None:
                continue  # a container: its leaves follow in order
            if isinstance(leaf, PopulationLinear):  # [K, in, out] and [K, 1, out]
                w = _array(weights[f"{name}.weight"]).transpose(0, 2, 1)
                b = _array(weights[f"{name}.bias"])[:, 0, :]
            elif isinstance(leaf, nn.Linear):  # [out, in] and [out]: one agent
                w, b = _array(weights[f"{name}.weight"])[None], _array(weights[f"{name}.bias"])[None]
            elif repr(leaf) == expected:
                kinds.append("activation")
                continue
            else:
                raise ValueError(f"the actor's layer {name} ({leaf!r}) cannot be written to a policy file")
            kinds.append("linear")
            layers.append((np.ascontiguousarray(w), np.ascontiguousarray(b)))
    if not layers or kinds != ["linear", "activation"] * (len(layers) - 1) + ["linear"]:
        raise ValueError(f"the actor is not linear layers with {activation} between them: {kinds}")
    return layers, activation


def set_actor_arrays(module: Any, weights: Mapping[str, Any]) -> dict[str, NDArray[np.float32]]:
    """A per-asset or attention actor's parameters by ``SetActor`` name, agent-major ``[K, ...]``."""
    prefix = "pi_encoder.net."
    names = [name for name, _ in module.pi_encoder.net.named_parameters()]
    population = bool(module.pi_encoder.n_agents)
    return {
        name: np.ascontiguousarray(
            _array(weights[prefix + name]) if population else _array(weights[prefix + name])[None]
        )
        for name in names
    }


def _write(path: Path | str, module: Any, weights: Mapping[str, Any], filt: Any, info: dict[str, Any]) -> Path:
    """The policy files of ``module`` (an MLP's layers, or a per-asset or attention actor's parameters)."""
    frozen = FrozenObsFilter.of(filt)
    if is_set_module(module):
        arrays = set_actor_arrays(module, weights)
        spec = set_spec(module.model_config)
        return write_policy_files(path, arrays, spec.activation, frozen, info, set_spec=spec)
    layers, activation = actor_layers(module, weights)
    return write_policy_files(path, layers, activation, frozen, info)


def split_windows(market: MarketData) -> dict[str, dict[str, str]]:
    """Each split's first and last date (ISO), as the policy files record the training and other windows."""
    return {
        name: {"start": str(market.dates[rng.start].date()), "end": str(market.dates[rng.end].date())}
        for name, rng in market.splits.items()
    }


def _one_agent_env_config(env_config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in env_config.items() if k != SEEDS_KEY}  # the agents' seeds go to "agents"


def write_from_algorithm(algo: Any, path: Path | str) -> Path:
    """Write the policy files of a live ``PortfolioSAC`` into its checkpoint directory ``path``."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    weights = algo.learner_group.get_weights([DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID]
    filt = algo.obs_filter()
    info = {
        "seeds": algo.population_seeds,
        "diverged_agents": algo.diverged_agents,
        "filter_count": filt.stats().count if filt is not None else 0,
        "tickers": algo.tickers,
        "env_config": _one_agent_env_config(algo.config.env_config),
        "windows": split_windows(algo._single_eval_env.market),
        "diverged": algo.diverged,
        "training_iteration": algo.iteration,
    }
    return _write(path, algo.get_module(), weights, filt, info)


def convert_checkpoint(path: Path | str) -> Path | None:
    """Write the policy files of a checkpoint that lacks them, from RLlib's pickles, and a new manifest.

    Unpickling runs whatever code the checkpoint holds: only for a checkpoint the user trusts
    (``--trust-pickle``). The checkpoint is verified against its manifest first; one that already has its
    policy files is left alone and nothing is unpickled.

    Returns:
        The ``policy`` directory written, or None when the checkpoint had its policy files.

    Raises:
        CheckpointError: the checkpoint is damaged, its filter statistics are missing, or its training data
            (for the windows) cannot be loaded.
    """
    from ray.rllib.connectors.env_to_module import EnvToModulePipeline
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
    from ray.rllib.core.rl_module.rl_module import RLModule

    from envs.data import DataError

    ck = Path(C.absolute(path))
    state = C.read_state(ck)
    if has_policy_files(C.read_manifest(ck)["files"]):
        return None
    env_config = _one_agent_env_config(state["env_config"])
    try:
        market = load_market_for(env_config)
    except (DataError, ValueError) as exc:
        raise C.CheckpointError(f"{ck}: cannot convert it, its training data cannot be loaded ({exc})") from None
    module = RLModule.from_checkpoint(
        ck / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID
    )
    filt = None
    if (ck / C.OBS_FILTER_DIR).exists():
        filt = find_obs_filter(EnvToModulePipeline.from_checkpoint(ck / C.OBS_FILTER_DIR))
    if filt is None and C.needs_obs_filter(state):
        raise C.no_obs_filter(ck / C.OBS_FILTER_DIR)
    info = {
        "seeds": state.get(SEEDS_KEY),
        "diverged_agents": state.get(C.DIVERGED_AGENTS_KEY),
        "filter_count": filt.stats().count if filt is not None else 0,
        "tickers": state["tickers"],
        "env_config": env_config,
        "windows": split_windows(market),
        "diverged": state.get("diverged"),
        "training_iteration": state["training_iteration"],
    }
    out = _write(ck, module, module.get_state(), filt, info)
    C.write_manifest(ck)  # now covering the policy files
    return out
