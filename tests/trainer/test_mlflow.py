"""--mlflow on trainer.train, trainer.tune and trainer.rolling through the real CLIs, read back with MlflowClient: a
local SQLite store (runs, parameters, per-iteration metrics, artifacts, model versions and the alias live), a
real ``mlflow server`` on 127.0.0.1, the missing extra and bad URIs in one line, and MLflow never imported
without --mlflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import cli_env, free_port, synthetic_prices, train_cli, tune_args, write_wide_csv
from tests.trainer.test_rolling import LENIENT, TINY
from trainer.metrics import registry as M
from trainer.runtime.tracking import iteration_metrics

mlflow_tracking = pytest.importorskip("mlflow.tracking")  # the mlflow extra (.ci/run installs it)

TINY_TRAIN = ("--exp", "smoke", "--set", "stopping.env_steps=600")
MISSING = 'error: --mlflow needs MLflow, an optional extra; install it with: pip install -e ".[mlflow]"'


def _client(uri: str):
    return mlflow_tracking.MlflowClient(uri)


def _store(directory: Path) -> str:
    return f"sqlite:///{directory}/mlflow.db"


def _runs(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment}"
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _progress(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]


def _expected_history(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Each registry metric's (iteration, value) from the rows, as the command must have logged them."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in iteration_metrics(row).items():
            out.setdefault(key, []).append((row[M.TRAINING_ITERATION], value))
    return out


def _flat_params(tree: dict, prefix: str = "") -> dict[str, str]:
    """The experiment as dotted parameters, by hand (not trainer.runtime.tracking.flatten)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flat_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, str) else json.dumps(v)
    return out


@pytest.fixture(scope="module")
def tracked_run(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("mlflow_train") / "run"
    res = train_cli(out, ray_session, *TINY_TRAIN, "--mlflow")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "INFO" not in res.stderr
    return out


def test_train_logs_settings_metrics_per_iteration_and_files_into_the_run_directory(tracked_run):
    out = tracked_run
    client = _client(_store(out))
    (run,) = _runs(client, "smoke")
    assert run.info.status == "FINISHED" and run.info.run_name == out.name and run.data.tags["run_dir"] == str(out)
    assert run.info.artifact_uri.startswith((out / "mlartifacts").as_uri())
    assert run.data.params == _flat_params(yaml.safe_load((out / "experiment.yaml").read_text()))
    rows = _progress(out)
    expected = _expected_history(rows)
    assert M.VALIDATION_SHARPE_METRIC in expected and len(rows) == 2
    for key, points in expected.items():
        assert _history(client, run.info.run_id, key) == points, key
    logged = {k for k in run.data.metrics if not k.startswith("final/")}
    assert logged == set(expected)  # the registry's figures only, no RLlib keys
    summary = json.loads((out / "summary.json").read_text())
    final = {k.removeprefix("final/validation/"): v for k, v in run.data.metrics.items() if k.startswith("final/")}
    assert final == {k: v for k, v in summary["validation"].items() if isinstance(v, float)} and final
    files = sorted(a.path for a in client.list_artifacts(run.info.run_id))
    assert files == ["experiment.yaml", "progress.jsonl", "summary.json"]
    local = Path(client.download_artifacts(run.info.run_id, "summary.json", str(out.parent)))
    assert local.read_bytes() == (out / "summary.json").read_bytes()


def test_tune_nests_each_trial_under_the_sweep_with_its_point_metrics_and_final_figures(ray_session, tmp_path):
    cmd = [sys.executable, "-m", "trainer.tune", *tune_args(tmp_path, "stopping.env_steps=600"), "--mlflow"]
    cmd += ["--set", "sweep.backtest_best=false"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(ray_session), timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    exp_dir = tmp_path / "smoke"
    client = _client(_store(exp_dir))
    runs = _runs(client, "smoke")
    (sweep,) = [r for r in runs if r.info.run_name == "sweep smoke"]
    trials = [r for r in runs if r is not sweep]
    assert sweep.info.status == "FINISHED" and len(trials) == 2
    files = {a.path for a in client.list_artifacts(sweep.info.run_id)}
    assert {"summary.json", "summary.md", "validation_curves.png", "test_sharpe_by_fold.png", "trials.parquet"} <= files
    summary = json.loads((exp_dir / "summary.json").read_text())
    rows = {row["trial"]: row for row in summary["trials"]}
    hidden = set()
    for trial in trials:
        tags, params = trial.data.tags, trial.data.params
        assert tags["mlflow.parentRunId"] == sweep.info.run_id and trial.info.status == "FINISHED"
        hidden.add(params["model.hidden"])
        assert params["stopping.env_steps"] == "600" and not any(k.startswith("sweep.") for k in params)
        trial_dir = exp_dir / f"trial_{tags['trial_id']}"
        results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        expected = _expected_history(
            [{**r[M.PORTFOLIO], M.TRAINING_ITERATION: r[M.TRAINING_ITERATION]} for r in results]
        )
        for key, points in expected.items():
            assert _history(client, trial.info.run_id, key) == points, key
        row = rows[trial_dir.name]
        assert trial.data.metrics["final/test_sharpe"] == pytest.approx(row["test_sharpe"], abs=1e-12)
        assert trial.data.metrics["final/validation_sharpe"] == pytest.approx(row["validation_sharpe"], abs=1e-12)
    assert hidden == {"[32, 32]", "[16]"}  # each trial's own point of the sweep


# --- rolling: model versions, tags and the alias live ----------------------------------------------------------
ROLLING = {**TINY, **LENIENT}  # test_rolling's tiny rounds, each promoted


def _rolling(ray: str, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, "-m", "trainer.rolling", *args], capture_output=True, text=True, env=cli_env(ray), timeout=400
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    return res


def test_rolling_registers_each_round_and_moves_the_alias_live(ray_session, tmp_path):
    prices = synthetic_prices(n_days=460, n_assets=3, seed=2)
    files = {n: write_wide_csv(tmp_path / f"p{n}.csv", prices.iloc[:n]) for n in (400, 460)}
    registry = tmp_path / "sp_registry"
    sets = [a for k, v in ROLLING.items() for a in ("--set", f"{k}={v}")]
    for n in (400, 460):
        _rolling(ray_session, "--exp", "rolling", "--data", files[n], "--registry", str(registry), *sets, "--mlflow")
    client = _client(_store(registry))
    versions = sorted(client.search_model_versions("name = 'sp_registry'"), key=lambda v: int(v.version))
    rounds = [rid for rid in sorted(p.name for p in (registry / "rounds").iterdir())]
    assert [v.tags["round"] for v in versions] == rounds and len(rounds) == 2
    for version, rid in zip(versions, rounds, strict=True):
        record = json.loads((registry / "rounds" / rid / "round.json").read_text())
        assert version.tags["promoted"] == "true" and version.tags["reason"] == record["reason"]
        assert version.tags["checkpoint"] == record["checkpoint"] and version.tags["seed"] == str(record["seed"])
        assert float(version.tags["figures.sharpe_minus_ew"]) == record["figures"]["sharpe_minus_ew"]
        assert float(version.tags["figures.candidate.sharpe"]) == record["figures"]["candidate"][M.SHARPE]
        # the version's files are the candidate checkpoint's, byte for byte (plain files, no pickled model)
        ckpt = registry / record["checkpoint"]
        local = Path(client.download_artifacts(version.run_id, f"model/{ckpt.name}", str(tmp_path / rid)))
        assert version.source.endswith(f"/model/{ckpt.name}")
        mine = {p.relative_to(ckpt): p.read_bytes() for p in ckpt.rglob("*") if p.is_file()}
        assert {p.relative_to(local): p.read_bytes() for p in local.rglob("*") if p.is_file()} == mine
    assert client.get_model_version_by_alias("sp_registry", "live").version == versions[1].version
    # the rounds' training runs went to the same store
    trained = _runs(client, "rolling")
    assert {r.info.run_name for r in trained if r.data.tags.get("run_dir")} == {"seed0"}
    assert len([r for r in trained if r.data.tags.get("run_dir")]) == 2
    res = _rolling(ray_session, "--registry", str(registry), "--rollback", rounds[0], "--mlflow")
    assert f"MLflow: alias live of model sp_registry is version {versions[0].version}" in res.stdout
    assert client.get_model_version_by_alias("sp_registry", "live").version == versions[0].version
    assert json.loads((registry / "live.json").read_text())["round"] == rounds[0]


# --- a real tracking server -----------------------------------------------------------------------------------
def test_train_logs_to_a_real_mlflow_server(ray_session, tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)),
            *("--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--artifacts-destination", str(tmp_path)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        client = _client(uri)
        deadline = time.monotonic() + 90
        while True:
            try:
                client.search_experiments(max_results=1)
                break
            except Exception:
                assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(1)
        out = tmp_path / "run"
        res = train_cli(out, ray_session, *TINY_TRAIN, "--mlflow", uri)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert not (out / "mlflow.db").exists()  # the server holds the run
        (run,) = _runs(client, "smoke")
        assert run.info.status == "FINISHED" and run.data.params["stopping.env_steps"] == "600"
        expected = _expected_history(_progress(out))
        assert _history(client, run.info.run_id, M.VALIDATION_SHARPE_METRIC) == expected[M.VALIDATION_SHARPE_METRIC]
        assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == [
            "experiment.yaml",
            "progress.jsonl",
            "summary.json",
        ]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


# --- refusals in one line, before any work ----------------------------------------------------------------------
def _refused(ray: str, module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", module, *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env or cli_env(ray), timeout=120)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    return res


def test_without_the_extra_each_command_names_the_install_command(ray_session, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['mlflow'] = None  # MLflow not installed\n")
    env = cli_env(ray_session)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    commands = {
        "trainer.train": ["--out", str(tmp_path / "run"), *TINY_TRAIN],
        "trainer.tune": tune_args(tmp_path / "sweeps"),
        "trainer.rolling": ["--registry", str(tmp_path / "reg"), "--rollback", "2020-01-01"],
    }
    for module, args in commands.items():
        res = _refused(ray_session, module, *args, "--mlflow", env=env)
        assert res.stderr.strip() == MISSING, module
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # nothing written


def test_a_bad_uri_or_a_server_that_does_not_answer_is_refused_before_any_work(ray_session, tmp_path):
    out = tmp_path / "run"
    res = _refused(ray_session, "trainer.train", "--out", str(out), *TINY_TRAIN, "--mlflow", "ftp://example/x")
    assert res.stderr.strip() == (
        "error: --mlflow ftp://example/x: not a tracking URI; give an MLflow server as http://HOST:PORT, a SQLite "
        f"store as sqlite:///PATH, or --mlflow alone for a local store in {out}"
    )
    uri = f"http://127.0.0.1:{free_port()}"
    for module, args, where in (
        ("trainer.train", ["--out", str(out), *TINY_TRAIN], out),
        ("trainer.tune", tune_args(tmp_path / "sweeps"), tmp_path / "sweeps" / "smoke"),
    ):
        res = _refused(ray_session, module, *args, "--mlflow", uri)
        assert res.stderr.strip() == (
            f"error: --mlflow {uri}: no MLflow tracking server answers there (Connection refused); start one "
            f"(mlflow server --host 127.0.0.1 --port PORT) or give --mlflow alone for a local store in {where}"
        ), module
    assert list(tmp_path.iterdir()) == []


def test_without_mlflow_flag_mlflow_is_never_imported(ray_session, tmp_path):
    code = (
        "import sys\n"
        "from trainer import rolling, train, tune\n"
        "assert tune.main(['--exp', 'smoke', '--dry-run']) == 0\n"
        "assert 'mlflow' not in sys.modules, 'mlflow imported'\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(ray_session), timeout=120
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
