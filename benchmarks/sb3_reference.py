"""Stable-Baselines3 SAC on the same env and reference configuration: our speed reference.

Run by ``benchmarks.throughput`` in a subprocess whose ``PYTHONPATH`` holds a throwaway SB3 install (SB3 is
not a dependency of this project). Prints one JSON line: trained samples/s and env steps/s after learning
starts, with one torch thread.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1500, help="timed env steps after learning starts")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    from envs.portfolio import PortfolioEnv

    torch.set_num_threads(args.threads)
    learning_starts = 1000

    class Timer(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.t0: float | None = None
            self.n0 = 0

        def _on_step(self) -> bool:
            if self.t0 is None and self.num_timesteps >= learning_starts + 20:  # after warm-up updates
                self.t0, self.n0 = time.perf_counter(), self.num_timesteps
            return True

    model = SAC(
        "MlpPolicy",
        PortfolioEnv(),
        learning_rate=1e-4,
        buffer_size=200_000,
        learning_starts=learning_starts,
        batch_size=256,
        tau=0.005,
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        policy_kwargs={"net_arch": [256, 256]},
        device="cpu",
        seed=0,
        verbose=0,
    )
    timer = Timer()
    model.learn(total_timesteps=learning_starts + 20 + args.steps, callback=timer)
    elapsed = time.perf_counter() - timer.t0
    steps = model.num_timesteps - timer.n0
    print(json.dumps({"sb3_trained_samples_per_s": steps * 256 / elapsed, "sb3_env_steps_per_s": steps / elapsed}))


if __name__ == "__main__":
    main()
