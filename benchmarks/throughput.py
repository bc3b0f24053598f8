"""Training throughput: ``python -m benchmarks.throughput [--json FILE] [--sb3-path DIR] [--rounds R] [--device D]``.

On the bundled data with the reference network ([256, 256], batch 256) and a replay ratio of 256 trained
samples per env step (one gradient step per env step), measures in one run:

- end to end through the real trainer (``PortfolioSAC``, learner in the driver with the torch threads
  ``resources.torch_threads: auto`` gives it), after learning starts and excluding start-up: trained
  samples/s and env steps/s, with synchronous local sampling (the reference's schedule) and with one remote
  env runner sampling the next round while the learner trains (``resources.overlap_sampling``; the headline
  ``trained_samples_per_s``), and with one remote env runner sampling synchronously (it waits while the
  learner trains, so ``auto`` gives the learner its CPU: 2 threads on 2 cores) (``SCHEDULES``);
- the learner update alone (``learner_group.update`` on pre-sampled batches, as the trainer sends them), at
  each thread count of ``--threads``;
- the matrix-product ceiling of one update (``benchmarks.ceiling``: its FLOPs at the GEMM rate measured at
  its own shapes, per thread count), and end to end as a fraction of the learner alone and of the ceiling;
- sampling alone with 1 and 2 remote env runners (no learning), in env steps/s;
- replay-buffer bytes per stored transition at 200k capacity, against the raw float32 bytes of
  (obs, next obs, action, reward, flags), and the driver's peak RSS;
- side by side: Stable-Baselines3 SAC with the same configuration on the same env (from a throwaway install
  given by ``--sb3-path``, never a dependency) at each thread count of ``--threads``, its best counted, and a
  bare eager-PyTorch update loop (the script given by ``--raw-eager``, run with one thread, when given);
- populations (``sac.population``) of ``--population`` sizes: aggregate trained samples/s of all agents,
  against one agent of the single-agent path taking turns with it three times, medians (K separate agents
  sharing these cores train, together, at one agent's rate);
- wall-time estimates at the measured rates: the design's 1M-step reference run, and the ``study``
  experiment (its trials x env steps, as many trials at a time as this machine's CPUs and the sweep allow).

The machine is shared and noisy (the same code's speed moved by 30% between minutes here), so SB3 and both of
our schedules take turns for ``--rounds`` rounds and the medians of the per-round figures and ratios are
reported; every round is in the JSON. Ray is shut down while SB3 runs: none of our processes competes with it.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trainer  # noqa: F401  sets OMP_NUM_THREADS before torch is imported
from benchmarks import existing_file, json_path, positive_int
from benchmarks.ceiling import ceiling, sac_update_gemms, update_flops

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
# The end-to-end schedules, by the suffix of their keys: what each adds to the reference experiment. One more
# measurement is one more entry.
SCHEDULES: dict[str, tuple[str, dict[str, Any]]] = {
    "sync": ("synchronous local sampling", {}),  # sample, then learn, in one process: the reference's schedule
    "overlap": ("overlapped sampling", OVERLAP),  # one remote runner samples the next round while the learner trains
    # one remote runner sampling synchronously: it waits while the learner trains, which gets its CPU (2 threads)
    "remote": ("synchronous remote sampling", {"resources.num_env_runners": 1}),
}
HEADLINE = "overlap"
DEVICES = ("cpu", "cuda")
# The learner on one GPU; compiled where the schema has the switch (resources.compile).
CUDA_OVERRIDES = {"resources.num_gpus_per_learner": 1}
COMPILE_KEY = "compile"
REFERENCE_RUN_ENV_STEPS = 1_000_000  # the design's reference run
STUDY = "study"
SECONDS_PER_HOUR = 3600


def device_overrides(device: str) -> dict[str, Any]:
    """The experiment overrides that put the learner on ``device``.

    Raises:
        SystemExit: exit code 2 for ``cuda`` where torch sees no CUDA device (a one-line error on stderr).
    """
    if device == "cpu":
        return {}
    import torch

    from trainer.config import ResourcesConfig

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
    from trainer.experiments import load_experiment

    base = REFERENCE_OVERRIDES if name == "reference" else {"evaluation.interval": 10_000}
    return load_experiment(name, {**base, **(extra or {})})


class EndToEnd:
    """A warmed-up ``PortfolioSAC`` (buffer past learning starts, one iteration of updates done) that can be
    timed for a few iterations at a time, so several configurations and SB3 can take turns in one run.

    Several algorithms share this process, so each sets its learner's torch threads (what
    ``resources.torch_threads`` decided for it at set-up) before it is timed.
    """

    def __init__(self, extra: dict[str, Any] | None = None, name: str = "reference") -> None:
        from trainer.sac_config import build_sac_config
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
        the trainer sends them: one call per sampling round (``rollout_fragment_length`` gradient steps)."""
        import torch
        from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

        torch.set_num_threads(threads)
        algo = self.algo
        per_call = self.exp.sac.rollout_fragment_length
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


def reference_gemms() -> list:
    """The matrix products of one update of the reference network on the bundled data."""
    obs_dim, act_dim = _dims()
    return sac_update_gemms(
        obs_dim, act_dim, REFERENCE_OVERRIDES["model.hidden"], REFERENCE_OVERRIDES["sac.batch_size"]
    )


def raw_transition_bytes(obs_dim: int, act_dim: int) -> int:
    """The float32 bytes of one raw transition: obs, next obs, action, reward, terminated flag."""
    return (2 * obs_dim + act_dim + 1 + 1) * 4


def buffer_memory() -> dict[str, float]:
    from trainer.buffer import FlatReplayBuffer

    obs_dim, act_dim = _dims()
    capacity = 200_000
    buf = FlatReplayBuffer(capacity, obs_dim, act_dim)
    raw = raw_transition_bytes(obs_dim, act_dim)
    return {
        "buffer_bytes_per_transition": buf.nbytes / capacity,
        "raw_bytes_per_transition": float(raw),
        "buffer_to_raw_ratio": buf.nbytes / capacity / raw,
    }


def _sb3(sb3_path: str, steps: int, threads: int) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([sb3_path, str(root), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = str(threads)
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.sb3_reference", "--steps", str(steps), "--threads", str(threads)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
    )
    if res.returncode == 0:
        return json.loads(res.stdout.strip().splitlines()[-1])
    return {"sb3_error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}


def sb3_turn(sb3_path: str, steps: int, thread_counts: list[int]) -> dict[str, Any]:
    """SB3 at each thread count (nothing of ours running), and the best of them."""
    row: dict[str, Any] = {}
    for threads in thread_counts:
        out = _sb3(sb3_path, steps, threads)
        if "sb3_error" in out:
            row[f"sb3_error_{threads}_threads"] = out["sb3_error"]
            continue
        row[f"sb3_trained_samples_per_s_{threads}_threads"] = out["sb3_trained_samples_per_s"]
    per_count = {t: f"sb3_trained_samples_per_s_{t}_threads" for t in thread_counts}
    measured = {t: row[key] for t, key in per_count.items() if key in row}
    if measured:
        best = max(measured, key=measured.__getitem__)
        row.update(sb3_trained_samples_per_s=measured[best], sb3_best_threads=float(best))
    return row


def _raw_eager(script: Path) -> str:
    """The output of a bare eager-PyTorch SAC update script (arguments: threads, batch, obs and action sizes)."""
    args = ["1", "256", *(str(n) for n in _dims())]
    res = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
    return res.stdout.strip()


def _start_ray(device: str) -> None:
    from trainer.console import quiet_logging
    from trainer.ray_init import init_ray

    init_ray(
        "local", num_cpus=os.cpu_count(), num_gpus=int(device == "cuda"), include_dashboard=False, log_to_driver=False
    )
    quiet_logging(None)  # RLlib's notices would bury the figures; errors still show


def our_turn(iterations: int, thread_counts: list[int], device: str, extra: dict[str, Any]) -> dict[str, float]:
    """Every schedule of ``SCHEDULES`` end to end, the learner alone and the GEMM ceiling per thread count: one round,
    from a fresh Ray instance to its shutdown."""
    import ray

    _start_ray(device)
    row: dict[str, float] = {}
    runs = {name: EndToEnd({**overrides, **extra}) for name, (_, overrides) in SCHEDULES.items()}
    try:
        for name, run in runs.items():
            row.update({f"{k}_{name}": v for k, v in run.timed(iterations).items()})
            row[f"torch_threads_{name}"] = float(run.torch_threads)
        gemms = reference_gemms()
        first = runs[next(iter(runs))]
        for threads in thread_counts:
            row[f"learner_only_updates_per_s_{threads}_threads"] = first.learner_alone(threads)
            for k, v in ceiling(gemms, threads, device).items():
                row[f"{k}_{threads}_threads"] = v
    finally:
        for run in runs.values():
            run.stop()
        ray.shutdown()
    return row


def derive(row: dict[str, Any], batch: int) -> dict[str, float]:
    """Per-round figures: each schedule end to end as a fraction of the learner alone and of the ceiling at
    the thread count that schedule's learner ran with, and over SB3 at its best thread count; unsuffixed
    learner-alone and ceiling figures at the headline schedule's thread count."""
    out: dict[str, float] = {}
    headline = int(row[f"torch_threads_{HEADLINE}"])
    for key in ("learner_only_updates_per_s", "ceiling_updates_per_s", "gemm_gflops"):
        if f"{key}_{headline}_threads" in row:
            out[key] = row[f"{key}_{headline}_threads"]
    if "learner_only_updates_per_s" in out:
        out["learner_updates_per_s"] = out["learner_only_updates_per_s"]  # the earlier key, kept
        out["learner_trained_samples_per_s"] = out["learner_only_updates_per_s"] * batch
    for schedule in SCHEDULES:
        if f"trained_samples_per_s_{schedule}" not in row:
            continue
        threads = int(row[f"torch_threads_{schedule}"])
        updates = row[f"trained_samples_per_s_{schedule}"] / batch
        for name, key in (("learner_only", "learner_only_updates_per_s"), ("ceiling", "ceiling_updates_per_s")):
            if f"{key}_{threads}_threads" in row:
                out[f"fraction_of_{name}_{schedule}"] = updates / row[f"{key}_{threads}_threads"]
        if "sb3_trained_samples_per_s" in row:
            ours = row[f"trained_samples_per_s_{schedule}"]
            out[f"ratio_vs_sb3_{schedule}"] = ours / row["sb3_trained_samples_per_s"]
    return out


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

    _start_ray(device)
    out = []
    single = None
    try:
        single = EndToEnd(extra)
        for k in sizes:
            alone, together, steps = [], [], []
            run = None
            try:
                run = EndToEnd({**extra, "sac.population": k})
                for _ in range(repeats):
                    alone.append(single.timed(iterations)["trained_samples_per_s"])
                    timed = run.timed(iterations)
                    together.append(timed["trained_samples_per_s"])
                    steps.append(k * timed["env_steps_per_s"])
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


def wall_time_estimates(result: dict[str, Any]) -> dict[str, float]:
    """Hours for the design's 1M-step run at the headline env steps/s, and for the study: rounds of
    ``study_concurrent_trials`` trials, each trial at the study's own measured env steps/s (evaluation and
    start-up excluded, as in every figure here)."""
    out = {"reference_run_hours": REFERENCE_RUN_ENV_STEPS / result["env_steps_per_s"] / SECONDS_PER_HOUR}
    if "study_env_steps_per_s" in result:
        waves = math.ceil(result["study_trials"] / result["study_concurrent_trials"])
        trial_s = result["study_env_steps_per_trial"] / result["study_env_steps_per_s"]
        out["study_hours"] = waves * trial_s / SECONDS_PER_HOUR
    return out


def study_rate(iterations: int, device: str) -> float:
    """Env steps/s of one ``study`` trial as the sweep runs it (its own network, batch and resources)."""
    import ray

    _start_ray(device)
    run = EndToEnd(device_overrides(device), name=STUDY)
    try:
        return run.timed(iterations)["env_steps_per_s"]
    finally:
        run.stop()
        ray.shutdown()


def machine() -> str:
    """CPU model, cores and the vector/matrix flags that matter for GEMMs, and the GPU (or none)."""
    import torch

    model, flags = "unknown CPU", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
    shown = ", ".join(f for f in wanted if f in flags) or "no AVX2"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{model}, {os.cpu_count()} cores ({shown}); {gpu}"


def _medians(rounds: list[dict[str, Any]]) -> dict[str, float]:
    keys = dict.fromkeys(k for row in rounds for k, v in row.items() if isinstance(v, float))
    return {k: float(statistics.median(row[k] for row in rounds if k in row)) for k in keys}  # SB3 may fail a round


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=json_path, help="write the results as JSON here")
    parser.add_argument(
        "--iterations", type=positive_int, default=4, help="timed iterations of 200 env steps per round"
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=5, help="rounds of SB3 / ours taking turns; medians reported"
    )
    parser.add_argument("--sb3-path", help="directory with a throwaway stable-baselines3 install (pip --target)")
    parser.add_argument(
        "--raw-eager", type=existing_file, help="a bare eager-PyTorch SAC update script to run in each round"
    )
    parser.add_argument(
        "--threads", default="1,2", help="torch thread counts for the learner alone, the ceiling and SB3"
    )
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="where the learner trains")
    parser.add_argument("--skip-sampling", action="store_true")
    parser.add_argument("--skip-study", action="store_true", help="no study wall-time estimate")
    parser.add_argument(
        "--population", default="1,4,8,16", help="population sizes K to measure in aggregate ('' for none)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.iterations < 1:
        parser.error("--rounds and --iterations must be at least 1")
    try:
        thread_counts = sorted({int(t) for t in args.threads.split(",")})
    except ValueError:
        parser.error(f"--threads must be comma-separated whole numbers, got {args.threads!r}")
    if thread_counts[0] < 1:
        parser.error(f"--threads must be at least 1, got {args.threads!r}")
    try:
        sizes = [int(k) for k in args.population.split(",") if k.strip()]
    except ValueError:
        parser.error(f"--population must be comma-separated whole numbers, got {args.population!r}")
    if any(k < 1 for k in sizes):
        parser.error(f"--population sizes must be at least 1, got {args.population!r}")
    extra = device_overrides(args.device)
    batch = REFERENCE_OVERRIDES["sac.batch_size"]
    gemms = reference_gemms()
    result: dict[str, Any] = {
        "config": REFERENCE_OVERRIDES,
        "device": args.device,
        "overrides": extra,
        "machine": machine(),
        "update_gflop": update_flops(gemms) / 1e9,
        "rounds": [],
    }
    sb3_steps = args.iterations * REFERENCE_OVERRIDES["stopping.steps_per_iteration"]
    for r in range(args.rounds):
        # SB3 and our schedules take turns, so a slow minute on this shared machine hits all of them; Ray is
        # down while SB3 runs (our_turn starts and stops it), so no process of ours competes with SB3.
        row: dict[str, Any] = sb3_turn(args.sb3_path, sb3_steps, thread_counts) if args.sb3_path else {}
        row.update(our_turn(args.iterations, thread_counts, args.device, extra))
        row.update(derive(row, batch))
        if args.raw_eager:
            row["raw_eager_output"] = _raw_eager(args.raw_eager)
        result["rounds"].append(row)
        print(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(f"{k} {v:,.2f}" for k, v in row.items() if isinstance(v, float))
        )
    rounds = result["rounds"]
    result.update(_medians(rounds))
    result.update(
        trained_samples_per_s=result[f"trained_samples_per_s_{HEADLINE}"],
        env_steps_per_s=result[f"env_steps_per_s_{HEADLINE}"],
    )
    if f"ratio_vs_sb3_{HEADLINE}" in result:
        result["ratio_vs_sb3"] = result[f"ratio_vs_sb3_{HEADLINE}"]
        for schedule in SCHEDULES:
            key = f"ratio_vs_sb3_{schedule}"
            result[f"{key}_lowest_round"] = min(row[key] for row in rounds if key in row)
    if sizes:
        result["population"] = population_rates(sizes, 1, args.device, extra)
    if not args.skip_study:
        result.update(study_plan(os.cpu_count() or 1))
        result["study_env_steps_per_s"] = study_rate(2, args.device)
    result.update(wall_time_estimates(result))
    if not args.skip_sampling:
        import ray

        _start_ray(args.device)
        result["sampler_env_steps_per_s_1_runner"] = sampling(1)
        result["sampler_env_steps_per_s_2_runners"] = sampling(2)
        result["sampler_env_steps_per_s"] = result["sampler_env_steps_per_s_1_runner"]
        ray.shutdown()
    result.update(buffer_memory())
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(report(result, args.rounds, thread_counts))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def report(result: dict[str, Any], n_rounds: int, thread_counts: list[int]) -> str:
    """The medians as a table, then per-round notes (SB3 failures, the raw eager loop)."""

    def per_thread_count(label: str, key: str) -> list[tuple[str, str]]:
        return [(label.format(t=t), f"{key}_{t}_threads") for t in thread_counts]

    def per_schedule(label: str, key: str) -> list[tuple[str, str]]:
        return [(label.format(s=what), key.format(name=name)) for name, (what, _) in SCHEDULES.items()]

    rows: list[tuple[str, str]] = [
        *per_schedule("end to end, {s}: trained samples/s", "trained_samples_per_s_{name}"),
        *per_schedule("end to end, {s}: env steps/s", "env_steps_per_s_{name}"),
        *per_schedule("  learner torch threads (auto), {s}", "torch_threads_{name}"),
        *per_thread_count("learner alone, {t} thread(s): updates/s", "learner_only_updates_per_s"),
        *per_thread_count("GEMM rate at the update's shapes, {t} thread(s): GFLOP/s", "gemm_gflops"),
        *per_thread_count("ceiling (GEMMs only), {t} thread(s): updates/s", "ceiling_updates_per_s"),
        ("  FLOPs of one update (GFLOP)", "update_gflop"),
        *per_schedule("end to end / learner alone (same threads), {s}", "fraction_of_learner_only_{name}"),
        *per_schedule("end to end / ceiling (same threads), {s}", "fraction_of_ceiling_{name}"),
        ("sampling alone, 1 env runner: env steps/s", "sampler_env_steps_per_s_1_runner"),
        ("sampling alone, 2 env runners: env steps/s", "sampler_env_steps_per_s_2_runners"),
        ("replay buffer bytes / transition", "buffer_bytes_per_transition"),
        ("  raw float32 bytes / transition", "raw_bytes_per_transition"),
        ("peak RSS of the driver (MB)", "peak_rss_mb"),
        *per_thread_count("SB3 SAC, {t} thread(s): trained samples/s", "sb3_trained_samples_per_s"),
        ("SB3 SAC at its best thread count: trained samples/s", "sb3_trained_samples_per_s"),
        *per_schedule("ours / SB3 best, {s}: median of rounds", "ratio_vs_sb3_{name}"),
        *per_schedule("ours / SB3 best, {s}: lowest round", "ratio_vs_sb3_{name}_lowest_round"),
        ("design's 1M-step run at the overlapped rate (hours)", "reference_run_hours"),
        ("study: one trial, env steps/s", "study_env_steps_per_s"),
        ("study: trials", "study_trials"),
        ("study: trials at a time on this machine", "study_concurrent_trials"),
        ("study: wall time (hours)", "study_hours"),
    ]
    lines = [f"{result['machine']}; learner on {result['device']}", f"medians over {n_rounds} rounds:"]
    lines += [f"{name:<72} {result[key]:>12,.2f}" for name, key in rows if key in result]
    for pop in result.get("population", []):
        lines.append(
            f"{'population of ' + str(pop['k']) + ': trained samples/s, all agents (x K separate agents)':<72} "
            f"{pop['trained_samples_per_s']:>12,.2f} ({pop['vs_separate_agents']:.2f}x, "
            f"lowest turn {pop['vs_separate_agents_lowest_turn']:.2f}x)"
        )
    for row in result["rounds"]:
        lines += [f"SB3 reference failed: {v}" for k, v in row.items() if k.startswith("sb3_error")]
        if "raw_eager_output" in row:
            lines.append(f"raw eager loop (same round): {row['raw_eager_output']}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
