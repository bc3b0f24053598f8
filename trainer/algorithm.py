"""``PortfolioSAC``: RLlib's SAC (new API stack) with our replay, evaluation, guard and checkpoint extras.

What differs from ``ray.rllib.algorithms.sac.SAC`` and why:

- ``training_step``: samples from the env runners, adds raw transitions to ``FlatReplayBuffer`` (reward
  clipped there: RLlib's ``clip_rewards`` does nothing on the new stack), and performs exactly
  ``training_intensity / batch_size`` gradient steps per sampled env step (a carried fractional credit keeps
  the ratio exact across iterations). Each sampled batch is normalised with the observation filter's current
  statistics, so the learner sees what the policy would see now. Losses, networks and target updates are
  RLlib's SAC learner, unchanged.
- ``step``: adds the ``portfolio`` result section: losses, entropy (RLlib has no entropy key; we report
  ``-mean log pi``), throughput, and every ``evaluation.interval`` iterations a deterministic pass over the
  validation split with ``tanh(mean)`` actions and the frozen filter (RLlib's deterministic SAC action
  skips the tanh: docs/rllib-notes.md).
- Divergence guard: a non-finite critic loss, or one above ``divergence.max_critic_loss``, stops updates;
  the result says ``diverged`` with the reason, and no further checkpoint is written by our entry points.
- ``save_to_path`` / ``restore_from_path`` also write/read the replay buffer and our counters (RLlib does
  not checkpoint the buffer on the new stack, docs/rllib-notes.md), so a resumed run continues as an uninterrupted
  one would; ``save_to_path`` writes the manifest last and ``restore_from_path`` verifies it before anything
  is unpickled (``trainer.checkpoint``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from ray.rllib.algorithms.sac import SAC, SACConfig
from ray.rllib.algorithms.sac.sac_learner import LOGPS_KEY, QF_LOSS_KEY, QF_TWIN_LOSS_KEY
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import POLICY_LOSS_KEY
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ALL_MODULES,
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    EPISODE_RETURN_MEAN,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_TRAINED_LIFETIME,
    REPLAY_BUFFER_SAMPLE_TIMER,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TD_ERROR_KEY,
    TIMERS,
)

from envs.population import REWARDS_INFO
from trainer import checkpoint
from trainer import metrics as M
from trainer.buffer import FlatReplayBuffer, PopulationReplayBuffer
from trainer.config import AlgorithmSettings
from trainer.connectors import FrozenObsFilter, RawObsMeanStdFilter, find_obs_filter
from trainer.learner import AGENTS_KEY, ALPHA_VALUE_KEY
from trainer.population import SEEDS_KEY, agent_seeds

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


class PortfolioSAC(SAC):
    """SAC with a flat raw-observation replay buffer, validation passes and a divergence guard."""

    @classmethod
    def get_default_config(cls) -> PortfolioSACConfig:
        return PortfolioSACConfig()

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        # Tune passes the trial's identity inside the config dict; Algorithm.__init__ turns the dict into an
        # AlgorithmConfig without it, so every trial would be "default" (self.trial_id, metric tags).
        from ray.tune.result import TRIAL_INFO

        trial_info = config.get(TRIAL_INFO) if isinstance(config, dict) else None
        super().__init__(config=_with_agent_seeds(config), **kwargs)
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
            import torch

            self.torch_threads = settings.resources.learner_torch_threads(self._colocated_env_runners())
            torch.set_num_threads(self.torch_threads)
        eval_config = {**self.config.env_config, "split": settings.evaluation.split}
        capacity = self.config.replay_buffer_config["capacity"]
        # A population (K agents of this config in batched tensors, trainer.population) or one agent.
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
        self._inflight = False
        self._update_credit = 0.0
        self.updates_lifetime = 0  # gradient steps done by this process (benchmarks)
        self.diverged: str | None = None
        self.last_evaluation: dict[str, float] = {}
        self._equal_weight_evaluation: dict[str, float] | None = None
        self.history: list[dict[str, float]] = []
        self._metrics_exporter = None
        self.run_name: str | None = None  # gauge tag outside Tune: trainer.train sets its run directory's name
        self._last_counts = (0, 0, time.perf_counter())

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
        added = 0
        for ep in episodes:
            n = len(ep)
            if n == 0:
                continue
            obs = np.asarray(ep.get_observations(slice(0, n + 1)), np.float32)
            actions = np.asarray(ep.get_actions(slice(0, n)), np.float32)
            if self.population_seeds:
                # agents side by side -> [steps, K, ...]; each agent's reward from the step's info
                k = len(self.population_seeds)
                obs, actions = obs.reshape(n + 1, k, -1), actions.reshape(n, k, -1)
                rewards = np.stack([info[REWARDS_INFO] for info in ep.get_infos(slice(1, n + 1))]).astype(np.float32)
            else:
                rewards = np.asarray(ep.get_rewards(slice(0, n)), np.float32)
            clip = self.settings.reward.clip
            if clip is not None:
                np.clip(rewards, -clip, clip, out=rewards)
            terminateds = np.zeros(rewards.shape, np.float32)
            terminateds[-1] = float(ep.is_terminated)  # truncation (end of data/episode) bootstraps
            self.buffer.add(obs[:-1], actions, rewards, obs[1:], terminateds)
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
            # the filter's statistics are per component of the agents' side-by-side observation
            obs = frozen(obs.reshape(rows, -1)).reshape(obs.shape)
            next_obs = frozen(next_obs.reshape(rows, -1)).reshape(next_obs.shape)
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
                self.env_runner_group.sync_weights(
                    from_worker_or_learner_group=self.learner_group,
                    policies={DEFAULT_MODULE_ID},
                    inference_only=True,
                )

    def _learner_value(self, *key: str) -> float | None:
        value = self.metrics.peek((LEARNER_RESULTS, DEFAULT_MODULE_ID, *key), default=None)
        return None if value is None else float(value)

    def _divergence(self, *agent: str) -> str | None:
        """Why the agent's (or the single agent's) losses count as diverged, or None."""
        limit = self.settings.divergence.max_critic_loss
        for key in (QF_LOSS_KEY, QF_TWIN_LOSS_KEY, POLICY_LOSS_KEY):
            value = self._learner_value(*agent, key)
            if value is None:
                continue
            if not math.isfinite(value):
                return f"{key} is {value} (non-finite)"
            if key != POLICY_LOSS_KEY and value > limit:
                return f"{key} = {value:.3g} exceeds divergence.max_critic_loss = {limit:.3g}"
        return None

    def _check_divergence(self) -> None:
        if not self.population_seeds:
            self.diverged = self._divergence()
            return
        # Agents are independent: a diverged agent is marked (its results rank last) and the others go on;
        # updates stop only when every agent has diverged.
        for i in range(len(self.population_seeds)):
            if i not in self.diverged_agents and (reason := self._divergence(AGENTS_KEY, str(i))):
                self.diverged_agents[i] = reason
        if len(self.diverged_agents) == len(self.population_seeds):
            self.diverged = "every agent diverged: " + "; ".join(self.diverged_agents.values())

    # --- evaluation -----------------------------------------------------------------------------------
    def evaluate_deterministic(self) -> dict[str, float]:
        """One deterministic pass (tanh of the Gaussian mean, frozen filter) over the evaluation split.

        Also reports the Sharpe ratio minus Equal Weight's over the same days and costs, so that selection
        compares like with like across market periods (folds).
        """
        from trainer.baselines import equal_weight_rule
        from trainer.evaluation import policy_from_algorithm, run_policy, run_population, run_weights

        if self._equal_weight_evaluation is None:
            ew_rule = equal_weight_rule(self._single_eval_env.n_assets)
            self._equal_weight_evaluation = M.summarize(run_weights(self._single_eval_env, ew_rule))
        ew_sharpe = self._equal_weight_evaluation[M.SHARPE]
        policy = policy_from_algorithm(self)
        if not self.population_seeds:
            evaluation = M.summarize(run_policy(self._eval_env, policy))
            evaluation[M.SHARPE_MINUS_EW] = evaluation[M.SHARPE] - ew_sharpe
            self.last_evaluation = evaluation
            return evaluation
        # A population: every agent over the same days in one batched pass; the population's figures are the
        # agents' medians (what ASHA and Tune's checkpoint ranking compare: a configuration, across its seeds).
        self.agent_evaluations = []
        for run in run_population(self._eval_env, policy):
            evaluation = M.summarize(run)
            evaluation[M.SHARPE_MINUS_EW] = evaluation[M.SHARPE] - ew_sharpe
            self.agent_evaluations.append(evaluation)
        self.last_evaluation = self._agent_median(self._ranked_agent_evaluations())
        return self.last_evaluation

    def _ranked_agent_evaluations(self) -> list[dict[str, float]]:
        """Each agent's last evaluation; a diverged agent's Sharpe figures are -inf (it must never rank)."""
        out = []
        for i, evaluation in enumerate(self.agent_evaluations):
            evaluation = dict(evaluation)
            if i in self.diverged_agents:
                evaluation[M.SHARPE] = evaluation[M.SHARPE_MINUS_EW] = -math.inf
            out.append(evaluation)
        return out

    @staticmethod
    def _agent_median(evaluations: list[dict[str, float]]) -> dict[str, float]:
        if not evaluations:
            return {}
        return {key: float(np.median([e[key] for e in evaluations])) for key in evaluations[0]}

    def step(self) -> dict:
        result = super().step()
        iteration = self.iteration + 1  # Trainable increments after step()
        if iteration == 1 or iteration % self.settings.evaluation.interval == 0 or not self.last_evaluation:
            self.evaluate_deterministic()
        section = self._portfolio_section(result)
        result[M.PORTFOLIO] = section
        if self._metrics_exporter is None:
            from trainer.monitoring import MetricsExporter, run_tags

            # Tune's trial id tells trials apart; outside Tune (trial id "default") the run's name does.
            tags = run_tags(
                experiment=self.settings.name,
                trial=self.run_name or self.trial_id,
                seed=self.config.seed,
                fold=self.config.env_config.get("fold"),
            )
            self._metrics_exporter = MetricsExporter(tags)
        self._metrics_exporter.export(section)
        # Training curves travel with every checkpoint (portfolio_state.json) for the backtest report.
        self.history.append(
            {
                M.TRAINING_ITERATION: iteration,
                M.ENV_STEPS: section[M.ENV_STEPS],
                M.CRITIC_LOSS: section[M.CRITIC_LOSS],
                M.ENTROPY: section[M.ENTROPY],
                M.ALPHA: section[M.ALPHA],
                M.EPISODE_RETURN: section[M.EPISODE_RETURN],
                M.split_key(M.VALIDATION, M.SHARPE): section[M.VALIDATION].get(M.SHARPE, float("nan")),
            }
        )
        return result

    def _portfolio_section(self, result: dict) -> dict[str, Any]:
        env_res = result.get(ENV_RUNNER_RESULTS, {})
        learner = result.get(LEARNER_RESULTS, {}).get(DEFAULT_MODULE_ID, {})
        env_steps = int(result.get(ENV_RUNNER_RESULTS, {}).get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0) or 0)
        trained = int(result.get(LEARNER_RESULTS, {}).get(ALL_MODULES, {}).get(NUM_ENV_STEPS_TRAINED_LIFETIME, 0) or 0)
        prev_steps, prev_trained, prev_t = self._last_counts
        now = time.perf_counter()
        dt = max(now - prev_t, 1e-9)
        self._last_counts = (env_steps, trained, now)

        def num(x: Any) -> float:
            return float(x) if x is not None else float("nan")

        qf, qf_twin = learner.get(QF_LOSS_KEY), learner.get(QF_TWIN_LOSS_KEY)
        critic = (num(qf) + num(qf_twin)) / 2 if qf is not None and qf_twin is not None else num(qf)
        filt = self.obs_filter()
        agents = len(self.population_seeds or [None])  # every trained row is one sample for each agent
        section: dict[str, Any] = {
            M.ENV_STEPS: env_steps,
            M.ENV_STEPS_PER_S: (env_steps - prev_steps) / dt,
            M.TRAINED_SAMPLES_PER_S: agents * (trained - prev_trained) / dt,
            M.CRITIC_LOSS: critic,
            M.ACTOR_LOSS: num(learner.get(POLICY_LOSS_KEY)),
            M.ALPHA: num(learner.get(ALPHA_VALUE_KEY)),
            M.ENTROPY: -num(learner.get(LOGPS_KEY)) if learner.get(LOGPS_KEY) is not None else float("nan"),
            M.EPISODE_RETURN: num(env_res.get(EPISODE_RETURN_MEAN)),
            M.TRAIN_SHARPE: num(env_res.get(M.TRAIN_SHARPE)),
            M.TRAIN_FINAL_VALUE: num(env_res.get(M.TRAIN_FINAL_VALUE)),
            M.TRAIN_TURNOVER: num(env_res.get(M.TRAIN_TURNOVER)),
            M.BUFFER_SIZE: len(self.buffer),
            M.FILTER_COUNT: filt.stats().count if filt is not None else 0,
            M.DIVERGED: bool(self.diverged),
            M.DIVERGED_REASON: self.diverged or "",
            M.VALIDATION: dict(self.last_evaluation),
        }
        if self.population_seeds:
            section[M.AGENTS] = self._agents_section(learner.get(AGENTS_KEY, {}))
            section[M.VALIDATION] = self._agent_median(self._ranked_agent_evaluations())
        if self.diverged:
            # A diverged state must never rank as a sweep's best checkpoint or survive ASHA.
            section[M.VALIDATION][M.SHARPE] = section[M.VALIDATION][M.SHARPE_MINUS_EW] = -math.inf
        return section

    def _agents_section(self, learner: dict[str, Any]) -> list[dict[str, Any]]:
        """Per agent of a population: its seed, learner figures (``learner``: this iteration's per-agent
        learner results), divergence and last validation pass."""
        evaluations = self._ranked_agent_evaluations()
        out = []
        for i, seed in enumerate(self.population_seeds or []):

            def value(key: str, i: int = i) -> float:
                v = learner.get(str(i), {}).get(key)
                return float("nan") if v is None else float(v)

            reason = self.diverged_agents.get(i, "")
            out.append(
                {
                    M.AGENT_SEED: seed,
                    M.CRITIC_LOSS: (value(QF_LOSS_KEY) + value(QF_TWIN_LOSS_KEY)) / 2,
                    M.ACTOR_LOSS: value(POLICY_LOSS_KEY),
                    M.ALPHA: value(ALPHA_VALUE_KEY),
                    M.ENTROPY: -value(LOGPS_KEY),
                    M.DIVERGED: bool(reason),
                    M.DIVERGED_REASON: reason,
                    M.VALIDATION: evaluations[i] if i < len(evaluations) else {},
                }
            )
        return out

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
        self._update_credit = float(extra.get("update_credit", 0.0))
        self.last_evaluation = dict(extra.get("last_evaluation") or {})
        self.history = list(extra.get("history") or [])
        diverged = extra.get(checkpoint.DIVERGED_AGENTS_KEY) or {}
        self.diverged_agents = {int(i): reason for i, reason in diverged.items()}
        self.agent_evaluations = list(extra.get(checkpoint.AGENT_EVALUATIONS_KEY) or [])
