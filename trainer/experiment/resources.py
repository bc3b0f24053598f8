"""The ``resources`` section of an experiment: env runners, learners, GPUs, CPUs and threads, and what each
trial asks of Ray (the learner's torch threads follow the CPUs Ray grants it)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from trainer.experiment.schema import Strict, auto_or_number

AUTO = "auto"
# RLlib's CPUs for an algorithm's main process (AlgorithmConfig.num_cpus_for_main_process); build_sac_config
# passes this value, so the trial's request and learner_cpus agree.
NUM_CPUS_FOR_MAIN_PROCESS = 1


RUNNER_KEYS = ("num_env_runners", "overlap_sampling")


def schedule_overrides(recorded: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A recorded ``resources`` section with a resume's ``--set`` overrides able to change the schedule: a new
    ``resources.schedule`` drops the recorded runner settings it decides (those not overridden too), and new
    runner settings without one make the recorded schedule ``auto`` (what the runner settings describe)."""
    given = {k.removeprefix("resources."): v for k, v in overrides.items() if k.startswith("resources.")}
    section = dict(recorded)
    if "schedule" in given:
        for key in RUNNER_KEYS:
            if key not in given:
                section.pop(key, None)
    elif any(key in given for key in RUNNER_KEYS):
        section["schedule"] = AUTO
    return section


class ResourcesConfig(Strict):
    num_env_runners: int = Field(0, ge=0)
    num_envs_per_env_runner: int = Field(1, ge=1)
    num_cpus_per_env_runner: float = Field(1, gt=0)
    num_learners: int = Field(0, ge=0)
    num_gpus_per_learner: float = Field(0, ge=0)
    num_cpus_per_learner: float | Literal["auto"] = "auto"
    # torch intra-op threads of the learner; "auto": the CPUs Ray grants the process that runs it
    # (learner_torch_threads). Env runners keep one thread each (OMP_NUM_THREADS, trainer/__init__.py).
    torch_threads: int | Literal["auto"] = "auto"
    # Custom Ray resources, for deliberate placement on a cluster (see cluster.yaml): env runners ask for
    # these per runner; the learner asks for custom_resources_per_learner (the trial's main process when
    # num_learners is 0, each remote learner otherwise).
    custom_resources_per_env_runner: dict[str, float] = Field(default_factory=dict)
    custom_resources_per_learner: dict[str, float] = Field(default_factory=dict)
    # Sample the next round on the remote env runners while the learner trains on the replay buffer.
    # The in-flight round acts with weights one round older (never silently: off by default).
    overlap_sampling: bool = False
    # Run the learner's gradient step through torch.compile; on a CUDA learner the whole step (losses,
    # backward, Adam, target update) is then one captured CUDA graph (trainer.rl.compiled). Compiling costs
    # tens of seconds at start-up per learner process and gains nothing on a CPU (benchmarks/README.md).
    compile: bool = False
    # How a run's sampling and learning share its CPUs: "local", the learner's process samples a round, then
    # learns; "remote", remote env runners sample while the learner waits, so a learner in the trial's process
    # gets their CPUs too; "overlap", remote runners sample the next round while the learner trains. Or
    # "auto": trainer.train on a Ray instance of its own times each schedule and learner
    # thread count that fits this machine's CPUs at the run's shapes and takes the fastest (trainer.rl.schedule,
    # cached per machine); anywhere else "auto" is the schedule num_env_runners and overlap_sampling describe.
    # "remote" and "overlap" default num_env_runners to 1.
    schedule: Literal["auto", "local", "remote", "overlap"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _schedule_sets_runners(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("schedule") in ("remote", "overlap"):
            data = {"num_env_runners": 1, "overlap_sampling": data["schedule"] == "overlap", **data}
        return data

    @field_validator("num_cpus_per_learner", mode="before")
    @classmethod
    def _auto_or_cpus(cls, v: Any, info: ValidationInfo) -> Any:
        return auto_or_number(v, info)

    @field_validator("torch_threads", mode="before")
    @classmethod
    def _auto_or_threads(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None:  # run directories written before "auto" existed hold the default as null
            return AUTO
        if v == AUTO or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError(f"torch_threads must be 'auto' or a whole number >= 1, got {v!r}")

    def learner_cpus(self) -> float:
        """The CPUs Ray grants the process that runs the learner, by RLlib 2.60's rule
        (``ray.rllib.algorithms.utils``): ``num_cpus_per_learner`` ("auto": 1 without a GPU, 0 with one),
        which with ``num_learners=0`` is the trial's main-process bundle, at least
        ``NUM_CPUS_FOR_MAIN_PROCESS``; each remote learner's own bundle otherwise."""
        if self.num_cpus_per_learner == AUTO:
            per_learner: float = 1 if self.num_gpus_per_learner == 0 else 0
        else:
            per_learner = float(self.num_cpus_per_learner)
        if self.num_learners == 0:
            return max(per_learner, NUM_CPUS_FOR_MAIN_PROCESS)
        return per_learner

    def learner_torch_threads(self, colocated_env_runners: int = 0) -> int:
        """Torch intra-op threads for the learner: ``torch_threads`` when set, else the CPUs Ray grants the
        learner's process, plus, for a learner in the trial's main process, the CPUs of the trial's remote env
        runners on its node that sample synchronously: they wait while the learner trains, so their cores
        are idle then. Runners that sample while the learner trains (``overlap_sampling``) keep their cores.
        Always at least one thread (a GPU learner is granted no CPU of its own).

        Args:
            colocated_env_runners: how many of the trial's remote env runners share the learner's node.
        """
        if self.torch_threads != AUTO:
            return int(self.torch_threads)
        cpus = self.learner_cpus()
        if self.num_learners == 0 and not self.overlap_sampling:
            cpus += colocated_env_runners * self.num_cpus_per_env_runner
        return max(1, math.floor(cpus))

    def schedule_in_effect(self) -> str:
        """The schedule the runner settings describe: local, remote or overlap."""
        if self.num_env_runners == 0:
            return "local"
        return "overlap" if self.overlap_sampling else "remote"

    @model_validator(mode="after")
    def _schedule_agrees(self) -> ResourcesConfig:
        if self.schedule != AUTO and self.schedule != self.schedule_in_effect():
            raise ValueError(
                f"resources.schedule {self.schedule} disagrees with resources.num_env_runners="
                f"{self.num_env_runners} and resources.overlap_sampling={self.overlap_sampling} (they describe "
                f"{self.schedule_in_effect()}): local needs num_env_runners 0, remote needs num_env_runners >= 1 "
                "without overlap_sampling, overlap needs both; change one, or set resources.schedule=auto"
            )
        return self

    @model_validator(mode="after")
    def _overlap_needs_remote_runners(self) -> ResourcesConfig:
        if self.overlap_sampling and self.num_env_runners < 1:
            raise ValueError("overlap_sampling needs num_env_runners >= 1 (remote env runners sample in parallel)")
        return self

    @model_validator(mode="after")
    def _gpu_sharing(self) -> ResourcesConfig:
        # A learner trains on one device (RLlib's get_device picks one): a second GPU would sit idle.
        if self.num_gpus_per_learner > 1:
            raise ValueError(
                f"num_gpus_per_learner={self.num_gpus_per_learner:g}: a learner trains on one GPU; use "
                "num_gpus_per_learner <= 1 (a fraction shares a GPU between trials) and num_learners=N for N GPUs"
            )
        # Several learners of one trial are DDP shards; sharing a GPU between them fails in NCCL
        # (docs/rllib-notes.md, GPU learners).
        if self.num_learners > 1 and self.num_gpus_per_learner not in (0, int(self.num_gpus_per_learner)):
            raise ValueError(
                f"num_gpus_per_learner={self.num_gpus_per_learner} with num_learners={self.num_learners}: "
                "fractional GPUs are only for one learner per trial (several trials share a GPU)"
            )
        return self
