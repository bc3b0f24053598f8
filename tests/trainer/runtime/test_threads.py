"""The learner's torch threads reach the process that trains: the trial's main process or a remote learner."""

from __future__ import annotations

import pytest
import torch

from trainer.experiment.loading import load_experiment
from trainer.rl.sac_config import build_sac_config


@pytest.mark.parametrize(
    ("overrides", "threads"),
    [
        ({}, 1),  # local sampling in the one-CPU main process
        ({"resources.num_env_runners": 1}, 2),  # a synchronous remote runner on this node lends its CPU
        ({"resources.num_env_runners": 1, "resources.overlap_sampling": True}, 1),  # an overlapping one does not
    ],
)
def test_learner_in_the_main_process_gets_the_granted_threads(ray_session, overrides, threads):
    torch.set_num_threads(3)  # neither answer, so the assertions see what set-up chose
    exp = load_experiment("smoke", overrides)
    algo = build_sac_config(exp).build_algo()
    try:
        assert algo.torch_threads == threads
        assert torch.get_num_threads() == threads
        # remote env runners keep one thread each
        runners = algo.env_runner_group.foreach_env_runner(lambda r: torch.get_num_threads(), local_env_runner=False)
        assert runners == [1] * exp.resources.num_env_runners
    finally:
        algo.stop()


def test_remote_learner_sets_its_own_threads(ray_session):
    torch.set_num_threads(3)
    exp = load_experiment("smoke", {"resources.num_learners": 1, "resources.torch_threads": 2})
    algo = build_sac_config(exp).build_algo()
    try:
        results = algo.learner_group.foreach_learner(lambda learner: torch.get_num_threads())
        assert [r.get() for r in results] == [2]
        assert torch.get_num_threads() == 3  # this process trains nothing: its threads are left alone
    finally:
        algo.stop()
