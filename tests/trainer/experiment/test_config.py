"""trainer.experiment.config: shipped experiments build valid SACConfigs; defaults match the reference; exact errors."""

from __future__ import annotations

import pytest

from trainer.experiment.config import SELECTION_METRICS, SWEEPABLE, Experiment
from trainer.experiment.loading import (
    CONFIG_DIR,
    ExperimentError,
    available_experiments,
    load_experiment,
    parse_override,
)
from trainer.metrics import registry as M
from trainer.rl.sac_config import build_sac_config


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
            "key 'data.split_dates': Value error, give all three of train, validation and test as [start, end] (or "
            "train and validation only: no test window)",
        ),
        ("sac:\n  population: true\n", "key 'sac.population': Value error, population must be a number, got true"),
        ("sac:\n  batch_size: false\n", "key 'sac.batch_size': Value error, batch_size must be a number, got false"),
        ("sac:\n  actor_lr: true\n", "key 'sac.actor_lr': Value error, actor_lr must be a number, got true"),
        ("seed: -2\n", f"key 'seed': Value error, seed must be a whole number from 0 to {2**32 - 1}, got -2"),
        (
            "seed: 4294967296\n",
            f"key 'seed': Value error, seed must be a whole number from 0 to {2**32 - 1}, got 4294967296",
        ),
        ("seed: 1.0\n", f"key 'seed': Value error, seed must be a whole number from 0 to {2**32 - 1}, got 1.0"),
        ("seed: '1'\n", f"key 'seed': Value error, seed must be a whole number from 0 to {2**32 - 1}, got '1'"),
        (
            "seed: 4294967295\nsac:\n  population: 2\n",
            "sac.population=2 trains seeds 4294967295 .. 4294967296, past the largest seed "
            "4294967295; use a seed of at most 4294967294",
        ),
        (
            "sac:\n  population: 2\nsweep:\n  search_space:\n    seed: {grid_search: [0.0, 1.0]}\n",
            "key 'sweep.search_space.seed': value 0.0 is invalid (key 'seed': Value error, seed must be a whole "
            f"number from 0 to {2**32 - 1}, got 0.0)",
        ),
        (
            "sac:\n  population: 2\nsweep:\n  search_space:\n    seed: {grid_search: ['0', '1']}\n",
            "key 'sweep.search_space.seed': value '0' is invalid (key 'seed': Value error, seed must be a whole "
            f"number from 0 to {2**32 - 1}, got '0')",
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
    from trainer.rl.algorithm import PortfolioSAC

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


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"resources.num_cpus_per_learner": 2},
        {"resources.num_cpus_per_learner": 0.5},
        {"resources.num_gpus_per_learner": 0.5},
        {"resources.num_gpus_per_learner": 0.5, "resources.num_cpus_per_learner": 3},
        {"resources.num_learners": 1},
        {"resources.num_learners": 2, "resources.num_cpus_per_learner": 2},
        {"resources.num_learners": 1, "resources.num_gpus_per_learner": 1},
    ],
)
def test_learner_cpus_are_what_the_trial_requests_for_the_learner(overrides):
    """learner_cpus follows RLlib's bundles: the main process's when the learner runs there, else each
    remote learner's (the last bundles)."""
    exp = load_experiment("smoke", overrides)
    bundles = _bundles(overrides)
    learner_bundle = bundles[-1] if exp.resources.num_learners else bundles[0]
    assert exp.resources.learner_cpus() == learner_bundle.get("CPU", 0)  # Ray drops zero entries


@pytest.mark.parametrize(
    ("overrides", "colocated", "threads"),
    [
        ({}, 0, 1),  # the default: learner and local sampling in the trial's one-CPU process
        ({"resources.num_cpus_per_learner": 2}, 0, 2),  # a two-CPU trial process
        ({"resources.num_cpus_per_learner": 2.5}, 0, 2),  # whole threads only
        ({"resources.num_cpus_per_learner": 0.5}, 0, 1),  # RLlib gives the main process at least one CPU
        # a remote env runner sampling synchronously waits while the learner trains: its CPU goes to the learner
        ({"resources.num_env_runners": 1}, 1, 2),
        ({"resources.num_env_runners": 2}, 2, 3),
        ({"resources.num_env_runners": 2}, 1, 2),  # one runner on another node lends nothing here
        ({"resources.num_env_runners": 1, "resources.num_cpus_per_env_runner": 0.5}, 1, 1),
        # a runner sampling while the learner trains keeps its CPU
        ({"resources.num_env_runners": 1, "resources.overlap_sampling": True}, 1, 1),
        # remote learners: their own bundle's CPUs, at least one thread (a GPU learner asks for none)
        ({"resources.num_learners": 1, "resources.num_env_runners": 1}, 1, 1),
        ({"resources.num_learners": 1, "resources.num_cpus_per_learner": 4}, 0, 4),
        ({"resources.num_learners": 1, "resources.num_gpus_per_learner": 1}, 0, 1),
        # an explicit number always wins
        ({"resources.torch_threads": 3}, 0, 3),
        ({"resources.torch_threads": 1, "resources.num_env_runners": 1}, 1, 1),
    ],
)
def test_learner_torch_threads_follow_the_granted_cpus(overrides, colocated, threads):
    exp = load_experiment("smoke", overrides)
    assert exp.resources.learner_torch_threads(colocated) == threads


def test_two_concurrent_trials_on_two_cores_get_one_thread_each():
    """The study sweep runs 2 trials at a time on 2 CPUs: each requests one CPU, so each learner one thread;
    a trial with a remote runner requests two, runs alone on 2 CPUs and its learner gets both."""
    exp = load_experiment("study")
    assert exp.sweep.max_concurrent_trials == 2
    assert sum(b["CPU"] for b in _bundles_of(exp)) == 1 and exp.resources.learner_torch_threads() == 1
    alone = load_experiment("study", {"resources.num_env_runners": 1})
    assert sum(b["CPU"] for b in _bundles_of(alone)) == 2 and alone.resources.learner_torch_threads(1) == 2


def _bundles_of(exp):
    from trainer.rl.algorithm import PortfolioSAC

    return PortfolioSAC.default_resource_request(build_sac_config(exp)).bundles


def test_null_torch_threads_of_earlier_run_directories_is_auto(tmp_path):
    assert load_experiment(_write(tmp_path, "resources:\n  torch_threads: null\n")).resources.torch_threads == "auto"


@pytest.mark.parametrize("value", [0, -1, 1.5, "many", True])
def test_torch_threads_must_be_auto_or_a_whole_number(tmp_path, value):
    path = _write(tmp_path, f"resources:\n  torch_threads: {value}\n")
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    shown = {"many": "'many'", True: "True"}.get(value, value)
    assert str(info.value) == (
        f"{path}: key 'resources.torch_threads': Value error, torch_threads must be 'auto' or a whole number "
        f">= 1, got {shown}"
    )


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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sac:\n  training_intensity: .inf\n", "key 'sac.training_intensity': Input should be a finite number"),
        ("sac:\n  actor_lr: .nan\n", "key 'sac.actor_lr': Input should be a finite number"),
        ("reward:\n  clip: .inf\n", "key 'reward.clip': Input should be a finite number"),
        ("data:\n  temperature: .inf\n", "key 'data.temperature': Input should be a finite number"),
        ("data:\n  cost_bps: .nan\n", "key 'data.cost_bps': Input should be a finite number"),
        ("divergence:\n  max_critic_loss: .inf\n", "key 'divergence.max_critic_loss': Input should be a finite number"),
        (
            "resources:\n  custom_resources_per_learner: {learner: .inf}\n",
            "key 'resources.custom_resources_per_learner.learner': Input should be a finite number",
        ),
        (
            "sac:\n  target_entropy: .nan\n",
            "key 'sac.target_entropy': Value error, target_entropy must be 'auto' or a finite number, got nan",
        ),
        (
            "resources:\n  num_cpus_per_learner: many\n",
            "key 'resources.num_cpus_per_learner': Value error, num_cpus_per_learner must be 'auto' or a finite "
            "number, got 'many'",
        ),
    ],
)
def test_infinite_or_nan_numbers_are_refused_everywhere(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert str(info.value) == f"{path}: {message}"


def test_infinite_override_is_refused():
    with pytest.raises(ExperimentError) as info:
        load_experiment("smoke", dict([parse_override("sac.training_intensity=inf")]))
    assert (
        str(info.value) == f"{CONFIG_DIR / 'smoke.yaml'} with sac.training_intensity=inf from the command line: "
        "key 'sac.training_intensity': Input should be a finite number"
    )


def test_non_utf8_experiment_file_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("description: caf\xe9 run\n".encode("latin-1"))
    with pytest.raises(ExperimentError) as info:
        load_experiment(str(path))
    assert (
        str(info.value)
        == f"{path}: not UTF-8 text (byte 0xe9 at offset 16); save the experiment file with UTF-8 encoding"
    )


def test_a_date_that_is_no_date_names_file_line_and_value(tmp_path):
    path = _write(
        tmp_path,
        "seed: 1\ndata:\n  split_dates:\n    train: [2010-01-04, 2020-13-01]\n"
        "    validation: [2021-01-04, 2021-06-30]\n    test: [2021-07-01, 2021-12-31]\n",
    )
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert str(info.value) == (
        f"{path}: at line 4: '2020-13-01' is not a real date (month must be in 1..12); write a real date as "
        "YYYY-MM-DD, or quote the value if it is not a date"
    )
    with pytest.raises(ExperimentError) as info:
        parse_override("data.folds.end=2021-02-30")
    assert str(info.value) == (
        "--set data.folds.end=2021-02-30: at line 1: '2021-02-30' is not a real date (day is out of range for "
        "month); write a real date as YYYY-MM-DD, or quote the value if it is not a date"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "stopping: {env_steps: 1000}\nsweep: {scheduler: {grace_period: 5000}}\n",
            "sweep.scheduler.grace_period (5,000) is above stopping.env_steps (1,000): ASHA may stop a trial only "
            "after the grace period and runs it for at most stopping.env_steps env steps; lower "
            "sweep.scheduler.grace_period or raise stopping.env_steps",
        ),
        (
            "sweep: {scheduler: {grace_period: 5000, max_t: 2000}}\n",
            "sweep.scheduler.grace_period (5,000) is above sweep.scheduler.max_t (2,000): ASHA may stop a trial only "
            "after the grace period and runs it for at most sweep.scheduler.max_t env steps; lower "
            "sweep.scheduler.grace_period or raise sweep.scheduler.max_t",
        ),
    ],
)
def test_asha_grace_period_beyond_the_budget_is_a_schema_error(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert str(info.value) == f"{path}: {message}"


def test_asha_grace_period_default_fits_any_budget(tmp_path):
    """Unset, the grace period is a tenth of ASHA's max_t, so a short training-only experiment stays valid."""
    exp = load_experiment(_write(tmp_path, "stopping: {env_steps: 1000}\n"))
    assert (exp.asha_max_t(), exp.asha_grace_period()) == (1000, 100)
    assert Experiment().asha_grace_period() == 10_000  # the reference budget of 100k env steps
    fifo = load_experiment(
        _write(tmp_path, "stopping: {env_steps: 1000}\nsweep: {scheduler: {type: fifo, grace_period: 5000}}\n")
    )
    assert fifo.sweep.scheduler.type == "fifo"  # no ASHA, no rule


def test_unknown_sweep_metric_lists_the_reported_ones(tmp_path):
    path = _write(tmp_path, "sweep: {metric: portfolio/validation/sharp}\n")
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert str(info.value) == (
        f"{path}: key 'sweep.metric': Value error, unknown metric 'portfolio/validation/sharp': a sweep selects on "
        f"a number every training result reports; choose one of {', '.join(SELECTION_METRICS)}"
    )
    assert SELECTION_METRICS[:6] == (
        "portfolio/validation/total_return",
        "portfolio/validation/sharpe",
        "portfolio/validation/max_drawdown",
        "portfolio/validation/turnover_per_day",
        "portfolio/validation/total_costs",
        "portfolio/validation/sharpe_minus_ew",
    )
    # measures only a backtest computes never appear in a training result
    assert "portfolio/sortino" not in SELECTION_METRICS and "portfolio/annualized_return" not in SELECTION_METRICS
    ok = load_experiment(_write(tmp_path, "sweep: {metric: portfolio/validation/sharpe_minus_ew}\n"))
    assert ok.sweep.metric == M.VALIDATION_SHARPE_MINUS_EW_METRIC


def test_one_experiment_path_resolver():
    import envs.folds
    import trainer.experiment.loading

    assert trainer.experiment.loading.resolve_experiment_path is envs.folds.resolve_experiment_path


def test_every_sweepable_key_reads_back_from_the_rllib_config():
    """Summaries and the progress table read swept values at SWEEPABLE's paths in Tune's config dict."""
    values = {
        "seed": 11,
        "model.hidden": [7],
        "model.activation": "tanh",
        "model.type": "attention",
        "model.attention_layers": 2,
        "sac.actor_lr": 0.123,
        "sac.critic_lr": 0.234,
        "sac.alpha_lr": 0.345,
        "sac.tau": 0.0456,
        "sac.gamma": 0.567,
        "sac.initial_alpha": 0.678,
        "sac.target_entropy": -3.5,
        "sac.batch_size": 17,
        "sac.learning_starts": 19,
        "sac.training_intensity": 23.0,
        "sac.buffer_size": 2999,
        "data.fold": 1,
        "data.cost_bps": 3.3,
        "data.episode_len": 44,
        "data.reward": "log_return",
        "data.temperature": 2.2,
        "data.action": "tilt",
        "data.tilt_reference": "previous",
        "data.tilt_scale": 0.7,
        "data.no_trade_band": 0.01,
        "data.rebalance_fraction": 0.5,
        "data.max_weight": 0.3,
        "data.max_cash": 0.2,
        "data.max_turnover": 0.4,
        "data.features": "asset+rank+market",
    }
    assert set(values) == set(SWEEPABLE)
    config = build_sac_config(load_experiment("smoke"), dict(values)).to_dict()
    for key, path in SWEEPABLE.items():
        node = config
        for part in path:
            node = node[part]
        assert node == values[key], key


@pytest.mark.parametrize("text", ["noeq", "=3", "sac..batch_size=3"])
def test_malformed_override_is_a_clear_error(text):
    with pytest.raises(ExperimentError) as info:
        parse_override(text)
    assert str(info.value) == f"--set {text!r}: expected key=value, e.g. --set sac.batch_size=128"
