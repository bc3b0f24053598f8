"""A warm start (``model.init_from``): a new run's networks start from another checkpoint's weights.

Only the RL module is loaded: the policy and both Q networks with their targets (a population's every agent).
Everything else starts fresh, as in any new run: the optimisers' states, log-alpha (``sac.initial_alpha``), the
counters, the replay buffer and the observation filter, whose statistics are fitted again on the new training
window (as every fold's are), so the first updates adapt the old weights to the new statistics. The module is
read from RLlib's pickles, after the checkpoint's manifest is verified: like a resume, it runs code from the
checkpoint, so use it only with checkpoints you trust (your own registry's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID

from envs.population import SEEDS_KEY
from trainer.runtime.checkpoint import CheckpointError, read_state

MODULE_COMPONENT = f"{COMPONENT_LEARNER_GROUP}/{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}/{DEFAULT_MODULE_ID}"
FITS = (
    "a warm start needs the same tickers (in the same order), features, model.hidden, model.activation and "
    "number of agents"
)


def load_module_weights(algo: Any, checkpoint: Path | str) -> None:
    """Load ``checkpoint``'s RL module into ``algo``'s learner and env runners.

    Raises:
        CheckpointError: the checkpoint is damaged or missing, or its networks do not fit ``algo``'s (other
            tickers, layer sizes or number of agents).
    """
    checkpoint = Path(checkpoint)
    where = f"model.init_from {checkpoint}"
    try:
        state = read_state(checkpoint)  # the manifest first: nothing is unpickled from a damaged checkpoint
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    tickers, agents = list(state.get("tickers") or []), len(state.get(SEEDS_KEY) or [None])
    own_agents = len(algo.population_seeds or [None])
    if tickers != list(algo.tickers) or agents != own_agents:
        raise CheckpointError(
            f"{where}: it trades {', '.join(tickers)} with {agents} agent(s), this run {', '.join(algo.tickers)} "
            f"with {own_agents}; {FITS}"
        )
    try:
        algo.restore_from_path(checkpoint / MODULE_COMPONENT, component=MODULE_COMPONENT)
    except (RuntimeError, ValueError, KeyError) as exc:  # torch's size mismatch, a module of another kind
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{where}: its networks do not fit this run's ({first}); {FITS}") from None
