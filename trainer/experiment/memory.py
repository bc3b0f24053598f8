"""How much memory a run, or each trial of a sweep, will need: estimated from the experiment and the size of its
price data before the features or the replay buffer are allocated, and refused when it cannot fit.

What is counted (the arrays that grow with the settings; the processes' fixed cost, libraries and networks, is
not, so the figure is a lower bound):

- the replay buffer, preallocated in full when the algorithm is built (``trainer.rl.buffer``): per transition
  and agent ``obs``, ``next_obs``, ``actions``, ``rewards`` and ``terminateds`` as float32, times
  ``sac.buffer_size`` transitions and the ``sac.population`` agents;
- the market arrays each process that runs envs loads (``envs.market``): features float32, returns and prices
  float64, per day and asset; and each env copy's per-day arrays (``envs.portfolio``);
- computing the features once (the first process that loads the data; later ones read the cache): about
  ``3 F + 2`` float64 temporaries per day and asset for ``F`` features (measured: 228 bytes with 9 features).

A run trains in the ``trainer.train`` process: it computes the features, then builds the buffer. A sweep's
driver computes the features and each trial holds its own buffer, so the trials that run at once add up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from envs.features import FeatureConfig
from trainer.experiment.config import Experiment
from trainer.experiment.schema import ExperimentError
from trainer.runtime.resources import THIS_MACHINE, available_memory, trials_at_once

FLOAT32, FLOAT64 = 4, 8
FEATURES_KEY = "data.features"
BUFFER_SIZE_KEY = "sac.buffer_size"
POPULATION_KEY = "sac.population"
CONCURRENCY_KEY = "sweep.max_concurrent_trials"
ENVS_KEY = "resources.num_envs_per_env_runner"
RUNNERS_KEY = "resources.num_env_runners"


def observation_size(n_assets: int, features: str | None = None) -> int:
    """One agent's observation: ``N * F`` features, ``S`` shared features, then ``N + 1`` weights
    (``envs.portfolio``'s space, ``envs.layout``) for the feature set ``features`` (None: the default)."""
    cfg = FeatureConfig.of(features)
    return n_assets * len(cfg.names) + len(cfg.shared_names) + n_assets + 1


def transition_bytes(n_assets: int, features: str | None = None) -> int:
    """One agent's transition in the replay buffer: obs and next_obs, the ``N + 1`` actions, reward, terminated."""
    return (2 * observation_size(n_assets, features) + (n_assets + 1) + 2) * FLOAT32


def fmt_bytes(n: float) -> str:
    """``1.7 GB``: decimal units."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class MemoryEstimate:
    """The memory one run or trial needs (see the module docstring for what counts)."""

    transitions: int  # sac.buffer_size (the largest a sweep can give a trial)
    agents: int  # sac.population (1 without one)
    n_days: int
    n_assets: int
    env_runners: int  # remote env runners of a trial (processes that load the market too)
    envs_per_runner: int  # env copies per env runner (num_envs_per_env_runner x agents)
    main_envs: int  # env copies in the trial's main process (evaluation, and sampling without remote runners)
    features: str | None = None  # the feature set (the largest a sweep can give a trial; None: the default)

    @property
    def n_features(self) -> int:
        """Values per day and asset of the feature arrays (the few shared values counted as one more)."""
        cfg = FeatureConfig.of(self.features)
        return len(cfg.names) + (1 if cfg.shared_names else 0)

    @property
    def buffer(self) -> int:
        return self.transitions * self.agents * transition_bytes(self.n_assets, self.features)

    @property
    def market(self) -> int:
        """The market arrays of one process."""
        return self.n_days * self.n_assets * (self.n_features * FLOAT32 + 2 * FLOAT64)

    @property
    def env_copy(self) -> int:
        """One env copy's own per-day arrays: asset growth (``N + 1``), Equal Weight's gross and turnover."""
        return self.n_days * (self.n_assets + 3) * FLOAT64

    @property
    def feature_build(self) -> int:
        return self.n_days * self.n_assets * (3 * self.n_features + 2) * FLOAT64

    @property
    def processes(self) -> int:
        """A trial's processes that load the market: its main process and its remote env runners."""
        return 1 + self.env_runners

    @property
    def env_copies(self) -> int:
        """A trial's env copies, all its processes together."""
        return self.main_envs + self.env_runners * self.envs_per_runner

    def rest(self) -> int:
        """A trial's memory but its replay buffer: market arrays and env copies."""
        return self.processes * self.market + self.env_copies * self.env_copy

    def trial(self) -> int:
        return self.buffer + self.rest()

    def total(self, trials: int | None) -> int:
        """The peak: one run (``trials`` None: the features are computed in its own process, before its buffer
        exists), or a sweep's driver (market arrays, the features computed once) and ``trials`` trials at once."""
        if trials is None:
            return max(self.market + self.feature_build, self.trial())
        return self.market + max(self.feature_build, trials * self.trial())

    def parts(self) -> str:
        """What a trial's figure is made of, naming the settings."""
        agents = f" x {self.agents} agents ({POPULATION_KEY})" if self.agents > 1 else ""
        processes = f"{self.processes} process" + ("es" if self.processes > 1 else "")
        copies = f"{self.env_copies:,} env cop" + ("ies" if self.env_copies > 1 else "y")
        return (
            f"replay buffer {fmt_bytes(self.buffer)}: {BUFFER_SIZE_KEY} {self.transitions:,} transitions{agents} x "
            f"{transition_bytes(self.n_assets, self.features):,} bytes; "
            f"features {fmt_bytes(self.processes * self.market)} "
            f"({self.n_days:,} days x {self.n_assets:,} assets, {processes}); {copies} "
            f"{fmt_bytes(self.env_copies * self.env_copy)}"
        )


def estimate_memory(exp: Experiment, n_days: int, n_assets: int) -> MemoryEstimate:
    """The memory of one run or trial of ``exp`` on prices of ``n_days`` x ``n_assets``.

    A sweep that varies ``sac.buffer_size`` is counted at its largest value (every trial may get it).
    """
    swept = exp.sweep.extremes().get(BUFFER_SIZE_KEY, [])
    transitions = max([exp.sac.buffer_size, *(int(v) for v in swept)])
    agents = exp.sac.population or 1
    features = max(
        [exp.data.features, *exp.sweep.extremes().get(FEATURES_KEY, [])], key=lambda f: observation_size(1, f)
    )
    res = exp.resources
    sampling_here = res.num_env_runners == 0  # without remote env runners the main process samples
    return MemoryEstimate(
        transitions=transitions,
        agents=agents,
        n_days=n_days,
        n_assets=n_assets,
        env_runners=res.num_env_runners,
        envs_per_runner=res.num_envs_per_env_runner * agents,
        main_envs=agents + (res.num_envs_per_env_runner * agents if sampling_here else 0),
        features=features,
    )


def check_memory(
    est: MemoryEstimate, available: int, where: str, trials: int | None = None, why_trials: str = ""
) -> None:
    """Refuse what cannot fit in ``available`` bytes, with the figure and the setting to change.

    Args:
        est: the estimate of one run or trial.
        available: the memory available where it runs.
        where: where that is, for the message (``"this machine"``).
        trials: None for one ``trainer.train`` run; for a sweep, the trials that run at once.
        why_trials: for a sweep, why that many run at once (``"sweep.max_concurrent_trials=2"``).

    Raises:
        ExperimentError: the estimate is above ``available``.
    """
    need = est.total(trials)
    if need <= available:
        return
    fixes = []
    fits = _largest(lambda t: replace(est, transitions=t).total(trials) <= available, est.transitions)
    if fits >= 1:
        fixes.append(f"lower {BUFFER_SIZE_KEY} (at most {fits:,} transitions fit)")
    if est.agents > 1:
        fixes.append(f"lower {POPULATION_KEY}")
    at_once = next((m for m in range((trials or 1) - 1, 0, -1) if est.total(m) <= available), None)
    if at_once is not None:
        fixes.append(f"set {CONCURRENCY_KEY}={at_once}")
    if fits < 1:  # no buffer fits beside the envs: fewer of them
        fixes += [
            f"lower {key}"
            for key, more in ((ENVS_KEY, est.envs_per_runner > est.agents), (RUNNERS_KEY, est.env_runners > 0))
            if more
        ]
    if est.market + est.feature_build > available or not fixes:
        fix = (
            f"the price data alone ({est.n_days:,} days x {est.n_assets:,} assets) does not fit: use fewer assets or "
            "a shorter history"
        )
    else:
        fix = ", ".join(fixes[:-1]) + (" or " if len(fixes) > 1 else "") + fixes[-1]
    if trials is None:
        who = f"this run needs about {fmt_bytes(need)} of memory ({est.parts()})"
    elif trials == 1:
        who = f"each trial of the sweep needs about {fmt_bytes(need)} of memory ({est.parts()})"
    else:
        who = (
            f"the sweep needs about {fmt_bytes(need)} of memory: {trials} trial(s) at once ({why_trials}) of about "
            f"{fmt_bytes(est.trial())} each ({est.parts()})"
        )
    raise ExperimentError(f"{who} but {where} has {fmt_bytes(available)} available; {fix}")


def _largest(fits: Callable[[int], bool], above: int) -> int:
    """The largest ``n`` below ``above`` for which ``fits(n)`` holds (``fits`` is monotonic), 0 when none does."""
    low, high = 0, above  # fits(low) is assumed, fits(high) is false
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low if fits(low) else 0


def describe(est: MemoryEstimate, checked_here: bool) -> str:
    """The estimate in one line, for the sweep plan, with what it is checked against."""
    line = f"about {fmt_bytes(est.trial())} per trial ({est.parts()})"
    if not checked_here:
        return line + "; not checked: the trials run on the Ray cluster's nodes"
    return line + f"; {THIS_MACHINE} has {fmt_bytes(available_memory())} available"


def sweep_trials_at_once(
    exp: Experiment, need: dict[str, float] | None = None, cluster: dict[str, float] | None = None
) -> tuple[int, str]:
    """How many of a sweep's trials run at once, and why (for ``check_memory``).

    Args:
        exp: the experiment.
        need: what each trial asks of Ray (the plan's ``resources_per_trial``), with ``cluster``.
        cluster: the cluster's resources; None before Ray starts: then ``sweep.max_concurrent_trials`` trials, or
            one when it is not set (how many more the cluster runs is known once it is up).
    """
    n, limit = exp.sweep.n_trials(exp.sac.population), exp.sweep.max_concurrent_trials
    count = min(n, limit or 1) if cluster is None else trials_at_once(need or {}, cluster, n, limit)
    if count == n:
        return count, f"all {n} trials of the sweep"
    if count == limit:
        return count, f"{CONCURRENCY_KEY}={limit}"
    return count, "as many as the Ray cluster's resources allow"
