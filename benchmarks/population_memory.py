"""Replay memory of a population: ``python -m benchmarks.population_memory [--agents K] [--capacity N] [--json F]``.

Builds, in this fresh process, what a population's learner process holds: a ``PopulationReplayBuffer`` of
``--capacity`` transitions per agent (the reference's 200k by default) filled completely with transitions of
the bundled data's shapes, the K agents' reference networks ([256, 256]) with their targets, gradients and
Adam moments, and the K env copies, and saves the buffer as a checkpoint does; then reports the process's
peak resident memory next to the raw float32 bytes of the transitions, (obs, next obs, action, reward, flag),
per agent. Targets: replay <= 1.5x the raw bytes per agent; a population of 16 at 200k fits in 8 GiB.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import trainer  # noqa: F401  sets OMP_NUM_THREADS before torch is imported
from benchmarks import json_path, positive_int

GIB = 1024**3


def measure(agents: int, capacity: int) -> dict[str, Any]:
    """Peak RSS of a filled population buffer, networks with optimizer state, and env copies."""
    import gymnasium as gym
    import numpy as np
    import torch

    from benchmarks.trainer_runs import raw_transition_bytes
    from envs.population import SEEDS_KEY, PopulationEnv, agent_seeds
    from trainer.rl.buffer import PopulationReplayBuffer
    from trainer.rl.population import PopulationSACModule

    seeds = agent_seeds(0, agents)
    env = PopulationEnv(seeds)
    obs_dim, act_dim = env.obs_dim, env.act_dim
    buf = PopulationReplayBuffer(capacity, obs_dim, act_dim, seeds)
    rng = np.random.default_rng(0)
    chunk = 10_000
    for start in range(0, capacity, chunk):  # every slot written: the pages are really resident
        n = min(chunk, capacity - start)
        obs = rng.standard_normal((n, agents, obs_dim), dtype=np.float32)
        buf.add(
            obs,
            rng.uniform(-1, 1, (n, agents, act_dim)).astype(np.float32),
            rng.standard_normal((n, agents), dtype=np.float32),
            obs,
            np.zeros((n, agents), np.float32),
        )
    module = PopulationSACModule(
        observation_space=gym.spaces.Box(-np.inf, np.inf, (agents * obs_dim,), np.float32),
        action_space=gym.spaces.Box(-1.0, 1.0, (agents * act_dim,), np.float32),
        model_config={
            "fcnet_hiddens": [256, 256],
            "fcnet_activation": "relu",
            "twin_q": True,
            SEEDS_KEY: seeds,
        },
    )
    module.make_target_networks()
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params)
    sum(p.sum() for p in params).backward()
    optimizer.step()  # Adam's moments exist after the first step
    sample = buf.sample(256)  # one batch as the learner samples it
    raw_per_transition = raw_transition_bytes(obs_dim, act_dim)
    before_save = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with tempfile.TemporaryDirectory() as tmp:  # a checkpoint writes the buffer: streamed, no second copy
        t0 = time.perf_counter()
        file_bytes = buf.save(tmp).stat().st_size
        save_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "agents": agents,
        "capacity": capacity,
        "buffer_bytes": buf.nbytes,
        "raw_bytes": raw_per_transition * capacity * agents,
        "buffer_to_raw_ratio": buf.nbytes / (raw_per_transition * capacity * agents),
        "buffer_bytes_per_agent": buf.nbytes / agents,
        "network_bytes": sum(p.numel() * p.element_size() for p in module.parameters()) * 4,  # + grad, 2 moments
        "sample_rows": int(sample["obs"].shape[0]),
        "peak_rss_before_save_bytes": before_save,
        "checkpoint_file_bytes": file_bytes,
        "checkpoint_save_s": save_s,
        "peak_rss_bytes": peak,
        "peak_rss_gib": peak / GIB,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.population_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=positive_int, default=16, help="population size K (default 16)")
    parser.add_argument("--capacity", type=positive_int, default=200_000, help="transitions per agent (default 200k)")
    parser.add_argument("--json", type=json_path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    out = measure(args.agents, args.capacity)
    print(
        f"population of {out['agents']} at {out['capacity']:,} transitions each: replay "
        f"{out['buffer_bytes'] / GIB:.2f} GiB = {out['buffer_to_raw_ratio']:.2f}x the raw float32 transition bytes; "
        f"peak RSS {out['peak_rss_gib']:.2f} GiB including a checkpoint save of "
        f"{out['checkpoint_file_bytes'] / GIB:.2f} GiB in {out['checkpoint_save_s']:.1f} s (target <= 8 GiB)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
