"""trainer.evaluation.gate: the candidate chosen as a sweep chooses (diverged and damaged checkpoints skipped, a
population's best agent), and the promotion rule on hand-made figures."""

from __future__ import annotations

import json
import math

import pytest

from trainer.evaluation.gate import GateResult, promotion_checks, select_candidate
from trainer.experiment.rolling_config import PromoteIf
from trainer.runtime.checkpoint import RLLIB_CHECKPOINT_FILE, STATE_FILE, write_manifest

METRIC = "portfolio/validation/sharpe_minus_ew"


def _checkpoint(path, state):
    """A checkpoint as ``read_state`` sees it: RLlib's marker, our state, a manifest over both."""
    path.mkdir(parents=True)
    (path / RLLIB_CHECKPOINT_FILE).write_text("{}")
    (path / STATE_FILE).write_text(json.dumps({"obs_filter": False, **state}))
    write_manifest(path)
    return path


def test_the_candidate_is_the_best_usable_checkpoint(tmp_path):
    a = _checkpoint(tmp_path / "a", {"last_evaluation": {"sharpe_minus_ew": 0.1, "sharpe": 0.9}})
    b = _checkpoint(tmp_path / "b", {"last_evaluation": {"sharpe_minus_ew": 0.3, "sharpe": 0.2}})
    diverged = _checkpoint(tmp_path / "c", {"diverged": "loss", "last_evaluation": {"sharpe_minus_ew": 9.0}})
    nan = _checkpoint(tmp_path / "d", {"last_evaluation": {"sharpe_minus_ew": math.nan}})
    damaged = _checkpoint(tmp_path / "e", {"last_evaluation": {"sharpe_minus_ew": 5.0}})
    (damaged / STATE_FILE).write_text(json.dumps({"last_evaluation": {"sharpe_minus_ew": 8.0}}))  # not the manifest's
    runs = [(a, 0), (b, 1), (diverged, 2), (nan, 3), (damaged, 4)]
    best = select_candidate(runs, METRIC, "max")
    assert (best.checkpoint, best.agent, best.score, best.seed) == (b, None, 0.3, 1)
    assert select_candidate(runs, "portfolio/validation/sharpe", "max").checkpoint == a
    assert select_candidate(runs, METRIC, "min").checkpoint == a
    assert select_candidate([(diverged, 2), (nan, 3)], METRIC, "max") is None


def test_a_population_candidate_is_its_best_agent_that_had_not_diverged(tmp_path):
    evaluations = [{"sharpe_minus_ew": 0.2}, {"sharpe_minus_ew": 0.7}, {"sharpe_minus_ew": 0.4}]
    state = {"population_seeds": [10, 11, 12], "agent_evaluations": evaluations, "diverged_agents": {"1": "loss"}}
    ckpt = _checkpoint(tmp_path / "p", state)
    best = select_candidate([(ckpt, 10)], METRIC, "max")
    assert (best.agent, best.seed, best.score) == (2, 12, 0.4)


FIGURES = {
    "sharpe_minus_ew": 0.10,
    "sharpe_minus_ew_ci95": [-0.20, 0.40],
    "sharpe_minus_live": 0.05,
    "sharpe_minus_live_ci95": [-0.10, 0.20],
    "turnover_per_day": 0.08,
}


@pytest.mark.parametrize(
    ("rule", "figures", "reason"),
    [
        (
            {},
            FIGURES,
            "promoted: Sharpe - EW +0.100 >= +0.000 (min_sharpe_minus_ew); Sharpe - live +0.050 > 0 (beat_live)",
        ),
        (
            {"compare": "ci_low"},
            FIGURES,
            "not promoted: Sharpe - EW (95% low) -0.200 < +0.000 (min_sharpe_minus_ew); Sharpe - live (95% low) "
            "-0.100 <= 0 (beat_live)",
        ),
        (
            {"compare": "ci_low", "min_sharpe_minus_ew": -0.25, "beat_live": False},
            FIGURES,
            "promoted: Sharpe - EW (95% low) -0.200 >= -0.250 (min_sharpe_minus_ew)",
        ),
        (
            {"max_turnover_per_day": 0.05},
            FIGURES,
            "not promoted: turnover per day +0.080 > +0.050 (max_turnover_per_day)",
        ),
        (  # a first round: no live model, so beat_live does not apply
            {},
            {k: v for k, v in FIGURES.items() if "live" not in k},
            "promoted: Sharpe - EW +0.100 >= +0.000 (min_sharpe_minus_ew)",
        ),
        (
            {"min_sharpe_minus_ew": None, "beat_live": False},
            FIGURES,
            "promoted: the rule sets no condition",
        ),
        (  # a figure that is not a number never passes
            {"min_sharpe_minus_ew": -100},
            {**FIGURES, "sharpe_minus_ew": math.nan},
            "not promoted: Sharpe - EW +nan < -100.000 (min_sharpe_minus_ew)",
        ),
    ],
)
def test_the_promotion_rule(rule, figures, reason):
    result = GateResult(figures, promotion_checks(figures, PromoteIf(**rule)))
    assert result.reason == reason
    assert result.promoted == reason.startswith("promoted")
