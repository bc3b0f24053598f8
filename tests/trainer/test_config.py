"""trainer.config: shipped experiments build valid SACConfigs; defaults match the reference; exact errors."""

from __future__ import annotations

import pytest

from trainer.config import (
    CONFIG_DIR,
    Experiment,
    ExperimentError,
    available_experiments,
    load_experiment,
)
from trainer.sac_config import build_sac_config


@pytest.mark.parametrize("name", available_experiments())
def test_every_shipped_experiment_builds_a_valid_sac_config(name):
    exp = load_experiment(name)
    config = build_sac_config(exp)
    config.validate()
    assert config.algo_class.__name__ == "PortfolioSAC"
    assert config.env_config["data"] == exp.data.source


def test_defaults_are_the_reference_configuration():
    exp = Experiment()
    config = build_sac_config(exp)
    mc = config.model_config
    assert mc["fcnet_hiddens"] == [256, 256] and mc["fcnet_activation"] == "relu"
    assert mc["fusionnet_hiddens"] == [] and mc["head_fcnet_hiddens"] == []  # no critic fusion MLP
    assert config.actor_lr == config.critic_lr == config.alpha_lr == 1e-4  # RLlib: actor 3e-5
    assert config.train_batch_size_per_learner == 256
    assert config.tau == 0.005 and config.gamma == 0.99 and config.twin_q and config.n_step == 1
    assert config.replay_buffer_config["capacity"] == 200_000
    assert config.num_steps_sampled_before_learning_starts == 1000
    assert config.training_intensity == 256  # one gradient step of 256 samples per env step
    assert exp.obs_filter.clip == 10.0 and exp.reward.clip == 20.0
    ref, default = load_experiment("reference"), Experiment()
    for section in ("data", "model", "sac", "obs_filter", "reward", "evaluation", "checkpoint"):
        assert getattr(ref, section) == getattr(default, section), section


def test_overrides_and_param_overrides():
    exp = load_experiment("smoke", {"sac.batch_size": 32, "model.hidden": [8], "seed": 7})
    assert exp.sac.batch_size == 32 and exp.model.hidden == [8] and exp.seed == 7
    from ray import tune

    space = tune.grid_search([[16], [32, 32]])
    config = build_sac_config(exp, {"model.hidden": space, "seed": tune.grid_search([0, 1])})
    assert config.model_config["fcnet_hiddens"] is space  # Tune domains pass through untouched
    folds = tune.grid_search([0, 1, 2])
    swept = build_sac_config(exp, {"data.fold": folds, "data.no_trade_band": 0.02})
    assert swept.env_config["fold"] is folds and swept.env_config["no_trade_band"] == 0.02  # env settings per trial
    with pytest.raises(ExperimentError, match=r"cannot sweep or override model\.width at the RLlib level"):
        build_sac_config(exp, {"model.width": 5})


def _write(tmp_path, text: str) -> str:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "sac:\n  batchsize: 3\n",
            "key 'sac.batchsize': unknown key (check the spelling; see tune_configs/README.md for the schema)",
        ),
        ("sac:\n  batch_size: -3\n", "key 'sac.batch_size': Input should be greater than or equal to 1"),
        (
            "model:\n  hidden: [256, 0]\n",
            "key 'model.hidden': Value error, every hidden layer size must be >= 1",
        ),
        (
            "model:\n  activation: gelu\n",
            "key 'model.activation': Input should be 'relu', 'tanh', 'silu' or 'elu'",
        ),
        (
            "sac:\n  actor_lr: fast\n",
            "key 'sac.actor_lr': Input should be a valid number, unable to parse string as a number",
        ),
        (
            "sac:\n  buffer_size: 10\n  batch_size: 64\n",
            "key 'sac': Value error, buffer_size (10) must be >= batch_size (64)",
        ),
        (
            "data:\n  split_dates: {train: [2010-01-01, 2012-01-01]}\n",
            "key 'data.split_dates': Value error, give all three of train, validation and test as [start, end]",
        ),
        ("- a\n- b\n", "the top level must be a mapping of keys, got list"),
        ("sac: [1, 2\n", "not valid YAML at line 2: expected ',' or ']', but got '<stream end>'"),
    ],
)
def test_schema_errors_are_exact(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert str(info.value) == f"{path}: {message}"


def test_missing_experiment_lists_the_available_ones():
    with pytest.raises(ExperimentError) as info:
        load_experiment("nope")
    assert str(info.value) == (
        f"{CONFIG_DIR / 'nope.yaml'}: experiment not found; available: "
        f"{', '.join(available_experiments())} (or a .yaml path)"
    )


def _bundles(overrides):
    from trainer.algorithm import PortfolioSAC

    exp = load_experiment("smoke", overrides)
    return PortfolioSAC.default_resource_request(build_sac_config(exp)).bundles


def test_gpu_learner_resource_requests_on_cpu():
    """GPU placement is configured and requested correctly even where no GPU exists (tested here on CPU)."""
    # learner in the trial's process on half a GPU, with its custom resource; env runners elsewhere
    b = _bundles(
        {
            "resources.num_gpus_per_learner": 0.5,
            "resources.num_env_runners": 2,
            "resources.custom_resources_per_env_runner": {"rollout": 1},
            "resources.custom_resources_per_learner": {"learner": 1},
        }
    )
    assert b == [
        {"CPU": 1, "GPU": 0.5, "learner": 1},
        {"CPU": 1, "rollout": 1},
        {"CPU": 1, "rollout": 1},
    ]
    # one remote learner on a whole GPU
    b = _bundles({"resources.num_learners": 1, "resources.num_gpus_per_learner": 1, "resources.num_env_runners": 1})
    assert {"GPU": 1} in [{k: v for k, v in x.items() if k == "GPU" and v} for x in b]
    assert sum(x.get("GPU", 0) for x in b) == 1
    # two DDP learners on one GPU each: total batch is per-learner batch x 2
    exp = load_experiment("smoke", {"resources.num_learners": 2, "resources.num_gpus_per_learner": 1})
    config = build_sac_config(exp)
    assert config.num_learners == 2 and config.total_train_batch_size == 2 * exp.sac.batch_size
    with pytest.raises(ExperimentError, match="fractional GPUs are only for one learner per trial"):
        load_experiment("smoke", {"resources.num_learners": 2, "resources.num_gpus_per_learner": 0.5})


def test_q_networks_are_one_mlp_on_obs_and_action():
    """Each Q net is Linear(obs+act, 256) -> ReLU -> Linear(256, 256) -> ReLU -> Linear(256, 1), as in the
    reference (RLlib's default catalog would build two streams plus a 512 -> 256 projection)."""
    import torch

    from envs.portfolio import PortfolioEnv

    config = build_sac_config(Experiment())
    env = PortfolioEnv()
    spec = config.rl_module_spec
    spec.observation_space, spec.action_space, spec.model_config = (
        env.observation_space,
        env.action_space,
        config.model_config,
    )
    module = spec.build()
    for enc, head in ((module.qf_encoder, module.qf), (module.qf_twin_encoder, module.qf_twin)):
        linears = [m for m in list(enc.modules()) + list(head.modules()) if isinstance(m, torch.nn.Linear)]
        assert [(m.in_features, m.out_features) for m in linears] == [(201 + 21, 256), (256, 256), (256, 1)]
        acts = [type(m).__name__ for m in enc.modules() if not isinstance(m, torch.nn.Linear | torch.nn.Sequential)]
        assert "ReLU" in acts and "Tanh" not in acts
    obs = torch.randn(5, 201)
    act = torch.rand(5, 21) * 2 - 1
    # the Q value is that MLP applied to the concatenation
    q = module.qf(module.qf_encoder({"obs": obs, "actions": act})["encoder_out"]).squeeze(-1)
    x = torch.cat([obs, act], -1)
    l1, l2, l3 = [
        m for m in list(module.qf_encoder.modules()) + list(module.qf.modules()) if isinstance(m, torch.nn.Linear)
    ]
    expected = l3(torch.relu(l2(torch.relu(l1(x))))).squeeze(-1)
    torch.testing.assert_close(q, expected)
