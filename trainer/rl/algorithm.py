"""``PortfolioSAC``: RLlib's SAC (new API stack) with our replay, evaluation, guard and checkpoint extras.

What differs from ``ray.rllib.algorithms.sac.SAC`` and why:

- ``training_step``: samples from the env runners, adds raw transitions to ``FlatReplayBuffer`` (reward
  clipped there: RLlib's ``clip_rewards`` does nothing on the new stack), and performs exactly
  ``training_intensity / batch_size`` gradient steps per sampled env step (a carried fractional credit keeps
  the ratio exact across iterations). Each sampled batch is normalised with the observation filter's current
  statistics, so the learner sees what the policy would see now. Losses, networks and target updates are
  RLlib's SAC learner, unchanged.
- ``step``, the validation passes and the divergence guard: ``trainer.rl.validation.ValidationReporting``.
- ``save_to_path`` / ``restore_from_path`` also write/read the replay buffer and our counters (RLlib does
  not checkpoint the buffer on the new stack, docs/rllib-notes.md), so a resumed run continues as an uninterrupted
  one would; ``save_to_path`` also writes the policy files (``trainer.rl.policy_export``: what a backtest reads,
  no pickle) and the manifest last, and ``restore_from_path`` verifies it before anything is unpickled
  (``trainer.runtime.checkpoint``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from ray.rllib.algorithms.sac import SAC, SACConfig
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    REPLAY_BUFFER_SAMPLE_TIMER,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TD_ERROR_KEY,
    TIMERS,
)

from envs.fingerprint import data_record
from envs.population import REWARDS_INFO, SEEDS_KEY, agent_seeds
from trainer.evaluation.obs_filter import FrozenObsFilter, find_obs_filter
from trainer.experiment.config import AlgorithmSettings
from trainer.rl.buffer import FlatReplayBuffer, PopulationReplayBuffer
from trainer.rl.connectors import RawObsMeanStdFilter
from trainer.rl.env_runner import Transitions
from trainer.rl.policy_export import write_from_algorithm
from trainer.rl.set_modules import with_layout
from trainer.rl.validation import ValidationReporting
from trainer.rl.weight_sync import WeightSync
from trainer.runtime import checkpoint
from trainer.runtime.threads import set_torch_threads

_SAMPLE_TAG = "portfolio_sample"


def _sample_and_metrics(runner: Any) -> tuple[list, dict]:
    """Run on a remote env runner: one sampling round and its metrics (as synchronous_parallel_sample)."""
    return runner.sample(), runner.get_metrics()


def _set_noise_stream(runner: Any) -> None:
    """Run on every env runner of a population: its own exploration-noise stream (its worker index)."""
    runner.module.set_noise_stream(runner.worker_index)


def _with_agent_seeds(config: Any) -> Any:
    """The config with a population's agent seeds following its seed, in the module's and the env's config.

    ``build_sac_config`` marks a population by ``population_seeds`` in the model config; under Tune the seed
    is only known here, once the trial's config is resolved.
    """
    if isinstance(config, dict):
        model_config = config.get("_model_config") or {}
        if SEEDS_KEY not in model_config:
            return config
        seeds = agent_seeds(config.get("seed") or 0, len(model_config[SEEDS_KEY]))
        return {
            **config,
            "_model_config": {**model_config, SEEDS_KEY: seeds},
            "env_config": {**(config.get("env_config") or {}), SEEDS_KEY: seeds},
        }
    if config is None or SEEDS_KEY not in (config._model_config or {}):
        return config
    config = config.copy(copy_frozen=False)
    seeds = agent_seeds(config.seed or 0, len(config._model_config[SEEDS_KEY]))
    config._model_config = {**config._model_config, SEEDS_KEY: seeds}
    config.env_config = {**config.env_config, SEEDS_KEY: seeds}
    return config


def _node_id(runner: Any) -> str:
    """Run on a remote env runner: the Ray node it runs on."""
    import ray

    return ray.get_runtime_context().get_node_id()


class PortfolioSACConfig(SACConfig):
    """``SACConfig`` plus ``portfolio``: the experiment settings PortfolioSAC reads itself."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or PortfolioSAC)
        self.portfolio: dict[str, Any] = {}


class PortfolioSAC(ValidationReporting, SAC):
    """SAC with a flat raw-observation replay buffer, validation passes and a divergence guard."""

    @classmethod
    def get_default_config(cls) -> PortfolioSACConfig:
        return PortfolioSACConfig()

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        # Tune passes the trial's identity inside the config dict; Algorithm.__init__ turns the dict into an
        # AlgorithmConfig without it, so every trial would be "default" (self.trial_id, metric tags).
        from ray.tune.result import TRIAL_INFO

        trial_info = config.get(TRIAL_INFO) if isinstance(config, dict) else None
        super().__init__(config=with_layout(_with_agent_seeds(config)), **kwargs)
        if trial_info is not None:
            self._trial_info = trial_info

    # --- set-up ---------------------------------------------------------------------------------------
    def setup(self, config: Any) -> None:
        super().setup(config)
        from envs.population import PopulationEnv
        from envs.portfolio import PortfolioEnv

        self.settings = settings = AlgorithmSettings.model_validate(self.config.portfolio)
        # The learner's torch threads (remote learners set the same number in FusedSACTorchLearner.build).
        self.torch_threads = settings.resources.learner_torch_threads()
        if self.config.num_learners == 0:  # the learner trains in this process
            self.torch_threads = settings.resources.learner_torch_threads(self._colocated_env_runners())
            set_torch_threads(self.torch_threads)
        eval_config = {**self.config.env_config, "split": settings.evaluation.split}
        capacity = self.config.replay_buffer_config["capacity"]
        # A population (K agents of this config in batched tensors, trainer.rl.population) or one agent.
        self.population_seeds: list[int] | None = self.config.env_config.get(SEEDS_KEY)
        self.diverged_agents: dict[int, str] = {}
        self.agent_evaluations: list[dict[str, float]] = []
        if self.population_seeds:
            self._eval_env = PopulationEnv(**eval_config)
            self._single_eval_env = self._eval_env.envs[0]
            self.buffer = PopulationReplayBuffer(
                capacity, self._eval_env.obs_dim, self._eval_env.act_dim, self.population_seeds
            )
            if self.env_runner_group is not None:
                self.env_runner_group.foreach_env_runner(_set_noise_stream)
        else:
            self._eval_env = self._single_eval_env = PortfolioEnv(**eval_config)
            obs_dim = self._eval_env.observation_space.shape[0]
            act_dim = self._eval_env.action_space.shape[0]
            self.buffer = FlatReplayBuffer(capacity, obs_dim, act_dim, seed=self.config.seed)
        self.tickers = list(self._single_eval_env.market.tickers)
        # the windows' dates and price fingerprints: a backtest, decision or resume on other prices is told
        self.data_record = data_record(self._single_eval_env.market)
        self._inflight = False
        self._weight_sync = WeightSync(self)
        self._update_credit = 0.0
        self.updates_lifetime = 0  # gradient steps done by this process (benchmarks)
        self.diverged: str | None = None
        self.last_evaluation: dict[str, float] = {}
        self._equal_weight_evaluation: dict[str, float] | None = None
        self.history: list[dict[str, float]] = []
        self._metrics_exporter = None
        self.run_name: str | None = None  # gauge tag outside Tune: trainer.train sets its run directory's name
        self._last_counts = (0, 0, time.perf_counter())
        if settings.model.init_from:  # a warm start: another checkpoint's networks (a resume then restores its own)
            from trainer.rl.warm_start import load_module_weights

            load_module_weights(self, settings.model.init_from)

    def _colocated_env_runners(self) -> int:
        """How many remote env runners run on this process's node (their CPUs may go to the learner)."""
        group = self.env_runner_group
        if group is None or group.num_remote_env_runners() == 0:
            return 0
        import ray

        nodes = group.foreach_env_runner(_node_id, local_env_runner=False)
        return sum(node == ray.get_runtime_context().get_node_id() for node in nodes)

    # --- observation filter ---------------------------------------------------------------------------
    def obs_filter(self) -> RawObsMeanStdFilter | None:
        """The filter holding the merged statistics (on the local env runner)."""
        runner = self.env_runner_group.local_env_runner if self.env_runner_group else None
        pipeline = getattr(runner, "_env_to_module", None) if runner is not None else None
        if pipeline is None:
            pipeline = getattr(self, "env_to_module_connector", None)
        return find_obs_filter(pipeline)

    # --- training -------------------------------------------------------------------------------------
    def _add_episodes(self, episodes: list) -> int:
        """Store a sampling round's transitions: ``Transitions`` (``PortfolioEnvRunner``) or RLlib's episode
        chunks (RLlib's runner, checkpoints configured before it); returns the env steps stored."""
        added = 0
        for ep in episodes:
            n = len(ep)
            if n == 0:
                continue
            rows = ep if isinstance(ep, Transitions) else Transitions.of_episode(ep)
            obs, next_obs, actions, rewards = rows.obs, rows.next_obs, rows.actions, rows.rewards
            terminateds = rows.terminateds
            if self.population_seeds:
                # agents side by side -> [steps, K, ...]; each agent's reward from the step's info
                k = len(self.population_seeds)
                obs, next_obs = obs.reshape(n, k, -1), next_obs.reshape(n, k, -1)
                actions = actions.reshape(n, k, -1)
                rewards = np.stack([info[REWARDS_INFO] for info in rows.infos]).astype(np.float32)
                terminateds = np.repeat(terminateds[:, None], k, axis=1)
            clip = self.settings.reward.clip
            if clip is not None:
                rewards = np.clip(rewards, -clip, clip)  # a copy: a remote runner's arrays are read-only
            self.buffer.add(obs, actions, rewards, next_obs, terminateds)
            added += n
        return added

    def _sample_batch(self, n_steps: int = 1) -> MultiAgentBatch:
        """``n_steps`` gradient steps' worth of uniformly sampled, normalised transitions.

        A population's columns are ``[rows, K, ...]``: rows first, as one agent's, so RLlib counts and shards
        (several learners) rows; its learner update makes them agent-major.
        """
        rows = self.config.total_train_batch_size * n_steps
        raw = self.buffer.sample(rows)
        frozen = FrozenObsFilter.of(self.obs_filter())
        obs, next_obs = raw["obs"], raw["next_obs"]
        if frozen is not None:
            # the filter's statistics are per component of the agents' side-by-side observation; the sampled
            # arrays are fresh copies of the buffer's rows, so they are normalised where they are
            obs = frozen.normalize_in_place(obs.reshape(rows, -1)).reshape(obs.shape)
            next_obs = frozen.normalize_in_place(next_obs.reshape(rows, -1)).reshape(next_obs.shape)
        rewards = raw["rewards"]
        if self.settings.reward.normalize:
            rewards = rewards / np.maximum(self.buffer.reward_std, 1e-8)
        actions, terminateds = raw["actions"], raw["terminateds"]
        ones = np.ones(rewards.shape, np.float32)  # 1-step returns, uniform importance weights
        # A MultiAgentBatch of numpy arrays: the Learner converts it to tensors on its own device.
        sample = SampleBatch(
            {
                Columns.OBS: obs,
                Columns.NEXT_OBS: next_obs,
                Columns.ACTIONS: actions,
                Columns.REWARDS: rewards,
                Columns.TERMINATEDS: terminateds,
                "n_step": ones,
                "weights": ones,
            }
        )
        return MultiAgentBatch({DEFAULT_MODULE_ID: sample}, env_steps=rows)

    def _filter_needs_sync(self) -> bool:
        filt = self.obs_filter()
        return filt is not None and filt.stats().count == 0 and self.config.num_env_runners > 0

    def _sample_overlapped(self) -> tuple[list, list]:
        """Collect the round the remote runners sampled while we learned, and start the next one at once.

        Runners act with the weights they had when the round started (one round older than a synchronous
        sample); RLlib syncs weights fire-and-forget, so they arrive before the following round.
        """
        group = self.env_runner_group
        if not self._inflight:
            group.foreach_env_runner_async(_sample_and_metrics, tag=_SAMPLE_TAG)
            self._inflight = True
        ready: list = []
        deadline = time.perf_counter() + (self.config.sample_timeout_s or 60.0)
        while not ready and time.perf_counter() < deadline:
            ready = group.fetch_ready_async_reqs(tags=_SAMPLE_TAG, timeout_seconds=0.5)
        episodes, metrics = [], []
        for _, (eps, m) in ready:
            episodes.extend(eps)
            metrics.append(m)
        # restarted runners (fault tolerance) have no request in flight: ask every healthy runner again
        group.foreach_env_runner_async(
            _sample_and_metrics, tag=_SAMPLE_TAG, remote_worker_ids=[i for i, _ in ready] or None
        )
        return episodes, metrics

    def training_step(self) -> None:
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            if self.settings.resources.overlap_sampling:
                episodes, env_runner_results = self._sample_overlapped()
            else:
                episodes, env_runner_results = synchronous_parallel_sample(
                    worker_set=self.env_runner_group,
                    concat=True,
                    sample_timeout_s=self.config.sample_timeout_s,
                    _uses_new_env_runners=True,
                    _return_metrics=True,
                )
        self.metrics.aggregate(env_runner_results, key=ENV_RUNNER_RESULTS)
        if self.diverged:
            # The iteration must still reach its sample quota to end; the env runners act with the last
            # good weights (never synced after the guard tripped), and nothing is stored or learned.
            return
        n_new = self._add_episodes(episodes)
        current_ts = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
        batch_size = self.config.total_train_batch_size
        if current_ts < self.config.num_steps_sampled_before_learning_starts or len(self.buffer) < batch_size:
            return
        if self._filter_needs_sync():
            # Remote runners' statistics reach the local filter once per iteration; before the first
            # merge, pull them now rather than normalise with empty statistics.
            self.env_runner_group.sync_env_runner_states(config=self.config)
        self._update_credit += n_new * self.config.training_intensity / batch_size
        n_updates = int(self._update_credit)
        self._update_credit -= n_updates
        if n_updates:
            # All gradient steps of this sampling round in one learner call: n_updates x batch_size rows that
            # FusedSACTorchLearner takes as n_updates gradient steps (and target updates) of batch_size, so
            # RLlib's per-call and per-minibatch overheads (batch conversion, slicing, metrics) are paid once.
            with self.metrics.log_time((TIMERS, REPLAY_BUFFER_SAMPLE_TIMER)):
                batch = self._sample_batch(n_updates)
            with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
                learner_results = self.learner_group.update(
                    batch=batch,
                    timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: current_ts},
                    num_epochs=1,
                )
            for res in learner_results:  # per-sample TD errors are not metrics (RLlib's DQN drops them too)
                for module_results in res.values():
                    module_results.pop(TD_ERROR_KEY, None)
            self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
            self.updates_lifetime += n_updates
            self._check_divergence()
            if self.diverged:
                return
            with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
                self._weight_sync.sync()

    # --- checkpoints ----------------------------------------------------------------------------------
    def save_to_path(
        self, path: Any = None, *, state: Any = None, filesystem: Any = None, use_msgpack: bool = False
    ) -> str:
        if filesystem is None:
            path = checkpoint.absolute(path)
        out = super().save_to_path(path, state=state, filesystem=filesystem, use_msgpack=use_msgpack)
        if self.settings.checkpoint.save_buffer:
            self.buffer.save(out)
        filt = self.obs_filter()
        extra = {
            "training_iteration": self.iteration,
            "update_credit": self._update_credit,
            "diverged": self.diverged,
            "last_evaluation": self.last_evaluation,
            "tickers": self.tickers,
            checkpoint.DATA_KEY: self.data_record,
            "env_config": dict(self.config.env_config),
            "experiment": self.config.portfolio,
            # a policy trained on normalised observations must never be loaded without the statistics
            "obs_filter": filt is not None,
            "obs_filter_count": filt.stats().count if filt is not None else 0,
            "history": self.history,
        }
        if self.population_seeds:
            extra[SEEDS_KEY] = self.population_seeds
            extra[checkpoint.DIVERGED_AGENTS_KEY] = {str(i): reason for i, reason in self.diverged_agents.items()}
            extra[checkpoint.AGENT_EVALUATIONS_KEY] = self.agent_evaluations
        checkpoint.write_state(out, extra)
        write_from_algorithm(self, out)  # the policy without pickle: what backtests (and decisions) read
        checkpoint.write_manifest(out)  # last: it covers every file above
        return out

    def restore_from_path(
        self, path: Any, *args: Any, component: str | None = None, replay_buffer: bool = True, **kwargs: Any
    ) -> None:
        """RLlib's restore, plus the replay buffer and our counters; the checkpoint is verified first.

        Args:
            path: the checkpoint directory.
            component: restore only this RLlib component (no verification, no extras).
            replay_buffer: restore the replay buffer too; False starts with an empty one (the caller has
                said why, see ``checkpoint.resume_state``).

        Raises:
            CheckpointError: the checkpoint is incomplete, damaged or of another Ray minor version (before
                anything is unpickled), or its replay buffer does not fit this run.
        """
        if kwargs.get("filesystem") is None:
            path = checkpoint.absolute(path)
        if component is not None:
            super().restore_from_path(path, *args, component=component, **kwargs)
            return
        path = Path(path)
        extra = checkpoint.read_state(path, replay_buffer=replay_buffer)
        super().restore_from_path(path, *args, **kwargs)
        if replay_buffer:
            try:
                self.buffer.load(path)
            except ValueError as exc:
                raise checkpoint.CheckpointError(
                    f"{exc}; resume without it with --allow-missing-buffer, or use another checkpoint of the run"
                ) from None
        self._weight_sync.reset()
        self._update_credit = float(extra.get("update_credit", 0.0))
        self.last_evaluation = dict(extra.get("last_evaluation") or {})
        self.history = list(extra.get("history") or [])
        diverged = extra.get(checkpoint.DIVERGED_AGENTS_KEY) or {}
        self.diverged_agents = {int(i): reason for i, reason in diverged.items()}
        self.agent_evaluations = list(extra.get(checkpoint.AGENT_EVALUATIONS_KEY) or [])
