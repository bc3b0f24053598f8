"""The learner's weights to the env runners after each round of updates.

RLlib's ``EnvRunnerGroup.sync_weights`` takes the learner's inference-only state as numpy arrays, puts it in
Ray's object store and loads it into every runner's module, also when the only runner is the local one in
the learner's own process: about 5 ms per round for the reference network on a 2-core CPU (0.6 ms per env
step at 8 env steps per round). When the learner and the only env runner share this process, the same
weights are copied tensor to tensor (``torch._foreach_copy_``: tens of microseconds) and the runner's
weights sequence number follows the learner's, as RLlib's path leaves them. Anything else (remote runners or
learners, modules whose parameters do not pair up by name and shape) goes through RLlib's path.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core import DEFAULT_MODULE_ID


def _pairs(runner_module: Any, learner_module: Any) -> tuple[list[Any], list[Any]] | None:
    """The runner module's tensors and the learner module's, paired by name (every entry of the runner's state);
    None where one has no partner of the same shape, dtype and device in the learner's module."""
    source = learner_module.state_dict(keep_vars=True)  # the names RLlib's state path loads by
    dst, src = [], []
    for name, tensor in runner_module.state_dict(keep_vars=True).items():
        other = source.get(name)
        if other is None or (other.shape, other.dtype, other.device) != (tensor.shape, tensor.dtype, tensor.device):
            return None
        dst.append(tensor.data)
        src.append(other.data)
    return dst, src


class WeightSync:
    """Sends the learner's weights to the env runners of one algorithm (``sync``), in-process where it can."""

    def __init__(self, algo: Any) -> None:
        self.algo = algo
        self._pairs: tuple[list[Any], list[Any]] | None = None
        self._checked = False

    def reset(self) -> None:
        """Pair the tensors again at the next sync (a restore may have replaced modules)."""
        self._pairs, self._checked = None, False

    def in_process(self) -> bool:
        """Whether the learner and the only env runner live in this process with paired weights."""
        if not self._checked:
            self._checked = True
            algo = self.algo
            group, learners = algo.env_runner_group, algo.learner_group
            runner = group.local_env_runner if group is not None else None
            if group is not None and group.num_remote_env_runners() == 0 and learners.is_local and runner is not None:
                learner_module = learners._learner.module[DEFAULT_MODULE_ID]
                if runner.module is not None:
                    self._pairs = _pairs(runner.module, learner_module)
        return self._pairs is not None

    def sync(self) -> None:
        """The learner's current weights to every env runner (as ``sync_weights(..., inference_only=True)``)."""
        algo = self.algo
        if not self.in_process():
            algo.env_runner_group.sync_weights(
                from_worker_or_learner_group=algo.learner_group,
                policies={DEFAULT_MODULE_ID},
                inference_only=True,
            )
            return
        dst, src = self._pairs
        with torch.no_grad():
            torch._foreach_copy_(dst, src)
        runner = algo.env_runner_group.local_env_runner
        seq = algo.learner_group._learner._weights_seq_no
        if seq > 0:  # as SingleAgentEnvRunner.set_state: a sequence number of 0 is not stored
            runner._weights_seq_no = seq
