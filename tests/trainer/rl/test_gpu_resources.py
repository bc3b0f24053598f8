"""GPU configuration on a CPU-only machine: what a trial asks Ray for, where its learner would train, vectorised
env runners. Nothing here needs a GPU; ``python -m benchmarks.gpu_check`` measures one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from trainer.experiment.loading import ExperimentError, load_experiment
from trainer.rl.sac_config import build_sac_config
from trainer.tune import build_plan, check_resources

ROOT = Path(__file__).resolve().parents[3]


def _bundles(overrides: dict) -> list[dict]:
    from trainer.rl.algorithm import PortfolioSAC

    return PortfolioSAC.default_resource_request(build_sac_config(load_experiment("smoke", overrides))).bundles


def test_a_quarter_gpu_learner_in_the_trial_process():
    """num_learners=0: the learner trains in the trial's own process, whose bundle carries the GPU fraction."""
    overrides = {"resources.num_gpus_per_learner": 0.25, "resources.num_env_runners": 1}
    config = build_sac_config(load_experiment("smoke", overrides))
    assert config.num_gpus_per_learner == 0.25 and config.num_learners == 0
    assert _bundles(overrides) == [{"CPU": 1, "GPU": 0.25}, {"CPU": 1}]


def test_a_quarter_gpu_remote_learner():
    """num_learners=1: the trial's process only drives (one CPU); the learner actor's bundle holds the GPU
    fraction and, with "auto" CPUs, no CPU of its own."""
    bundles = _bundles(
        {"resources.num_learners": 1, "resources.num_gpus_per_learner": 0.25, "resources.num_env_runners": 2}
    )
    assert bundles[0] == {"CPU": 1}  # the driver
    learner = [b for b in bundles[1:] if b.get("GPU")]
    assert learner == [{"GPU": 0.25}]
    assert [b for b in bundles[1:] if not b.get("GPU")] == [{"CPU": 1}, {"CPU": 1}]  # the two env runners


def test_the_sweep_plan_shares_one_gpu_between_four_trials():
    plan = build_plan(load_experiment("seed_sweep"))  # learner on a quarter GPU of a learner node
    assert plan["resources_per_trial"]["GPU"] == 0.25
    check_resources(plan, {"CPU": 64, "GPU": 1, "learner": 4, "rollout": 16})  # fits: 4 trials per GPU
    with pytest.raises(ExperimentError) as err:
        check_resources(plan, {"CPU": 64, "learner": 4, "rollout": 16})  # a CPU-only cluster
    assert str(err.value).startswith(
        "each trial needs GPU=0.25 but the Ray cluster has GPU=0 in total; no trial could ever start "
        "(train on CPUs with --set resources.num_gpus_per_learner=0"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"resources.num_gpus_per_learner": 1.5},
            "num_gpus_per_learner=1.5: a learner trains on one GPU; use num_gpus_per_learner <= 1 (a fraction "
            "shares a GPU between trials) and num_learners=N for N GPUs",
        ),
        (
            {"resources.num_learners": 2, "resources.num_gpus_per_learner": 0.5},
            "num_gpus_per_learner=0.5 with num_learners=2: fractional GPUs are only for one learner per trial",
        ),
        ({"resources.num_gpus_per_learner": -0.5}, "Input should be greater than or equal to 0"),
    ],
)
def test_gpu_settings_errors(overrides, message):
    with pytest.raises(ExperimentError) as err:
        load_experiment("smoke", overrides)
    assert "key 'resources" in str(err.value) and message in str(err.value)


def test_the_learner_picks_the_gpu_ray_grants_it(monkeypatch):
    """RLlib's TorchLearner.build places the module on ``get_device(config, config.num_gpus_per_learner)``.
    Inside a Ray process granted GPU 0 (what Ray sets up for a trial with a GPU fraction), a fractional
    request selects cuda:0; no GPU requested selects the CPU. Only the device object is made, nothing runs."""
    import ray
    import ray.air._internal.device_manager as device_managers
    from ray.air._internal.device_manager.nvidia_gpu import CUDATorchDeviceManager
    from ray.rllib.utils.framework import get_device

    config = build_sac_config(load_experiment("smoke", {"resources.num_gpus_per_learner": 0.25}))
    monkeypatch.setattr(device_managers, "_torch_device_manager", CUDATorchDeviceManager())
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [0])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(ray._private.worker, "_mode", lambda: ray._private.worker.WORKER_MODE)
    assert get_device(config, config.num_gpus_per_learner) == torch.device("cuda", 0)
    cpu_config = build_sac_config(load_experiment("smoke"))
    assert get_device(cpu_config, cpu_config.num_gpus_per_learner) == torch.device("cpu")


_FAKE_GPU_NODE = textwrap.dedent(
    """
    import json
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from trainer.rl.algorithm import PortfolioSAC
    from trainer.experiment.loading import load_experiment
    from trainer.rl.sac_config import build_sac_config

    # One node declaring one (logical) GPU: Ray schedules by these numbers, no device is touched. A new local
    # instance, never a cluster a `ray start` on this machine left (the multi-node tests start some).
    ray.init(
        address="local", num_cpus=8, num_gpus=1, include_dashboard=False, log_to_driver=False,
        object_store_memory=80_000_000,
    )
    config = build_sac_config(load_experiment("smoke", {"resources.num_gpus_per_learner": 0.25}))
    factory = PortfolioSAC.default_resource_request(config)
    groups = [factory() for _ in range(5)]  # five trials' placement groups, as Tune makes them
    ready, _ = ray.wait([g.ready() for g in groups[:4]], num_returns=4, timeout=60)
    fifth, _ = ray.wait([groups[4].ready()], timeout=3)  # no quarter of the GPU is left for it

    @ray.remote
    def learner_device(config):
        from ray.rllib.utils.framework import get_device

        return str(get_device(config, config.num_gpus_per_learner)), ray.get_gpu_ids()

    # A trial's own process runs in its placement group's first bundle (the learner's, num_learners=0).
    strategy = PlacementGroupSchedulingStrategy(groups[0], placement_group_bundle_index=0)
    device, gpu_ids = ray.get(
        learner_device.options(num_cpus=1, num_gpus=0.25, scheduling_strategy=strategy).remote(config)
    )
    out = {"ready": len(ready), "fifth_ready": len(fifth), "device": device, "gpu_ids": [str(i) for i in gpu_ids]}
    print(json.dumps(out))
    ray.shutdown()
    """
)


@pytest.mark.slow
def test_four_quarter_gpu_trials_fit_one_gpu_and_train_on_it():
    """A real Ray node declaring one GPU: four trials of a quarter GPU are placed, the fifth waits, and a
    trial's process gets GPU 0, where RLlib would put its learner (cuda:0; nothing runs on it). Slow: it
    starts its own Ray node (10-30 s)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "CUDA_VISIBLE_DEVICES")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    res = subprocess.run(
        [sys.executable, "-c", _FAKE_GPU_NODE], capture_output=True, text=True, env=env, cwd=ROOT, timeout=240
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"ready": 4, "fifth_ready": 0, "device": "cuda:0", "gpu_ids": ["0"]}


def test_vectorised_env_runner_samples_and_trains(ray_session):
    """Four envs per remote env runner, sampling the next round while the learner trains."""
    from trainer.train import env_steps_of

    exp = load_experiment(
        "smoke",
        {
            "resources.num_env_runners": 1,
            "resources.num_envs_per_env_runner": 4,
            "resources.overlap_sampling": True,
            "sac.learning_starts": 100,
            "stopping.steps_per_iteration": 200,
        },
    )
    algo = build_sac_config(exp).build_algo()
    try:
        num_envs = algo.env_runner_group.foreach_env_runner(lambda r: r.num_envs, local_env_runner=False)
        algo.train()
        algo.train()
        steps, stored, updates = env_steps_of(algo), len(algo.buffer), algo.updates_lifetime
    finally:
        algo.stop()
    assert num_envs == [4]
    assert steps >= 400 and steps % 4 == 0  # each sampling round steps all four envs
    assert stored == steps  # every sampled transition of the four envs reached the replay buffer
    assert updates > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: benchmarks.gpu_check measures it for real")
def test_gpu_check_says_cuda_is_not_available():
    """The GPU benchmark's CLI on a CPU-only machine: one clear line, exit status 2, nothing started."""
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: CUDA not available: benchmarks.gpu_check measures a GPU learner (torch.cuda.is_available() is "
        "False here); run it on a machine with an NVIDIA GPU and the CUDA build of torch"
    ]
