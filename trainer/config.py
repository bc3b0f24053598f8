"""The experiment schema (closed, validated), loading experiment files and ``--set`` overrides.

An experiment is a YAML file in ``tune_configs/`` (``tune_configs/<name>.yaml``). Unknown keys and
impossible values are errors naming the file and the key. ``trainer.sac_config.build_sac_config`` turns a
validated experiment into RLlib's ``SACConfig``.

The sweep schema (``SweepConfig``: search space, scheduler, selection metric) lives here too, so every
config a sweep can produce is validated by the same models before any trial starts.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import math
import numbers
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from envs.data import SP500, SPLITS, TRAIN, VALIDATION
from envs.folds import CONFIG_DIR, SCHEMES, FoldSpec, resolve_experiment_path
from envs.rewards import REWARD_CLIP, REWARD_NAMES
from envs.settings import ACTIONS, SETTING_NAMES, TILT_REFERENCES, PortfolioSettings
from trainer import metrics as M


class ExperimentError(ValueError):
    """A bad experiment file or override; the message names the file and the key."""


class _Strict(BaseModel):
    # Infinite or NaN numbers are never meaningful settings (YAML's .inf / .nan, or "inf" via --set).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _auto_or_number(value: Any, info: ValidationInfo) -> Any:
    """Accept ``"auto"`` or a finite real number, with one message for anything else (not one per union member)."""
    if value == "auto" or (
        isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    ):
        return value
    raise ValueError(f"{info.field_name} must be 'auto' or a finite number, got {value!r}")


class FoldsConfig(_Strict):
    """Walk-forward folds (``envs.folds.FoldSpec``: defaults and rules live there)."""

    n_folds: int = FoldSpec.n_folds
    scheme: Literal[SCHEMES] = FoldSpec.scheme  # type: ignore[valid-type]
    test_days: int = FoldSpec.test_days
    validation_days: int = FoldSpec.validation_days
    train_days: int = FoldSpec.train_days  # rolling: the window; expanding: the minimum
    end: dt.date | None = None  # the last test window ends on or before this date (None: the data end)

    @field_validator("n_folds", "test_days", "validation_days", "train_days")
    @classmethod
    def _check(cls, v: Any, info: ValidationInfo) -> Any:
        return FoldSpec.check(str(info.field_name), v)

    def spec(self) -> FoldSpec:
        return FoldSpec.from_mapping(self.model_dump(mode="json"))


class DataConfig(_Strict):
    """Which prices, which windows, which costs, actions and reward: passed to the env (small values only).

    The portfolio settings mirror ``envs.settings.PortfolioSettings``, which declares their defaults and
    validates them (one rule, one message, whether the env is built from YAML or from a dict).
    """

    source: str = SP500
    date_format: str | None = None  # strptime format of the file's dates; None = ISO or the one that fits
    sort_dates: bool = False  # sort rows by date instead of refusing dates that are not increasing
    split_dates: dict[Literal[SPLITS], tuple[dt.date, dt.date]] | None = None  # type: ignore[valid-type]
    folds: FoldsConfig = Field(default_factory=FoldsConfig)
    fold: int | None = Field(None, strict=True)  # a walk-forward fold of ``folds`` instead of the plain split
    cost_bps: float = PortfolioSettings.cost_bps
    reward: Literal[REWARD_NAMES] = PortfolioSettings.reward  # type: ignore[valid-type]
    episode_len: int = PortfolioSettings.episode_len
    temperature: float = PortfolioSettings.temperature
    action: Literal[ACTIONS] = PortfolioSettings.action  # type: ignore[valid-type]
    tilt_reference: Literal[TILT_REFERENCES] = PortfolioSettings.tilt_reference  # type: ignore[valid-type]
    tilt_scale: float = PortfolioSettings.tilt_scale
    no_trade_band: float = PortfolioSettings.no_trade_band
    rebalance_fraction: float = PortfolioSettings.rebalance_fraction

    @field_validator("split_dates")
    @classmethod
    def _all_splits(cls, v: dict | None) -> dict | None:
        if v is not None and set(v) != set(SPLITS):
            raise ValueError(f"give all three of {', '.join(SPLITS[:-1])} and {SPLITS[-1]} as [start, end]")
        return v

    @field_validator("cost_bps", "episode_len", "temperature", "tilt_scale", "no_trade_band", "rebalance_fraction")
    @classmethod
    def _setting(cls, v: Any, info: ValidationInfo) -> Any:
        return PortfolioSettings.check(str(info.field_name), v)

    @model_validator(mode="after")
    def _fold_in_range(self) -> DataConfig:
        if self.fold is not None:
            if self.split_dates is not None:
                raise ValueError(
                    "give data.split_dates or data.fold, not both: a fold's windows replace the split dates"
                )
            if not 0 <= self.fold < self.folds.n_folds:
                raise ValueError(
                    f"data.fold must be in 0..{self.folds.n_folds - 1} (data.folds.n_folds is {self.folds.n_folds}), "
                    f"got {self.fold}"
                )
        return self

    def settings(self) -> PortfolioSettings:
        """The env's portfolio settings."""
        return PortfolioSettings(**{name: getattr(self, name) for name in SETTING_NAMES})

    def env_config(self, split: str = TRAIN) -> dict[str, Any]:
        """The env's keyword arguments (see ``envs.portfolio.PortfolioEnv``): small values only, so each env
        runner loads the prices and computes its windows (the plain split or fold ``fold``) itself."""
        dates = None
        if self.split_dates is not None:
            dates = {k: [a.isoformat(), b.isoformat()] for k, (a, b) in self.split_dates.items()}
        return {
            "data": self.source,
            "date_format": self.date_format,
            "sort_dates": self.sort_dates,
            "split": split,
            "split_dates": dates,
            "folds": self.folds.spec().as_dict(),
            "fold": self.fold,
            **self.settings().as_dict(),
        }


class ModelConfig(_Strict):
    """Policy and each Q network: an MLP of ``hidden`` with ``activation`` (Q nets on [obs, action])."""

    hidden: list[int] = Field(default_factory=lambda: [256, 256], min_length=1)
    activation: Literal["relu", "tanh", "silu", "elu"] = "relu"

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(h < 1 for h in v):
            raise ValueError("every hidden layer size must be >= 1")
        return v


class SACSettings(_Strict):
    actor_lr: float = Field(1e-4, gt=0)
    critic_lr: float = Field(1e-4, gt=0)
    alpha_lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(256, ge=1)
    tau: float = Field(0.005, gt=0, le=1)
    gamma: float = Field(0.99, gt=0, le=1)
    buffer_size: int = Field(200_000, ge=1)
    learning_starts: int = Field(1000, ge=0)
    # Trained samples per sampled env step: batch_size means one gradient step per env step.
    training_intensity: float = Field(256.0, gt=0)
    target_entropy: Literal["auto"] | float = "auto"
    initial_alpha: float = Field(1.0, gt=0)
    rollout_fragment_length: int = Field(1, ge=1)

    @field_validator("target_entropy", mode="before")
    @classmethod
    def _auto_or_entropy(cls, v: Any, info: ValidationInfo) -> Any:
        return _auto_or_number(v, info)

    @model_validator(mode="after")
    def _buffer_holds_a_batch(self) -> SACSettings:
        if self.buffer_size < self.batch_size:
            raise ValueError(f"buffer_size ({self.buffer_size}) must be >= batch_size ({self.batch_size})")
        return self


class ObsFilterConfig(_Strict):
    enabled: bool = True
    clip: float = Field(10.0, gt=0)


class RewardConfig(_Strict):
    """Applied when transitions enter the replay buffer (RLlib's ``clip_rewards`` is a no-op here)."""

    clip: float | None = Field(REWARD_CLIP, gt=0)
    normalize: bool = False  # divide by the running std of stored rewards, at sample time


class ResourcesConfig(_Strict):
    num_env_runners: int = Field(0, ge=0)
    num_envs_per_env_runner: int = Field(1, ge=1)
    num_cpus_per_env_runner: float = Field(1, gt=0)
    num_learners: int = Field(0, ge=0)
    num_gpus_per_learner: float = Field(0, ge=0)
    num_cpus_per_learner: float | Literal["auto"] = "auto"
    # torch threads of the learner process; None = one per process (docs/rllib-notes.md, threads).
    torch_threads: int | None = Field(None, ge=1)
    # Custom Ray resources, for deliberate placement on a cluster (see cluster.yaml): env runners ask for
    # these per runner; the learner asks for custom_resources_per_learner (the trial's main process when
    # num_learners is 0, each remote learner otherwise).
    custom_resources_per_env_runner: dict[str, float] = Field(default_factory=dict)
    custom_resources_per_learner: dict[str, float] = Field(default_factory=dict)
    # Sample the next round on the remote env runners while the learner trains on the replay buffer.
    # The in-flight round acts with weights one round older (never silently: off by default).
    overlap_sampling: bool = False

    @field_validator("num_cpus_per_learner", mode="before")
    @classmethod
    def _auto_or_cpus(cls, v: Any, info: ValidationInfo) -> Any:
        return _auto_or_number(v, info)

    @model_validator(mode="after")
    def _overlap_needs_remote_runners(self) -> ResourcesConfig:
        if self.overlap_sampling and self.num_env_runners < 1:
            raise ValueError("overlap_sampling needs num_env_runners >= 1 (remote env runners sample in parallel)")
        return self

    @model_validator(mode="after")
    def _gpu_sharing(self) -> ResourcesConfig:
        # Several learners of one trial are DDP shards; sharing a GPU between them fails in NCCL
        # (docs/rllib-notes.md, GPU learners).
        if self.num_learners > 1 and self.num_gpus_per_learner not in (0, int(self.num_gpus_per_learner)):
            raise ValueError(
                f"num_gpus_per_learner={self.num_gpus_per_learner} with num_learners={self.num_learners}: "
                "fractional GPUs are only for one learner per trial (several trials share a GPU)"
            )
        return self


class EvaluationConfig(_Strict):
    interval: int = Field(5, ge=1)  # every N training iterations (and at the end)
    split: Literal[SPLITS[1:]] = VALIDATION  # type: ignore[valid-type]


class StoppingConfig(_Strict):
    env_steps: int = Field(100_000, ge=1)
    iterations: int | None = Field(None, ge=1)
    steps_per_iteration: int = Field(1000, ge=1)  # env steps sampled per training iteration


class CheckpointConfig(_Strict):
    frequency: int = Field(10, ge=0)  # every N iterations; 0 = only at the end
    num_to_keep: int | None = Field(3, ge=1)
    save_buffer: bool = True


class DivergenceConfig(_Strict):
    # The reference run that diverged reached a critic loss of 7e12; a healthy one stays far below this.
    max_critic_loss: float = Field(1e6, gt=0)


# Experiment fields that can be swept, and where each lives in RLlib's config dict (for reading results).
SWEEPABLE: dict[str, tuple[str, ...]] = {
    "seed": ("seed",),
    "model.hidden": ("_model_config", "fcnet_hiddens"),
    "model.activation": ("_model_config", "fcnet_activation"),
    "sac.actor_lr": ("actor_lr",),
    "sac.critic_lr": ("critic_lr",),
    "sac.alpha_lr": ("alpha_lr",),
    "sac.tau": ("tau",),
    "sac.gamma": ("gamma",),
    "sac.initial_alpha": ("initial_alpha",),
    "sac.target_entropy": ("target_entropy",),
    "sac.batch_size": ("_train_batch_size_per_learner",),  # RLlib's to_dict() keeps the private name
    "sac.learning_starts": ("num_steps_sampled_before_learning_starts",),
    "sac.training_intensity": ("training_intensity",),
    "sac.buffer_size": ("replay_buffer_config", "capacity"),
    # env settings and the walk-forward fold travel in the env config (each env runner builds its own env)
    **{f"data.{name}": ("env_config", name) for name in ("fold", *SETTING_NAMES)},
}
DOMAINS = ("grid_search", "choice", "uniform", "loguniform", "randint")
# Named variants set several env settings at once; as a Tune grid they become one dimension over whole env
# configs under this key (build_sac_config expands it).
ENV_CONFIG_GRID = "data.*"
GRID_DOMAINS = ("grid_search", "choice")
REAL_DOMAINS = ("uniform", "loguniform")  # sample real numbers: not for integer keys

# What a sweep can select on (and ASHA compare): the numbers every training result reports in its portfolio
# section, by their flattened Tune keys. Registry measures that only backtests compute are not reported there.
SELECTION_METRICS: tuple[str, ...] = (
    *(m.tune_key for m in M.REGISTRY if m.compute is None or m.path),
    *(f"{M.PORTFOLIO}/{key}" for key in (M.TRAIN_SHARPE, M.TRAIN_TURNOVER)),
)


class SchedulerConfig(_Strict):
    type: Literal["asha", "fifo"] = "asha"
    # env steps before ASHA may stop a trial; None = a tenth of max_t (so it always fits the budget)
    grace_period: int | None = Field(None, ge=1)
    reduction_factor: float = Field(2.0, gt=1)
    max_t: int | None = Field(None, ge=1)  # env steps; default stopping.env_steps


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


class SweepConfig(_Strict):
    search_space: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Named sets of env settings, one grid dimension: {name: {"data.action": "tilt", ...}}
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    num_samples: int = Field(1, ge=1)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    metric: str = M.VALIDATION_SHARPE_METRIC
    mode: Literal["max", "min"] = "max"
    max_concurrent_trials: int | None = Field(None, ge=1)
    max_failures: int = Field(2, ge=0)
    checkpoint_num_to_keep: int = Field(2, ge=1)
    backtest_best: bool = True
    bootstrap_samples: int = Field(2000, ge=100)

    @field_validator("metric")
    @classmethod
    def _reported_metric(cls, v: str) -> str:
        if v not in SELECTION_METRICS:
            raise ValueError(
                f"unknown metric {v!r}: a sweep selects on a number every training result reports; choose one "
                f"of {', '.join(SELECTION_METRICS)}"
            )
        return v

    @model_validator(mode="after")
    def _domains(self) -> SweepConfig:
        for key, spec in self.search_space.items():
            if key not in SWEEPABLE:
                raise ValueError(f"search_space key '{key}' cannot be swept; sweepable: {', '.join(SWEEPABLE)}")
            if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DOMAINS:
                raise ValueError(f"search_space.{key} must be one of {{{' | '.join(DOMAINS)}: ...}}, got {spec!r}")
            kind, arg = next(iter(spec.items()))
            if kind in GRID_DOMAINS:
                if not isinstance(arg, list) or not arg:
                    raise ValueError(f"search_space.{key}.{kind} needs a non-empty list of values")
                continue
            if not (isinstance(arg, list) and len(arg) == 2 and all(_is_number(x) for x in arg)):
                raise ValueError(f"search_space.{key}.{kind} needs [low, high]")
            if not all(math.isfinite(x) for x in arg):
                raise ValueError(f"search_space.{key}.{kind}: the bounds must be finite numbers, got {arg}")
            if not arg[0] < arg[1]:
                raise ValueError(f"search_space.{key}.{kind}: low must be < high, got {arg}")
            if kind == "loguniform" and arg[0] <= 0:
                raise ValueError(f"search_space.{key}.loguniform: low must be > 0, got {arg[0]}")
            if kind == "randint" and not all(isinstance(x, int) for x in arg):
                raise ValueError(f"search_space.{key}.randint needs integer [low, high) bounds, got {arg}")
            if kind in REAL_DOMAINS and _is_integer_key(key):
                raise ValueError(
                    f"search_space.{key}.{kind} samples real numbers but {key} is an integer; use "
                    f"randint: [low, high) or grid_search for {key}"
                )
        for name, overrides in self.variants.items():
            for key in overrides:
                if not key.startswith("data.") or key not in SWEEPABLE or key == "data.fold":
                    raise ValueError(f"variants.{name}: '{key}' is not an env setting (data.<setting>)")
                if key in self.search_space:
                    raise ValueError(f"variants.{name}: '{key}' is also in search_space; set it in one place")
        if self.variants:
            for key, (kind, _) in self.domains().items():
                if key.startswith("data.") and kind != "grid_search":
                    raise ValueError(f"search_space.{key}: with variants, env settings must be grid_search")
        return self

    def domains(self) -> dict[str, tuple[str, Any]]:
        """``{key: (domain kind, argument)}`` of the search space."""
        return {key: next(iter(spec.items())) for key, spec in self.search_space.items()}

    def n_trials(self) -> int:
        """Trials the sweep runs: the grid's size times ``num_samples``."""
        grid = [len(arg) for kind, arg in self.domains().values() if kind == "grid_search"]
        return math.prod(grid) * max(len(self.variants), 1) * self.num_samples

    def extremes(self) -> dict[str, list[Any]]:
        """Per swept key, the values that bound what its trials can get: every value of a ``grid_search`` or
        ``choice``, both ends of a range (``randint``'s upper end is exclusive)."""
        out: dict[str, list[Any]] = {}
        for key, (kind, arg) in self.domains().items():
            if kind in GRID_DOMAINS:
                out[key] = list(arg)
            elif kind == "randint":
                out[key] = [arg[0], arg[1] - 1] if arg[1] - 1 > arg[0] else [arg[0]]
            else:
                out[key] = list(arg)
        return out

    def points(self) -> list[dict[str, Any]]:
        """Every combination of the ``extremes`` of the swept keys: the grid points, with each range at both
        ends. Each schema rule is monotonic in a swept number (a bound, batch <= buffer), so a sweep whose
        points all validate can only produce valid trials."""
        ext = self.extremes()
        return [dict(zip(ext, combo, strict=True)) for combo in itertools.product(*ext.values())]


class Experiment(_Strict):
    name: str = "experiment"
    description: str = ""
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    sac: SACSettings = Field(default_factory=SACSettings)
    obs_filter: ObsFilterConfig = Field(default_factory=ObsFilterConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    stopping: StoppingConfig = Field(default_factory=StoppingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    divergence: DivergenceConfig = Field(default_factory=DivergenceConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)

    def variant_of(self, env_config: dict[str, Any]) -> str | None:
        """The name of the sweep variant whose env settings ``env_config`` holds (None without variants).

        A variant's settings are its own values and, for the keys other variants set, the experiment's.
        """
        keys = {k.removeprefix("data.") for v in self.sweep.variants.values() for k in v}
        base = self.data.env_config()
        for name, overrides in self.sweep.variants.items():
            own = {k.removeprefix("data."): v for k, v in overrides.items()}
            if all(env_config.get(k) == own.get(k, base[k]) for k in keys):
                return name
        return None

    @model_validator(mode="after")
    def _asha_fits_the_budget(self) -> Experiment:
        s = self.sweep.scheduler
        if s.type == "asha" and s.grace_period is not None:
            budget_key = "sweep.scheduler.max_t" if s.max_t is not None else "stopping.env_steps"
            max_t = self.asha_max_t()
            if s.grace_period > max_t:
                raise ValueError(
                    f"sweep.scheduler.grace_period ({s.grace_period:,}) is above {budget_key} ({max_t:,}): ASHA "
                    f"may stop a trial only after the grace period and runs it for at most {budget_key} env "
                    f"steps; lower sweep.scheduler.grace_period or raise {budget_key}"
                )
        return self

    def asha_max_t(self) -> int:
        """The env steps ASHA runs a trial for at most: ``sweep.scheduler.max_t``, else the budget."""
        return self.sweep.scheduler.max_t or self.stopping.env_steps

    def asha_grace_period(self) -> int:
        """ASHA's grace period in env steps: ``sweep.scheduler.grace_period``, else a tenth of ``max_t``."""
        return self.sweep.scheduler.grace_period or max(1, self.asha_max_t() // 10)


def _field_annotation(dotted: str) -> Any:
    """The type annotation of an experiment field given by its dotted key (``sac.batch_size`` -> int)."""
    model: Any = Experiment
    *sections, name = dotted.split(".")
    for part in sections:
        model = model.model_fields[part].annotation
    return model.model_fields[name].annotation


def _is_integer_key(dotted: str) -> bool:
    """True for integer fields (``int`` or ``int | None``), which a real-valued domain would break."""
    annotation = _field_annotation(dotted)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
    else:
        members = [annotation]
    return all(m is int for m in members)


class AlgorithmSettings(_Strict):
    """The experiment settings ``PortfolioSAC`` reads itself (RLlib's config carries the rest)."""

    name: str
    reward: RewardConfig
    evaluation: EvaluationConfig
    divergence: DivergenceConfig
    checkpoint: CheckpointConfig
    resources: ResourcesConfig

    @classmethod
    def of(cls, exp: Experiment) -> AlgorithmSettings:
        return cls.model_validate(exp.model_dump(include=set(cls.model_fields)))


def _format_validation_error(where: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    more = len(exc.errors()) - 1
    tail = f" (and {more} more problem(s))" if more else ""
    msg = first["msg"]
    if not first["loc"]:  # a rule across sections names its keys itself
        return f"{where}: {msg.removeprefix('Value error, ')}{tail}"
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see tune_configs/README.md for the schema)"
    return f"{where}: key '{key}': {msg}{tail}"


def experiment_from_dict(raw: dict[str, Any], where: str = "experiment") -> Experiment:
    """Validate a raw dict; errors name ``where`` and the dotted key."""
    try:
        return Experiment.model_validate(raw)
    except ValidationError as exc:
        raise ExperimentError(_format_validation_error(where, exc)) from None


def available_experiments() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _bad_date(text: str) -> str:
    """Where and why a YAML text holds a date-like value that is no real date (PyYAML raises a bare ValueError)."""
    constructor = yaml.constructor.SafeConstructor()
    stack = [yaml.compose(text, Loader=yaml.SafeLoader)]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            stack.extend(v for kv in node.value for v in kv)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:timestamp":
            try:
                constructor.construct_yaml_timestamp(node)
            except ValueError as exc:
                return f"at line {node.start_mark.line + 1}: {node.value!r} is not a real date ({exc})"
    return "a value that looks like a date is not a real date"


_DATE_FIX = "write a real date as YYYY-MM-DD, or quote the value if it is not a date"


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` with one-line errors that name ``where`` (a file, or ``--set key=value``)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ExperimentError(f"{where}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    except ValueError:  # a date-like scalar such as 2020-13-01
        raise ExperimentError(f"{where}: {_bad_date(text)}; {_DATE_FIX}") from None


def load_raw(name_or_path: str) -> tuple[dict[str, Any], Path]:
    """The experiment file's raw mapping and its path; errors name the file."""
    path = resolve_experiment_path(name_or_path)
    if not path.exists():
        raise ExperimentError(
            f"{path}: experiment not found; available: {', '.join(available_experiments())} (or a .yaml path)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ExperimentError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save the "
            "experiment file with UTF-8 encoding"
        ) from None
    except OSError as exc:
        raise ExperimentError(f"{path}: cannot read the experiment file ({exc.strerror or exc})") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ExperimentError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    return raw, path


def parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` -> (``key.sub``, YAML-parsed value)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or "" in key.strip().split("."):
        raise ExperimentError(f"--set {text!r}: expected key=value, e.g. --set sac.batch_size=128")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value  # not YAML: the plain string (the schema says whether a string fits)
    except ValueError:  # a date-like value such as 2020-13-01
        raise ExperimentError(f"--set {text}: {_bad_date(value)}; {_DATE_FIX}") from None
    return key.strip(), parsed


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a (copied) raw mapping."""
    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise ExperimentError(f"--set {dotted}: '{part}' is not a section")
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _validate_sweep(raw: dict[str, Any], exp: Experiment, path: Path) -> None:
    """Validate every config the sweep can produce, as the experiment it would be, before any trial starts.

    First each swept key alone (the message names the key and its value), then every combination of them
    (``SweepConfig.points``: e.g. a batch size from one key larger than a buffer size from another).
    """
    sweep = exp.sweep
    for name, overrides in sweep.variants.items():
        try:
            experiment_from_dict(apply_overrides(raw, overrides), where=str(path))
        except ExperimentError as exc:
            detail = str(exc).split(": ", 1)[1]
            raise ExperimentError(f"{path}: key 'sweep.variants.{name}': {detail}") from None
    domains = sweep.domains()
    for key, values in sweep.extremes().items():
        kind = domains[key][0]
        what = "value" if kind in GRID_DOMAINS else ("randint value" if kind == "randint" else f"{kind} bound")
        for value in values:
            try:
                experiment_from_dict(apply_overrides(raw, {key: value}), where=str(path))
            except ExperimentError as exc:
                detail = str(exc).split(": ", 1)[1]
                raise ExperimentError(
                    f"{path}: key 'sweep.search_space.{key}': {what} {value!r} is invalid ({detail})"
                ) from None
    variants = list(sweep.variants.values()) or [{}]
    if len(domains) + (len(variants) > 1) < 2:
        return
    for point in (v | p for v in variants for p in sweep.points()):
        try:
            experiment_from_dict(apply_overrides(raw, point), where=str(path))
        except ExperimentError as exc:
            detail = str(exc).split(": ", 1)[1]
            combo = ", ".join(f"{k}={v!r}" for k, v in point.items())
            raise ExperimentError(
                f"{path}: key 'sweep.search_space': the combination {combo} is invalid ({detail}); change the "
                "search space so that no trial gets it"
            ) from None


def load_experiment(name_or_path: str, overrides: dict[str, Any] | None = None) -> Experiment:
    """Load ``tune_configs/<name>.yaml`` (or a path), apply ``--set`` overrides, validate.

    Every config the sweep's search space can produce is validated too (see ``_validate_sweep``).
    """
    raw, path = load_raw(name_or_path)
    if overrides:
        raw = apply_overrides(raw, overrides)
    exp = experiment_from_dict(raw, where=str(path))
    _validate_sweep(raw, exp, path)
    return exp
