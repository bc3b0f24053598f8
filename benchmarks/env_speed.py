"""Raw environment speed: ``python -m benchmarks.env_speed [--steps N] [--json FILE]``.

Steps ``PortfolioEnv`` on the bundled data with uniform random actions in one process (one core) and
reports env steps/s. Target: >= 20,000 steps/s on one core of the 2-core dev machine.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks import json_path, positive_int
from envs.market import load_market
from envs.portfolio import PortfolioEnv

TARGET_STEPS_PER_S = 20_000


def measure(steps: int, seed: int = 0, data: str = "sp500") -> dict[str, float]:
    """Env steps/s over ``steps`` random actions (resets included), after loading the data."""
    load_market(data)
    env = PortfolioEnv(data=data)
    env.reset(seed=seed)
    actions = np.random.default_rng(seed).uniform(-1.0, 1.0, (steps, env.action_space.shape[0]))
    actions = actions.astype(np.float32)
    resets = 0
    t0 = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
            resets += 1
    elapsed = time.perf_counter() - t0
    return {"env_steps_per_s": steps / elapsed, "steps": steps, "resets": resets, "seconds": elapsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.env_speed", description=__doc__)
    parser.add_argument("--steps", type=positive_int, default=200_000)
    parser.add_argument("--repeats", type=positive_int, default=3, help="best of N runs (the machine is shared)")
    parser.add_argument("--json", type=json_path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    runs = [measure(args.steps, seed=i) for i in range(args.repeats)]
    best = max(runs, key=lambda r: r["env_steps_per_s"])
    result = {
        "env_steps_per_s": best["env_steps_per_s"],
        "all_runs_steps_per_s": [r["env_steps_per_s"] for r in runs],
        "target_steps_per_s": TARGET_STEPS_PER_S,
        "meets_target": best["env_steps_per_s"] >= TARGET_STEPS_PER_S,
    }
    print(f"PortfolioEnv (sp500, 20 assets, random actions): {best['env_steps_per_s']:,.0f} env steps/s")
    print("  runs: " + ", ".join(f"{r:,.0f}" for r in result["all_runs_steps_per_s"]))
    print(f"  target >= {TARGET_STEPS_PER_S:,}: {'met' if result['meets_target'] else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
