"""Our trainer measured, on the reference configuration (``REFERENCE_OVERRIDES``): end to end through
``PortfolioSAC`` under each schedule of ``SCHEDULES``, the learner update alone and the GEMM ceiling per thread
count, sampling alone, populations against single agents, one ``study`` trial and the study's size, and the
replay buffer's bytes per transition. ``benchmarks.throughput`` runs these in turns.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from typing import Any

import trainer  # noqa: F401  sets OMP_NUM_THREADS before torch is imported
from benchmarks.ceiling import ceiling, sac_update_gemms

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
OVERLAP = {"resources.num_env_runners": 1, "resources.overlap_sampling": True}
# a round's rollout_fragment_length env steps as one step of that many envs (trainer.rl.schedule.candidates)
VECTORISED = {
    "resources.num_envs_per_env_runner": REFERENCE_OVERRIDES["sac.rollout_fragment_length"],
    "sac.rollout_fragment_length": 1,
}
# The end-to-end schedules, by the suffix of their keys: what each adds to the reference experiment. One more
# measurement is one more entry.
SCHEDULES: dict[str, tuple[str, dict[str, Any]]] = {
    "sync": ("synchronous local sampling", {}),  # sample, then learn, in one process: the reference's schedule
    "overlap": ("overlapped sampling", OVERLAP),  # one remote runner samples the next round while the learner trains
    # one remote runner sampling synchronously: it waits while the learner trains, which gets its CPU (2 threads)
    "remote": ("synchronous remote sampling", {"resources.num_env_runners": 1}),
    # sample, then learn, in one process whose learner has 2 CPUs (2 threads)
    "local2": ("synchronous local sampling, 2 learner threads", {"resources.num_cpus_per_learner": 2}),
    # the same, each round's 8 env steps taken as one step of 8 envs side by side
    "local2x8": (
        "synchronous local sampling of 8 envs at once, 2 learner threads",
        {"resources.num_cpus_per_learner": 2, **VECTORISED},
    ),
    "local1x8": (
        "synchronous local sampling of 8 envs at once, 1 learner thread",
        {"resources.num_cpus_per_learner": 1, **VECTORISED},
    ),
}
# learner calls (one sampling round each) timed alone, right after each schedule and at the end of each round:
# about 1.5-2 s at the reference's 8 updates (8 calls, 0.4 s, moved by 25% within a minute on a busy VM)
OWN_LEARNER_CALLS = 24
HEADLINE = "overlap"  # when no schedule was chosen (chosen_schedule)
# resources.schedule: auto's candidates on 2 CPUs (trainer.rl.schedule.candidates) -> the schedules above
CANDIDATES = {
    "local, 1 learner thread(s)": "sync",
    "local, 2 learner thread(s)": "local2",
    "remote, 2 learner thread(s)": "remote",
    "overlap, 1 learner thread(s)": "overlap",
    "local, 1 learner thread(s), 8 envs": "local1x8",
    "local, 2 learner thread(s), 8 envs": "local2x8",
}
DEVICES = ("cpu", "cuda")
# The learner on one GPU; compiled where the schema has the switch (resources.compile).
CUDA_OVERRIDES = {"resources.num_gpus_per_learner": 1}
COMPILE_KEY = "compile"
STUDY = "study"


def device_overrides(device: str) -> dict[str, Any]:
    """The experiment overrides that put the learner on ``device``.

    Raises:
        SystemExit: exit code 2 for ``cuda`` where torch sees no CUDA device (a one-line error on stderr).
    """
    if device == "cpu":
        return {}
    import torch

    from trainer.experiment.resources import ResourcesConfig

    if not torch.cuda.is_available():
        print(
            f"error: --device cuda: torch {torch.__version__} sees no CUDA device on this machine "
            f"(built with CUDA: {torch.version.cuda or 'no'}); run it on a machine with an NVIDIA GPU, or "
            "without --device for the CPU figures",
            file=sys.stderr,
        )
        raise SystemExit(2)  # bad input, as benchmarks.gpu_check and argparse exit
    out = dict(CUDA_OVERRIDES)
    if COMPILE_KEY in ResourcesConfig.model_fields:
        out[f"resources.{COMPILE_KEY}"] = True
    return out


def _experiment(extra: dict[str, Any] | None = None, name: str = "reference"):
    from trainer.experiment.loading import load_experiment

    base = REFERENCE_OVERRIDES if name == "reference" else {"evaluation.interval": 10_000}
    return load_experiment(name, {**base, **(extra or {})})


class EndToEnd:
    """A warmed-up ``PortfolioSAC`` (buffer past learning starts, one iteration of updates done) that can be
    timed for a few iterations at a time, so several configurations and SB3 can take turns in one run.

    Several algorithms share this process, so each sets its learner's torch threads (what
    ``resources.torch_threads`` decided for it at set-up) before it is timed.
    """

    def __init__(self, extra: dict[str, Any] | None = None, name: str = "reference") -> None:
        from trainer.rl.sac_config import build_sac_config
        from trainer.train import env_steps_of

        self._steps = env_steps_of
        self.exp = _experiment(extra, name)
        self.algo = build_sac_config(self.exp).build_algo()
        self.torch_threads: int = self.algo.torch_threads
        warm = self.exp.sac.learning_starts + self.exp.stopping.steps_per_iteration  # fill + a warm-up iteration
        while env_steps_of(self.algo) < warm:
            self.algo.train()

    def timed(self, iterations: int) -> dict[str, float]:
        """Trained samples/s and env steps/s over ``iterations`` iterations."""
        import torch

        torch.set_num_threads(self.torch_threads)
        algo = self.algo
        steps0, updates0, t0 = self._steps(algo), algo.updates_lifetime, time.perf_counter()
        for _ in range(iterations):
            algo.train()
        dt = time.perf_counter() - t0
        steps, updates = self._steps(algo) - steps0, algo.updates_lifetime - updates0
        agents = len(algo.population_seeds or [None])  # a population's update trains each of its K agents
        return {
            "trained_samples_per_s": agents * updates * algo.config.total_train_batch_size / dt,
            "env_steps_per_s": steps / dt,
            "gradient_steps_per_env_step": updates / steps,
        }

    def learner_alone(self, threads: int, calls: int = 8) -> float:
        """Updates/s of ``learner_group.update`` on pre-sampled batches at ``threads`` torch threads, sent as
        the trainer sends them: one call per sampling round (a gradient step per env step of the round)."""
        import torch
        from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

        torch.set_num_threads(threads)
        algo = self.algo
        per_call = (
            self.exp.sac.rollout_fragment_length * self.exp.resources.num_envs_per_env_runner
        )  # env steps a round
        sample = algo._sample_batch(per_call)
        timesteps = {NUM_ENV_STEPS_SAMPLED_LIFETIME: self._steps(algo)}
        algo.learner_group.update(batch=sample, timesteps=timesteps, num_epochs=1)  # warm at this thread count
        t0 = time.perf_counter()
        for _ in range(calls):
            algo.learner_group.update(batch=sample, timesteps=timesteps, num_epochs=1)
        return calls * per_call / (time.perf_counter() - t0)

    def stop(self) -> None:
        self.algo.stop()


def sampling(num_env_runners: int, iterations: int = 4) -> float:
    """Env steps/s with ``num_env_runners`` remote runners and no learning."""
    from trainer.rl.sac_config import build_sac_config
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
def env_dims() -> tuple[int, int]:
    """(obs_dim, act_dim) of the bundled-data env."""
    from envs.portfolio import PortfolioEnv

    env = PortfolioEnv()
    return int(env.observation_space.shape[0]), int(env.action_space.shape[0])


def reference_gemms() -> list:
    """The matrix products of one update of the reference network on the bundled data."""
    obs_dim, act_dim = env_dims()
    return sac_update_gemms(
        obs_dim, act_dim, REFERENCE_OVERRIDES["model.hidden"], REFERENCE_OVERRIDES["sac.batch_size"]
    )


def raw_transition_bytes(obs_dim: int, act_dim: int) -> int:
    """The float32 bytes of one raw transition: obs, next obs, action, reward, terminated flag."""
    return (2 * obs_dim + act_dim + 1 + 1) * 4


def buffer_memory() -> dict[str, float]:
    from trainer.rl.buffer import FlatReplayBuffer

    obs_dim, act_dim = env_dims()
    capacity = 200_000
    buf = FlatReplayBuffer(capacity, obs_dim, act_dim)
    raw = raw_transition_bytes(obs_dim, act_dim)
    return {
        "buffer_bytes_per_transition": buf.nbytes / capacity,
        "raw_bytes_per_transition": float(raw),
        "buffer_to_raw_ratio": buf.nbytes / capacity / raw,
    }


def start_ray(device: str) -> None:
    from trainer.runtime.console import quiet_logging
    from trainer.runtime.ray_init import init_ray

    init_ray(
        "local", num_cpus=os.cpu_count(), num_gpus=int(device == "cuda"), include_dashboard=False, log_to_driver=False
    )
    quiet_logging(None)  # RLlib's notices would bury the figures; errors still show


def chosen_schedule(device: str, extra: dict[str, Any]) -> tuple[str | None, str, dict[str, float]]:
    """What ``resources.schedule: auto`` takes for the reference experiment on this machine (its own short
    measurement, with a cache of its own so an earlier choice is not read back): the schedule's name in
    ``SCHEDULES`` (None where it is none of them: a machine with more CPUs), its label, and the rates it
    measured, by candidate label (the means of its passes; "<label>, side by side" where it timed close ones
    side by side)."""
    import tempfile
    from pathlib import Path

    import ray

    from trainer.rl.schedule import candidates, choose, round_steps

    start_ray(device)
    try:
        exp = _experiment(extra)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        options = candidates(cpus, round_steps(exp))
        timings: dict[str, list[float]] = {}

        def measure(probe):
            from trainer.rl.schedule import measure as timed

            rate = timed(probe)
            label = next(k for k, v in options.items() if _is(probe, exp, v))
            timings.setdefault(label, []).append(rate)
            return rate

        paired: dict[str, float] = {}

        def pair(exps: dict[str, Any], stopped: Any) -> dict[str, float] | None:
            from trainer.rl.schedule import side_by_side

            rates = side_by_side(exps, stopped)
            paired.update({f"{k}, side by side": v for k, v in (rates or {}).items()})
            return rates

        with tempfile.TemporaryDirectory() as tmp:
            chosen = choose(exp, cpus, measure, Path(tmp) / "schedules.json", side_by_side_fn=pair)
        label = next((k for k, v in options.items() if _is(chosen, exp, v)), "")
        means = {k: sum(v) / len(v) for k, v in timings.items()}
        return CANDIDATES.get(label), label, means | paired  # what auto compared
    finally:
        ray.shutdown()


def _is(candidate: Any, exp: Any, overrides: dict[str, Any]) -> bool:
    """Whether ``candidate`` is ``exp`` with exactly ``overrides`` (a subset match would take a schedule for
    one that sets more: local with 8 envs for plain local)."""
    from trainer.rl.schedule import with_overrides

    return candidate.model_dump(mode="json") == with_overrides(exp, overrides).model_dump(mode="json")


def our_turn(iterations: int, thread_counts: list[int], device: str, extra: dict[str, Any]) -> dict[str, float]:
    """Every schedule of ``SCHEDULES`` end to end, each followed by its own learner alone, then the learner alone
    and the GEMM ceiling per thread count: one round, from a fresh Ray instance to its shutdown."""
    import ray

    start_ray(device)
    row: dict[str, float] = {}
    runs = {name: EndToEnd({**overrides, **extra}) for name, (_, overrides) in SCHEDULES.items()}
    try:
        for name, run in runs.items():
            row.update({f"{k}_{name}": v for k, v in run.timed(iterations).items()})
            row[f"torch_threads_{name}"] = float(run.torch_threads)
            # its own learner at its threads, in the same minute: the machine's speed drifts between minutes
            row[f"learner_alone_updates_per_s_{name}"] = run.learner_alone(run.torch_threads, OWN_LEARNER_CALLS)
        gemms = reference_gemms()
        first = runs[next(iter(runs))]
        for threads in thread_counts:
            row[f"learner_only_updates_per_s_{threads}_threads"] = first.learner_alone(threads, OWN_LEARNER_CALLS)
            for k, v in ceiling(gemms, threads, device).items():
                row[f"{k}_{threads}_threads"] = v
    finally:
        for run in runs.values():
            run.stop()
        ray.shutdown()
    return row


def model_type_rates(
    types: list[str], threads: int, device: str, extra: dict[str, Any], calls: int = 8
) -> dict[str, float]:
    """Learner updates/s (``EndToEnd.learner_alone``) at the reference batch for each ``model.type`` in ``types``,
    one warmed-up algorithm at a time, at ``threads`` torch threads."""
    import ray

    start_ray(device)
    out: dict[str, float] = {}
    try:
        for kind in types:
            run = EndToEnd({**extra, "model.type": kind})
            try:
                out[kind] = run.learner_alone(threads, calls)
            finally:
                run.stop()
            print(f"model.type {kind}: {out[kind]:,.1f} learner updates/s ({threads} thread(s))")
    finally:
        ray.shutdown()
    return out


def study_plan(cpus: int) -> dict[str, float]:
    """The ``study`` sweep's size and how many of its trials run at a time on ``cpus`` CPUs: as many as
    their CPU requests fit, at most the sweep's ``max_concurrent_trials``."""
    from trainer.tune import build_plan

    exp = _experiment(name=STUDY)
    plan = build_plan(exp)
    fit = max(1, math.floor(cpus / plan["resources_per_trial"]["CPU"]))
    concurrent = min(fit, exp.sweep.max_concurrent_trials or fit)
    return {
        "study_trials": float(plan["trials"]),
        "study_env_steps_per_trial": float(exp.stopping.env_steps),
        "study_concurrent_trials": float(concurrent),
    }


def study_rate(iterations: int, device: str) -> float:
    """Env steps/s of one ``study`` trial as the sweep runs it (its own network, batch and resources)."""
    import ray

    start_ray(device)
    run = EndToEnd(device_overrides(device), name=STUDY)
    try:
        return run.timed(iterations)["env_steps_per_s"]
    finally:
        run.stop()
        ray.shutdown()
