"""RLlib callbacks: portfolio metrics of training episodes."""

from __future__ import annotations

from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

from trainer import metrics as M

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
        infos = [i for chunk in (prev_episode_chunks or []) for i in chunk.get_infos()]
        infos += list(episode.get_infos())
        steps = [i for i in infos if "net_return" in i]
        if not steps:
            return
        rets = [i["net_return"] for i in steps]
        metrics_logger.log_value(M.TRAIN_SHARPE, M.sharpe_annualized(rets), reduce="mean", window=_WINDOW)
        metrics_logger.log_value(M.TRAIN_FINAL_VALUE, steps[-1]["portfolio_value"], reduce="mean", window=_WINDOW)
        metrics_logger.log_value(
            M.TRAIN_TURNOVER, sum(i["turnover"] for i in steps) / len(steps), reduce="mean", window=_WINDOW
        )


# Ray metrics (Prometheus via the node's metrics agent): name -> (portfolio-section key, description).
GAUGES: dict[str, tuple[str, str]] = {
    "portfolio_episode_return": (M.EPISODE_RETURN, "mean return of recent training episodes"),
    "portfolio_validation_sharpe": (M.SHARPE, "annualised Sharpe of the latest deterministic validation pass"),
    "portfolio_critic_loss": (M.CRITIC_LOSS, "SAC critic loss (mean of the twin Q losses)"),
    "portfolio_policy_entropy": (M.ENTROPY, "policy entropy estimate (-mean log pi)"),
    "portfolio_env_steps_per_s": (M.ENV_STEPS_PER_S, "env steps sampled per second"),
    "portfolio_trained_samples_per_s": (M.TRAINED_SAMPLES_PER_S, "replayed samples trained on per second"),
}


class MetricsExporter:
    """Exports the portfolio section of each training result as Ray gauges tagged experiment/trial."""

    TAG_KEYS = ("experiment", "trial")

    def __init__(self) -> None:
        from ray.util.metrics import Gauge

        self._gauges = {
            name: Gauge(name, description=desc, tag_keys=self.TAG_KEYS) for name, (_, desc) in GAUGES.items()
        }

    def export(self, section: dict[str, Any], experiment: str, trial: str) -> None:
        import math

        tags = {"experiment": experiment, "trial": trial}
        for name, (key, _) in GAUGES.items():
            value = section.get(M.VALIDATION, {}).get(key) if key == M.SHARPE else section.get(key)
            if value is not None and math.isfinite(float(value)):
                self._gauges[name].set(float(value), tags=tags)
