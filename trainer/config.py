"""The experiment schema (closed, validated) and the one place a ``SACConfig`` is built.

An experiment is a YAML file in ``tune_configs/`` (``tune_configs/<name>.yaml``). Unknown keys and
impossible values are errors naming the file and the key. ``build_sac_config`` turns an experiment into
an RLlib ``SACConfig``; train, tune, backtest and benchmarks all call it.

Where RLlib's defaults differ from the reference configuration (see ../shared/docs/design.md) we override
them here, explicitly:

- activation: RLlib "tanh" -> "relu";
- critic: RLlib builds each Q net from two streams (an MLP on obs and one on the action) plus a "fusion" MLP
  ([256, 256], tanh) -> one MLP of ``model.hidden`` on [obs, action] (``trainer.catalog.ConcatQSACCatalog``,
  ``fusionnet_hiddens=[]``), as in the reference;
- actor_lr: RLlib 3e-5 (critic 3e-4) -> 1e-4 for both;
- replay: RLlib's prioritized episode buffer -> our uniform flat buffer of raw transitions
  (``trainer.buffer``), sampled at a fixed replay ratio (``sac.training_intensity``);
- learning starts: RLlib 1500 -> 1000 env steps;
- learner: ``trainer.learner.FusedSACTorchLearner``, RLlib's SAC losses computed with less work (issue 7);
- observation filter: RLlib's MeanStdFilter writes normalised observations into the episodes (so the buffer
  would hold values normalised with stale statistics); ours keeps episodes raw (``trainer.connectors``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from envs.data import SP500, SPLITS
from envs.folds import CONFIG_DIR, SCHEMES, FoldSpec
from envs.rewards import REWARD_NAMES
from envs.settings import ACTIONS, SETTING_NAMES, TILT_REFERENCES, PortfolioSettings


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

    def env_config(self, split: str = "train") -> dict[str, Any]:
        """The env's keyword arguments (see ``envs.portfolio.PortfolioEnv``): small values only, so each env
        runner loads the prices and computes its windows (the plain split or fold ``fold``) itself."""
        dates = None
        if self.split_dates is not None:
            dates = {k: [a.isoformat(), b.isoformat()] for k, (a, b) in self.split_dates.items()}
        return {
            "data": self.source,
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

    clip: float | None = Field(20.0, gt=0)
    normalize: bool = False  # divide by the running std of stored rewards, at sample time


class ResourcesConfig(_Strict):
    num_env_runners: int = Field(0, ge=0)
    num_envs_per_env_runner: int = Field(1, ge=1)
    num_cpus_per_env_runner: float = Field(1, gt=0)
    num_learners: int = Field(0, ge=0)
    num_gpus_per_learner: float = Field(0, ge=0)
    num_cpus_per_learner: float | Literal["auto"] = "auto"
    # torch threads of the learner process; None = one per process (see notes §0.11).
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
        # Several learners of one trial are DDP shards; sharing a GPU between them fails in NCCL (notes §9).
        if self.num_learners > 1 and self.num_gpus_per_learner not in (0, int(self.num_gpus_per_learner)):
            raise ValueError(
                f"num_gpus_per_learner={self.num_gpus_per_learner} with num_learners={self.num_learners}: "
                "fractional GPUs are only for one learner per trial (several trials share a GPU)"
            )
        return self


class EvaluationConfig(_Strict):
    interval: int = Field(5, ge=1)  # every N training iterations (and at the end)
    split: Literal["validation", "test"] = "validation"


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
    sweep: dict[str, Any] | None = None  # validated by trainer.tune


def _format_validation_error(where: str, exc: ValidationError, prefix: str = "") -> str:
    first = exc.errors()[0]
    key = ".".join([prefix] * bool(prefix) + [str(p) for p in first["loc"]]) or "(top level)"
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
    import copy

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
    """Load ``tune_configs/<name>.yaml`` (or a path), apply ``--set`` overrides, validate."""
    raw, path = load_raw(name_or_path)
    if overrides:
        raw = apply_overrides(raw, overrides)
    return experiment_from_dict(raw, where=str(path))


def build_sac_config(exp: Experiment, param_overrides: dict[str, Any] | None = None):
    """The one place a ``SACConfig`` is built.

    Args:
        exp: a validated experiment.
        param_overrides: values that replace the experiment's at the RLlib level, possibly Ray Tune
            search-space domains (passed through untouched): keys ``"seed"``, ``"model.hidden"``,
            ``"model.activation"``, ``"sac.<field>"``.

    Returns:
        A ``SACConfig`` whose ``algo_class`` is ``trainer.algorithm.PortfolioSAC``.
    """
    from ray.rllib.algorithms.sac.torch.default_sac_torch_rl_module import DefaultSACTorchRLModule
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    import envs  # registers "Portfolio-v0" with Tune
    from trainer.algorithm import PortfolioSAC
    from trainer.callbacks import PortfolioCallbacks
    from trainer.catalog import ConcatQSACCatalog
    from trainer.connectors import make_env_to_module_connector
    from trainer.learner import FusedSACTorchLearner

    po = dict(param_overrides or {})

    def pick(key: str, value: Any) -> Any:
        return po.pop(key, value)

    sac = exp.sac
    hidden = pick("model.hidden", exp.model.hidden)
    activation = pick("model.activation", exp.model.activation)
    res = exp.resources
    # A plain dict, not DefaultModelConfig: Tune expands search spaces only in dicts (notes §0.8).
    model_config = {
        "fcnet_hiddens": hidden,
        "fcnet_activation": activation,
        "head_fcnet_hiddens": [],
        "fusionnet_hiddens": [],
    }
    training = {
        "actor_lr": pick("sac.actor_lr", sac.actor_lr),
        "critic_lr": pick("sac.critic_lr", sac.critic_lr),
        "alpha_lr": pick("sac.alpha_lr", sac.alpha_lr),
        "tau": pick("sac.tau", sac.tau),
        "gamma": pick("sac.gamma", sac.gamma),
        "initial_alpha": pick("sac.initial_alpha", sac.initial_alpha),
        "target_entropy": pick("sac.target_entropy", sac.target_entropy),
        "train_batch_size_per_learner": pick("sac.batch_size", sac.batch_size),
        "num_steps_sampled_before_learning_starts": pick("sac.learning_starts", sac.learning_starts),
        "training_intensity": pick("sac.training_intensity", sac.training_intensity),
        "twin_q": True,
        "n_step": 1,
        # RLlib's validate() accepts only episode-buffer type names; PortfolioSAC replaces the buffer
        # with trainer.buffer.FlatReplayBuffer of this capacity (no_local_replay_buffer: none is built).
        "replay_buffer_config": {
            "type": "EpisodeReplayBuffer",
            "capacity": pick("sac.buffer_size", sac.buffer_size),
            "no_local_replay_buffer": True,
        },
    }
    seed = pick("seed", exp.seed)
    if po:
        raise ExperimentError(f"cannot sweep or override {', '.join(sorted(po))} at the RLlib level")

    # Experiment settings PortfolioSAC reads itself (reward clip, evaluation, divergence, buffer saving).
    portfolio_settings = exp.model_dump(
        mode="json",
        include={
            "name",
            "data",
            "obs_filter",
            "reward",
            "evaluation",
            "divergence",
            "checkpoint",
            "resources",
        },
    )
    config = (
        PortfolioSAC.get_default_config()
        .environment(envs.ENV_ID, env_config=exp.data.env_config("train"))
        .framework("torch")
        .env_runners(
            num_env_runners=res.num_env_runners,
            num_envs_per_env_runner=res.num_envs_per_env_runner,
            num_cpus_per_env_runner=res.num_cpus_per_env_runner,
            rollout_fragment_length=sac.rollout_fragment_length,
            custom_resources_per_env_runner=res.custom_resources_per_env_runner,
            env_to_module_connector=make_env_to_module_connector(exp.obs_filter.enabled, exp.obs_filter.clip),
        )
        .learners(
            num_learners=res.num_learners,
            num_gpus_per_learner=res.num_gpus_per_learner,
            num_cpus_per_learner=res.num_cpus_per_learner,
            custom_resources_per_learner=res.custom_resources_per_learner if res.num_learners else {},
            learner_class=FusedSACTorchLearner,
        )
        .resources(custom_resources_for_main_process={} if res.num_learners else res.custom_resources_per_learner)
        .training(**training)
        .rl_module(
            model_config=model_config,
            rl_module_spec=RLModuleSpec(module_class=DefaultSACTorchRLModule, catalog_class=ConcatQSACCatalog),
        )
        .callbacks(PortfolioCallbacks)
        .reporting(
            min_time_s_per_iteration=0,
            min_sample_timesteps_per_iteration=exp.stopping.steps_per_iteration,
            metrics_num_episodes_for_smoothing=20,
        )
        .fault_tolerance(restart_failed_env_runners=True)
        .debugging(seed=seed)
        .python_environment(extra_python_environs_for_worker={"OMP_NUM_THREADS": "1"})
    )
    config.portfolio = portfolio_settings
    return config
