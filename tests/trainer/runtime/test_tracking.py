"""trainer.runtime.tracking without a command: stores from --mlflow values, what is logged, a store that fails."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from trainer.metrics import registry as M
from trainer.runtime.tracking import (
    INSTALL_HINT,
    RunTracker,
    Store,
    TrackingError,
    flatten,
    iteration_metrics,
    numeric_figures,
    resolve_store,
    short_reason,
)


def test_the_local_store_is_a_sqlite_file_with_its_artifacts_beside_it(tmp_path):
    store = resolve_store("", tmp_path / "run")
    assert store.uri == f"sqlite:///{tmp_path}/run/mlflow.db"
    assert store.artifacts == (tmp_path / "run" / "mlartifacts").as_uri()
    assert store.local_file == tmp_path / "run" / "mlflow.db"
    explicit = resolve_store(f"sqlite:///{tmp_path}/other/t.db", tmp_path)
    assert explicit.artifacts == (tmp_path / "other" / "mlartifacts").as_uri()


def test_a_server_uri_is_kept_and_its_artifacts_are_the_servers(tmp_path):
    store = resolve_store("http://127.0.0.1:5000/", tmp_path)
    assert store == Store("http://127.0.0.1:5000", None) and store.local_file is None


@pytest.mark.parametrize("value", ["ftp://host/x", "runs/mlflow", "http://", "sqlite:///"])
def test_anything_else_is_refused_in_one_line(tmp_path, value):
    with pytest.raises(TrackingError) as err:
        resolve_store(value, tmp_path)
    assert str(err.value) == (
        f"--mlflow {value}: not a tracking URI; give an MLflow server as http://HOST:PORT, a SQLite store as "
        f"sqlite:///PATH, or --mlflow alone for a local store in {tmp_path}"
    )
    assert INSTALL_HINT == 'pip install -e ".[mlflow]"'


def test_settings_flatten_to_dotted_parameters():
    assert flatten({"sac": {"actor_lr": 0.001, "hidden": [16, 16]}, "seed": 3, "data": {"fold": None}, "n": "x"}) == {
        "sac.actor_lr": "0.001",
        "sac.hidden": "[16, 16]",
        "seed": "3",
        "data.fold": "null",
        "n": "x",
    }


def test_an_iteration_logs_the_registry_figures_and_validation_only_when_it_ran():
    section = {
        M.ENV_STEPS: 600,
        M.CRITIC_LOSS: 1.5,
        M.DIVERGED: False,
        M.DIVERGED_REASON: "",
        M.ENTROPY: math.nan,  # not finite: not logged
        "validation": {M.SHARPE: 0.5, M.SHARPE_MINUS_EW: -0.1},
        M.VALIDATED: True,
    }
    expected = {
        M.BY_KEY[M.ENV_STEPS].tune_key: 600.0,
        M.BY_KEY[M.CRITIC_LOSS].tune_key: 1.5,
        M.VALIDATION_SHARPE_METRIC: 0.5,
        M.VALIDATION_SHARPE_MINUS_EW_METRIC: -0.1,
    }
    assert iteration_metrics(section) == expected
    # between validation passes the section repeats the last pass: not logged again
    repeated = iteration_metrics({**section, M.VALIDATED: False})
    assert repeated == {k: v for k, v in expected.items() if "/validation/" not in k}


def test_report_figures_keep_finite_numbers_only():
    row = {"trial": "trial_1", "test_sharpe": 0.25, "status": "completed", "n": 3, "x": None, "nan": math.nan}
    assert numeric_figures(row, "final/") == {"final/test_sharpe": 0.25, "final/n": 3.0}


def test_an_errno_reason_is_short():
    exc = RuntimeError("API request failed (Caused by NewConnectionError('...: [Errno 111] Connection refused'))")
    assert short_reason(exc) == "Connection refused"
    assert short_reason(ValueError("one line\nsecond")) == "one line"


def test_a_store_that_fails_stops_tracking_with_one_warning_and_no_exception(tmp_path, capsys):
    pytest.importorskip("mlflow")
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    tracker = RunTracker(Store(f"sqlite:///{blocked}/mlflow.db", None), "e", "r")
    tracker.start({"a": "1"})
    tracker.log_metrics({"m": 1.0}, 1)
    tracker.log_files([Path(__file__)])
    tracker.finish("FINISHED")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: MLflow tracking stopped (sqlite:///{blocked}/mlflow.db: ")
    assert err[0].endswith("the work goes on and its own files are complete")
