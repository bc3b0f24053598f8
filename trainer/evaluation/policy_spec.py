"""What ``policy/policy.json`` must declare, checked against itself: the file names, the format and its
versions, the array names, each field's type and range, and the shapes the declared network gives its arrays
(``trainer.evaluation.policy_file`` holds the format's description, the writer and the reader, which read
nothing before these checks pass)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from envs.settings import FEATURE_SETS, PortfolioSettings
from trainer.evaluation.networks import ACTIVATIONS, SET_TYPES, SetSpec, actor_shapes
from trainer.runtime.checkpoint import POLICY_DIR, USE_ANOTHER, CheckpointError

POLICY_FILE = "policy.json"
WEIGHTS_FILE = "weights.npz"
# the two files' paths in the checkpoint, as its manifest lists them
POLICY_JSON, POLICY_WEIGHTS = f"{POLICY_DIR}/{POLICY_FILE}", f"{POLICY_DIR}/{WEIGHTS_FILE}"
FORMAT = "portfolio-rl policy"
FORMAT_VERSION = 1  # an MLP actor's files (what earlier versions wrote and read)
SET_FORMAT_VERSION = 2  # a per-asset or attention actor's
ACTOR_PREFIX = "actor."  # a per-asset or attention actor's parameter arrays
FILTER_MEAN, FILTER_STD = "obs_filter.mean", "obs_filter.std"


def weight_name(layer: int) -> str:
    return f"layer{layer}.weight"


def bias_name(layer: int) -> str:
    return f"layer{layer}.bias"


def activation_names() -> str:
    return ", ".join(sorted(ACTIVATIONS))


def bad(file: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{file}: {what}; {USE_ANOTHER}")


def field(spec: dict[str, Any], key: str, file: Path) -> Any:
    node: Any = spec
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise bad(file, f"no '{key}'")
        node = node[part]
    return node


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_spec(spec: Any, file: Path) -> None:
    """Check ``policy.json``'s form and values; raise a ``CheckpointError`` naming the first bad key."""
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise bad(file, f"not a policy file of this project (no 'format': {FORMAT!r})")
    version = spec.get("format_version")
    if version not in (FORMAT_VERSION, SET_FORMAT_VERSION):
        raise CheckpointError(
            f"{file}: policy format version {version!r}, this version of the project reads {FORMAT_VERSION} and "
            f"{SET_FORMAT_VERSION}; read it with the version that wrote it"
        )
    for key in ("network.obs_dim", "network.act_dim", "agents.count"):
        if not _count(field(spec, key, file)):
            raise bad(file, f"{key} must be an integer >= 1, got {field(spec, key, file)!r}")
    activation = field(spec, "network.activation", file)
    if activation not in ACTIVATIONS:
        raise bad(file, f"network.activation {activation!r} is not one of {activation_names()}")
    if version == SET_FORMAT_VERSION:
        _check_set_network(spec, file)
    else:
        _check_mlp_network(spec, file)
    agents = spec["agents"]
    seeds = field(spec, "agents.seeds", file)
    if seeds is not None and (
        not isinstance(seeds, list) or len(seeds) != agents["count"] or not all(isinstance(s, int) for s in seeds)
    ):
        raise bad(file, f"agents.seeds must be null or {agents['count']} integers (agents.count), got {seeds!r}")
    if not isinstance(field(spec, "agents.diverged", file), dict):
        raise bad(file, "agents.diverged must be a mapping (agent -> why)")
    filt = field(spec, "obs_filter", file)
    if filt is not None:
        clip, epsilon = field(spec, "obs_filter.clip", file), field(spec, "obs_filter.epsilon", file)
        if clip is not None and not (_number(clip) and clip > 0):
            raise bad(file, f"obs_filter.clip must be null or a number > 0, got {clip!r}")
        if not (_number(epsilon) and epsilon >= 0):
            raise bad(file, f"obs_filter.epsilon must be a number >= 0, got {epsilon!r}")
    tickers = field(spec, "tickers", file)
    if not isinstance(tickers, list) or not all(isinstance(t, str) for t in tickers):
        raise bad(file, "tickers must be a list of names")
    for key in ("env_config", "windows"):
        if not isinstance(field(spec, key, file), dict):
            raise bad(file, f"{key} must be a mapping")
    features = spec["env_config"].get("features", PortfolioSettings.features)  # older files: the default set
    if features not in FEATURE_SETS:
        raise bad(file, f"env_config.features must be one of {', '.join(FEATURE_SETS)}, got {features!r}")


def _check_mlp_network(spec: dict[str, Any], file: Path) -> None:
    net = spec["network"]
    sizes = field(spec, "network.layer_sizes", file)
    if not isinstance(sizes, list) or len(sizes) < 2 or not all(_count(n) for n in sizes):
        raise bad(file, f"network.layer_sizes must be a list of at least two sizes >= 1, got {sizes!r}")
    if sizes[0] != net["obs_dim"] or sizes[-1] != 2 * net["act_dim"]:
        raise bad(
            file,
            f"network.layer_sizes {sizes} must run from obs_dim {net['obs_dim']} to 2 * act_dim {2 * net['act_dim']} "
            "(the Gaussian's mean and log-std)",
        )


def _check_set_network(spec: dict[str, Any], file: Path) -> None:
    """A per-asset or attention actor's declaration: its type, sizes, layout and heads, against each other."""
    net = spec["network"]
    kind = field(spec, "network.type", file)
    if kind not in SET_TYPES:
        raise bad(file, f"network.type {kind!r} is not one of {', '.join(SET_TYPES)}")
    hidden = field(spec, "network.hidden", file)
    if not isinstance(hidden, list) or not hidden or not all(_count(h) for h in hidden):
        raise bad(file, f"network.hidden must be a list of sizes >= 1, got {hidden!r}")
    layers = field(spec, "network.attention_layers", file)
    if layers not in ((1, 2) if kind == "attention" else (0,)):
        raise bad(file, f"network.attention_layers {layers!r} does not fit network.type {kind}")
    layout = field(spec, "network.layout", file)
    names_ok = isinstance(layout, dict) and all(
        isinstance(layout.get(key), list) and all(isinstance(n, str) for n in layout[key])
        for key in ("per_asset", "shared")
    )
    if not names_ok or not _count(layout.get("n_assets")):
        raise bad(file, "network.layout must hold n_assets >= 1 and the per_asset and shared feature names")
    try:
        set_spec = SetSpec.from_dict(net)
    except (ValueError, TypeError) as exc:
        raise bad(file, f"network does not declare an actor this version builds ({exc})") from None
    if net["obs_dim"] != set_spec.layout.size or net["act_dim"] != set_spec.layout.n_assets + 1:
        raise bad(
            file,
            f"network.obs_dim {net['obs_dim']} and act_dim {net['act_dim']} are not the layout's "
            f"{set_spec.layout.size} and {set_spec.layout.n_assets + 1}",
        )
    if field(spec, "network.heads", file) != set_spec.heads:
        raise bad(file, f"network.heads must be {set_spec.heads} for width {set_spec.width}")
    tickers = spec.get("tickers")
    if isinstance(tickers, list) and len(tickers) != set_spec.layout.n_assets:
        raise bad(file, f"{len(tickers)} tickers for network.layout.n_assets {set_spec.layout.n_assets}")


def expected_shapes(spec: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    net, k = spec["network"], spec["agents"]["count"]
    shapes: dict[str, tuple[int, ...]] = {}
    if spec["format_version"] == SET_FORMAT_VERSION:
        for name, shape in actor_shapes(SetSpec.from_dict(net)).items():
            shapes[ACTOR_PREFIX + name] = (k, *shape)
    else:
        sizes = net["layer_sizes"]
        for i in range(len(sizes) - 1):
            shapes[weight_name(i)], shapes[bias_name(i)] = (k, sizes[i + 1], sizes[i]), (k, sizes[i + 1])
    if spec["obs_filter"] is not None:
        shapes[FILTER_MEAN] = shapes[FILTER_STD] = (k, net["obs_dim"])
    return shapes
