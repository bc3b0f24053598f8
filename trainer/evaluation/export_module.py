"""A trained policy as one TorchScript file that runs with torch alone: prices and weights in, target weights out.

``ExportedPolicy.forward(prices, weights)`` makes ``trainer.evaluation.decision.decide``'s decision for the last
row of ``prices`` (float64 ``[T, N]``, rows oldest first, columns in the metadata's ticker order, ``T`` at least
the metadata's ``window``) from the held weights (float64 ``[N + 1]``, cash last), and returns the target weights
(float64 ``[N + 1]``). The same steps, in the env's precision: the features of the last row
(``export_features``, float64, then float32 as the env stores them), the float32 observation (``envs.layout``:
features asset-major, the shared features, then the weights), the frozen filter and the actor (``policy_net``,
float32, tanh of the mean), then in float64 the action mapping, the no-trade band, partial rebalancing and the
position limits (``export_trading``). It agrees with ``decide`` to 1e-6 on every day of a window
(``tests/trainer/evaluation/test_export.py``).

Inputs are checked inside ``forward``: a bad shape, dtype, too few rows, a price that is not finite or outside
the training data's range, or weights that are negative or do not sum to 1 raise a ``RuntimeError`` saying
which (TorchScript prefixes its own traceback; the message is the last line).

The file's ``metadata.json`` (``metadata``) records what a user needs to feed it and to know what it is: the
tickers, the window, the feature settings, the env settings (costs, action mapping, band, limits), the
training windows' dates, and the checkpoint, agent and SHA-256 of the policy files it was read from.
Everything is read from the checkpoint's policy files (JSON and plain arrays), never from a pickle.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from envs.data import MAX_PRICE, MIN_PRICE
from envs.features import FEATURE_VERSION, FeatureConfig
from envs.layout import ObservationLayout
from envs.portfolio import WEIGHT_SUM_TOLERANCE
from envs.settings import SETTING_NAMES, PortfolioSettings
from trainer.evaluation.export_features import LastRowFeatures, LastRowShared
from trainer.evaluation.export_trading import Trading
from trainer.evaluation.policy_file import POLICY_JSON, POLICY_WEIGHTS, PolicyFiles
from trainer.evaluation.policy_net import PolicyNetwork

EXPORT_FORMAT = "portfolio-rl exported policy"
EXPORT_FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"  # the TorchScript file's extra file, and the ONNX model's metadata key
ONNX_OPSET = 17


class PolicyCore(nn.Module):
    """The decision without input checks: ``forward(prices [T, N], weights [N + 1]) -> target [N + 1]``.

    Free of branches on the data, so that the ONNX exporter's trace of it is faithful; ``ExportedPolicy``
    wraps it with the checks for the TorchScript file.
    """

    def __init__(self, files: PolicyFiles, agent: int, settings: PortfolioSettings, features: FeatureConfig) -> None:
        super().__init__()
        n_assets = len(files.spec["tickers"])
        self.features = LastRowFeatures(features)
        self.shared = LastRowShared(features)
        self.rows = self.features.rows
        self.network = PolicyNetwork(files, agent).requires_grad_(False)
        self.trading = Trading(settings, n_assets)
        layout = ObservationLayout(n_assets, tuple(features.names), tuple(features.shared_names))
        if int(files.network["obs_dim"]) != layout.size:
            raise ValueError(
                f"{POLICY_JSON}: network.obs_dim {files.network['obs_dim']} is not {n_assets} assets x "
                f"{layout.n_per_asset} features + {layout.n_shared} shared features + {n_assets + 1} weights "
                f"(features {features.features!r}): the policy was trained on other features"
            )
        self.eval()

    def forward(self, prices: Tensor, weights: Tensor) -> Tensor:
        window = prices[-self.rows :]
        features = self.features(window).to(torch.float32)  # computed in float64, stored in float32
        shared = self.shared(window).to(torch.float32)
        obs = torch.cat([features.reshape(-1), shared, weights.to(torch.float32)])
        action = self.network(obs.unsqueeze(0))[0]
        return self.trading(action, weights)


def _text(x: float) -> str:
    """``x`` with up to 6 decimals (TorchScript's own formatting prints 17 digits: ``0.10000000000000001``)."""
    if not math.isfinite(x) or abs(x) >= 1e12 or 0.0 < abs(x) < 1e-4:  # too large or small for 6 decimals
        return str(x)
    scaled = int(round(abs(x) * 1e6))  # noqa: RUF046 (TorchScript's round returns a float)
    decimals = str(scaled % 1000000 + 1000000)[1:].rstrip("0")
    sign = "-" if x < 0 and scaled > 0 else ""
    return sign + str(scaled // 1000000) + ("." + decimals if decimals != "" else "")


class ExportedPolicy(nn.Module):
    """``PolicyCore`` behind input checks that raise one clear ``RuntimeError`` each."""

    def __init__(self, core: PolicyCore) -> None:
        super().__init__()
        self.core = core
        self.n_assets = core.trading.n_assets
        self.rows = core.rows
        self.min_price, self.max_price = float(MIN_PRICE), float(MAX_PRICE)
        self.price_range = f"between {MIN_PRICE:g} and {MAX_PRICE:g}"  # formatted here: TorchScript has no :g
        self.sum_tolerance = float(WEIGHT_SUM_TOLERANCE)

    def forward(self, prices: Tensor, weights: Tensor) -> Tensor:
        self.check_prices(prices)
        self.check_weights(weights)
        target = self.core(prices, weights)
        if not bool(torch.isfinite(target).all()):
            raise RuntimeError("the policy produced non-finite weights: its training had diverged")
        return target

    def check_prices(self, prices: Tensor) -> None:
        n = self.n_assets
        if prices.dim() != 2 or prices.shape[1] != n:
            raise RuntimeError(
                f"prices must be [T, {n}] (rows oldest first, a column per ticker in the metadata's order), "
                f"got shape {prices.shape}"
            )
        if prices.dtype != torch.float64:
            raise RuntimeError("prices must be float64 (torch.float64); convert them with .double()")
        if prices.shape[0] < self.rows:
            raise RuntimeError(
                f"prices has {prices.shape[0]} rows; the features need at least {self.rows} (the metadata's window)"
            )
        bad = ~torch.isfinite(prices) | (prices < self.min_price) | (prices > self.max_price)
        if bool(bad.any()):
            where = torch.nonzero(bad)[0]
            raise RuntimeError(
                f"prices[{int(where[0])}, {int(where[1])}] is {_text(float(prices[where[0], where[1]]))}: prices "
                f"must be finite numbers {self.price_range}"
            )

    def check_weights(self, weights: Tensor) -> None:
        n = self.n_assets
        if weights.dim() != 1 or weights.shape[0] != n + 1:
            raise RuntimeError(f"weights must be [{n + 1}] ({n} assets, then cash), got shape {weights.shape}")
        if weights.dtype != torch.float64:
            raise RuntimeError("weights must be float64 (torch.float64); convert them with .double()")
        bad = ~(torch.isfinite(weights) & (weights >= 0.0))
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0, 0])
            raise RuntimeError(f"weights[{i}] is {_text(float(weights[i]))}: weights must be finite and >= 0")
        total = float(weights.sum())
        if abs(total - 1.0) > self.sum_tolerance:
            raise RuntimeError(f"weights must sum to 1 (cash included), got {_text(total)}")


def env_settings(files: PolicyFiles) -> PortfolioSettings:
    """The env settings the policy was trained with (its ``env_config``'s settings; defaults for the rest)."""
    env_config = files.spec["env_config"]
    return PortfolioSettings.from_mapping({k: env_config[k] for k in SETTING_NAMES if k in env_config})


def build_core(files: PolicyFiles, agent: int) -> PolicyCore:
    """The decision of agent ``agent`` of ``files`` (0 for a single agent) with the env's feature settings.

    Raises:
        ValueError: settings the env would refuse, or a network that does not fit the features.
    """
    settings = env_settings(files)
    return PolicyCore(files, agent, settings, FeatureConfig.of(settings.features))


def metadata(
    files: PolicyFiles, agent: int | None, checkpoint: Path, hashes: dict[str, str], core: PolicyCore
) -> dict[str, Any]:
    """The exported file's ``metadata.json``: what to feed it, what it decides with, and where it came from."""
    settings = env_settings(files)
    features = FeatureConfig.of(settings.features)
    windows = files.spec["windows"]
    seeds = files.seeds
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "tickers": list(files.spec["tickers"]),
        "window": core.rows,
        "inputs": {
            "prices": f"float64 [T, {len(files.spec['tickers'])}], rows oldest first, T >= window",
            "weights": "float64 [N + 1]: the weights held now (drifted), cash last, >= 0, summing to 1",
            "output": "float64 [N + 1]: the target weights to trade to at the last row's close, cash last",
        },
        "features": {
            "version": FEATURE_VERSION,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(features).items()},
            "lookback": features.lookback,
            "names": features.names,
            "shared_names": features.shared_names,
        },
        "cost_bps": settings.cost_bps,
        "settings": settings.as_dict(),
        "training_window": windows.get("train"),
        "windows": windows,
        "checkpoint": str(checkpoint),
        "agent": agent,
        "seed": seeds[agent] if seeds is not None and agent is not None else None,
        "training_iteration": files.spec["training_iteration"],
        "policy_sha256": {rel: hashes[rel] for rel in (POLICY_JSON, POLICY_WEIGHTS)},
        "torch_version": torch.__version__,
    }


def save_torchscript(core: PolicyCore, meta: dict[str, Any], path: Path) -> None:
    """Script ``ExportedPolicy(core)`` and save it to ``path`` with ``metadata.json``."""
    scripted = torch.jit.script(ExportedPolicy(core))
    torch.jit.save(scripted, str(path), _extra_files={METADATA_FILE: json.dumps(meta, indent=1)})


def example_inputs(n_assets: int, rows: int) -> tuple[Tensor, Tensor]:
    """Valid inputs of the right shapes (a random walk, equal weights): the trace's example."""
    rng = np.random.default_rng(0)
    prices = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal((rows, n_assets)), axis=0))
    weights = np.full(n_assets + 1, 1.0 / (n_assets + 1))
    return torch.from_numpy(prices), torch.from_numpy(weights)


def save_onnx(core: PolicyCore, meta: dict[str, Any], path: Path) -> None:
    """Export ``core`` to ONNX at ``path`` (inputs ``prices`` with any number of rows and ``weights``, output
    ``target``; no input checks: ONNX has no exceptions), with ``metadata.json`` in the model's metadata.

    Raises:
        ImportError: the ``onnx`` extra is not installed.
    """
    import warnings

    import onnx

    prices, weights = example_inputs(core.trading.n_assets, core.rows)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(
            core,
            (prices, weights),
            str(path),
            dynamo=False,
            input_names=["prices", "weights"],
            output_names=["target"],
            dynamic_axes={"prices": {0: "rows"}},
            opset_version=ONNX_OPSET,
        )
    model = onnx.load(str(path))
    model.metadata_props.add(key=METADATA_FILE, value=json.dumps(meta, indent=1))
    onnx.save(model, str(path))
