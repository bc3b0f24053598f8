"""What a run or a sweep asks of the Ray cluster, checked against what the cluster has before anything starts;
the memory this machine has available, and how many trials run at once."""

from __future__ import annotations

import math
import platform
from pathlib import Path

from trainer.runtime.errors import ExperimentError

THIS_MACHINE = "this machine"


def available_memory() -> int:
    """Bytes of memory this machine can give a new allocation now (free, plus caches it can drop)."""
    # Ray ships psutil in its own third-party folder, which importing Ray puts on sys.path: Ray first.
    import ray  # noqa: F401, I001
    import psutil

    return int(psutil.virtual_memory().available)


def cpu_model_and_flags() -> tuple[str, set[str]]:
    """This machine's CPU model and feature flags (``/proc/cpuinfo``; where there is none, what ``platform`` says
    and no flags)."""
    model, flags = platform.processor() or platform.machine() or "unknown CPU", set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return model, flags
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    return model, flags


def trials_at_once(need: dict[str, float], cluster: dict[str, float], n_trials: int, limit: int | None) -> int:
    """How many trials of a sweep Tune runs at once: as many as the cluster's totals of every resource a trial
    asks for allow, at most ``limit`` (``sweep.max_concurrent_trials``) and the sweep's ``n_trials``; at least 1.
    """
    bounds = [n_trials, *([limit] if limit else [])]
    bounds += [math.floor(cluster.get(key, 0.0) / amount + 1e-9) for key, amount in need.items() if amount > 0]
    return max(1, min(bounds))


def run_request(bundles: list[dict[str, float]]) -> dict[str, float]:
    """What a ``trainer.train`` run asks of the Ray cluster, from its algorithm's resource bundles.

    The first bundle is the trial's main process (``default_resource_request``): here it is this driver, which
    Ray does not schedule, so only its GPU counts (a learner in this process trains on this machine's GPU); the
    other bundles are the env runner and remote learner actors Ray must place.
    """
    need: dict[str, float] = {}
    main, *actors = bundles
    for bundle in [{k: v for k, v in main.items() if k == "GPU"}, *actors]:
        for key, amount in bundle.items():
            need[key] = need.get(key, 0.0) + amount
    return {k: v for k, v in need.items() if v > 0}


def check_request(need: dict[str, float], cluster: dict[str, float], who: str, never: str) -> None:
    """Refuse a resource request (``need``) larger than the Ray cluster's totals, naming the setting to change.

    Args:
        need: resource -> amount (``CPU``, ``GPU``, custom resources).
        cluster: ``ray.cluster_resources()``.
        who: what asks, for the message (``"each trial"``, ``"this run"``).
        never: what would happen instead, for the message.

    Raises:
        ExperimentError: the first resource the cluster does not have enough of.
    """
    for key, amount in need.items():
        have = cluster.get(key, 0.0)
        if amount > have:
            if key == "GPU":
                hint = "train on CPUs with --set resources.num_gpus_per_learner=0"
            elif key == "CPU":
                hint = (
                    "it takes one CPU per env runner and per remote learner: use fewer, e.g. --set "
                    "resources.num_env_runners=1"
                )
            else:
                hint = (
                    f"'{key}' is a custom resource the experiment asks for (resources.custom_resources_per_learner, "
                    f"resources.custom_resources_per_env_runner): on nodes without it, --set them to {{}}"
                )
            raise ExperimentError(
                f"{who} needs {key}={amount:g} but the Ray cluster has {key}={have:g} in total; {never} ({hint}; "
                "or add nodes that have it)"
            )
