"""RLlib callbacks: portfolio metrics of training episodes."""

from __future__ import annotations

from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

from trainer.metrics import registry as M

_WINDOW = 20  # episodes averaged in the reported training-episode metrics


class PortfolioCallbacks(RLlibCallback):
    """Logs Sharpe, final value and mean turnover of each finished training episode."""

    def on_episode_end(
        self,
        *,
        episode: Any,
        prev_episode_chunks: list | None = None,
        metrics_logger: Any = None,
        **kwargs: Any,
    ) -> None:
        if metrics_logger is None:
            return
        # Each chunk's first info is the previous chunk's last (or the reset's): every step's info once.
        chunks = [*(prev_episode_chunks or []), episode]
        infos = [i for chunk in chunks for i in list(chunk.get_infos())[1:]]
        steps = [i for i in infos if "net_return" in i]
        if not steps:
            return
        rets = [i["net_return"] for i in steps]
        metrics_logger.log_value(M.TRAIN_SHARPE, M.sharpe_annualized(rets), reduce="mean", window=_WINDOW)
        metrics_logger.log_value(M.TRAIN_FINAL_VALUE, steps[-1]["portfolio_value"], reduce="mean", window=_WINDOW)
        metrics_logger.log_value(
            M.TRAIN_TURNOVER, sum(i["turnover"] for i in steps) / len(steps), reduce="mean", window=_WINDOW
        )
