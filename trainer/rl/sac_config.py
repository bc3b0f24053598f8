"""The one place an RLlib ``SACConfig`` is built from a validated experiment.

Train, tune, backtest and benchmarks all call ``build_sac_config``. Where RLlib's defaults differ from the
reference configuration (docs/architecture.md) we override them here, explicitly:

- activation: RLlib "tanh" -> "relu";
- networks: ``model.type`` (``trainer.rl.set_modules``): ``mlp`` is RLlib's SAC module with the critic below;
  ``per_asset`` and ``attention`` are ``trainer.evaluation.networks``'s, which read the observation's layout;
- critic: RLlib builds each Q net from two streams (an MLP on obs and one on the action) plus a "fusion" MLP
  ([256, 256], tanh) -> one MLP of ``model.hidden`` on [obs, action] (``trainer.rl.catalog.ConcatQSACCatalog``,
  ``fusionnet_hiddens=[]``), as in the reference;
- actor_lr: RLlib 3e-5 (critic 3e-4) -> 1e-4 for both (the defaults in ``trainer.experiment.config``);
- replay: RLlib's prioritized episode buffer -> our uniform flat buffer of raw transitions
  (``trainer.rl.buffer``), sampled at a fixed replay ratio (``sac.training_intensity``);
- learning starts: RLlib 1500 -> 1000 env steps;
- learner: ``trainer.rl.learner.FusedSACTorchLearner``, RLlib's SAC losses computed with less work, its step
  compiled with ``resources.compile`` (``trainer.rl.compiled``; RLlib's own ``torch_compile_learner`` would
  compile the ``_update`` this learner replaces, so it is not used);
- observation filter: RLlib's MeanStdFilter writes normalised observations into the episodes (so the buffer
  would hold values normalised with stale statistics); ours keeps episodes raw (``trainer.rl.connectors``);
- env runner connectors: RLlib's default pieces -> two of ours that do the same work with less per-step
  overhead (``trainer.rl.connectors``).
"""

from __future__ import annotations

from typing import Any

from trainer.experiment.config import (
    ATTENTION_LAYERS_KEY,
    ENV_CONFIG_GRID,
    MODEL_TYPE_KEY,
    AlgorithmSettings,
    Experiment,
)
from trainer.experiment.loading import ExperimentError
from trainer.experiment.resources import NUM_CPUS_FOR_MAIN_PROCESS
from trainer.runtime.threads import worker_environment


def build_sac_config(exp: Experiment, param_overrides: dict[str, Any] | None = None):
    """The one place a ``SACConfig`` is built.

    Args:
        exp: a validated experiment.
        param_overrides: values that replace the experiment's at the RLlib level, possibly Ray Tune
            search-space domains (passed through untouched): keys ``"seed"``, ``"model.hidden"``,
            ``"model.activation"``, ``"model.type"``, ``"model.attention_layers"``, ``"sac.<field>"``.

    Returns:
        A ``SACConfig`` whose ``algo_class`` is ``trainer.rl.algorithm.PortfolioSAC``.
    """
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    import envs  # registers "Portfolio-v0" with Tune
    from envs.population import SEEDS_KEY, agent_seeds
    from trainer.rl.algorithm import PortfolioSAC
    from trainer.rl.callbacks import PortfolioCallbacks
    from trainer.rl.catalog import ConcatQSACCatalog
    from trainer.rl.compiled import COMPILE_KEY
    from trainer.rl.connectors import make_env_to_module_connector, make_module_to_env_connector
    from trainer.rl.env_runner import PortfolioEnvRunner
    from trainer.rl.learner import FusedSACTorchLearner
    from trainer.rl.population import PopulationSACModule
    from trainer.rl.set_modules import PortfolioSACModule

    po = dict(param_overrides or {})

    def pick(key: str, value: Any) -> Any:
        return po.pop(key, value)

    sac = exp.sac
    hidden = pick("model.hidden", exp.model.hidden)
    activation = pick("model.activation", exp.model.activation)
    net_type = pick("model.type", exp.model.type)
    attention_layers = pick("model.attention_layers", exp.model.attention_layers)
    res = exp.resources
    # A plain dict, not DefaultModelConfig: Tune expands search spaces only in dicts (docs/rllib-notes.md).
    model_config = {
        "fcnet_hiddens": hidden,
        "fcnet_activation": activation,
        "head_fcnet_hiddens": [],
        "fusionnet_hiddens": [],
        # read by trainer.rl.set_modules; the observation layout is added per trial (PortfolioSAC, with_layout)
        MODEL_TYPE_KEY: net_type,
        ATTENTION_LAYERS_KEY: attention_layers,
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
        # with trainer.rl.buffer.FlatReplayBuffer of this capacity (no_local_replay_buffer: none is built).
        "replay_buffer_config": {
            "type": "EpisodeReplayBuffer",
            "capacity": pick("sac.buffer_size", sac.buffer_size),
            "no_local_replay_buffer": True,
        },
    }
    env_config: Any = exp.data.env_config("train")
    grid = po.pop(ENV_CONFIG_GRID, None)  # named variants: a grid over whole env configs
    for key in [k for k in po if k.startswith("data.")]:
        env_config[key.removeprefix("data.")] = po.pop(key)
    if grid is not None:
        env_config = {
            "grid_search": [
                {**env_config, **{k.removeprefix("data."): v for k, v in point.items()}}
                for point in grid["grid_search"]
            ]
        }
    seed = pick("seed", exp.seed)
    population = sac.population
    module_class: type = PortfolioSACModule  # RLlib's own SAC module for model.type mlp
    if population is not None:
        # The agents' seeds follow the trial's seed (PortfolioSAC sets them from the resolved seed, which
        # may be a Tune domain here); the list's length tells the module and the env how many agents.
        seeds = agent_seeds(seed if isinstance(seed, int) else exp.seed, population)
        model_config[SEEDS_KEY] = seeds
        module_class = PopulationSACModule
    if po:
        raise ExperimentError(f"cannot sweep or override {', '.join(sorted(po))} at the RLlib level")

    config = (
        PortfolioSAC.get_default_config()
        .environment(envs.ENV_ID if population is None else envs.POPULATION_ENV_ID, env_config=env_config)
        .framework("torch")
        .env_runners(
            num_env_runners=res.num_env_runners,
            num_envs_per_env_runner=res.num_envs_per_env_runner,
            num_cpus_per_env_runner=res.num_cpus_per_env_runner,
            rollout_fragment_length=sac.rollout_fragment_length,
            custom_resources_per_env_runner=res.custom_resources_per_env_runner,
            env_runner_cls=PortfolioEnvRunner,  # RLlib's runner, sampling rounds without episode objects
            env_to_module_connector=make_env_to_module_connector(exp.obs_filter.enabled, exp.obs_filter.clip),
            # the two pipelines are ours whole (trainer.rl.connectors): RLlib's default pieces are not added
            add_default_connectors_to_env_to_module_pipeline=False,
            add_default_connectors_to_module_to_env_pipeline=False,
        )
        .learners(
            num_learners=res.num_learners,
            num_gpus_per_learner=res.num_gpus_per_learner,
            num_cpus_per_learner=res.num_cpus_per_learner,
            custom_resources_per_learner=res.custom_resources_per_learner if res.num_learners else {},
            learner_class=FusedSACTorchLearner,
            learner_config_dict={COMPILE_KEY: res.compile},
        )
        .resources(
            num_cpus_for_main_process=NUM_CPUS_FOR_MAIN_PROCESS,
            custom_resources_for_main_process={} if res.num_learners else res.custom_resources_per_learner,
        )
        .training(**training)
        .rl_module(
            model_config=model_config,
            rl_module_spec=RLModuleSpec(
                module_class=module_class, catalog_class=None if population else ConcatQSACCatalog
            ),
        )
        .callbacks(PortfolioCallbacks)
        .reporting(
            min_time_s_per_iteration=0,
            min_sample_timesteps_per_iteration=exp.stopping.steps_per_iteration,
            metrics_num_episodes_for_smoothing=20,
        )
        .fault_tolerance(restart_failed_env_runners=True)
        .debugging(seed=seed)
        .python_environment(extra_python_environs_for_worker=worker_environment())
    )
    config.env_runners(
        module_to_env_connector=make_module_to_env_connector(config.normalize_actions, config.clip_actions)
    )
    config.portfolio = AlgorithmSettings.of(exp).model_dump(mode="json")
    return config
