"""trainer.runtime.monitoring as users watch a sweep: dashboard access, per-trial gauges in Ray's metrics endpoint and
a real Prometheus, the Grafana dashboard's queries, TensorBoard events, and a sweep sent with `ray job submit`
to a real two-node cluster (token authentication on)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import dashboard_get, free_port, ray_cluster
from tests.conftest import tune_results as _results
from trainer.experiment.loading import load_experiment
from trainer.metrics import registry as M
from trainer.runtime.monitoring import (
    DEFAULT_TOKEN_FILE,
    GAUGES,
    GRAFANA_DASHBOARD_FILE,
    PROMETHEUS_CONFIG_FILE,
    RAY_GRAFANA_DASHBOARD_DIR_ENV,
    TAG_KEYS,
    MetricsExporter,
    dashboard_access_message,
    install_grafana_dashboard,
    prometheus_name,
    run_tags,
)

REPO = Path(__file__).resolve().parents[3]
PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="the prometheus binary is not on PATH (Debian: apt-get install prometheus; .ci/run installs it as root)",
)


# --- tags and the exporter ------------------------------------------------------------------------------
def test_run_tags_are_strings_with_none_for_missing_seed_and_fold():
    assert run_tags("quick", "4f2a1_00000", 3, 2) == {
        "experiment": "quick",
        "trial": "4f2a1_00000",
        "seed": "3",
        "fold": "2",
    }
    missing = run_tags("quick", "run", None, None)
    assert missing == {"experiment": "quick", "trial": "run", "seed": "none", "fold": "none"}
    assert set(run_tags("a", "b", 0, None)) == set(TAG_KEYS)


def test_exporter_rejects_tags_other_than_the_tag_keys():
    expected = r"^gauge tags must be exactly \['experiment', 'trial', 'seed', 'fold'\], got \['experiment', 'trial'\]$"
    with pytest.raises(ValueError, match=expected):
        MetricsExporter({"experiment": "x", "trial": "y"})


def test_exporter_sets_finite_values_at_their_paths_and_skips_missing_ones(ray_session):
    exporter = MetricsExporter(run_tags("unit", "t", 0, None))
    section = {
        M.CRITIC_LOSS: 0.25,
        M.ENTROPY: float("nan"),  # before learning starts
        M.ALPHA: 0.5,
        M.ENV_STEPS_PER_S: 100.0,
        M.TRAINED_SAMPLES_PER_S: 1600.0,
        M.EPISODE_RETURN: -3.0,
        M.TRAIN_FINAL_VALUE: 1.1,
        M.VALIDATION: {M.SHARPE: 0.7},
    }
    assert exporter.export(section) == {
        "portfolio_critic_loss": 0.25,
        "portfolio_alpha": 0.5,
        "portfolio_env_steps_per_s": 100.0,
        "portfolio_trained_samples_per_s": 1600.0,
        "portfolio_episode_return": -3.0,
        "portfolio_value": 1.1,
        "portfolio_validation_sharpe": 0.7,
    }
    # a diverged run's validation Sharpe is -inf: not exported (Prometheus would plot nothing useful)
    assert "portfolio_validation_sharpe" not in exporter.export({M.VALIDATION: {M.SHARPE: -math.inf}})


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def _series(text: str, metric: str, **labels: str) -> list[float]:
    """Values of ``metric`` samples in Prometheus text format whose labels include ``labels``."""
    out = []
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            out.append(float(value))
    return out


def test_two_train_runs_in_one_process_export_their_own_latest_values(ray_session, tmp_path):
    """trainer.train runs are tagged with their run directory's name; a second run in the same process
    (same Ray worker) adds its own series instead of overwriting the first's."""
    import ray

    from trainer.train import run_training

    port = ray._private.worker.global_worker.node.metrics_export_port
    name = "monitoring_probe"  # other tests export the same gauges under their own experiment names
    runs = {}
    for seed, run_dir in ((0, tmp_path / "20260101-000000-seed0"), (1, tmp_path / "20260101-000001-seed1")):
        exp = load_experiment("smoke", {"name": name, "seed": seed, "stopping.env_steps": 300})
        run_training(exp, run_dir)
        rows = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]
        runs[run_dir.name] = (str(seed), rows[-1])

    wanted = {gauge: path for gauge, (path, _) in GAUGES.items()}
    deadline, text = time.time() + 60, ""
    while time.time() < deadline:  # the metrics agent publishes every few seconds
        text = _scrape(port)
        if all(_series(text, prometheus_name(g), experiment=name, trial=run) for g in wanted for run in runs):
            break
        time.sleep(1)
    for run, (seed, last) in runs.items():
        for gauge, path in wanted.items():
            expected = last
            for key in path:
                expected = expected[key]
            values = _series(text, prometheus_name(gauge), experiment=name, trial=run, seed=seed, fold="none")
            assert values == [pytest.approx(expected, rel=1e-9)], (run, gauge, values, expected)
    # the two runs really differ, so equality above tells them apart
    (_, ra), (_, rb) = runs.values()
    assert ra[M.CRITIC_LOSS] != rb[M.CRITIC_LOSS]


def test_tune_trials_are_tagged_with_their_trial_id(ray_session):
    """Tune hands a trial its identity inside the config dict; PortfolioSAC keeps it for the gauge tags."""
    from types import SimpleNamespace

    from ray.tune.result import TRIAL_INFO

    from trainer.rl.algorithm import PortfolioSAC
    from trainer.rl.sac_config import build_sac_config

    exp = load_experiment("smoke", {"name": "monitoring_trial_id", "stopping.steps_per_iteration": 100})
    info = SimpleNamespace(trial_id="5e1f0_00001", trial_name="PortfolioSAC_5e1f0_00001", trial_resources=None)
    algo = PortfolioSAC(config={**build_sac_config(exp).to_dict(), TRIAL_INFO: info})
    try:
        assert algo.trial_id == "5e1f0_00001"
        algo.train()
        assert algo._metrics_exporter.tags == {
            "experiment": "monitoring_trial_id",
            "trial": "5e1f0_00001",
            "seed": "0",
            "fold": "none",
        }
    finally:
        algo.stop()


# --- dashboard access -----------------------------------------------------------------------------------
def test_dashboard_message_says_how_to_authenticate_and_forward():
    msg = dashboard_access_message("127.0.0.1:8265", joined=True, token_auth=True, environ={})
    assert msg.splitlines() == [
        "Ray dashboard: http://127.0.0.1:8265",
        "  token authentication is on: paste the output of `ray get-auth-token` into the dashboard's login dialog "
        f"(the token is read from {DEFAULT_TOKEN_FILE})",
        "  on a cluster started with `ray up cluster.yaml` the dashboard listens on the head node only: run "
        "`ray dashboard cluster.yaml` on your machine and open http://localhost:8265",
    ]
    local = dashboard_access_message("127.0.0.1:8265", joined=False, token_auth=True, environ={})
    assert "ray dashboard cluster.yaml" not in local and "ray get-auth-token" in local
    custom = dashboard_access_message(
        "127.0.0.1:8265", joined=False, token_auth=True, environ={"RAY_AUTH_TOKEN_PATH": "/secrets/ray"}
    )
    assert "(the token is read from /secrets/ray)" in custom
    env_token = dashboard_access_message(
        "127.0.0.1:8265", joined=False, token_auth=True, environ={"RAY_AUTH_TOKEN": "s3cr3t"}
    )
    assert "read from the RAY_AUTH_TOKEN environment variable" in env_token and "s3cr3t" not in env_token
    off = dashboard_access_message("127.0.0.1:8265", joined=False, token_auth=False)
    assert off.splitlines()[1] == "  token authentication is off for this cluster (RAY_AUTH_MODE=disabled)"
    assert dashboard_access_message(None, joined=False, token_auth=True).startswith("Ray dashboard: not running")


def test_grafana_dashboard_is_installed_only_where_ray_provisions_grafana(tmp_path, monkeypatch):
    monkeypatch.delenv(RAY_GRAFANA_DASHBOARD_DIR_ENV, raising=False)
    session = tmp_path / "session_x"
    assert install_grafana_dashboard(session) is None  # no dashboard on this node: nothing to add to
    folder = session / "metrics" / "grafana" / "dashboards"
    folder.mkdir(parents=True)
    target = install_grafana_dashboard(session)
    assert target == folder / "portfolio.json"
    assert target.read_bytes() == GRAFANA_DASHBOARD_FILE.read_bytes()
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.setenv(RAY_GRAFANA_DASHBOARD_DIR_ENV, str(other))  # Ray's own override of that folder
    assert install_grafana_dashboard(session) == other / "portfolio.json"


# --- the Grafana dashboard file -------------------------------------------------------------------------
def _dashboard() -> dict:
    return json.loads(GRAFANA_DASHBOARD_FILE.read_text())


def test_grafana_dashboard_json_is_a_valid_dashboard_with_a_panel_per_gauge():
    dash = _dashboard()
    assert dash["title"] == "Portfolio RL" and dash["uid"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    trial = variables["trial"]
    assert trial["type"] == "query" and trial["multi"] and trial["includeAll"] and trial["allValue"] == ".*"
    assert "$experiment" in trial["definition"]
    ids, covered, cells = set(), set(), set()
    for panel in dash["panels"]:
        assert panel["id"] not in ids
        ids.add(panel["id"])
        assert panel["type"] == "timeseries" and panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
        for x in range(g["x"], g["x"] + g["w"]):  # panels must not overlap
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
        (target,) = panel["targets"]
        assert target["refId"] and "{{trial}}" in target["legendFormat"]
        expr = target["expr"]
        assert 'trial=~"$trial"' in expr and 'experiment=~"$experiment"' in expr
        covered |= {g for g in GAUGES if prometheus_name(g) + "{" in expr}
    assert covered == set(GAUGES)  # one panel per gauge, nothing we do not export


# --- Prometheus config ------------------------------------------------------------------------------------
def test_prometheus_config_reads_rays_service_discovery_file():
    from ray._common.utils import get_default_ray_temp_dir
    from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE

    cfg = yaml.safe_load(PROMETHEUS_CONFIG_FILE.read_text())
    (job,) = cfg["scrape_configs"]
    (sd,) = job["file_sd_configs"]
    # the path Ray keeps pointing at the current session's file (a link in its default temp dir)
    assert sd["files"] == [str(Path(get_default_ray_temp_dir()) / PROMETHEUS_SERVICE_DISCOVERY_FILE)]
    promtool = shutil.which("promtool")
    if promtool:
        res = subprocess.run([promtool, "check", "config", str(PROMETHEUS_CONFIG_FILE)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr


# --- a sweep submitted as a Ray job to a two-node cluster, watched by a real Prometheus ------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two nodes with token authentication on (as real runs), in their own Ray temp dir.

    The temp dir is short (Unix socket paths are limited to ~107 characters) and private, so the
    service-discovery file is this cluster's alone. ``python`` on the nodes is this interpreter, as the
    README's ``ray job submit ... -- python -m trainer.tune`` expects of a cluster's environment.
    """
    import tempfile

    logs = tmp_path_factory.mktemp("cluster_logs")
    temp_dir = Path(tempfile.mkdtemp(prefix="rm", dir="/tmp"))
    token_file = temp_dir / "auth_token"
    token_file.write_text(os.urandom(16).hex())
    env = dict(
        os.environ,
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_file),
        # Ray sends a process' gauges to the metrics endpoint every 10 s by default, and a smoke trial sets its
        # gauges within about 2 s: every second here, so that Prometheus sees each trial while it runs.
        RAY_metrics_report_interval_ms="1000",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    token = token_file.read_text()
    try:
        with ray_cluster(logs, temp_dir=temp_dir, env=env, token=token) as c:
            yield {**c, "temp_dir": temp_dir, "token": token, "token_file": token_file}
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def _prom_query(base: str, path: str, **params: str) -> list[dict]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read().decode())
    assert body["status"] == "success", body
    return body["data"]["result"] if isinstance(body["data"], dict) else body["data"]


@pytest.fixture(scope="module")
def prometheus(cluster, tmp_path_factory):
    """A real Prometheus with monitoring/prometheus.yml, pointed at this cluster's discovery file.

    Test-only changes to the shipped config: the discovery file of this cluster's temp dir, a 2 s scrape
    interval (a smoke trial lives for seconds), and targets rewritten to 127.0.0.1 (same ports: Ray lists
    the node's interface address, and tests talk to loopback only).
    """
    if PROMETHEUS is None:
        pytest.skip(needs_prometheus.kwargs["reason"])
    work = tmp_path_factory.mktemp("prometheus")
    cfg = yaml.safe_load(PROMETHEUS_CONFIG_FILE.read_text())
    cfg["global"]["scrape_interval"] = "2s"
    (job,) = cfg["scrape_configs"]
    job["file_sd_configs"][0]["files"] = [str(cluster["temp_dir"] / "head" / "prom_metrics_service_discovery.json")]
    job["relabel_configs"] = [
        {
            "source_labels": ["__address__"],
            "regex": "[^:]+:(\\d+)",
            "target_label": "__address__",
            "replacement": "127.0.0.1:$1",
        }
    ]
    (work / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    log = open(work / "prometheus.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, (work / "prometheus.log").read_text()[-2000:]
                time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def sweep_job(cluster, request, tmp_path_factory):
    """``ray job submit --working-dir . -- python -m trainer.tune --exp smoke`` (2 trials, no early stop).

    Prometheus, when installed, is started first so that it scrapes the trials while they run.
    """
    try:
        prom = request.getfixturevalue("prometheus")
    except pytest.skip.Exception:
        prom = None
    storage = tmp_path_factory.mktemp("storage")
    submission_id = f"portfolio-monitoring-{os.getpid()}"
    started = time.time()
    env = cluster["env"]
    ray_bin = str(Path(sys.executable).parent / "ray")
    cmd = [
        ray_bin,
        "job",
        "submit",
        "--address",
        cluster["dashboard"],
        "--submission-id",
        submission_id,
        "--working-dir",
        str(REPO),
        "--",
        "python",
        "-m",
        "trainer.tune",
        "--exp",
        "smoke",
        "--storage",
        str(storage),
        "--set",
        "sweep.scheduler.type=fifo",
        "--set",
        "stopping.env_steps=900",  # 3 iterations per trial
        "--set",
        "sweep.backtest_best=false",  # the summary is enough here (tests/trainer/test_tune.py covers the rest)
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    return {
        "result": res,
        "submission_id": submission_id,
        "exp_dir": storage / "smoke",
        "prometheus": prom,
        "started": started,
        "ended": time.time(),
    }


def _targets(base: str) -> list[tuple[str, str, str]]:
    """Prometheus' scrape targets: (address, health, last error), for failure messages."""
    with urllib.request.urlopen(f"{base}/api/v1/targets", timeout=10) as resp:
        active = json.loads(resp.read().decode())["data"]["activeTargets"]
    return [(t["scrapeUrl"], t["health"], t["lastError"]) for t in active]


def _trial_ids(exp_dir: Path) -> dict[str, list[dict]]:
    """Tune trial id -> its result rows (the trial directories are ``trial_<id>``)."""
    return {name.removeprefix("trial_"): rows for name, rows in _results(exp_dir).items()}


def test_job_submitted_to_a_two_node_cluster_finishes_with_its_summary(cluster, sweep_job):
    res = sweep_job["result"]
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    job = dashboard_get(f"{cluster['dashboard']}/api/jobs/{sweep_job['submission_id']}", cluster["token"])
    assert job["status"] == "SUCCEEDED"
    summary = json.loads((sweep_job["exp_dir"] / "summary.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["completed", "completed"]
    # the driver told the user how to reach and log into the dashboard
    out = res.stdout
    assert f"Ray dashboard: {cluster['dashboard']}" in out
    assert "token authentication is on: paste the output of `ray get-auth-token`" in out
    assert f"(the token is read from {cluster['token_file']})" in out
    # ... and installed our Grafana dashboard beside the ones Ray generated on the head node
    grafana = cluster["temp_dir"] / "head" / "session_latest" / "metrics" / "grafana"
    installed = grafana / "dashboards" / "portfolio.json"
    assert installed.read_bytes() == GRAFANA_DASHBOARD_FILE.read_bytes()


def test_dashboard_needs_the_token_that_ray_get_auth_token_prints(cluster, sweep_job):
    url = f"{cluster['dashboard']}/api/v0/actors?limit=1000"
    with pytest.raises(urllib.error.HTTPError) as err:
        dashboard_get(url)
    assert err.value.code == 401  # token authentication stayed on
    printed = subprocess.run(
        [str(Path(sys.executable).parent / "ray"), "get-auth-token"],
        capture_output=True,
        text=True,
        env=cluster["env"],
        timeout=60,
    )
    assert printed.returncode == 0 and printed.stdout == cluster["token"]
    actors = dashboard_get(url, printed.stdout)["data"]["result"]["result"]
    trials = {a["actor_id"] for a in actors if a["class_name"] == "PortfolioSAC"}
    assert len(trials) == 2  # the Actors page lists both trials


@needs_prometheus
def test_prometheus_scrapes_every_gauge_of_every_trial(sweep_job):
    assert sweep_job["result"].returncode == 0, sweep_job["result"].stdout[-3000:]
    base = sweep_job["prometheus"]
    trials = _trial_ids(sweep_job["exp_dir"])
    assert len(trials) == 2
    for gauge, (path, _) in GAUGES.items():
        for trial, rows in trials.items():
            selector = f'{prometheus_name(gauge)}{{experiment="smoke", trial="{trial}"}}'
            series = _prom_query(base, "/api/v1/query", query=f"last_over_time({selector}[1h])")
            assert series, f"Prometheus has no {gauge} for trial {trial}; targets: {_targets(base)}"
            labels = {s["metric"]["seed"] for s in series}, {s["metric"]["fold"] for s in series}
            assert labels == ({"0"}, {"none"})
            # every value Prometheus holds for this trial is one the trial reported (not the other trial's)
            reported = set()
            for row in rows:
                value = row[M.PORTFOLIO]
                for key in path:
                    value = value.get(key) if isinstance(value, dict) else None
                if value is not None and math.isfinite(value):
                    reported.add(round(float(value), 9))
            window = _prom_query(base, "/api/v1/query", query=f"{selector}[1h]")
            scraped = {round(float(v), 9) for s in window for _, v in s["values"]}
            assert scraped and scraped <= reported, (gauge, trial, scraped, reported)


@needs_prometheus
def test_every_grafana_panel_query_returns_one_line_per_trial(sweep_job):
    base = sweep_job["prometheus"]
    trials = set(_trial_ids(sweep_job["exp_dir"]))
    dash = _dashboard()

    def fill(query: str, trial: str = ".*") -> str:  # what Grafana substitutes for the variables
        return query.replace("$experiment", "smoke").replace("$trial", trial)

    variables = {v["name"]: v for v in dash["templating"]["list"]}
    # the trial selector's query (label_values(metric{...}, trial)) lists both trials
    metric = variables["trial"]["definition"].removeprefix("label_values(").rsplit(",", 1)[0]
    assert trials <= set(_prom_query(base, "/api/v1/label/trial/values", **{"match[]": fill(metric)}))
    span = {"start": f"{sweep_job['started'] - 5:.0f}", "end": f"{time.time():.0f}", "step": "2"}
    for panel in dash["panels"]:
        expr = panel["targets"][0]["expr"]
        lines = _prom_query(base, "/api/v1/query_range", query=fill(expr), **span)
        assert {s["metric"]["trial"] for s in lines} == trials, panel["title"]
        assert len(lines) == len(trials), panel["title"]  # one line per trial
        one = sorted(trials)[0]  # the trial selector set to one trial shows that trial alone
        selected = _prom_query(base, "/api/v1/query_range", query=fill(expr, one), **span)
        assert {s["metric"]["trial"] for s in selected} == {one}, panel["title"]


def test_tensorboard_shows_our_scalars_per_trial(sweep_job):
    """What `tensorboard --logdir <storage>/smoke` shows: one run per trial directory, each with our scalars."""
    pytest.importorskip("tensorboard", reason="tensorboard is a test extra: pip install -e '.[test]'")
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    exp_dir = sweep_job["exp_dir"]
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(exp_dir))
    mux.Reload()
    trials = _results(exp_dir)
    assert set(mux.Runs()) == set(trials) and len(trials) == 2
    wanted = {
        "validation Sharpe": f"ray/tune/{M.VALIDATION_SHARPE_METRIC}",
        "critic loss": f"ray/tune/{M.PORTFOLIO}/{M.CRITIC_LOSS}",
        "entropy": f"ray/tune/{M.PORTFOLIO}/{M.ENTROPY}",
        "env steps/s": f"ray/tune/{M.PORTFOLIO}/{M.ENV_STEPS_PER_S}",
    }
    for run, rows in trials.items():
        tags = set(mux.Runs()[run]["scalars"])
        for what, tag in wanted.items():
            assert tag in tags, f"{run}: no {what} ({tag}) among {sorted(tags)}"
        # the events hold this trial's own values, iteration by iteration (Tune skips NaN, e.g. before learning)
        logged = [e.value for e in mux.Scalars(run, wanted["critic loss"])]
        reported = [r[M.PORTFOLIO][M.CRITIC_LOSS] for r in rows if math.isfinite(r[M.PORTFOLIO][M.CRITIC_LOSS])]
        assert logged == pytest.approx(reported, rel=1e-6) and logged
