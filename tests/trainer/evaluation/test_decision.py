"""trainer.evaluation.decision: a decision is a backtest day, exactly, for one policy and for an ensemble."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from envs.data import PriceData, load_prices
from envs.market import load_market_for
from envs.portfolio import PortfolioEnv
from trainer.evaluation.decision import DecisionError, Member, decide, load_members
from trainer.evaluation.holdings import Holdings


def _backtest_days(members: list[Member], split: str = "test") -> list[tuple[int, np.ndarray, np.ndarray]]:
    """An instrumented backtest pass (the ensemble rule of trainer.evaluation.runs.run_ensemble): each day's
    row, the drifted weights held before trading, and the weights traded to."""
    policies, state = load_members(members)
    market = load_market_for(state["env_config"])
    env = PortfolioEnv(data=market, **{**{k: v for k, v in state["env_config"].items() if k != "data"}, "split": split})
    obs, _ = env.reset(seed=0)
    days, done = [], False
    while not done:
        held = env.current_weights
        target = np.mean([env.weights_from_action(p(obs)) for p in policies], axis=0)
        obs, _, terminated, truncated, info = env.step_target(target)
        days.append((info["step_index"], held, info["weights"]))
        done = terminated or truncated
    return days


@pytest.mark.parametrize("ensemble", [False, True], ids=["single", "ensemble"])
def test_decide_gives_the_backtests_weights_on_every_day_of_its_window(limited_run, ensemble):
    ckpts, data = limited_run
    _decide_every_day([Member(c) for c in ckpts[-2:]] if ensemble else [Member(ckpts[-1])], data)


def test_decide_with_every_feature_set_gives_the_backtests_weights(rich_run):
    ckpts, data = rich_run
    members = [Member(ckpts[-1])]
    _, state = load_members(members)
    assert state["env_config"]["features"] == "asset+rank+market"  # the checkpoint records its set
    assert load_market_for(state["env_config"]).shared.shape[1] == 6
    # the frozen observation filter covers every value of the richer observation, the shared block included
    with np.load(ckpts[-1] / "policy" / "weights.npz") as arrays:
        std = arrays["obs_filter.std"][0]
    assert std.shape == (4 * 18 + 6 + 5,) and (std[4 * 18 : 4 * 18 + 6] > 0).all()
    _decide_every_day(members, data)


def _decide_every_day(members: list[Member], data) -> None:
    loaded = load_members(members)
    days = _backtest_days(members)
    assert len(days) > 60
    prices = load_prices(data)
    traded_somewhere = False
    for t, held, traded in days:
        upto = PriceData(prices.source, prices.form, prices.prices.iloc[: t + 1], [])
        decision = decide(
            members, upto, Holdings(held, None, None, "backtest"), as_of=prices.prices.index[t], loaded=loaded
        )
        assert decision.date == prices.prices.index[t]
        np.testing.assert_array_equal(decision.target, traded)  # bit for bit: the same code on the same inputs
        assert (decision.target[:-1] <= 0.35 + 1e-12).all() and decision.turnover <= 0.3 + 1e-12
        traded_somewhere |= decision.turnover > 0
    assert traded_somewhere


def test_decide_refuses_stale_or_future_prices(limited_run):
    ckpts, data = limited_run
    last = load_prices(data).prices.index[-1]
    decide([Member(ckpts[-1])], data, as_of=last + pd.offsets.BDay(5))  # 5 business days old: accepted
    with pytest.raises(DecisionError) as info:
        decide([Member(ckpts[-1])], data, as_of=last + pd.offsets.BDay(6))
    assert str(info.value) == (
        f"{data}: the last price is on {last.date()}, 6 business days before {(last + pd.offsets.BDay(6)).date()} "
        "(--as-of); a decision needs the latest close (at most --max-stale-days 5): update the prices"
    )
    with pytest.raises(DecisionError, match="after --as-of"):
        decide([Member(ckpts[-1])], data, as_of=last - pd.offsets.BDay(1))
