"""Walk-forward studies: named variants, folds as a grid dimension, and a tiny real study's summary contract."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import cli_env, relative_by_hand, sharpe_by_hand
from trainer.experiment.config import ENV_CONFIG_GRID
from trainer.experiment.loading import ExperimentError, load_experiment
from trainer.rl.sac_config import build_sac_config
from trainer.tune import build_plan, tune_domains


def test_study_plan_is_variants_x_seeds_x_folds_selected_on_validation_vs_equal_weight():
    exp = load_experiment("study")
    plan = build_plan(exp)
    assert plan["trials"] == 3 * 5 * 3
    assert plan["metric"] == "portfolio/validation/sharpe_minus_ew"
    assert exp.data.folds.n_folds == 3 and exp.data.folds.test_days == 252


def test_variants_become_one_grid_over_whole_env_configs():
    exp = load_experiment("study")
    domains = tune_domains(exp.sweep)
    assert set(domains) == {"seed", ENV_CONFIG_GRID}
    points = domains[ENV_CONFIG_GRID]["grid_search"]
    assert len(points) == 3 * 3  # every variant x every fold
    assert {"data.action": "tilt", "data.no_trade_band": 0.05, "data.fold": 2} in points
    config = build_sac_config(exp, domains)
    env_configs = config.env_config["grid_search"]
    assert len(env_configs) == 9 and {c["fold"] for c in env_configs} == {0, 1, 2}
    tilt_excess = [c for c in env_configs if c["reward"] == "excess_log_return"]
    assert len(tilt_excess) == 3 and all(c["action"] == "tilt" and c["no_trade_band"] == 0.05 for c in tilt_excess)
    assert exp.variant_of(tilt_excess[0]) == "tilt_band_excess"
    reference = [c for c in env_configs if c["action"] == "softmax"]
    assert exp.variant_of(reference[0]) == "reference"


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ("{a: {sac.tau: 0.1}}", "variants.a: 'sac.tau' is not an env setting (data.<setting>)"),
        ("{a: {data.fold: 1}}", "variants.a: 'data.fold' is not an env setting (data.<setting>)"),
        ("{a: {seed: 1}}", "variants.a: 'seed' is not an env setting (data.<setting>)"),
    ],
)
def test_bad_variants_are_schema_errors(variants, message):
    with pytest.raises(ExperimentError, match=message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        load_experiment("study", {"sweep.variants": __import__("yaml").safe_load(variants)})


def test_a_variant_with_an_invalid_value_names_the_variant():
    with pytest.raises(ExperimentError) as info:
        load_experiment("study", {"sweep.variants": {"wide": {"data.no_trade_band": -1}}})
    assert "key 'sweep.variants.wide': key 'data.no_trade_band'" in str(info.value)


TINY = [
    "--set",
    "sweep.search_space={seed: {grid_search: [0, 1]}, data.fold: {grid_search: [0, 1]}}",
    "--set",
    "sweep.variants={tilt_band: {data.action: tilt, data.no_trade_band: 0.05}}",
    "--set",
    "stopping.env_steps=600",
    "--set",
    "stopping.steps_per_iteration=300",
    "--set",
    "sac.learning_starts=200",
    "--set",
    "model.hidden=[16]",
    "--set",
    "sweep.bootstrap_samples=200",
    "--set",
    "sweep.benchmark=sp500",
]


def test_tiny_real_study_writes_every_field_of_the_summary_contract(ray_session, tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "trainer.tune", "--exp", "study", "--storage", str(tmp_path), *TINY],
        capture_output=True,
        text=True,
        env=cli_env(ray_session),
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "WARNING" not in res.stdout + res.stderr  # RLlib's chatter goes to the log file
    exp_dir = tmp_path / "study"
    summary = json.loads((exp_dir / "summary.json").read_text())
    # fold windows: disjoint test windows, each after its own validation window
    folds = {f["fold"]: f for f in summary["folds"]}
    assert set(folds) == {0, 1}
    for f in folds.values():
        assert f["train"][1] < f["validation"][0] <= f["validation"][1] < f["test"][0] <= f["test"][1]
    assert folds[0]["test"][1] < folds[1]["test"][0]
    (config,) = summary["configurations"]
    assert config["config"] == "variant=tilt_band" and config["n_seeds"] == 2 and config["n_folds"] == 2
    diff = config["test_sharpe_minus_ew"]
    assert diff["n"] == 4 and diff["ci95"][0] <= diff["ci95"][1]
    assert 0.0 <= config["beat_ew_fraction"] <= 1.0 and config["test_turnover_per_day"]["median"] >= 0
    assert 0.0 <= config["deflated_sharpe_vs_ew"] <= 1.0
    assert {f["fold"] for f in config["ensemble"]["folds"]} == {0, 1}
    trials = pd.DataFrame(summary["trials"])
    assert len(trials) == 4 and set(trials["fold"]) == {0, 1} and set(trials["seed"]) == {0, 1}
    for _, t in trials.iterrows():
        # paired with the Equal Weight of the trial's own fold (same days, same costs)
        (ew,) = [b for b in summary["baselines_by_fold"] if b["fold"] == t["fold"]]
        assert t["test_sharpe_minus_ew"] == pytest.approx(t["test_sharpe"] - ew["test_sharpe"]["equal_weight"])
        assert t["test_turnover_per_day"] >= 0
    assert diff["median"] == pytest.approx(trials["test_sharpe_minus_ew"].median())
    assert config["beat_ew_fraction"] == (trials["test_sharpe_minus_ew"] > 0).mean()
    returns = pd.read_parquet(exp_dir / "test_returns.parquet")
    assert (
        set(returns["trial"]) == set(trials["trial"]) and (returns.groupby("trial").size() == 251).all()
    )  # 252 days, 251 steps
    _check_figures_against_the_returns_file(config, trials, returns, n_boot=200)
    _check_the_benchmark_against_skfolios_index(summary, config, trials, returns, n_boot=200)
    assert "against the benchmark S&P 500 price index (sp500), test windows, medians over runs:" in res.stdout
    best = json.loads((exp_dir / "best_backtest" / "backtest.json").read_text())
    assert best["benchmark"]["spec"] == "sp500" and set(best["benchmark"]["strategies"]) == set(best["strategies"])
    # a decision from the study directory: the selected configuration's seeds in the latest fold, averaged
    args = ["--as-of", "2100-01-01", "--max-stale-days", "100000", "--json", str(tmp_path / "d.json")]
    res = subprocess.run(
        [sys.executable, "-m", "trainer.decide", str(exp_dir), "--data", "sp500", *args, "--out", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    chosen = "the selected configuration variant=tilt_band, fold 1 (the latest test window): 2 seed(s) averaged"
    assert chosen in res.stdout
    decision = json.loads((tmp_path / "d.json").read_text())
    fold1 = sorted(t["best_checkpoint"] for t in summary["trials"] if t["fold"] == 1)
    assert len(fold1) == 2 and sorted(m["checkpoint"] for m in decision["members"]) == fold1
    for png in ("validation_curves.png", "test_sharpe_by_fold.png"):
        assert (exp_dir / png).stat().st_size > 10_000
    md = (exp_dir / "summary.md").read_text()
    assert "| variant=tilt_band [seed ensemble] |" in md and "| fold | validation | test |" in md
    assert "Against the benchmark S&P 500 price index (`sp500`) on each run's test window" in md
    assert "| configuration | runs | test Sharpe - benchmark | beat benchmark | Excess return |" in md


def _check_figures_against_the_returns_file(config: dict, trials: pd.DataFrame, returns: pd.DataFrame, n_boot: int):
    """The summary's figures recomputed from its own daily returns file, without the code that made them:
    each trial's test Sharpe and Sharpe minus EW, the block-bootstrap interval of the median difference (each
    fold's days resampled for all its seeds and EW together, folds pooled) and the deflated Sharpe ratio (one
    configuration: Bailey & Lopez de Prado's probabilistic Sharpe ratio of the pooled daily excess against 0)."""
    from scipy import stats as st

    def sharpe(x):
        return x.mean() / x.std(ddof=1) * np.sqrt(252)

    by_trial = {k: g.sort_values("day") for k, g in returns.groupby("trial")}
    for _, t in trials.iterrows():
        r = by_trial[t["trial"]]
        assert t["test_sharpe"] == pytest.approx(sharpe(r["sac"].to_numpy()), rel=1e-9)
        diff = sharpe(r["sac"].to_numpy()) - sharpe(r["equal_weight"].to_numpy())
        assert t["test_sharpe_minus_ew"] == pytest.approx(diff, rel=1e-9, abs=1e-12)
    ordered = trials.sort_values(["fold", "seed", "trial"])
    ci = _bootstrap_interval(ordered, {k: r["equal_weight"].to_numpy() for k, r in by_trial.items()}, by_trial, n_boot)
    assert config["test_sharpe_minus_ew"]["ci95"] == pytest.approx(ci, rel=1e-9)
    excess = np.concatenate([(by_trial[k]["sac"] - by_trial[k]["equal_weight"]).to_numpy() for k in ordered["trial"]])
    sr = excess.mean() / excess.std(ddof=1)
    g3, g4 = st.skew(excess), st.kurtosis(excess, fisher=False)
    psr = st.norm.cdf(sr * np.sqrt(excess.size - 1) / np.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))
    assert config["deflated_sharpe_vs_ew"] == pytest.approx(psr, rel=1e-9)


def _bootstrap_interval(ordered: pd.DataFrame, against: dict, by_trial: dict, n_boot: int) -> list[float]:
    """The 95% interval of the median over runs of (Sharpe - the reference's Sharpe): each fold's days resampled
    in blocks for all its seeds and the reference together (``against``: the reference's returns by trial), folds
    pooled."""
    from skfolio.utils.bootstrap import stationary_bootstrap

    per_fold = []
    for i, (_, fold) in enumerate(ordered.groupby("fold", sort=True)):
        cols = [against[fold["trial"].iloc[0]]] + [by_trial[trial]["sac"].to_numpy() for trial in fold["trial"]]
        boot = stationary_bootstrap(np.column_stack(cols), n_boot, block_size=20.0, seed=i)
        per_fold.append(
            [[sharpe_by_hand(b[:, j]) - sharpe_by_hand(b[:, 0]) for j in range(1, b.shape[1])] for b in boot]
        )
    medians = np.median(np.concatenate([np.asarray(f) for f in per_fold], axis=1), axis=1)
    return list(np.percentile(medians, [2.5, 97.5]))


def _check_the_benchmark_against_skfolios_index(summary, config, trials, returns, n_boot):
    """``sweep.benchmark=sp500`` recomputed from skfolio's index and dataset, not our code: each run's test window
    is the bundled data's days from its fold's first to last test day, the index's returns between them are paired
    with the run's daily returns, and the figures, medians and interval follow by hand."""
    from skfolio.datasets import load_sp500_dataset, load_sp500_index

    section = summary["benchmark"]
    assert (section["spec"], section["error"], section["label"]) == ("sp500", None, "S&P 500 price index")
    index, dates = load_sp500_index()["SP500"], load_sp500_dataset().index
    windows = {f["fold"]: f["test"] for f in summary["folds"]}
    by_trial = {k: g.sort_values("day") for k, g in returns.groupby("trial")}
    bench = {}
    for _, t in trials.iterrows():
        start, end = windows[t["fold"]]
        days = dates[(dates >= start) & (dates <= end)]
        prices = index.loc[days].to_numpy()
        b = bench[t["trial"]] = prices[1:] / prices[:-1] - 1.0
        r = by_trial[t["trial"]]["sac"].to_numpy()
        np.testing.assert_allclose(by_trial[t["trial"]]["benchmark"].to_numpy(), b, rtol=1e-12)
        expected = relative_by_hand(r, b)
        for key, value in expected.items():  # summary.json's trials keep 10 decimals (pandas' to_json)
            assert t[f"test_{key}"] == pytest.approx(value, rel=1e-9, abs=1e-10), key
        (fold,) = [f for f in section["folds"] if f["test"] == [start, end]]
        assert fold["test_sharpe"] == pytest.approx(sharpe_by_hand(b), rel=1e-9)
    for key in expected:
        assert config[f"test_{key}"]["median"] == pytest.approx(trials[f"test_{key}"].median(), rel=1e-9, abs=1e-10)
        assert config[f"test_{key}"]["n"] == 4
    assert config["beat_benchmark_fraction"] == (trials["test_sharpe_minus_benchmark"] > 0).mean()
    ordered = trials.sort_values(["fold", "seed", "trial"])
    ci = _bootstrap_interval(ordered, bench, by_trial, n_boot)
    assert config["test_sharpe_minus_benchmark"]["ci95"] == pytest.approx(ci, rel=1e-9)
