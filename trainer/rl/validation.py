"""What ``PortfolioSAC`` reports each iteration: validation passes, the divergence guard, the result section.

- ``step``: adds the ``portfolio`` result section: losses, entropy (RLlib has no entropy key; we report
  ``-mean log pi``), throughput, and every ``evaluation.interval`` iterations a deterministic pass over the
  validation split with ``tanh(mean)`` actions and the frozen filter (RLlib's deterministic SAC action
  skips the tanh: docs/rllib-notes.md), paired with Equal Weight over the same days.
- Divergence guard: a non-finite critic loss, or one above ``divergence.max_critic_loss``, stops updates;
  the result says ``diverged`` with the reason, and no further checkpoint is written by our entry points.
  A population's agents diverge one by one: a diverged agent ranks last and the others go on.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from ray.rllib.algorithms.sac.sac_learner import LOGPS_KEY, QF_LOSS_KEY, QF_TWIN_LOSS_KEY
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.learner import POLICY_LOSS_KEY
from ray.rllib.utils.metrics import (
    ALL_MODULES,
    ENV_RUNNER_RESULTS,
    EPISODE_RETURN_MEAN,
    LEARNER_RESULTS,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_TRAINED_LIFETIME,
)

from trainer.metrics import registry as M
from trainer.rl.losses import AGENTS_KEY, ALPHA_VALUE_KEY


class ValidationReporting:
    """The validation, divergence and reporting half of ``trainer.rl.algorithm.PortfolioSAC`` (a mixin over
    RLlib's ``SAC``: it uses the algorithm's settings, evaluation envs, buffer and filter set up there)."""

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
        from trainer.evaluation.baselines import equal_weight_rule
        from trainer.evaluation.policy import policy_from_algorithm
        from trainer.evaluation.runs import run_policy, run_population, run_weights

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
        validated = iteration == 1 or iteration % self.settings.evaluation.interval == 0 or not self.last_evaluation
        if validated:
            self.evaluate_deterministic()
        section = self._portfolio_section(result)
        # Between passes the validation figures repeat the last pass: plots mark only the iterations that ran one.
        section[M.VALIDATED] = bool(validated)
        result[M.PORTFOLIO] = section
        if self._metrics_exporter is None:
            from trainer.runtime.monitoring import MetricsExporter, run_tags

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
                M.VALIDATED: bool(validated),
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
