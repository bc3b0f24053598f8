"""``resources.schedule: auto``: the sampling schedule and learner threads a run trains with, chosen by timing
them on this machine at the run's own shapes.

Which is fastest depends on the machine, not on the algorithm: on one 2-core CPU a second learner thread
collapses whenever an env runner takes the other core (overlapped sampling with one thread wins), on another
the learner alone gains 1.6x from it and sampling in the learner's process between updates wins
(benchmarks/README.md, "Schedules"). So each candidate that fits the CPUs is built at the run's networks, batch,
population and data, trained for a few rounds past a short fill of its replay buffer, and timed, twice, the
second pass in reverse order (a machine whose speed drifts favours no candidate). Where local candidates come
within ``SIDE_BY_SIDE_WITHIN`` of the fastest mean, one pass of one candidate can move by more than that (14-25%
seen on a 2-core VM), so those are built together and timed again in alternating slices of half a second
(``side_by_side``): the machine's drift then falls on each alike. The fastest is taken, and the figures are kept
in a cache file per machine and shapes, so later runs of the same shapes start at once.
The run's experiment records the choice (``resources.schedule``, its CPU settings and envs per runner), so a
resume trains with the same schedule, whatever the machine measures then.

Where a sampling round has several env steps (``sac.rollout_fragment_length`` > 1, one agent), local sampling is
also tried as one step of that many envs side by side (``num_envs_per_env_runner``, with a fragment of 1): the
round keeps its env steps, gradient steps and weight sync, and the actor's forward pass, the connectors and the
runner's bookkeeping run once per round instead of once per env step (on a 2-core CPU 0.33 instead of 0.78 ms
per env step for 8 envs). Its transitions come from that many episodes at once instead of one, so its numbers
differ from one env's, as another schedule's do.

Only ``trainer.train`` on a Ray instance of its own chooses: there the machine's CPUs are the run's. On a
joined cluster, and for the trials of a sweep (which fill the cores side by side), "auto" keeps the schedule
the runner settings describe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from envs.features import cache_root
from trainer.experiment.config import Experiment
from trainer.experiment.loading import apply_overrides, experiment_from_dict
from trainer.experiment.resources import AUTO
from trainer.runtime.resources import cpu_model_and_flags
from trainer.runtime.run_dir import write_atomic

MAX_THREADS = 8  # learner threads tried at most; small SAC networks gain nothing from more on a CPU
MEASURE_SECONDS = 4.0  # timed per candidate and pass, after its warm-up (1.5 s timings of one schedule differed by 25%)
PASSES = 2  # timings per candidate, in alternating order (_timed)
SIDE_BY_SIDE_WITHIN = 0.15  # local candidates this close to the fastest mean are timed again side by side
SIDE_BY_SIDE_SECONDS = 8.0  # timed per candidate side by side, in slices of SLICE_SECONDS
SLICE_SECONDS = 0.5
SIDE_BY_SIDE_MAX = 3  # at most this many (the fastest means) are built together
OVERLAP = "resources.overlap_sampling"
ENVS = "resources.num_envs_per_env_runner"
FRAGMENT = "sac.rollout_fragment_length"
# A sampling round of 2 to this many env steps is also tried as one step of that many envs side by side.
MAX_ENVS = 16
# Settings that place a run's work: one given in the experiment (even at its default value) is the user's
# placement, and the schedule is then what the settings describe.
PLACEMENT = frozenset(
    {
        "schedule",
        "num_env_runners",
        "num_envs_per_env_runner",
        "num_cpus_per_env_runner",
        "num_learners",
        "num_gpus_per_learner",
        "num_cpus_per_learner",
        "torch_threads",
        "custom_resources_per_env_runner",
        "custom_resources_per_learner",
        "overlap_sampling",
    }
)


# side_by_side's signature: the experiments by label and a stop flag -> their rates (None: stopped)
SideBySide = Callable[[dict[str, Experiment], Callable[[], bool]], dict[str, float] | None]


def cache_file() -> Path:
    """Where measured schedules are kept (beside the feature cache)."""
    return cache_root() / "schedules.json"


def is_open(exp: Experiment) -> bool:
    """Whether the experiment leaves the schedule to a measurement: ``auto`` and none of its ``PLACEMENT``
    settings given (a recorded run's experiment gives them all, so a resume is never measured)."""
    r = exp.resources
    return r.schedule == AUTO and not (r.model_fields_set & PLACEMENT)


def candidates(cpus: int, round_steps: int = 1) -> dict[str, dict[str, Any]]:
    """The schedules that fit ``cpus`` CPUs, by label, as experiment overrides: local sampling at 1, 2, 4, ...
    learner threads; where a sampling round has several env steps (``round_steps``, the experiment's
    ``sac.rollout_fragment_length``), local sampling of the round as one step of that many envs side by side;
    one synchronous remote runner with a learner of the remaining CPUs (which gets the runner's CPU too while it
    waits: ``ResourcesConfig.learner_torch_threads``); one overlapping runner with a learner of the remaining
    CPUs."""
    counts = sorted({t for t in (1, 2, 4, 8) if t <= min(cpus, MAX_THREADS)} | {min(cpus, MAX_THREADS)})
    envs = round_steps if 2 <= round_steps <= MAX_ENVS else None
    out: dict[str, dict[str, Any]] = {}
    for t in counts:
        local = {
            "resources.schedule": "local",
            "resources.num_env_runners": 0,
            OVERLAP: False,
            "resources.num_cpus_per_learner": t,
        }
        out[f"local, {t} learner thread(s)"] = local
        if envs is not None:
            out[f"local, {t} learner thread(s), {envs} envs"] = {**local, ENVS: envs, FRAGMENT: 1}
    for t in counts:
        if t >= 2:
            base = {"resources.num_env_runners": 1, "resources.num_cpus_per_learner": t - 1}
            out[f"remote, {t} learner thread(s)"] = {**base, "resources.schedule": "remote", OVERLAP: False}
            out[f"overlap, {t - 1} learner thread(s)"] = {**base, "resources.schedule": "overlap", OVERLAP: True}
    return out


def round_steps(exp: Experiment) -> int:
    """Env steps per sampling round that ``candidates`` may step as one batch of envs: the experiment's
    ``sac.rollout_fragment_length`` for one agent (1 for a population, whose env already batches its agents)."""
    return exp.sac.rollout_fragment_length if exp.sac.population is None else 1


def with_overrides(exp: Experiment, overrides: dict[str, Any]) -> Experiment:
    return experiment_from_dict(apply_overrides(exp.model_dump(mode="json"), overrides), exp.name)


def _probe(exp: Experiment) -> Any:
    """``exp`` built, its buffer filled to one batch and warmed up for two rounds of updates."""
    from trainer.rl.sac_config import build_sac_config

    probe = with_overrides(
        exp,
        {"sac.learning_starts": exp.sac.batch_size, "model.init_from": None, "checkpoint.frequency": 0},
    )
    algo = build_sac_config(probe).build_algo()
    try:
        while algo.updates_lifetime == 0:
            algo.training_step()
        for _ in range(2):
            algo.training_step()
    except BaseException:
        algo.stop()
        raise
    return algo


def _rounds(algo: Any, seconds: float, min_rounds: int) -> tuple[float, float]:
    """Trained samples and seconds of sampling rounds run for at least ``seconds`` and ``min_rounds``."""
    u0, t0, rounds = algo.updates_lifetime, time.perf_counter(), 0
    while rounds < min_rounds or time.perf_counter() - t0 < seconds:
        algo.training_step()
        rounds += 1
    agents = len(algo.population_seeds or [None])
    return (algo.updates_lifetime - u0) * agents * algo.config.total_train_batch_size, time.perf_counter() - t0


def measure(exp: Experiment, seconds: float = MEASURE_SECONDS) -> float:
    """Trained samples/s of ``exp`` on this machine: built, its buffer filled to one batch, warmed up for two
    rounds of updates, then timed for at least ``seconds`` (and four rounds). Nothing of it is kept."""
    algo = _probe(exp)
    try:
        samples, dt = _rounds(algo, seconds, 4)
        return samples / dt
    finally:
        algo.stop()


def side_by_side(
    exps: dict[str, Experiment],
    stopped: Callable[[], bool] = lambda: False,
    seconds: float = SIDE_BY_SIDE_SECONDS,
    slice_seconds: float = SLICE_SECONDS,
) -> dict[str, float] | None:
    """Trained samples/s of local schedules built together in this process and timed in turns of
    ``slice_seconds`` (each turn's order the reverse of the last's, each at its learner's torch threads) until
    each has run ``seconds``: a drifting machine slows each alike. None when ``stopped()`` turned true. The
    process' threads are restored and every probe built is stopped, whatever happens."""
    import torch

    from trainer.runtime.threads import set_torch_threads

    threads = torch.get_num_threads()
    algos: dict[str, Any] = {}
    try:
        for label, exp in exps.items():
            if stopped():
                return None
            algos[label] = _probe(exp)
        samples, spent = dict.fromkeys(algos, 0.0), dict.fromkeys(algos, 0.0)
        turn = 0
        while min(spent.values()) < seconds:
            order = list(algos) if turn % 2 == 0 else list(reversed(algos))
            for label in order:
                if stopped():
                    return None
                set_torch_threads(algos[label].torch_threads)
                n, dt = _rounds(algos[label], slice_seconds, 1)
                samples[label] += n
                spent[label] += dt
            turn += 1
        return {label: samples[label] / spent[label] for label in algos}
    finally:
        for algo in algos.values():
            with contextlib.suppress(Exception):  # one probe failing to stop must not keep the others running
                algo.stop()
        set_torch_threads(threads)


def machine() -> str:
    """The CPU model, its logical CPUs and torch's version: what the measured figures depend on."""
    import torch

    return f"{cpu_model_and_flags()[0]} | {os.cpu_count()} CPUs | torch {torch.__version__}"


# What a schedule costs in this code (its sampling loop, its candidates): a new value measures again rather than
# read figures of code that sampled otherwise.
TIMING_VERSION = 3


def shape_key(exp: Experiment, cpus: int) -> str:
    """What the figures depend on besides the machine: networks, batch, replay ratio, population, data, the
    CPUs shared out and ``TIMING_VERSION``."""
    parts = {
        "timing": TIMING_VERSION,
        "model": exp.model.model_dump(mode="json", exclude={"init_from"}),
        "sac": {k: getattr(exp.sac, k) for k in ("batch_size", "training_intensity", "rollout_fragment_length")},
        "population": exp.sac.population,
        "data": {"source": exp.data.source, "features": exp.data.features},
        "obs_filter": exp.obs_filter.model_dump(mode="json"),
        "cpus": cpus,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_cache(path: Path, key: str, labels: set[str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The whole cache and this key's entry when its rates cover exactly ``labels`` with numbers, and its
    side-by-side rates (if any) some of them (else None: a missing, damaged or other-version file is measured
    again and rewritten)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    entry = data.get(key)
    entry = entry if isinstance(entry, dict) else {}
    rates, paired = entry.get("rates"), entry.get("side_by_side", {})
    ok = all(
        isinstance(d, dict)
        and (set(d) == labels if d is rates else set(d) <= labels)
        and all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in d.values())
        for d in (rates, paired)
    )
    return data, (entry if ok else None)


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    # a cache that cannot be written costs a measurement next time, nothing else
    with contextlib.suppress(OSError):
        write_atomic(path, json.dumps(data, indent=1, sort_keys=True))


def _timed(
    exp: Experiment,
    options: dict[str, dict[str, Any]],
    measure_fn: Callable[[Experiment], float],
    log: Callable[[str], None],
    stopped: Callable[[], bool],
) -> dict[str, float] | None:
    """Each option's mean rate over ``PASSES`` timings, the passes in alternating order (first to last, then last
    to first): a machine whose speed drifts during the timing favours none of them. A probe that fails is skipped
    from then on; None when ``stopped()`` turned true."""
    timings: dict[str, list[float]] = {}
    failed: set[str] = set()
    for n in range(PASSES):
        order = list(options.items()) if n % 2 == 0 else list(reversed(options.items()))
        for label, overrides in order:
            if label in failed:
                continue
            if stopped():
                return None
            try:
                rate = measure_fn(with_overrides(exp, overrides))
            except Exception as exc:  # a schedule that cannot run here is not a candidate
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                log(f"  {label}: could not be timed ({reason}); skipped")
                failed.add(label)
                timings.pop(label, None)
                continue
            timings.setdefault(label, []).append(rate)
            mean = sum(timings[label]) / len(timings[label])
            again = f" (mean of {len(timings[label])}: {mean:,.0f})" if n else ""
            log(f"  {label}: {rate:,.0f} trained samples/s{again}")
    return {label: sum(v) / len(v) for label, v in timings.items()}


def choose(
    exp: Experiment,
    cpus: int,
    measure_fn: Callable[[Experiment], float] = measure,
    cache: Path | None = None,
    log: Callable[[str], None] = print,
    fits: Callable[[Experiment], bool] = lambda exp: True,
    stopped: Callable[[], bool] = lambda: False,
    side_by_side_fn: SideBySide | None = None,
) -> Experiment:
    """``exp`` with its schedule decided: measured (or read from the cache) when ``is_open(exp)`` and more than
    one candidate for ``cpus`` fits (``fits``: the memory a candidate's processes need); otherwise the schedule
    its runner settings describe. Each candidate is timed ``PASSES`` times (``_timed``); when the fastest mean is
    a local candidate, the local ones within ``SIDE_BY_SIDE_WITHIN`` of it are timed again side by side
    (``side_by_side_fn``, e.g. ``side_by_side``; None: never) and the fastest there is taken. A candidate whose
    probe fails is skipped with one line; when ``stopped()`` turns true (a signal), the measuring stops and nothing
    is cached."""
    in_effect = {"resources.schedule": exp.resources.schedule_in_effect()}
    if not is_open(exp):
        return with_overrides(exp, in_effect) if exp.resources.schedule == AUTO else exp
    options = {
        label: o
        for label, o in candidates(cpus, round_steps(exp)).items()
        if (_is_local(o) and ENVS not in o) or fits(with_overrides(exp, o))
    }
    if len(options) == 1:
        return with_overrides(exp, next(iter(options.values())))
    path = cache or cache_file()
    key = f"{machine()} | {shape_key(exp, cpus)}"
    store, entry = _read_cache(path, key, set(options))
    if entry is None:
        log(f"schedule: timing {len(options)} schedules at this run's shapes on {cpus} CPUs (once per machine, shapes)")
        rates = _timed(exp, options, measure_fn, log, stopped)
        if rates is None:
            return with_overrides(exp, in_effect)
        if not rates:
            log("schedule: no schedule could be timed; sampling in the learner's process (local)")
            return with_overrides(exp, next(iter(options.values())))
        paired = _paired(exp, options, rates, side_by_side_fn, log, stopped)
        if paired is None:
            return with_overrides(exp, in_effect)
        if set(rates) == set(options):
            store[key] = {"rates": rates, "side_by_side": paired, "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
            _write_cache(path, store)
        where = f"kept in {path}"
    else:
        rates, paired = entry["rates"], entry.get("side_by_side", {})
        where = f"measured {entry.get('measured', '')}, from {path}"
    best = max(paired or rates, key=(paired or rates).__getitem__)
    if paired:  # the side-by-side figures decided: they lead, then every candidate's pass mean
        means = ", ".join(f"{label} {rate:,.0f}" for label, rate in rates.items())
        others = ", ".join(f"{label} {rate:,.0f}" for label, rate in paired.items() if label != best)
        figures = f"{paired[best]:,.0f} trained samples/s side by side; {others}; means of the passes: {means}"
    else:
        others = ", ".join(f"{label} {rate:,.0f}" for label, rate in rates.items() if label != best)
        figures = f"{rates[best]:,.0f} trained samples/s; {others}"
    log(f"schedule: {best} ({figures}; {where}); force one with --set resources.schedule=local|remote|overlap")
    return with_overrides(exp, options[best])


def _paired(
    exp: Experiment,
    options: dict[str, dict[str, Any]],
    rates: dict[str, float],
    side_by_side_fn: SideBySide | None,
    log: Callable[[str], None],
    stopped: Callable[[], bool],
) -> dict[str, float] | None:
    """The side-by-side rates of the local candidates within ``SIDE_BY_SIDE_WITHIN`` of the fastest mean (the
    ``SIDE_BY_SIDE_MAX`` fastest of them, fastest first), when that is a local one and another is that close ({}
    otherwise, or when the timing fails); None when stopped.

    Remote candidates are not paired: two probes' runner actors at once would not fit the CPUs Ray granted."""
    ranked = sorted(rates, key=rates.__getitem__, reverse=True)
    if side_by_side_fn is None or not _is_local(options[ranked[0]]):
        return {}
    floor = (1 - SIDE_BY_SIDE_WITHIN) * rates[ranked[0]]
    close = [label for label in ranked if _is_local(options[label]) and rates[label] >= floor][:SIDE_BY_SIDE_MAX]
    if len(close) < 2:
        return {}
    within = f"{SIDE_BY_SIDE_WITHIN:.0%}"
    log(f"schedule: {len(close)} local schedules within {within} of the fastest; timing them side by side")
    try:
        paired = side_by_side_fn({label: with_overrides(exp, options[label]) for label in close}, stopped)
    except Exception as exc:  # the pass means stand
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        log(f"  side by side: could not be timed ({reason}); the means decide")
        return {}
    if paired is None:
        return None
    for label, rate in paired.items():
        log(f"  {label}: {rate:,.0f} trained samples/s side by side")
    return paired


def _is_local(overrides: dict[str, Any]) -> bool:
    """Whether a candidate samples in the learner's process (no env runner actors)."""
    return overrides.get("resources.num_env_runners", 0) == 0
