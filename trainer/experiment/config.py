"""The experiment schema: closed, validated models of every section (``data`` in ``trainer.experiment.data_config``).

An experiment is a YAML file in ``tune_configs/`` (``tune_configs/<name>.yaml``), loaded by
``trainer.experiment.loading.load_experiment``. Unknown keys and impossible values are errors naming the file and the
key. ``trainer.rl.sac_config.build_sac_config`` turns a validated experiment into RLlib's ``SACConfig``.

The sweep schema (``SweepConfig``: search space, scheduler, selection metric) lives here too, so every
config a sweep can produce is validated by the same models before any trial starts.
"""

from __future__ import annotations

import itertools
import math
import numbers
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from envs.data import SPLITS, VALIDATION
from envs.rewards import REWARD_CLIP
from envs.settings import SETTING_NAMES
from trainer.experiment.data_config import DataConfig
from trainer.experiment.resources import ResourcesConfig
from trainer.experiment.rolling_config import RollingConfig
from trainer.experiment.schema import Strict, auto_or_number, benchmark_spec, value_types
from trainer.metrics import registry as M

# The RLlib model-config keys of model.type and model.attention_layers (read by trainer.rl.set_modules); the
# observation's layout travels under LAYOUT_KEY, set from the trial's env (trainer.rl.set_modules.with_layout).
MODEL_TYPE_KEY, ATTENTION_LAYERS_KEY, LAYOUT_KEY = "portfolio_model_type", "attention_layers", "observation_layout"


class ModelConfig(Strict):
    """Policy and each Q network: ``type`` (``trainer.evaluation.networks``) of ``hidden`` with ``activation``.

    ``type``: ``mlp`` (the default), one MLP on the whole observation (Q nets on [obs, action]); ``per_asset``,
    one shared encoder applied to each asset's inputs (equivariant to the assets' order); ``attention``, that
    encoder followed by ``attention_layers`` self-attention layers across the assets (read by it only).

    ``init_from``: a checkpoint whose network weights the run starts from (a warm start, ``trainer.rl.warm_start``;
    it loads that checkpoint's RLlib pickles, as a resume does: only a checkpoint you trust).
    """

    hidden: list[int] = Field(default_factory=lambda: [256, 256], min_length=1)
    activation: Literal["relu", "tanh", "silu", "elu"] = "relu"
    type: Literal["mlp", "per_asset", "attention"] = "mlp"
    attention_layers: int = Field(1, ge=1, le=2)
    init_from: str | None = None

    @field_validator("init_from")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        # Ray's trial processes run in other directories: the same checkpoint wherever it is read from
        return None if v is None else str(Path(v).expanduser().absolute())

    @field_validator("hidden")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(h < 1 for h in v):
            raise ValueError("every hidden layer size must be >= 1")
        return v


class SACSettings(Strict):
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
    # K independent agents (seeds seed .. seed + K - 1) trained in one trial with batched tensors
    # (trainer.rl.population); None trains one agent with RLlib's own module.
    population: int | None = Field(None, ge=1)

    @field_validator("target_entropy", mode="before")
    @classmethod
    def _auto_or_entropy(cls, v: Any, info: ValidationInfo) -> Any:
        return auto_or_number(v, info)

    @model_validator(mode="after")
    def _buffer_holds_a_batch(self) -> SACSettings:
        if self.buffer_size < self.batch_size:
            raise ValueError(f"buffer_size ({self.buffer_size}) must be >= batch_size ({self.batch_size})")
        return self


class ObsFilterConfig(Strict):
    enabled: bool = True
    clip: float = Field(10.0, gt=0)


class RewardConfig(Strict):
    """Applied when transitions enter the replay buffer (RLlib's ``clip_rewards`` is a no-op here)."""

    clip: float | None = Field(REWARD_CLIP, gt=0)
    normalize: bool = False  # divide by the running std of stored rewards, at sample time


class EvaluationConfig(Strict):
    interval: int = Field(5, ge=1)  # every N training iterations (and at the end)
    split: Literal[SPLITS[1:]] = VALIDATION  # type: ignore[valid-type]


class StoppingConfig(Strict):
    env_steps: int = Field(100_000, ge=1)
    iterations: int | None = Field(None, ge=1)
    steps_per_iteration: int = Field(1000, ge=1)  # env steps sampled per training iteration


class CheckpointConfig(Strict):
    frequency: int = Field(10, ge=0)  # every N iterations; 0 = only at the end
    num_to_keep: int | None = Field(3, ge=1)
    save_buffer: bool = True


class DivergenceConfig(Strict):
    # The reference run that diverged reached a critic loss of 7e12; a healthy one stays far below this.
    max_critic_loss: float = Field(1e6, gt=0)


# Experiment fields that can be swept, and where each lives in RLlib's config dict (for reading results).
SWEEPABLE: dict[str, tuple[str, ...]] = {
    "seed": ("seed",),
    "model.hidden": ("_model_config", "fcnet_hiddens"),
    "model.activation": ("_model_config", "fcnet_activation"),
    "model.type": ("_model_config", MODEL_TYPE_KEY),
    "model.attention_layers": ("_model_config", ATTENTION_LAYERS_KEY),
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
FOLD_KEY = "data.fold"  # the walk-forward fold: swept like a seed, not part of a configuration's name
SEED_KEY = "seed"
SEED_MAX = 2**32 - 1  # numpy's and torch's seeds are unsigned 32-bit numbers
DOMAINS = ("grid_search", "choice", "uniform", "loguniform", "randint")
# Named variants set several env settings at once; as a Tune grid they become one dimension over whole env
# configs under this key (build_sac_config expands it).
ENV_CONFIG_GRID = "data.*"
GRID_DOMAINS = ("grid_search", "choice")
REAL_DOMAINS = ("uniform", "loguniform")  # sample real numbers: not for integer keys

# What a sweep can select on (and ASHA compare): the numbers every training result reports in its portfolio
# section, by their flattened Tune keys. Registry measures that only backtests compute (of a run, or against a
# benchmark) are not reported there.
SELECTION_METRICS: tuple[str, ...] = (
    *(m.tune_key for m in M.REGISTRY if (m.compute is None and m.relative is None) or m.path),
    *(f"{M.PORTFOLIO}/{key}" for key in (M.TRAIN_SHARPE, M.TRAIN_TURNOVER)),
)


class SchedulerConfig(Strict):
    type: Literal["asha", "fifo"] = "asha"
    # env steps before ASHA may stop a trial; None = a tenth of max_t (so it always fits the budget)
    grace_period: int | None = Field(None, ge=1)
    reduction_factor: float = Field(2.0, gt=1)
    max_t: int | None = Field(None, ge=1)  # env steps; default stopping.env_steps


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def population_first_seeds(seeds: list[int], population: int) -> list[int]:
    """The first seed of each population a swept seed grid makes: ``[0..5]`` with K=3 -> ``[0, 3]``.

    A population trains seeds ``s .. s + K - 1`` (``trainer.rl.population.agent_seeds``), so the grid's seeds,
    sorted, must split into runs of K consecutive integers.

    Raises:
        ValueError: naming the key, the grid and the fix, when the seeds do not split that way.
    """
    ordered = sorted(seeds)
    runs = [ordered[i : i + population] for i in range(0, len(ordered), population)]
    if all(len(r) == population and r == list(range(r[0], r[0] + population)) for r in runs):
        return [r[0] for r in runs]
    example = list(range(population * max(1, math.ceil(len(seeds) / population))))
    raise ValueError(
        f"sweep.search_space.{SEED_KEY}: grid_search {seeds} does not split into populations of "
        f"sac.population={population} consecutive seeds (a trial trains seeds s .. s+{population - 1}); "
        f"list whole runs of {population}, e.g. grid_search: {example}"
    )


class SweepConfig(Strict):
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
    # Summary only: each configuration's test windows also against this series (sp500 or FILE:COLUMN).
    benchmark: Annotated[str | None, AfterValidator(benchmark_spec)] = None

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
        if self.num_samples > 1 and all(kind == "grid_search" for kind, _ in self.domains().values()):
            raise ValueError(
                f"num_samples={self.num_samples} repeats every trial of a search space without random domains: "
                f"the {self.num_samples} copies would have the same settings and seed and train the same agent; "
                f"to train more seeds sweep them ({SEED_KEY}: {{grid_search: [0, 1, 2]}}) and set num_samples: 1"
            )
        return self

    def domains(self, population: int | None = None) -> dict[str, tuple[str, Any]]:
        """``{key: (domain kind, argument)}`` of the search space.

        Args:
            population: ``sac.population``; with K agents per trial the seed grid becomes each population's
                first seed (the trials Tune runs), e.g. seeds 0..5 with K=3 -> 0 and 3.
        """
        out = {key: next(iter(spec.items())) for key, spec in self.search_space.items()}
        if population is not None and out.get(SEED_KEY, ("",))[0] == "grid_search":
            out[SEED_KEY] = ("grid_search", population_first_seeds(out[SEED_KEY][1], population))
        return out

    def n_trials(self, population: int | None = None) -> int:
        """Trials the sweep runs: the grid's size times ``num_samples`` (one trial per population of
        ``population`` seeds)."""
        grid = [len(arg) for kind, arg in self.domains(population).values() if kind == "grid_search"]
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


class Experiment(Strict):
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
    rolling: RollingConfig | None = None  # rounds of python -m trainer.rolling (None: the experiment has none)

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

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_in_range(cls, value: Any) -> int:
        # a whole number in numpy's and torch's seed range (not a float or a string that pydantic would coerce)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value <= SEED_MAX:
            return int(value)
        raise ValueError(f"seed must be a whole number from 0 to {SEED_MAX}, got {value!r}")

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

    @model_validator(mode="after")
    def _population_seeds(self) -> Experiment:
        k = self.sac.population
        if k is None:
            return self
        if self.seed + k - 1 > SEED_MAX:
            raise ValueError(
                f"sac.population={k} trains seeds {self.seed} .. {self.seed + k - 1}, past the largest seed "
                f"{SEED_MAX}; use a seed of at most {SEED_MAX - k + 1}"
            )
        metric = self.sweep.metric
        if not metric.startswith(f"{M.PORTFOLIO}/{M.VALIDATION}/"):
            raise ValueError(
                f"sweep.metric {metric!r} is the population's, not each agent's: with sac.population, select "
                f"on a validation metric ({M.PORTFOLIO}/{M.VALIDATION}/...) so that every agent is ranked by its own"
            )
        spec = self.sweep.search_space.get(SEED_KEY)
        if spec is None or not isinstance(spec, dict) or len(spec) != 1:
            return self  # not swept (one population per grid point), or a malformed domain _domains reports
        kind, arg = next(iter(spec.items()))
        if kind in ("choice", "randint"):
            raise ValueError(
                f"sweep.search_space.{SEED_KEY}: {kind} with sac.population={k} is not supported (a trial trains "
                f"K consecutive seeds, and drawn seeds could overlap); sweep seeds with grid_search of whole runs "
                f"of {k}, e.g. grid_search: {list(range(2 * k))}"
            )
        if kind == "grid_search" and isinstance(arg, list) and all(_is_int(x) for x in arg):
            if len(set(arg)) != len(arg):
                raise ValueError(f"sweep.search_space.{SEED_KEY}: grid_search {arg} repeats a seed; list each once")
            population_first_seeds(arg, k)
        return self

    def asha_max_t(self) -> int:
        """The env steps ASHA runs a trial for at most: ``sweep.scheduler.max_t``, else the budget."""
        return self.sweep.scheduler.max_t or self.stopping.env_steps

    def asha_grace_period(self) -> int:
        """ASHA's grace period in env steps: ``sweep.scheduler.grace_period``, else a tenth of ``max_t``."""
        return self.sweep.scheduler.grace_period or max(1, self.asha_max_t() // 10)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _field_annotation(dotted: str) -> Any:
    """The type annotation of an experiment field given by its dotted key (``sac.batch_size`` -> int)."""
    model: Any = Experiment
    *sections, name = dotted.split(".")
    for part in sections:
        model = model.model_fields[part].annotation
    return model.model_fields[name].annotation


def _is_integer_key(dotted: str) -> bool:
    """True for integer fields (``int`` or ``int | None``), which a real-valued domain would break."""
    return all(m is int for m in value_types(_field_annotation(dotted)))


class AlgorithmSettings(Strict):
    """The experiment settings ``PortfolioSAC`` reads itself (RLlib's config carries the rest)."""

    name: str
    model: ModelConfig = Field(default_factory=ModelConfig)  # for model.init_from
    reward: RewardConfig
    evaluation: EvaluationConfig
    divergence: DivergenceConfig
    checkpoint: CheckpointConfig
    resources: ResourcesConfig

    @classmethod
    def of(cls, exp: Experiment) -> AlgorithmSettings:
        return cls.model_validate(exp.model_dump(include=set(cls.model_fields)))
