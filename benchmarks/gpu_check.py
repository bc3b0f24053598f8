"""The GPU learner, measured: ``python -m benchmarks.gpu_check [--json FILE] [--calls N] [--iterations N]``.

One short run (a few minutes on an H100-class GPU, most of it compiling) at the reference shapes
([256, 256] networks, batch 256, one gradient step per env step, ``benchmarks.trainer_runs``' overrides) with
the learner on ``cuda:0`` in the driver and one remote env runner sampling while it trains:

- the learner alone (``learner_group.update`` on pre-sampled batches, 8 gradient steps per call, the device
  synchronised before the clock stops), updates/s with the eager fused step and with ``resources.compile``
  (``trainer.rl.compiled``: compiled losses, the whole step one CUDA graph);
- a correctness check of the captured graph: from the same state and CUDA seed, three graphed steps against
  three eager steps (the graph draws its Gaussian noise from the same generator offsets as the eager
  ``torch.randn`` calls, so the two should agree to float tolerance);
- end to end through ``PortfolioSAC``, eager and compiled: env steps/s after learning starts, and the
  wall time of the 1M-step reference run at that rate, against the target of 15 minutes (>= 1,111 env
  steps/s at one update per step).

Without CUDA it stops at once with "CUDA not available".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import trainer  # noqa: F401  sets OMP_NUM_THREADS before torch is imported
from benchmarks import json_path, positive_int

REFERENCE_ENV_STEPS = 1_000_000
GRAPH_TOLERANCE = 1e-4  # max abs difference of graphed and eager steps accepted as the same update
TARGET_WALL_S = 15 * 60
GPU_OVERRIDES = {"resources.num_gpus_per_learner": 1, "resources.compile": True}
MID = "default_policy"


def _sync() -> None:
    import torch

    torch.cuda.synchronize()


def learner_updates_per_s(bench: Any, calls: int) -> float:
    """Gradient steps/s of ``learner_group.update`` alone, as the trainer sends them (one call per round)."""
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    algo = bench.algo
    per_call = bench.exp.sac.rollout_fragment_length
    sample = algo._sample_batch(per_call)
    timesteps = {NUM_ENV_STEPS_SAMPLED_LIFETIME: bench._steps(algo)}
    for _ in range(2):  # warm-up (with compile: compilation, then the CUDA graph capture)
        algo.learner_group.update(batch=sample, timesteps=timesteps, num_epochs=1)
    _sync()
    t0 = time.perf_counter()
    for _ in range(calls):
        algo.learner_group.update(batch=sample, timesteps=timesteps, num_epochs=1)
    _sync()
    return calls * per_call / (time.perf_counter() - t0)


def _state_tensors(learner: Any) -> list:
    """Every tensor a step changes: parameters (targets included), log-alpha, the optimizers' states."""
    tensors = [p for p in learner.module[MID].parameters()] + [learner.curr_log_alpha[MID]]
    for opt in learner._named_optimizers.values():
        tensors += [t for state in opt.state.values() for t in state.values()]
    return tensors


def graph_matches_eager(learner: Any, batch: dict[str, Any], steps: int = 3) -> float:
    """Max abs difference between ``steps`` graphed and ``steps`` eager gradient steps from the same state
    and seed. The state is restored in place, so the captured graph stays valid."""
    import torch

    tensors = _state_tensors(learner)
    saved = [t.detach().clone() for t in tensors]
    compiled = learner._compiled_step

    def run(step_fn: Any) -> list:
        with torch.no_grad():
            for t, s in zip(tensors, saved, strict=True):
                t.copy_(s)
        torch.manual_seed(1234)  # every device's generator, CUDA's included
        for _ in range(steps):
            step_fn(MID, batch, True)
        return [t.detach().clone() for t in tensors]

    graphed = run(compiled)
    eager = run(learner._fused_step)
    return max(float((a - b).abs().max()) for a, b in zip(graphed, eager, strict=True))


def _fmt_wall(seconds: float) -> str:
    h, rem = divmod(int(seconds), 3600)
    return f"{h} h {rem // 60:02d} min" if h else f"{rem // 60} min {rem % 60:02d} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=json_path, help="write the results as JSON here")
    parser.add_argument("--calls", type=positive_int, default=150, help="timed learner calls (8 gradient steps each)")
    parser.add_argument(
        "--iterations", type=positive_int, default=10, help="timed end-to-end iterations of 200 env steps"
    )
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(
            "error: CUDA not available: benchmarks.gpu_check measures a GPU learner (torch.cuda.is_available() is "
            "False here); run it on a machine with an NVIDIA GPU and the CUDA build of torch",
            file=sys.stderr,
        )
        return 2
    import numpy as np
    import ray

    from benchmarks.trainer_runs import OVERLAP, EndToEnd
    from trainer.rl.compiled import CompiledSACStep
    from trainer.runtime.console import quiet_logging
    from trainer.runtime.ray_init import init_ray

    init_ray("local", include_dashboard=False, log_to_driver=False)
    quiet_logging(None)
    result: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "config": {**GPU_OVERRIDES, **OVERLAP},
    }
    t_start = time.perf_counter()
    bench = EndToEnd({**OVERLAP, **GPU_OVERRIDES})  # compiles and captures during its warm-up iterations
    learner = bench.algo.learner_group._learner
    compiled = learner._compiled_step
    if not isinstance(compiled, CompiledSACStep) or torch.device(learner._device).type != "cuda":
        print(f"the learner trains on {learner._device} without a compiled step: check resources.*", file=sys.stderr)
        bench.stop()
        ray.shutdown()
        return 1
    result["startup_s"] = time.perf_counter() - t_start

    result["learner_updates_per_s_compiled"] = learner_updates_per_s(bench, args.calls)
    result["cuda_graph_captures"] = compiled.captures
    raw = bench.algo._sample_batch(1).policy_batches[MID]
    batch = {k: torch.as_tensor(np.asarray(v), device=learner._device) for k, v in raw.items()}
    result["graph_vs_eager_max_abs_diff"] = graph_matches_eager(learner, batch)
    result["graph_matches_eager"] = result["graph_vs_eager_max_abs_diff"] <= GRAPH_TOLERANCE
    e2e_compiled = bench.timed(args.iterations)

    learner._compiled_step = None  # the same learner, eager fused step
    result["learner_updates_per_s_eager"] = learner_updates_per_s(bench, args.calls)
    e2e_eager = bench.timed(args.iterations)
    learner._compiled_step = compiled
    bench.stop()
    ray.shutdown()

    result.update({f"{k}_compiled": v for k, v in e2e_compiled.items()})
    result.update({f"{k}_eager": v for k, v in e2e_eager.items()})
    for kind in ("compiled", "eager"):
        result[f"reference_run_wall_s_{kind}"] = REFERENCE_ENV_STEPS / result[f"env_steps_per_s_{kind}"]
    result["compile_speedup_learner"] = result["learner_updates_per_s_compiled"] / result["learner_updates_per_s_eager"]
    result["target_met"] = result["reference_run_wall_s_compiled"] <= TARGET_WALL_S

    print(f"GPU: {result['gpu']} (torch {result['torch']}, CUDA {result['cuda']})")
    rows = [
        ("learner alone, eager fused step: updates/s", result["learner_updates_per_s_eager"]),
        ("learner alone, compiled + CUDA graph: updates/s", result["learner_updates_per_s_compiled"]),
        ("  speed-up of compiling", result["compile_speedup_learner"]),
        ("  CUDA graphs captured", result["cuda_graph_captures"]),
        ("  3 graphed vs 3 eager steps: max |difference|", result["graph_vs_eager_max_abs_diff"]),
        ("end to end, eager: env steps/s", result["env_steps_per_s_eager"]),
        ("end to end, compiled: env steps/s", result["env_steps_per_s_compiled"]),
        ("  gradient steps per env step", result["gradient_steps_per_env_step_compiled"]),
    ]
    for name, value in rows:
        print(f"{name:<52} {value:>12,.4g}")
    for kind in ("eager", "compiled"):
        wall = result[f"reference_run_wall_s_{kind}"]
        print(f"1M-step reference run, {kind}: {_fmt_wall(wall)}")
    if not result["graph_matches_eager"]:
        print(
            f"the graphed step differs from the eager step by more than {GRAPH_TOLERANCE:g}: check trainer.rl.compiled"
        )
    verdict = "met" if result["target_met"] else "NOT met"
    print(f"target (1M steps in <= 15 min, >= {REFERENCE_ENV_STEPS / TARGET_WALL_S:,.0f} env steps/s): {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
