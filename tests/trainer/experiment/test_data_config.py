"""trainer.experiment.config.DataConfig: the env settings and fold layout mirror envs (same defaults, same rules, same
messages); env_config carries the fold as small values that build the same env. No Ray needed."""

from __future__ import annotations

from dataclasses import fields

import pytest

from envs.folds import FoldSpec
from envs.market import load_market
from envs.portfolio import PortfolioEnv
from envs.settings import SETTING_NAMES, PortfolioSettings
from trainer.experiment.config import SWEEPABLE
from trainer.experiment.data_config import DataConfig, FoldsConfig
from trainer.experiment.loading import CONFIG_DIR, ExperimentError, load_experiment


def test_defaults_come_from_the_env_dataclasses():
    cfg = DataConfig()
    assert cfg.settings() == PortfolioSettings()
    assert set(SETTING_NAMES) <= set(DataConfig.model_fields)
    assert [f.name for f in fields(FoldSpec)] == list(FoldsConfig.model_fields)
    assert cfg.folds.spec() == FoldSpec() and cfg.fold is None


def test_a_relative_source_is_the_current_directorys_file_named_absolutely(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert DataConfig(source="prices.csv").source == str(tmp_path / "prices.csv")
    assert DataConfig(source="data/p.parquet").source == str(tmp_path / "data" / "p.parquet")
    assert DataConfig(source=str(tmp_path / "p.csv")).source == str(tmp_path / "p.csv")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert DataConfig(source="~/p.csv").source == str(tmp_path / "home" / "p.csv")
    assert DataConfig().source == "sp500" and DataConfig(source="sp500").source == "sp500"


def test_env_config_builds_the_same_env(tmp_path):
    from tests.conftest import synthetic_prices, write_wide_csv

    path = write_wide_csv(tmp_path / "p.csv", synthetic_prices(n_days=1000))
    exp = load_experiment(
        "smoke",
        {
            "data.source": path,
            "data.folds": {"n_folds": 2, "test_days": 60, "validation_days": 60, "train_days": 200},
            "data.fold": 1,
            "data.action": "tilt",
            "data.no_trade_band": 0.02,
        },
    )
    cfg = exp.data.env_config("validation")
    assert cfg["fold"] == 1 and cfg["folds"]["n_folds"] == 2 and cfg["action"] == "tilt"
    assert all(not hasattr(v, "shape") for v in cfg.values())  # small values only, no arrays
    env = PortfolioEnv(**cfg)
    assert env.settings == exp.data.settings()
    market = load_market(path, folds=FoldSpec(n_folds=2, test_days=60, validation_days=60, train_days=200), fold=1)
    assert env.market is market and env.market.splits["test"].end == 999


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"data.cost_bps": 5000},
            "key 'data.cost_bps': Value error, cost_bps must be a finite number in [0, 1000] basis points, got 5000.0",
        ),
        (
            {"data.no_trade_band": -0.5},
            "key 'data.no_trade_band': Value error, no_trade_band must be a finite number in [0, 2) (a turnover), "
            "got -0.5",
        ),
        ({"data.action": "argmax"}, "key 'data.action': Input should be 'softmax' or 'tilt'"),
        (
            {"data.reward": "sortino"},
            "key 'data.reward': Input should be 'default', 'log_return', 'differential_sharpe' or 'excess_log_return'",
        ),
        ({"data.fold": 3}, "key 'data': Value error, data.fold must be in 0..2 (data.folds.n_folds is 3), got 3"),
        ({"data.fold": True}, "key 'data.fold': Value error, fold must be a number, got true"),
        (
            {"data.folds.test_days": 10},
            "key 'data.folds.test_days': Value error, test_days must be an integer >= 30 (trading days), got 10",
        ),
        ({"data.folds.scheme": "anchored"}, "key 'data.folds.scheme': Input should be 'expanding' or 'rolling'"),
        (
            {
                "data.fold": 0,
                "data.split_dates": {s: ["2010-01-01", "2010-12-31"] for s in ("train", "validation", "test")},
            },
            "key 'data': Value error, give data.split_dates or data.fold, not both: a fold's windows replace the "
            "split dates",
        ),
        (
            {"data.max_weight": 1.5},
            "key 'data.max_weight': Value error, max_weight must be null (no cap) or a number in (0, 1] (the largest "
            "weight of one asset), got 1.5",
        ),
        (
            {"data.max_cash": -0.5},
            "key 'data.max_cash': Value error, max_cash must be null (no cap) or a number in [0, 1] (the largest cash "
            "weight), got -0.5",
        ),
        (
            {"data.max_turnover": 0},
            "key 'data.max_turnover': Value error, max_turnover must be null (no limit) or a number in (0, 2] (a "
            "turnover per day: the L1 distance of the asset weights), got 0.0",
        ),
        (
            {"data.features": ["asset", "rank"]},
            "key 'data.features': Value error, features must be one of asset, asset+rank, asset+market, "
            "asset+rank+market, got ['asset', 'rank']",
        ),
        (
            {"data.max_weight": "10%"},
            "key 'data.max_weight': Input should be a valid number, unable to parse string as a number",
        ),
        (
            {"sweep.search_space": {"data.max_turnover": {"uniform": [0.0, 0.5]}}},
            "key 'sweep.search_space.data.max_turnover': uniform bound 0.0 is invalid (key 'data.max_turnover': Value "
            "error, max_turnover must be null (no limit) or a number in (0, 2] (a turnover per day: the L1 distance of "
            "the asset weights), got 0.0)",
        ),
    ],
)
def test_bad_data_values_are_exact_errors(override, message):
    with pytest.raises(ExperimentError) as info:
        load_experiment("smoke", override)
    settings = ", ".join(f"{key}={value}" for key, value in override.items())
    assert str(info.value) == f"{CONFIG_DIR / 'smoke.yaml'} with {settings} from the command line: {message}"


def test_position_limits_are_set_like_the_other_env_settings():
    exp = load_experiment("smoke", {"data.max_weight": 0.1, "data.max_turnover": 0.5})
    cfg = exp.data.env_config()
    assert (cfg["max_weight"], cfg["max_cash"], cfg["max_turnover"]) == (0.1, None, 0.5)
    env = PortfolioEnv(**cfg)
    assert env.settings == exp.data.settings() and env.limits.max_turnover == 0.5
    assert (env.limits.caps[:-1] == 0.1).all() and env.limits.caps[-1] == float("inf")
    assert load_experiment("smoke", {"data.max_weight": None}).data.max_weight is None  # --set data.max_weight=null
    assert {"data.max_weight", "data.max_cash", "data.max_turnover"} <= set(SWEEPABLE)
    swept = load_experiment(
        "smoke",
        {
            "sweep.search_space": {"data.max_weight": {"grid_search": [0.1, 0.2, None]}},
            "sweep.variants": {"free": {}, "slow": {"data.max_turnover": 0.2, "data.max_cash": 0.05}},
        },
    )
    assert swept.sweep.n_trials() == 6


def test_the_feature_set_is_set_from_yaml_or_set_and_swept_with_grid_search(tmp_path):
    from ray import tune

    from trainer.rl.sac_config import build_sac_config

    assert DataConfig().features == "asset" and DataConfig().env_config()["features"] == "asset"
    exp = load_experiment("smoke", {"data.features": "asset+rank+market"})
    assert (
        exp.data.env_config()["features"] == "asset+rank+market" and exp.data.settings().features == exp.data.features
    )
    yaml_file = tmp_path / "exp.yaml"
    yaml_file.write_text(
        "data:\n  features: asset+market\nsweep:\n  search_space:\n"
        "    data.features: {grid_search: [asset, asset+rank, asset+rank+market]}\n"
    )
    swept = load_experiment(str(yaml_file), sweep=True)
    assert swept.data.features == "asset+market" and "data.features" in SWEEPABLE
    assert [p["data.features"] for p in swept.sweep.points()] == ["asset", "asset+rank", "asset+rank+market"]
    grid = tune.grid_search(["asset", "asset+rank+market"])
    assert build_sac_config(swept, {"data.features": grid}).env_config["features"] is grid  # per trial
    yaml_file.write_text("sweep:\n  search_space:\n    data.features: {grid_search: [asset, asset+rnk]}\n")
    with pytest.raises(ExperimentError) as info:
        load_experiment(str(yaml_file), sweep=True)
    assert str(info.value) == (
        f"{yaml_file}: key 'sweep.search_space.data.features': value 'asset+rnk' is invalid (key 'data.features': "
        "Value error, features must be one of asset, asset+rank, asset+market, asset+rank+market, got 'asset+rnk')"
    )
