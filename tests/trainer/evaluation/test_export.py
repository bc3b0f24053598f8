"""An exported policy (``python -m trainer.export``) is ``decide``, to 1e-6, on every day of a backtest window: loaded
in this process, in a process that imports torch alone, and as ONNX through onnxruntime; and it refuses bad inputs
in one clear line."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from envs.data import PriceData, load_prices
from tests.trainer.evaluation.test_decision import _backtest_days
from trainer.evaluation.decision import Member, decide, load_members
from trainer.evaluation.holdings import Holdings

PARITY = 1e-6
HAS_ONNX = importlib.util.find_spec("onnx") is not None
NO_ONNXRUNTIME = "onnxruntime is not installed (the optional extra: pip install -e '.[onnx]')"


@pytest.fixture(scope="module")
def exported(limited_run, tmp_path_factory):
    """The limited run's latest checkpoint exported through the real CLI (and as ONNX where onnx installs), and
    each day of its test window: (prices up to that day, the weights held, decide's target)."""
    return _export_and_decide(limited_run, tmp_path_factory, window=61)


@pytest.fixture(scope="module")
def exported_rich(rich_run, tmp_path_factory):
    """``exported`` for the run with every feature set (ranks, and the market features: a 253-row window)."""
    return _export_and_decide(rich_run, tmp_path_factory, window=253)


def _export_and_decide(run, tmp_path_factory, window: int):
    ckpts, data = run
    out = tmp_path_factory.mktemp("export")
    onnx_args = ["--onnx", str(out / "policy.onnx")] if HAS_ONNX else []
    res = subprocess.run(
        # the run directory: its latest checkpoint
        [
            sys.executable,
            "-m",
            "trainer.export",
            str(ckpts[-1].parent.parent),
            "--out",
            str(out / "policy.pt"),
            *onnx_args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.splitlines()[0] == f"exported {ckpts[-1]}: 4 tickers, at least {window} rows of prices"
    members = [Member(ckpts[-1])]
    loaded = load_members(members)
    prices = load_prices(data)
    days = []
    for t, held, traded in _backtest_days(members):
        upto = PriceData(prices.source, prices.form, prices.prices.iloc[: t + 1], [])
        decision = decide(members, upto, Holdings(held, None, None, "test"), as_of=upto.prices.index[-1], loaded=loaded)
        np.testing.assert_array_equal(decision.target, traded)
        days.append((upto.prices.to_numpy(dtype=np.float64).copy(), held.copy(), decision.target))
    return out, ckpts[-1], days


def _load(path):
    extra = {"metadata.json": ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    return module, json.loads(extra["metadata.json"])


def test_the_exported_policy_is_decide_on_every_day_of_the_test_window(exported):
    out, _, days = exported
    policy, meta = _load(out / "policy.pt")
    assert len(days) > 60
    worst = max(
        np.abs(policy(torch.from_numpy(prices), torch.from_numpy(held)).numpy() - target).max()
        for prices, held, target in days
    )
    assert worst <= PARITY
    # the window exercises the rules: days within the band (no trade), a cap that binds, drift over a cap
    assert sum(np.array_equal(target, held) for _, held, target in days) > 0
    assert sum(abs(target[:4].max() - 0.35) < 1e-12 for *_, target in days) > 0
    assert sum(held[:4].max() > 0.35 for _, held, _ in days) > 0
    # any history longer than the window gives the same answer as the window itself
    prices, held, target = days[-1]
    short = policy(torch.from_numpy(prices[-meta["window"] :].copy()), torch.from_numpy(held)).numpy()
    assert np.abs(short - target).max() <= PARITY


def test_the_metadata_says_what_to_feed_and_where_it_came_from(exported):
    out, checkpoint, _ = exported
    _, meta = _load(out / "policy.pt")
    spec = json.loads((checkpoint / "policy" / "policy.json").read_text())
    assert meta["format"] == "portfolio-rl exported policy" and meta["format_version"] == 1
    assert meta["tickers"] == ["A0", "A1", "A2", "A3"] and meta["window"] == 61
    assert meta["features"]["lookback"] == 60 and meta["features"]["names"][-1] == "rsi_14"
    assert meta["cost_bps"] == 10.0
    settings = meta["settings"]
    assert (settings["action"], settings["tilt_reference"], settings["no_trade_band"]) == ("tilt", "previous", 0.02)
    assert (settings["rebalance_fraction"], settings["max_weight"], settings["max_turnover"]) == (0.8, 0.35, 0.3)
    assert meta["training_window"] == spec["windows"]["train"] and meta["windows"] == spec["windows"]
    assert meta["checkpoint"] == str(checkpoint) and meta["agent"] is None
    for rel in ("policy/policy.json", "policy/weights.npz"):
        assert meta["policy_sha256"][rel] == hashlib.sha256((checkpoint / rel).read_bytes()).hexdigest()


TORCH_ONLY = textwrap.dedent(
    """
    import json, sys
    import torch
    extra = {"metadata.json": ""}
    policy = torch.jit.load(sys.argv[1], _extra_files=extra)
    inputs = torch.load(sys.argv[2], weights_only=True)
    targets = [policy(p, w) for p, w in zip(inputs["prices"], inputs["weights"])]
    torch.save({"targets": targets, "window": json.loads(extra["metadata.json"])["window"]}, sys.argv[3])
    print(sorted({m.split(".")[0] for m in sys.modules} & {"trainer", "envs", "ray", "pandas"}))
    """
)


def test_the_exported_policy_runs_with_torch_alone(exported, tmp_path):
    out, _, days = exported
    chosen = [days[0], days[len(days) // 2], days[-1]]
    torch.save(
        {"prices": [torch.from_numpy(p) for p, *_ in chosen], "weights": [torch.from_numpy(w) for _, w, _ in chosen]},
        tmp_path / "inputs.pt",
    )
    # isolated (-I: no PYTHONPATH, no current folder on the path) and run from elsewhere than the repository
    res = subprocess.run(
        [sys.executable, "-I", "-c", TORCH_ONLY, str(out / "policy.pt"), "inputs.pt", "targets.pt"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "[]"  # neither this package, nor Ray, nor pandas was imported
    result = torch.load(tmp_path / "targets.pt", weights_only=True)
    assert result["window"] == 61
    for (_, _, target), ours in zip(chosen, result["targets"], strict=True):
        assert ours.dtype == torch.float64 and np.abs(ours.numpy() - target).max() <= PARITY


def _error(policy, prices, weights) -> str:
    with pytest.raises(torch.jit.Error) as info:
        policy(prices, weights)
    return str(info.value).splitlines()[-1]


def test_bad_inputs_are_refused_in_one_line(exported):
    out, _, days = exported
    policy, _ = _load(out / "policy.pt")
    prices, held = torch.from_numpy(days[0][0]), torch.from_numpy(days[0][1])
    t = prices.shape[0]
    err = "builtins.RuntimeError: "
    assert _error(policy, prices[:, :3], held) == (
        f"{err}prices must be [T, 4] (rows oldest first, a column per ticker in the metadata's order), "
        f"got shape [{t}, 3]"
    )
    assert (
        _error(policy, prices.float(), held)
        == f"{err}prices must be float64 (torch.float64); convert them with .double()"
    )
    assert _error(policy, prices[-60:], held) == (
        f"{err}prices has 60 rows; the features need at least 61 (the metadata's window)"
    )
    for value, text in ((float("nan"), "nan"), (-2.5, "-2.5"), (float("inf"), "inf")):
        bad = prices.clone()
        bad[t - 3, 2] = value
        assert _error(policy, bad, held) == (
            f"{err}prices[{t - 3}, 2] is {text}: prices must be finite numbers between 1e-06 and 1e+15"
        )
    assert _error(policy, prices, held[:4]) == f"{err}weights must be [5] (4 assets, then cash), got shape [4]"
    assert _error(policy, prices, held.float()) == (
        f"{err}weights must be float64 (torch.float64); convert them with .double()"
    )
    negative = torch.tensor([-0.1, 0.3, 0.3, 0.3, 0.2], dtype=torch.float64)
    assert _error(policy, prices, negative) == f"{err}weights[0] is -0.1: weights must be finite and >= 0"
    assert _error(policy, prices, held * 1.01) == f"{err}weights must sum to 1 (cash included), got 1.01"


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason=NO_ONNXRUNTIME)
def test_the_onnx_export_is_decide_on_every_day_of_the_test_window(exported):
    import onnxruntime

    out, _, days = exported
    session = onnxruntime.InferenceSession(str(out / "policy.onnx"), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["metadata.json"])
    assert meta["tickers"] == ["A0", "A1", "A2", "A3"] and meta["window"] == 61
    worst = max(
        np.abs(session.run(None, {"prices": prices, "weights": held})[0] - target).max()
        for prices, held, target in days
    )
    assert worst <= PARITY
    # every branch of the limits is in the graph, not the trace's side: weights held far from the target, over
    # the caps, all cash, on the window's last day, against the TorchScript file
    policy, _ = _load(out / "policy.pt")
    prices = days[-1][0]
    rng = np.random.default_rng(3)
    for i in range(40):
        held = np.eye(5)[i % 5] if i < 5 else rng.dirichlet(np.full(5, 0.5))
        onnx_target = session.run(None, {"prices": prices, "weights": held})[0]
        script_target = policy(torch.from_numpy(prices), torch.from_numpy(held)).numpy()
        assert np.abs(onnx_target - script_target).max() <= PARITY


def test_every_feature_set_exports_as_decide_on_every_day(exported_rich):
    out, _, days = exported_rich
    policy, meta = _load(out / "policy.pt")
    assert meta["window"] == 253 and meta["features"]["features"] == "asset+rank+market"
    assert meta["features"]["lookback"] == 252 and len(meta["features"]["names"]) == 18
    assert meta["features"]["shared_names"][-1] == "avg_corr_60"
    assert len(days) > 60
    worst = max(
        np.abs(policy(torch.from_numpy(prices), torch.from_numpy(held)).numpy() - target).max()
        for prices, held, target in days
    )
    assert worst <= PARITY
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out / "policy.onnx"), providers=["CPUExecutionProvider"])
        worst = max(
            np.abs(session.run(None, {"prices": prices, "weights": held})[0] - target).max()
            for prices, held, target in days
        )
        assert worst <= PARITY
