"""``CompiledSACStep``: the fused SAC gradient step through ``torch.compile``, on CUDA one captured CUDA graph.

With ``resources.compile: true`` (``COMPILE_KEY`` in the learner's ``learner_config_dict``),
``trainer.rl.learner.FusedSACTorchLearner`` runs every gradient step through this class instead of its eager
``_fused_step``. The step is the same one, built from the learner's own pieces:

- the SAC losses are ``trainer.rl.losses.sac_losses`` (the function itself, compiled by ``torch.compile``):
  AOTAutograd traces the forward and the backward of the four losses into one joint graph and Inductor
  generates fused kernels for both (Triton on CUDA, C++ on a CPU);
- the two standard-normal draws of the reparameterised actions are made inside the step, in the eager
  step's order (with the same generator state a compiled step and an eager step see the same noise);
- ``backward``, the learner's ``MergedAdam`` (one fused Adam kernel per set of hyper-parameters) and the
  Polyak update (``torch._foreach_lerp_``) follow as in the eager step; with several learners the
  gradients are averaged (``trainer.rl.optim.all_reduce_mean``) between backward and Adam.

On CUDA with one learner per trial, after ``WARMUP_STEPS`` real steps (compilation, the optimizers' states,
cuBLAS workspaces: nothing may allocate lazily during a capture) the whole step (draws, compiled forward and
backward, Adam, Polyak, the metrics) is captured once as a CUDA graph on static input buffers and
replayed: one launch per gradient step instead of a few hundred small kernels, which is what leaves a GPU
idle with [256, 256] networks at batch 256. This is LeanRL's recipe (pytorch-labs/LeanRL,
``sac_continuous_action_torchcompile.py``: ``torch.compile`` in its default mode, then a hand-captured graph),
rather than ``mode="reduce-overhead"``, whose CUDA graphs cover the compiled forward and backward only, as
separate graphs, and leave the optimizer and target update as separate launches. The optimizers need no
``capturable=True``: fused Adam keeps its step counts on the device and reads no host value. Nothing in a
step synchronises with the host: the loss and metrics stay tensors (the graph's output buffer, copied once
per step because the next replay overwrites it) until RLlib reduces them at the end of an update call.

A graph bakes in the addresses of the parameters, the optimizer states and the learning rates: it is
captured again when ``MergedAdam.is_current()`` says the optimizers changed (a restored checkpoint, a
learning-rate schedule) or the batch shape changes. A capture that fails (an optimizer the merged Adam does
not fuse) leaves that shape on the compiled, uncaptured step, with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.utils.metrics import NUM_TARGET_UPDATES

from trainer.rl.losses import METRIC_KEYS, sac_losses
from trainer.rl.optim import MergedAdam, all_reduce_mean

logger = logging.getLogger(__name__)

# The learner_config_dict key that turns the compiled step on (trainer.rl.sac_config sets it from
# resources.compile).
COMPILE_KEY = "compile"
# Real steps before a CUDA graph is captured: the first compiles, the second builds the merged Adam's fused
# calls (the optimizers' states exist only after their first step), the third runs exactly what is captured.
WARMUP_STEPS = 3
DEFAULT_BACKEND = "inductor"

_INPUTS = (Columns.OBS, Columns.NEXT_OBS, Columns.ACTIONS, Columns.REWARDS, Columns.TERMINATEDS, "discount", "weights")


def check_backend(device: torch.device, backend: str | None = None) -> None:
    """Fail at build time, in one line, where ``torch.compile`` could not work on ``device``.

    Raises:
        ValueError: Inductor on a CPU without a C++ compiler (it generates and compiles C++ kernels).
    """
    if (backend or DEFAULT_BACKEND) != "inductor" or device.type != "cpu":
        return
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as exc:  # Inductor's own error is a multi-line traceback about its search path
        raise ValueError(
            "resources.compile: torch.compile on a CPU learner needs a C++ compiler (Inductor generates C++ "
            f"kernels), none was found ({type(exc).__name__}); install g++ or set resources.compile=false"
        ) from exc


@dataclass
class _Captured:
    """One captured step: its replay, its static input buffers and its packed output (loss, metrics)."""

    replay: Callable[[], None]
    inputs: tuple[torch.Tensor, ...]
    packed: torch.Tensor


class CompiledSACStep:
    """``FusedSACTorchLearner._fused_step`` compiled, and on CUDA captured as one graph (module docstring).

    Args:
        learner: the learner whose modules, fused plan, optimizers, ``log_alpha`` and metrics are used.
        backend: ``torch.compile`` backend; default ``DEFAULT_BACKEND`` (``"inductor"``). ``"aot_eager"``
            traces the same joint forward-backward graph and runs it with eager kernels (fast to build: tests).
        cuda_graphs: capture the step as a CUDA graph; default: on a CUDA device with one learner.
    """

    def __init__(self, learner: Any, backend: str | None = None, cuda_graphs: bool | None = None) -> None:
        self.learner = learner
        self.backend = backend = backend or DEFAULT_BACKEND
        self._losses = torch.compile(sac_losses, backend=backend, dynamic=False)
        self._cuda_graphs = cuda_graphs
        self._merged: dict[str, MergedAdam] = {}
        self._target_entropies: dict[str, float] = {}
        self._graphs: dict[tuple, _Captured] = {}
        self._uncapturable: set[tuple] = set()
        self._warm: dict[tuple, int] = {}
        self.captures = 0  # graphs captured so far (a recapture after a checkpoint restore counts again)
        self._capturing = False

    # --- pieces -------------------------------------------------------------------------------------
    def _distributed(self) -> bool:
        return self.learner.config.num_learners > 1 and torch.distributed.is_initialized()

    def _use_graphs(self, device: torch.device) -> bool:
        if self._cuda_graphs is not None:
            return self._cuda_graphs
        # Several learners all-reduce their gradients inside the step: that collective is left outside graphs.
        return device.type == "cuda" and not self._distributed()

    def _merged_adam(self, module_id: str) -> MergedAdam:
        optimizers = [opt for _, opt in self.learner.get_optimizers_for_module(module_id)]
        merged = self._merged.get(module_id)
        if merged is None or merged.optimizers != optimizers:
            merged = self._merged[module_id] = MergedAdam(optimizers)
        return merged

    def _target_entropy(self, module_id: str) -> float:
        # RLlib keeps it as a tensor on the learner's device: read it once (a read is a host sync, which a
        # CUDA graph capture forbids), in the first, uncaptured step.
        if module_id not in self._target_entropies:
            self._target_entropies[module_id] = float(self.learner.target_entropy[module_id])
        return self._target_entropies[module_id]

    def _inputs(self, module_id: str, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        gamma = self.learner.config.get_config_for_module(module_id).gamma
        values = {**batch, "discount": gamma ** batch["n_step"]}
        return tuple(values[k] for k in _INPUTS)

    def _body(self, module_id: str, inputs: tuple[torch.Tensor, ...], with_metrics: bool) -> tuple[Any, Any]:
        """One gradient step on ``inputs``: the eager step's operations, the losses compiled."""
        learner = self.learner
        plan = learner._fused_plan(module_id)
        obs, next_obs, actions, rewards, terminated, discount, weights = inputs
        # Inside a CUDA graph every draw comes from the device's default generator (whose offsets a graph
        # replays); a population's per-agent generators are used everywhere else.
        eps, eps_next = learner._noise(module_id, obs, plan["act_dim"], agent_generators=not self._capturing)
        total, metrics = self._losses(
            plan,
            obs,
            next_obs,
            actions,
            rewards,
            terminated.float(),
            discount,
            weights,
            eps,
            eps_next,
            learner.curr_log_alpha[module_id],
            self._target_entropy(module_id),
            with_metrics,
        )
        merged = self._merged_adam(module_id)
        merged.zero_grad()
        total.backward()
        if self._distributed():
            all_reduce_mean([p.grad for p in merged.params()])
        merged.step()
        with torch.no_grad():
            tau = learner.config.get_config_for_module(module_id).tau
            torch._foreach_lerp_(plan["target_params"], plan["main_params"], tau)
        return total.detach(), metrics

    def _warm_up_step(self, module_id: str, inputs: tuple[torch.Tensor, ...]) -> tuple[Any, Any]:
        """A real step before capturing, on a side stream as CUDA graph capture requires."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self._body(module_id, inputs, with_metrics=True)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _record(self, step: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
        """Capture ``step`` as a CUDA graph: capturing runs no kernel, so nothing is updated until the
        returned ``replay`` is called. Returns ``replay`` and ``step``'s output (filled by each replay)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            packed = step()
        return graph.replay, packed  # the bound method keeps the graph, and the pool its output lives in, alive

    def _capture(self, key: tuple, module_id: str, inputs: tuple[torch.Tensor, ...]) -> _Captured | None:
        """Capture the step on static copies of ``inputs``; None (and a warning) where that fails."""
        static = tuple(t.clone() for t in inputs)

        def step() -> torch.Tensor:
            total, metrics = self._body(module_id, static, with_metrics=True)
            # one value per metric, or K for a population: packed flat, unpacked by _graph_step
            return torch.cat([total.reshape(1), *(m.reshape(-1) for m in metrics)])

        try:
            self._merged_adam(module_id).zero_grad()  # gradients are then allocated inside the graph's pool
            self._capturing = True
            replay, packed = self._record(step)
        except Exception as exc:  # e.g. an optimizer MergedAdam cannot fuse steps through opt.step()
            logger.warning(
                "resources.compile: the SAC step could not be captured as a CUDA graph (%s); "
                "running it compiled without a graph",
                exc,
            )
            self._uncapturable.add(key)
            return None
        finally:
            self._capturing = False
        self.captures += 1
        self._graphs[key] = captured = _Captured(replay, static, packed)
        return captured

    # --- the step ------------------------------------------------------------------------------------
    def __call__(self, module_id: str, batch: dict[str, Any], with_metrics: bool = True) -> torch.Tensor:
        """One gradient step of ``module_id`` on ``batch`` (already on the learner's device); logs the
        metrics when ``with_metrics`` and counts the target update, as the eager step does. Returns the
        summed loss (a tensor: nothing here waits for the device)."""
        learner = self.learner
        inputs = self._inputs(module_id, batch)
        key = (module_id, *(tuple(t.shape) for t in inputs))
        if self._use_graphs(inputs[0].device) and key not in self._uncapturable:
            total, metrics = self._graph_step(key, module_id, inputs)
        else:
            total, metrics = self._body(module_id, inputs, with_metrics)
        if with_metrics:
            learner._log_step_metrics(module_id, metrics)
        learner.metrics.log_value((module_id, NUM_TARGET_UPDATES), 1, reduce="lifetime_sum")
        return total

    def _graph_step(self, key: tuple, module_id: str, inputs: tuple[torch.Tensor, ...]) -> tuple[Any, Any]:
        captured = self._graphs.get(key)
        if captured is not None and not self._merged_adam(module_id).is_current():
            del self._graphs[key]  # new optimizer states or settings: warm up and capture again
            self._warm[key], captured = 0, None
        if captured is None:
            if self._warm.get(key, 0) < WARMUP_STEPS:
                self._warm[key] = self._warm.get(key, 0) + 1
                return self._warm_up_step(module_id, inputs)
            captured = self._capture(key, module_id, inputs)
            if captured is None:
                return self._body(module_id, inputs, with_metrics=True)
        else:
            for static, value in zip(captured.inputs, inputs, strict=True):
                static.copy_(value, non_blocking=True)
        captured.replay()
        packed = captured.packed.clone()
        total, values = packed[0], packed[1:]
        per_metric = values.numel() // len(METRIC_KEYS)  # K for a population, else 1 (scalars)
        metrics = values.reshape(len(METRIC_KEYS), per_metric).unbind()
        population = self.learner._fused_plan(module_id)["population"]
        return total, tuple(m if population else m[0] for m in metrics)
