"""Training throughput: ``python -m benchmarks.throughput [--json FILE] [--sb3-path DIR]``.

On the bundled data with the reference network ([256, 256], batch 256) and a replay ratio of 256 trained
samples per env step (one gradient step per env step), measures in one run:

- end to end through the real trainer (``PortfolioSAC``, learner in the driver), after learning starts and
  excluding start-up: trained samples/s and env steps/s, with synchronous local sampling (the reference's
  schedule) and with one remote env runner sampling the next round while the learner trains
  (``resources.overlap_sampling``; the headline ``trained_samples_per_s``);
- the learner update alone (``learner_group.update`` on a pre-sampled batch), in updates/s;
- sampling alone with 1 and 2 remote env runners (no learning), in env steps/s;
- replay-buffer bytes per stored transition at 200k capacity, against the raw float32 bytes of
  (obs, next obs, action, reward, flags), and the driver's peak RSS;
- side by side, the same minute: Stable-Baselines3 SAC with the same configuration on the same env (from a
  throwaway install given by ``--sb3-path``, never a dependency) and the bare eager-PyTorch update loop
  ``../shared/tools/raw_sac_update.py`` (when present), both with one thread.

Compare ratios measured in one run: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

REFERENCE_OVERRIDES = {
    "model.hidden": [256, 256],
    "sac.batch_size": 256,
    "sac.training_intensity": 256,
    "sac.buffer_size": 200_000,
    "sac.learning_starts": 1000,
    "sac.rollout_fragment_length": 8,
    "stopping.steps_per_iteration": 200,
    "evaluation.interval": 10_000,  # evaluation is not what we time here
}


def _experiment(extra: dict[str, Any] | None = None):
    from trainer.config import load_experiment

    return load_experiment("reference", {**REFERENCE_OVERRIDES, **(extra or {})})


OVERLAP = {"resources.num_env_runners": 1, "resources.overlap_sampling": True}


def end_to_end(timed_iterations: int, extra: dict[str, Any] | None = None) -> dict[str, float]:
    """Trained samples/s and env steps/s of PortfolioSAC after learning starts."""
    from trainer.config import build_sac_config
    from trainer.train import env_steps_of

    exp = _experiment(extra)
    algo = build_sac_config(exp).build_algo()
    try:
        while env_steps_of(algo) < exp.sac.learning_starts + 200:  # fill + a warm-up iteration of updates
            algo.train()
        steps0, updates0, t0 = env_steps_of(algo), algo.updates_lifetime, time.perf_counter()
        for _ in range(timed_iterations):
            algo.train()
        dt = time.perf_counter() - t0
        steps, updates = env_steps_of(algo) - steps0, algo.updates_lifetime - updates0
        batch = algo.config.total_train_batch_size
        # the learner update alone, on one pre-sampled batch
        from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

        sample = algo._sample_batch()
        n = 60
        t1 = time.perf_counter()
        for _ in range(n):
            algo.learner_group.update(batch=sample, timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: env_steps_of(algo)})
        learner_dt = time.perf_counter() - t1
        return {
            "trained_samples_per_s": updates * batch / dt,
            "env_steps_per_s": steps / dt,
            "gradient_steps_per_env_step": updates / steps,
            "learner_updates_per_s": n / learner_dt,
            "learner_trained_samples_per_s": n * batch / learner_dt,
        }
    finally:
        algo.stop()


def sampling(num_env_runners: int, iterations: int = 4) -> float:
    """Env steps/s with ``num_env_runners`` remote runners and no learning."""
    from trainer.config import build_sac_config
    from trainer.train import env_steps_of

    exp = _experiment(
        {
            "resources.num_env_runners": num_env_runners,
            "sac.learning_starts": 10**9,
            "stopping.steps_per_iteration": 2000,
        }
    )
    algo = build_sac_config(exp).build_algo()
    try:
        algo.train()
        s0, t0 = env_steps_of(algo), time.perf_counter()
        for _ in range(iterations):
            algo.train()
        return (env_steps_of(algo) - s0) / (time.perf_counter() - t0)
    finally:
        algo.stop()


def buffer_memory() -> dict[str, float]:
    from envs.portfolio import PortfolioEnv
    from trainer.buffer import FlatReplayBuffer

    env = PortfolioEnv()
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    capacity = 200_000
    buf = FlatReplayBuffer(capacity, obs_dim, act_dim)
    raw = (2 * obs_dim + act_dim + 1 + 1) * 4  # obs, next obs, action, reward, terminated flag in float32
    return {
        "buffer_bytes_per_transition": buf.nbytes / capacity,
        "raw_bytes_per_transition": float(raw),
        "buffer_to_raw_ratio": buf.nbytes / capacity / raw,
    }


def _side_by_side(sb3_path: str | None, steps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if sb3_path:
        env["PYTHONPATH"] = os.pathsep.join([sb3_path, str(root), env.get("PYTHONPATH", "")])
        res = subprocess.run(
            [sys.executable, "-m", "benchmarks.sb3_reference", "--steps", str(steps)],
            capture_output=True,
            text=True,
            env=env,
            cwd=root,
        )
        if res.returncode == 0:
            out.update(json.loads(res.stdout.strip().splitlines()[-1]))
        else:
            out["sb3_error"] = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"
    raw_tool = root.parent / "shared" / "tools" / "raw_sac_update.py"
    if raw_tool.exists():
        from envs.portfolio import PortfolioEnv

        e = PortfolioEnv()
        args = ["1", "256", str(e.observation_space.shape[0]), str(e.action_space.shape[0])]
        res = subprocess.run([sys.executable, str(raw_tool), *args], capture_output=True, text=True, env=env)
        out["raw_eager_output"] = res.stdout.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results as JSON here")
    parser.add_argument("--iterations", type=int, default=8, help="timed iterations of 200 env steps")
    parser.add_argument("--sb3-path", help="directory with a throwaway stable-baselines3 install (pip --target)")
    parser.add_argument("--skip-sampling", action="store_true")
    args = parser.parse_args(argv)
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local instance for the benchmark only
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    result: dict[str, Any] = {"config": REFERENCE_OVERRIDES}
    reference = _side_by_side(args.sb3_path, steps=args.iterations * 200)
    sync = end_to_end(args.iterations)  # local sampling, then learning: the reference's schedule
    overlap = end_to_end(args.iterations, OVERLAP)  # one remote env runner samples while the learner trains
    result.update(sync)
    result.update(
        trained_samples_per_s_sync=sync["trained_samples_per_s"],
        env_steps_per_s_sync=sync["env_steps_per_s"],
        trained_samples_per_s=overlap["trained_samples_per_s"],
        env_steps_per_s=overlap["env_steps_per_s"],
        gradient_steps_per_env_step_overlap=overlap["gradient_steps_per_env_step"],
    )
    if not args.skip_sampling:
        result["sampler_env_steps_per_s_1_runner"] = sampling(1)
        result["sampler_env_steps_per_s_2_runners"] = sampling(2)
        result["sampler_env_steps_per_s"] = result["sampler_env_steps_per_s_1_runner"]
    result.update(buffer_memory())
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result.update(reference)
    if "sb3_trained_samples_per_s" in result:
        result["ratio_vs_sb3"] = result["trained_samples_per_s"] / result["sb3_trained_samples_per_s"]
        result["ratio_vs_sb3_sync"] = result["trained_samples_per_s_sync"] / result["sb3_trained_samples_per_s"]
    ray.shutdown()

    rows = [
        ("end to end, overlapped sampling: trained samples/s", result["trained_samples_per_s"]),
        ("end to end, overlapped sampling: env steps/s", result["env_steps_per_s"]),
        ("end to end, synchronous local sampling: trained/s", result["trained_samples_per_s_sync"]),
        ("end to end, synchronous local sampling: env steps/s", result["env_steps_per_s_sync"]),
        ("learner update alone: updates/s", result["learner_updates_per_s"]),
        ("learner update alone: trained samples/s", result["learner_trained_samples_per_s"]),
    ]
    if not args.skip_sampling:
        rows += [
            ("sampling alone, 1 env runner: env steps/s", result["sampler_env_steps_per_s_1_runner"]),
            ("sampling alone, 2 env runners: env steps/s", result["sampler_env_steps_per_s_2_runners"]),
        ]
    rows += [
        ("replay buffer bytes / transition", result["buffer_bytes_per_transition"]),
        ("  raw float32 bytes / transition", result["raw_bytes_per_transition"]),
        ("peak RSS of the driver (MB)", result["peak_rss_mb"]),
    ]
    if "sb3_trained_samples_per_s" in result:
        rows += [
            ("SB3 SAC (same minute): trained samples/s", result["sb3_trained_samples_per_s"]),
            ("ratio ours (overlapped) / SB3", result["ratio_vs_sb3"]),
            ("ratio ours (synchronous) / SB3", result["ratio_vs_sb3_sync"]),
        ]
    for name, value in rows:
        print(f"{name:<52} {value:>12,.2f}")
    if "sb3_error" in result:
        print(f"SB3 reference failed: {result['sb3_error']}")
    if "raw_eager_output" in result:
        print(f"raw eager loop (same minute): {result['raw_eager_output']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
