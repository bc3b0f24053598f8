"""MLflow tracking of a sweep (``python -m trainer.tune --mlflow [URI]``).

The sweep is one MLflow run (``SweepTracker``: the experiment's settings, the sweep's report, tables and plots as
artifacts, its outcome); each trial is a run nested under it, written during the sweep by Ray Tune's own
``MLflowLoggerCallback`` (``TrialTracker``), and given its final figures (the sweep report's backtests of its best
checkpoint) once the report is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.air.constants import TRAINING_ITERATION
from ray.air.integrations.mlflow import MLflowLoggerCallback

from trainer.experiment.config import SWEEPABLE, Experiment
from trainer.experiment.sweep_state import EXPERIMENT_FILE, TRIAL_DIR_PREFIX
from trainer.metrics import registry as M
from trainer.runtime.tracking import (
    FINAL_PREFIX,
    Guard,
    RunTracker,
    Store,
    flatten,
    iteration_metrics,
    log_figures,
    log_params,
    numeric_figures,
)

PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's tag that nests a run under another (mlflow.utils.mlflow_tags)
TRIAL_ID_TAG = "trial_id"
SWEEP_SECTION = "sweep"
# what the sweep report writes (trainer.evaluation.sweep_report), logged as the sweep run's artifacts
REPORT_FILES = ("summary.json", "summary.md", "trials.parquet", "test_returns.parquet", EXPERIMENT_FILE)
REPORT_GLOBS = ("*.png",)
REPORT_DIRS = ("best_backtest",)
OUTCOME_STATUS = {"interrupted": "KILLED", "failed": "FAILED"}  # else FINISHED


def trial_params(settings: Mapping[str, str], swept: list[str], config: Mapping[str, Any]) -> dict[str, str]:
    """A trial's parameters: the experiment's settings with the trial's point of the sweep (read from its
    resolved config at each swept key's place, ``SWEEPABLE``)."""
    point: dict[str, Any] = {}
    for key in swept:
        node: Any = config
        for part in SWEEPABLE[key]:
            node = node.get(part) if isinstance(node, Mapping) else None
        point[key] = node
    return {**settings, **flatten(point)}


class TrialTracker(MLflowLoggerCallback):
    """Ray Tune's MLflow callback for the trials: its set-up (the store, the experiment), one run per trial named
    and tagged by it, ended with the trial's status. Three parts are ours, because the callback's do not fit:

    - parameters: it logs ``trial.config``, RLlib's whole algorithm config (hundreds of keys, classes as text);
      we log the experiment's settings with the trial's sweep point, as ``trainer.train`` logs a run's;
    - metrics: it logs every number of each result (hundreds of RLlib keys, one request each) at step
      ``timesteps_total``; we log the metric registry's figures in one request at the training iteration, as
      ``trainer.train`` does;
    - artifacts: its ``save_artifact`` uploads the trial's whole directory (checkpoints, replay buffers); the
      sweep's report and plots go to the sweep's run instead (``SweepTracker``).

    A store that fails mid-sweep stops the tracking (one warning), never the sweep.
    """

    def __init__(self, store: Store, exp: Experiment, parent_run_id: str) -> None:
        super().__init__(store.uri, experiment_name=exp.name, tags={PARENT_RUN_TAG: parent_run_id})
        sweep = exp.sweep
        self.swept = [*sweep.search_space, *dict.fromkeys(k for v in sweep.variants.values() for k in v)]
        self.settings = flatten(exp.model_dump(mode="json", exclude={SWEEP_SECTION}))
        self.guard = Guard(store.uri)

    def setup(self, *args: Any, **kwargs: Any) -> None:
        self._trial_runs = {}
        self.guard(lambda: super(TrialTracker, self).setup(*args, **kwargs))

    def log_trial_start(self, trial: Any) -> None:
        def go() -> None:
            if trial not in self._trial_runs:
                tags = {**self.tags, "trial_name": str(trial), TRIAL_ID_TAG: trial.trial_id}
                self._trial_runs[trial] = self.mlflow_util.start_run(tags=tags, run_name=str(trial)).info.run_id
            params = trial_params(self.settings, self.swept, trial.config)
            log_params(self.mlflow_util._get_client(), self._trial_runs[trial], params)

        self.guard(go)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        run_id = self._trial_runs.get(trial)
        metrics = iteration_metrics(result.get(M.PORTFOLIO) or {})
        if run_id is not None and metrics:
            step = int(result[TRAINING_ITERATION])
            self.guard(lambda: log_figures(self.mlflow_util._get_client(), run_id, metrics, step))

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        if trial in self._trial_runs:
            self.guard(lambda: super(TrialTracker, self).log_trial_end(trial, failed))


class SweepTracker(RunTracker):
    """The sweep's own run: started before the trials (they nest under it), ended after the report."""

    def __init__(self, store: Store, exp: Experiment, exp_dir: Path) -> None:
        super().__init__(store, exp.name, f"sweep {exp.name}", {"sweep_dir": str(exp_dir)})
        self.exp, self.exp_dir = exp, exp_dir

    def callbacks(self) -> list[Any]:
        """Start the sweep's run; the trials' callback (none if the store failed)."""
        self.start(flatten(self.exp.model_dump(mode="json")))
        return [] if self.run_id is None else [TrialTracker(self.store, self.exp, self.run_id)]

    def end(self, summary: Mapping[str, Any] | None, outcome: str) -> None:
        """Log the report (``summary``: its ``summary.json``; None when none was written) and end the sweep's run."""
        if summary is not None:
            self.guard(lambda: self._final_figures(summary))
            found = [self.exp_dir / f for f in (*REPORT_FILES, *REPORT_DIRS)]
            self.log_files([*found, *(p for g in REPORT_GLOBS for p in sorted(self.exp_dir.glob(g)))])
        self.finish(OUTCOME_STATUS.get(outcome, "FINISHED"))

    def _final_figures(self, summary: Mapping[str, Any]) -> None:
        """Each trial's row of the report (its best checkpoint on validation and test) on the trial's run, as
        ``final/<figure>`` (``final/agent<I>/<figure>`` for a population's agents)."""
        eid = self.client.get_experiment_by_name(self.experiment).experiment_id
        for row in summary.get("trials") or []:
            trial, _, agent = str(row.get("trial", "")).partition("/")
            trial_id = trial.removeprefix(TRIAL_DIR_PREFIX)
            runs = self.client.search_runs(
                [eid], f"tags.{TRIAL_ID_TAG} = '{trial_id}'", order_by=["attributes.start_time DESC"], max_results=1
            )
            if runs:
                prefix = f"{FINAL_PREFIX}{agent}/" if agent else FINAL_PREFIX
                log_figures(self.client, runs[0].info.run_id, numeric_figures(row, prefix), 0)
