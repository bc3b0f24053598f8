"""The results of ``benchmarks.throughput``: the figures derived from each round, the medians over rounds with
the headline figures, the wall-time estimates, the machine's description, and the printed table.
"""

from __future__ import annotations

import math
import os
import statistics
from typing import Any

from benchmarks.trainer_runs import HEADLINE, SCHEDULES
from trainer.runtime.resources import cpu_model_and_flags

REFERENCE_RUN_ENV_STEPS = 1_000_000  # the design's reference run
SECONDS_PER_HOUR = 3600


def derive(row: dict[str, Any], batch: int, headline_schedule: str = HEADLINE) -> dict[str, float]:
    """Per-round figures: each schedule end to end as a fraction of the learner alone and of the ceiling at
    the thread count that schedule's learner ran with, as a fraction of its own learner timed alone right after
    it, and over SB3 at its best thread count; unsuffixed
    learner-alone and ceiling figures at the headline schedule's thread count."""
    out: dict[str, float] = {}
    headline = int(row[f"torch_threads_{headline_schedule}"])
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
        if f"learner_alone_updates_per_s_{schedule}" in row:  # its own learner, timed right after it
            out[f"fraction_of_own_learner_{schedule}"] = updates / row[f"learner_alone_updates_per_s_{schedule}"]
        if "sb3_trained_samples_per_s" in row:
            ours = row[f"trained_samples_per_s_{schedule}"]
            out[f"ratio_vs_sb3_{schedule}"] = ours / row["sb3_trained_samples_per_s"]
    return out


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


def machine() -> str:
    """CPU model, cores and the vector/matrix flags that matter for GEMMs, and the GPU (or none)."""
    import torch

    model, flags = cpu_model_and_flags()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
    shown = ", ".join(f for f in wanted if f in flags) or "no AVX2"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{model}, {os.cpu_count()} cores ({shown}); {gpu}"


def _medians(rounds: list[dict[str, Any]]) -> dict[str, float]:
    keys = dict.fromkeys(k for row in rounds for k, v in row.items() if isinstance(v, float))
    return {k: float(statistics.median(row[k] for row in rounds if k in row)) for k in keys}  # SB3 may fail a round


def summary(rounds: list[dict[str, Any]], headline: str = HEADLINE) -> dict[str, float]:
    """The medians over ``rounds``, the headline schedule's figures unsuffixed, and each schedule's lowest round
    against SB3."""
    out = _medians(rounds)
    out.update(
        trained_samples_per_s=out[f"trained_samples_per_s_{headline}"],
        env_steps_per_s=out[f"env_steps_per_s_{headline}"],
    )
    if f"ratio_vs_sb3_{headline}" in out:
        out["ratio_vs_sb3"] = out[f"ratio_vs_sb3_{headline}"]
        out["ratio_vs_sb3_lowest_round"] = min(
            row[f"ratio_vs_sb3_{headline}"] for row in rounds if f"ratio_vs_sb3_{headline}" in row
        )
        for schedule in SCHEDULES:
            key = f"ratio_vs_sb3_{schedule}"
            measured = [row[key] for row in rounds if key in row]
            if measured:
                out[f"{key}_lowest_round"] = min(measured)
    return out


def report(result: dict[str, Any], n_rounds: int, thread_counts: list[int]) -> str:
    """The medians as a table, then per-round notes (SB3 failures, the raw eager loop)."""

    def per_thread_count(label: str, key: str) -> list[tuple[str, str]]:
        return [(label.format(t=t), f"{key}_{t}_threads") for t in thread_counts]

    chosen = result.get("chosen_schedule")

    def per_schedule(label: str, key: str) -> list[tuple[str, str]]:
        return [
            (label.format(s=what + (" [chosen by auto]" if name == chosen else "")), key.format(name=name))
            for name, (what, _) in SCHEDULES.items()
        ]

    rows: list[tuple[str, str]] = [
        *per_schedule("end to end, {s}: trained samples/s", "trained_samples_per_s_{name}"),
        *per_schedule("end to end, {s}: env steps/s", "env_steps_per_s_{name}"),
        *per_schedule("  learner torch threads (auto), {s}", "torch_threads_{name}"),
        *per_thread_count("learner alone, {t} thread(s): updates/s", "learner_only_updates_per_s"),
        *per_thread_count("GEMM rate at the update's shapes, {t} thread(s): GFLOP/s", "gemm_gflops"),
        *per_thread_count("ceiling (GEMMs only), {t} thread(s): updates/s", "ceiling_updates_per_s"),
        ("  FLOPs of one update (GFLOP)", "update_gflop"),
        *per_schedule("end to end / learner alone (same threads), {s}", "fraction_of_learner_only_{name}"),
        *per_schedule("  its own learner alone right after it, {s}: updates/s", "learner_alone_updates_per_s_{name}"),
        *per_schedule("end to end / its own learner alone right after it, {s}", "fraction_of_own_learner_{name}"),
        *per_schedule("end to end / ceiling (same threads), {s}", "fraction_of_ceiling_{name}"),
        ("sampling alone, 1 env runner: env steps/s", "sampler_env_steps_per_s_1_runner"),
        ("sampling alone, 2 env runners: env steps/s", "sampler_env_steps_per_s_2_runners"),
        ("replay buffer bytes / transition", "buffer_bytes_per_transition"),
        ("  raw float32 bytes / transition", "raw_bytes_per_transition"),
        ("peak RSS of the driver (MB)", "peak_rss_mb"),
        *per_thread_count("SB3 SAC before ours, {t} thread(s): trained samples/s", "sb3_before_trained_samples_per_s"),
        *per_thread_count("SB3 SAC after ours, {t} thread(s): trained samples/s", "sb3_after_trained_samples_per_s"),
        ("SB3 SAC at its best thread count and turn: trained samples/s", "sb3_trained_samples_per_s"),
        *per_schedule("ours / SB3 best, {s}: median of rounds", "ratio_vs_sb3_{name}"),
        *per_schedule("ours / SB3 best, {s}: lowest round", "ratio_vs_sb3_{name}_lowest_round"),
        ("ours at the chosen schedule / SB3 best: median of rounds", "ratio_vs_sb3"),
        ("ours at the chosen schedule / SB3 best: lowest round", "ratio_vs_sb3_lowest_round"),
        ("design's 1M-step run at the chosen schedule's rate (hours)", "reference_run_hours"),
        ("study: one trial, env steps/s", "study_env_steps_per_s"),
        ("study: trials", "study_trials"),
        ("study: trials at a time on this machine", "study_concurrent_trials"),
        ("study: wall time (hours)", "study_hours"),
    ]
    lines = [f"{result['machine']}; learner on {result['device']}", f"medians over {n_rounds} rounds:"]
    if "chosen_schedule_label" in result:
        rates = ", ".join(f"{k} {v:,.0f}" for k, v in result.get("chosen_schedule_rates", {}).items())
        what = SCHEDULES[chosen][0] if chosen else f"{result['chosen_schedule_label']} (not a schedule timed here)"
        lines.append(f"resources.schedule auto chose: {what} (its own timing: {rates})")
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
