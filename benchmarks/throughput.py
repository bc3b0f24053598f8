"""Training throughput: ``python -m benchmarks.throughput [--json FILE] [--sb3-path DIR] [--rounds R]``.

On the bundled data with the reference network ([256, 256], batch 256) and a replay ratio of 256 trained
samples per env step (one gradient step per env step), measures in one run:

- end to end through the real trainer (``PortfolioSAC``, learner in the driver), after learning starts and
  excluding start-up: trained samples/s and env steps/s, with synchronous local sampling (the reference's
  schedule) and with one remote env runner sampling the next round while the learner trains
  (``resources.overlap_sampling``; the headline ``trained_samples_per_s``);
- the learner update alone (``learner_group.update`` on pre-sampled batches, as the trainer sends them);
- sampling alone with 1 and 2 remote env runners (no learning), in env steps/s;
- replay-buffer bytes per stored transition at 200k capacity, against the raw float32 bytes of
  (obs, next obs, action, reward, flags), and the driver's peak RSS;
- side by side: Stable-Baselines3 SAC with the same configuration on the same env (from a throwaway install
  given by ``--sb3-path``, never a dependency) and a bare eager-PyTorch update loop (``RAW_SAC_UPDATE``, when
  that script is present next to the checkout), both with one thread.

The machine is shared and noisy (the same code's speed moved by 30% between minutes here), so SB3 and both of
our schedules take turns for ``--rounds`` rounds and the medians of the per-round figures and ratios are
reported; every round is in the JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trainer  # noqa: F401  sets OMP_NUM_THREADS before torch is imported

# The bare eager-PyTorch SAC update loop kept beside the checkout: the speed reference, run when present.
RAW_SAC_UPDATE = Path(__file__).resolve().parents[2] / "shared" / "tools" / "raw_sac_update.py"
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
    from trainer.experiments import load_experiment

    return load_experiment("reference", {**REFERENCE_OVERRIDES, **(extra or {})})


OVERLAP = {"resources.num_env_runners": 1, "resources.overlap_sampling": True}


class EndToEnd:
    """A warmed-up ``PortfolioSAC`` (buffer past learning starts, one iteration of updates done) that can be
    timed for a few iterations at a time, so several configurations and SB3 can take turns in one run."""

    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        from trainer.sac_config import build_sac_config
        from trainer.train import env_steps_of

        self._steps = env_steps_of
        self.exp = _experiment(extra)
        self.algo = build_sac_config(self.exp).build_algo()
        while env_steps_of(self.algo) < self.exp.sac.learning_starts + 200:  # fill + a warm-up iteration
            self.algo.train()

    def timed(self, iterations: int) -> dict[str, float]:
        """Trained samples/s and env steps/s over ``iterations`` iterations."""
        algo = self.algo
        steps0, updates0, t0 = self._steps(algo), algo.updates_lifetime, time.perf_counter()
        for _ in range(iterations):
            algo.train()
        dt = time.perf_counter() - t0
        steps, updates = self._steps(algo) - steps0, algo.updates_lifetime - updates0
        return {
            "trained_samples_per_s": updates * algo.config.total_train_batch_size / dt,
            "env_steps_per_s": steps / dt,
            "gradient_steps_per_env_step": updates / steps,
        }

    def learner_alone(self, calls: int = 8) -> dict[str, float]:
        """``learner_group.update`` on pre-sampled batches, sent as the trainer sends them: one call per
        sampling round (``rollout_fragment_length`` gradient steps of ``batch_size``)."""
        from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

        algo = self.algo
        per_call = self.exp.sac.rollout_fragment_length
        sample = algo._sample_batch(per_call)
        timesteps = {NUM_ENV_STEPS_SAMPLED_LIFETIME: self._steps(algo)}
        t0 = time.perf_counter()
        for _ in range(calls):
            algo.learner_group.update(batch=sample, timesteps=timesteps, num_epochs=1)
        dt = time.perf_counter() - t0
        return {
            "learner_updates_per_s": calls * per_call / dt,
            "learner_trained_samples_per_s": calls * per_call * algo.config.total_train_batch_size / dt,
        }

    def stop(self) -> None:
        self.algo.stop()


def sampling(num_env_runners: int, iterations: int = 4) -> float:
    """Env steps/s with ``num_env_runners`` remote runners and no learning."""
    from trainer.sac_config import build_sac_config
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


@functools.cache
def _dims() -> tuple[int, int]:
    """(obs_dim, act_dim) of the bundled-data env."""
    from envs.portfolio import PortfolioEnv

    env = PortfolioEnv()
    return int(env.observation_space.shape[0]), int(env.action_space.shape[0])


def buffer_memory() -> dict[str, float]:
    from trainer.buffer import FlatReplayBuffer

    obs_dim, act_dim = _dims()
    capacity = 200_000
    buf = FlatReplayBuffer(capacity, obs_dim, act_dim)
    raw = (2 * obs_dim + act_dim + 1 + 1) * 4  # obs, next obs, action, reward, terminated flag in float32
    return {
        "buffer_bytes_per_transition": buf.nbytes / capacity,
        "raw_bytes_per_transition": float(raw),
        "buffer_to_raw_ratio": buf.nbytes / capacity / raw,
    }


def _sb3(sb3_path: str, steps: int) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([sb3_path, str(root), env.get("PYTHONPATH", "")])
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.sb3_reference", "--steps", str(steps)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
    )
    if res.returncode == 0:
        return json.loads(res.stdout.strip().splitlines()[-1])
    return {"sb3_error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}


def _raw_eager() -> str | None:
    raw_tool = RAW_SAC_UPDATE
    if not raw_tool.exists():
        return None
    args = ["1", "256", *(str(n) for n in _dims())]
    res = subprocess.run([sys.executable, str(raw_tool), *args], capture_output=True, text=True)
    return res.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results as JSON here")
    parser.add_argument("--iterations", type=int, default=4, help="timed iterations of 200 env steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of SB3 / ours taking turns; medians reported")
    parser.add_argument("--sb3-path", help="directory with a throwaway stable-baselines3 install (pip --target)")
    parser.add_argument("--skip-sampling", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.iterations < 1:
        parser.error("--rounds and --iterations must be at least 1")
    import ray

    from trainer.console import quiet_logging
    from trainer.ray_init import init_ray

    init_ray("local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    quiet_logging(None)  # RLlib's notices would bury the figures; errors still show
    result: dict[str, Any] = {"config": REFERENCE_OVERRIDES, "rounds": []}
    sync = EndToEnd()  # local sampling, then learning: the reference's schedule
    overlap = EndToEnd(OVERLAP)  # one remote env runner samples the next round while the learner trains
    for r in range(args.rounds):
        # SB3 and our two schedules take turns, so a slow minute on this shared machine hits all of them
        row: dict[str, Any] = {}
        if args.sb3_path:
            steps = args.iterations * REFERENCE_OVERRIDES["stopping.steps_per_iteration"]
            row.update(_sb3(args.sb3_path, steps=steps))
        row.update({f"{k}_sync": v for k, v in sync.timed(args.iterations).items()})
        row.update({f"{k}_overlap": v for k, v in overlap.timed(args.iterations).items()})
        row.update(sync.learner_alone())
        if "sb3_trained_samples_per_s" in row:
            row["ratio_vs_sb3_sync"] = row["trained_samples_per_s_sync"] / row["sb3_trained_samples_per_s"]
            row["ratio_vs_sb3_overlap"] = row["trained_samples_per_s_overlap"] / row["sb3_trained_samples_per_s"]
        raw = _raw_eager()
        if raw:
            row["raw_eager_output"] = raw
        result["rounds"].append(row)
        print(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(f"{k} {v:,.2f}" for k, v in row.items() if isinstance(v, float))
        )
    overlap.stop()
    sync.stop()

    rounds = result["rounds"]
    for key in dict.fromkeys(k for row in rounds for k, v in row.items() if isinstance(v, float)):
        result[key] = float(statistics.median(row[key] for row in rounds if key in row))  # SB3 may fail a round
    result.update(
        trained_samples_per_s=result["trained_samples_per_s_overlap"],
        env_steps_per_s=result["env_steps_per_s_overlap"],
    )
    if "ratio_vs_sb3_overlap" in result:
        result["ratio_vs_sb3"] = result["ratio_vs_sb3_overlap"]
        for schedule in ("overlap", "sync"):
            key = f"ratio_vs_sb3_{schedule}"
            result[f"{key}_lowest_round"] = min(row[key] for row in rounds if key in row)
    if not args.skip_sampling:
        result["sampler_env_steps_per_s_1_runner"] = sampling(1)
        result["sampler_env_steps_per_s_2_runners"] = sampling(2)
        result["sampler_env_steps_per_s"] = result["sampler_env_steps_per_s_1_runner"]
    result.update(buffer_memory())
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ray.shutdown()

    print(f"medians over {args.rounds} rounds:")
    rows = [
        ("end to end, overlapped sampling: trained samples/s", result["trained_samples_per_s_overlap"]),
        ("end to end, overlapped sampling: env steps/s", result["env_steps_per_s_overlap"]),
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
            ("SB3 SAC (same rounds): trained samples/s", result["sb3_trained_samples_per_s"]),
            ("ratio ours (overlapped) / SB3, median of rounds", result["ratio_vs_sb3_overlap"]),
            ("ratio ours (synchronous) / SB3, median of rounds", result["ratio_vs_sb3_sync"]),
            ("ratio ours (overlapped) / SB3, lowest round", result["ratio_vs_sb3_overlap_lowest_round"]),
            ("ratio ours (synchronous) / SB3, lowest round", result["ratio_vs_sb3_sync_lowest_round"]),
        ]
    for name, value in rows:
        print(f"{name:<52} {value:>12,.2f}")
    for row in rounds:
        if "sb3_error" in row:
            print(f"SB3 reference failed: {row['sb3_error']}")
        if "raw_eager_output" in row:
            print(f"raw eager loop (same round): {row['raw_eager_output']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
