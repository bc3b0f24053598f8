"""Training throughput: ``python -m benchmarks.throughput [--json FILE] [--sb3-path DIR] [--rounds R] [--device D]``.

On the bundled data with the reference network ([256, 256], batch 256) and a replay ratio of 256 trained
samples per env step (one gradient step per env step), measures in one run:

- end to end through the real trainer (``PortfolioSAC``, learner in the driver with the torch threads
  ``resources.torch_threads: auto`` gives it), after learning starts and excluding start-up: trained
  samples/s and env steps/s, with synchronous local sampling (the reference's schedule) and with one remote
  env runner sampling the next round while the learner trains (``resources.overlap_sampling``; the headline
  ``trained_samples_per_s``), with one remote env runner sampling synchronously (it waits while the
  learner trains, so ``auto`` gives the learner its CPU: 2 threads on 2 cores), with local sampling and 2
  learner threads, and with local sampling of each round's 8 env steps as one step of 8 envs at 1 and 2
  learner threads (``SCHEDULES``); the one ``resources.schedule: auto`` chooses is marked and is the headline;
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
- with ``--model-types``: learner updates/s at the reference batch per ``model.type`` (``--model-types-only``:
  that and nothing else);
- wall-time estimates at the measured rates: the design's 1M-step reference run, and the ``study``
  experiment (its trials x env steps, as many trials at a time as this machine's CPUs and the sweep allow).

The machine is shared and noisy (the same code's speed moved by 30% between minutes here), so SB3 and both of
our schedules take turns for ``--rounds`` rounds and the medians of the per-round figures and ratios are
reported; every round is in the JSON. Ray is shut down while SB3 runs: none of our processes competes with it.

This module is the command line and the order of the turns; ``benchmarks.trainer_runs`` measures our trainer,
``benchmarks.comparison_runs`` runs SB3 and the raw eager loop, and ``benchmarks.throughput_report`` derives the
figures and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import typing
from pathlib import Path
from typing import Any

import trainer  # noqa: F401  sets OMP_NUM_THREADS before torch is imported
from benchmarks import existing_file, json_path, positive_int
from benchmarks.ceiling import update_flops
from benchmarks.comparison_runs import raw_eager_turn, sb3_before_and_after, sb3_turn
from benchmarks.population_runs import population_rates
from benchmarks.throughput_report import derive, machine, report, summary, wall_time_estimates
from benchmarks.trainer_runs import (
    DEVICES,
    HEADLINE,
    REFERENCE_OVERRIDES,
    buffer_memory,
    chosen_schedule,
    device_overrides,
    model_type_rates,
    our_turn,
    reference_gemms,
    sampling,
    start_ray,
    study_plan,
    study_rate,
)
from trainer.experiment.config import ModelConfig

MODEL_TYPES = typing.get_args(ModelConfig.model_fields["type"].annotation)


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
    parser.add_argument(
        "--model-types",
        default="",
        help="also measure learner updates/s at the reference batch per model.type (e.g. mlp,per_asset,attention)",
    )
    parser.add_argument("--model-types-only", action="store_true", help="measure --model-types and nothing else")
    args = parser.parse_args(argv)
    types = [t.strip() for t in args.model_types.split(",") if t.strip()]
    unknown = [t for t in types if t not in MODEL_TYPES]
    if unknown:
        parser.error(f"--model-types must be among {', '.join(MODEL_TYPES)}, got {', '.join(unknown)}")
    if args.model_types_only and not types:
        parser.error("--model-types-only needs --model-types")
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
    if args.model_types_only:
        rates = model_type_rates(types, thread_counts[0], args.device, extra)
        if args.json:
            Path(args.json).write_text(json.dumps({"model_type_learner_updates_per_s": rates}, indent=2))
        return 0
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
    chosen, label, chosen_rates = chosen_schedule(args.device, extra)
    headline = chosen or HEADLINE
    result.update(chosen_schedule=chosen, chosen_schedule_label=label, chosen_schedule_rates=chosen_rates)
    print(f"resources.schedule auto chose {label} ({', '.join(f'{k} {v:,.0f}' for k, v in chosen_rates.items())})")
    for r in range(args.rounds):
        # SB3 and our schedules take turns, SB3 before and after ours, so a slow minute on this shared machine
        # hits all of them; Ray is down while SB3 runs (our_turn starts and stops it), so no process of ours
        # competes with SB3.
        row: dict[str, Any] = {}
        before = sb3_turn(args.sb3_path, sb3_steps, thread_counts) if args.sb3_path else {}
        row.update(our_turn(args.iterations, thread_counts, args.device, extra))
        if args.sb3_path:
            row.update(sb3_before_and_after(before, sb3_turn(args.sb3_path, sb3_steps, thread_counts)))
        row.update(derive(row, batch, headline))
        if args.raw_eager:
            row["raw_eager_output"] = raw_eager_turn(args.raw_eager)
        result["rounds"].append(row)
        print(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(f"{k} {v:,.2f}" for k, v in row.items() if isinstance(v, float))
        )
    result.update(summary(result["rounds"], headline))
    if types:
        result["model_type_learner_updates_per_s"] = model_type_rates(types, thread_counts[0], args.device, extra)
    if sizes:
        result["population"] = population_rates(sizes, 1, args.device, extra)
    if not args.skip_study:
        result.update(study_plan(os.cpu_count() or 1))
        result["study_env_steps_per_s"] = study_rate(2, args.device)
    result.update(wall_time_estimates(result))
    if not args.skip_sampling:
        import ray

        start_ray(args.device)
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


if __name__ == "__main__":
    raise SystemExit(main())
