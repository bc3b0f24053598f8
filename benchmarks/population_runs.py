"""Populations (``sac.population``) against separate agents on the reference configuration: aggregate trained
samples/s end to end, the learner alone, and the bound the update's matrix products set on this machine.
``benchmarks.throughput --population`` runs these.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.ceiling import sac_update_gemms, time_gemms
from benchmarks.trainer_runs import EndToEnd, env_dims, start_ray


def population_rates(
    sizes: list[int], iterations: int, device: str, extra: dict[str, Any], repeats: int = 3
) -> list[dict[str, float]]:
    """Aggregate trained samples/s (all agents together) of populations of ``sizes`` agents, each with the
    reference schedule (synchronous local sampling, one process, the threads ``auto`` gives it), against one
    agent of the single-agent path: K separate agents on the same cores share them, so together they train at
    one agent's rate. The single agent and the population take turns ``repeats`` times (this machine's speed
    drifts from minute to minute) and the medians are reported; the agents' env steps/s are K x the
    population's."""
    import ray

    start_ray(device)
    out = []
    single = None
    try:
        single = EndToEnd(extra)
        for k in sizes:
            alone, together, steps = [], [], []
            learner_alone: list[float] = []
            learner_together: list[float] = []
            run = None
            try:
                run = EndToEnd({**extra, "sac.population": k})
                for _ in range(repeats):
                    alone.append(single.timed(iterations)["trained_samples_per_s"])
                    timed = run.timed(iterations)
                    together.append(timed["trained_samples_per_s"])
                    steps.append(k * timed["env_steps_per_s"])
                    # the learner alone, in the same turns: one population update trains K agents
                    learner_alone.append(single.learner_alone(run.torch_threads))
                    learner_together.append(run.learner_alone(run.torch_threads))
                threads = run.torch_threads
            finally:
                if run is not None:
                    run.stop()
            ratios = [t / a for t, a in zip(together, alone, strict=True)]
            pop = {
                "k": k,
                "trained_samples_per_s": statistics.median(together),
                "agent_env_steps_per_s": statistics.median(steps),
                "single_agent_trained_samples_per_s": statistics.median(alone),
                "vs_separate_agents": statistics.median(ratios),
                "vs_separate_agents_lowest_turn": min(ratios),
                **population_bound(k, threads, learner_alone, learner_together, update_gemms(run.exp)),
            }
            out.append(pop)
            print(
                f"population of {k}: {pop['trained_samples_per_s']:,.0f} trained samples/s in aggregate, "
                f"{pop['vs_separate_agents']:.2f}x one agent's "
                f"(lowest turn {pop['vs_separate_agents_lowest_turn']:.2f}x)"
            )
    finally:
        if single is not None:
            single.stop()
        ray.shutdown()
    return out


def update_gemms(exp: Any) -> list:
    """The matrix products of one update of ``exp``'s networks on the bundled data."""
    obs_dim, act_dim = env_dims()
    return sac_update_gemms(obs_dim, act_dim, list(exp.model.hidden), exp.sac.batch_size)


def population_bound(
    k: int, threads: int, single: list[float], population: list[float], gemms: list
) -> dict[str, float]:
    """Where a population's learner stands against K separate agents' (updates/s of each, measured in turns):
    its measured gain, and the gain an update would have if everything but its matrix products were free
    (``gemms``, one agent's update, timed once alone and once K-batched as the population runs them)."""
    t1 = 1.0 / statistics.median(single)  # seconds per update of one agent, the learner alone
    tk = 1.0 / statistics.median(population)  # seconds per update of K agents
    g1, gk = time_gemms(gemms, threads), time_gemms(gemms, threads, agents=k)
    return {
        "learner_vs_separate_agents": k * t1 / tk,
        "gemm_share_of_single_update": g1 / t1,
        "gemm_share_of_population_update": gk / tk,
        "batched_gemms_vs_k_single": gk / (k * g1),
        "gemm_bound_vs_separate_agents": k * t1 / gk,
    }
