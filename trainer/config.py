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
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from envs.data import SP500, SPLITS, TRAIN, VALIDATION
from envs.folds import CONFIG_DIR, SCHEMES, FoldSpec
from envs.rewards import REWARD_CLIP, REWARD_NAMES
from envs.settings import ACTIONS, SETTING_NAMES, TILT_REFERENCES, PortfolioSettings
from trainer import metrics as M


class ExperimentError(ValueError):
    """A bad experiment file or override; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
    "sac.batch_size": ("train_batch_size_per_learner",),
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


class SchedulerConfig(_Strict):
    type: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(10_000, ge=1)  # env steps before ASHA may stop a trial
    reduction_factor: float = Field(2.0, gt=1)
    max_t: int | None = Field(None, ge=1)  # env steps; default stopping.env_steps


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
            else:
                if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(x, int | float) for x in arg)):
                    raise ValueError(f"search_space.{key}.{kind} needs [low, high]")
                if not arg[0] < arg[1]:
                    raise ValueError(f"search_space.{key}.{kind}: low must be < high, got {arg}")
                if kind == "loguniform" and arg[0] <= 0:
                    raise ValueError(f"search_space.{key}.loguniform: low must be > 0, got {arg[0]}")
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
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see tune_configs/README.md for the schema)"
    more = len(exc.errors()) - 1
    return f"{where}: key '{key}': {msg}" + (f" (and {more} more problem(s))" if more else "")


def experiment_from_dict(raw: dict[str, Any], where: str = "experiment") -> Experiment:
    """Validate a raw dict; errors name ``where`` and the dotted key."""
    try:
        return Experiment.model_validate(raw)
    except ValidationError as exc:
        raise ExperimentError(_format_validation_error(where, exc)) from None


def resolve_experiment_path(name_or_path: str) -> Path:
    """``smoke`` -> tune_configs/smoke.yaml; a path is used as given."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        return p
    return CONFIG_DIR / f"{name_or_path}.yaml"


def available_experiments() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_raw(name_or_path: str) -> tuple[dict[str, Any], Path]:
    """The experiment file's raw mapping and its path; errors name the file."""
    path = resolve_experiment_path(name_or_path)
    if not path.exists():
        raise ExperimentError(
            f"{path}: experiment not found; available: {', '.join(available_experiments())} (or a .yaml path)"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ExperimentError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ExperimentError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    return raw, path


def parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` -> (``key.sub``, YAML-parsed value)."""
    if "=" not in text:
        raise ExperimentError(f"--set {text!r}: expected key=value, e.g. --set sac.batch_size=128")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
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


def load_experiment(name_or_path: str, overrides: dict[str, Any] | None = None) -> Experiment:
    """Load ``tune_configs/<name>.yaml`` (or a path), apply ``--set`` overrides, validate.

    Every value of the sweep's search space is validated too, as the experiment it would produce.
    """
    raw, path = load_raw(name_or_path)
    if overrides:
        raw = apply_overrides(raw, overrides)
    exp = experiment_from_dict(raw, where=str(path))
    for name, overrides in exp.sweep.variants.items():
        try:
            experiment_from_dict(apply_overrides(raw, overrides), where=str(path))
        except ExperimentError as exc:
            detail = str(exc).split(": ", 1)[1]
            raise ExperimentError(f"{path}: key 'sweep.variants.{name}': {detail}") from None
    for key, (kind, arg) in exp.sweep.domains().items():
        for value in arg if kind in GRID_DOMAINS else list(arg):
            try:
                experiment_from_dict(apply_overrides(raw, {key: value}), where=str(path))
            except ExperimentError as exc:
                detail = str(exc).split(": ", 1)[1]
                raise ExperimentError(
                    f"{path}: key 'sweep.search_space.{key}': value {value!r} is invalid ({detail})"
                ) from None
    return exp
