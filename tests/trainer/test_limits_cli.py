"""Position limits through the commands: infeasible caps refused in one line before anything starts; a smoke run
trained under limits and backtested writes only weights within them, and the report says which limits applied."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import checkpoints, train_cli
from trainer.experiment.loading import CONFIG_DIR

INFEASIBLE = (
    "max_weight=0.01 and max_cash=0 cannot hold a whole portfolio of 20 assets (20 * 0.01 + 0 = 0.2 < 1): raise "
    "max_weight to at least 0.05 or max_cash to at least 0.8"
)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("trainer.train", INFEASIBLE),
        ("trainer.tune", f"{CONFIG_DIR / 'smoke.yaml'}: key 'data': {INFEASIBLE}"),
    ],
)
def test_infeasible_caps_are_refused_in_one_line_and_leave_nothing(tmp_path, command, message):
    out = tmp_path / "out"
    where = ["--out", str(out)] if command == "trainer.train" else ["--storage", str(out)]
    args = ["--exp", "smoke", *where, "--set", "data.max_weight=0.01", "--set", "data.max_cash=0"]
    res = subprocess.run([sys.executable, "-m", command, *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == f"error: {message}"
    assert not out.exists()  # the same command runs again once a limit is changed


def test_a_bad_limit_is_refused_by_the_schema(tmp_path):
    args = ["--exp", "smoke", "--out", str(tmp_path / "out"), "--set", "data.max_weight=10"]
    res = subprocess.run([sys.executable, "-m", "trainer.train", *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip() == (
        f"error: {CONFIG_DIR / 'smoke.yaml'} with data.max_weight=10 from the command line: key 'data.max_weight': "
        "Value error, max_weight must be null (no cap) or a number in (0, 1] (the largest weight of one asset), "
        "got 10.0"
    )


def test_trained_and_backtested_under_limits_every_weight_is_within_them(ray_session, tmp_path):
    run = tmp_path / "run"
    limits = ("--set", "data.max_weight=0.1", "--set", "data.max_turnover=0.5")
    res = train_cli(run, ray_session, "--exp", "smoke", *limits)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ckpt = checkpoints(run)[-1]
    out = tmp_path / "bt"
    res = subprocess.run(
        [sys.executable, "-m", "trainer.backtest", str(ckpt), "--out", str(out)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((out / "backtest.json").read_text())
    assert result["limits"] == {"max_weight": 0.1, "max_turnover": 0.5}
    weights = pd.read_parquet(out / "weights.parquet")  # the agent's weights, every day of the test split
    assert len(weights) == 945
    assert (weights.drop(columns="cash").to_numpy() <= 0.1).all() and (weights.to_numpy() >= 0).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    turnover = np.abs(np.diff(weights.drop(columns="cash").to_numpy(), axis=0)).sum(axis=1)
    assert turnover.max() <= 0.5 + 0.05  # between traded weights (the drift in between is not traded)
    report = (out / "report.md").read_text()
    assert "position limits: max_weight 0.1, max_turnover 0.5; every strategy trades through them" in report
    assert "under the position limits: fitted with each weight at most max_weight (skfolio max_weights)" in report
