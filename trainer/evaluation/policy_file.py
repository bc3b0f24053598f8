"""A checkpoint's policy file set, ``policy/``: the deterministic policy as JSON and plain arrays, which
cannot run code when read (no pickle anywhere).

``policy/policy.json`` (``format`` ``FORMAT``, ``format_version`` ``FORMAT_VERSION``):

- ``network``: ``obs_dim``, ``act_dim``, ``layer_sizes`` (``[obs_dim, h1, ..., 2 * act_dim]``) and
  ``activation``, one of ``ACTIVATIONS`` (torch's functions of those names; ELU with alpha 1);
- ``agents``: ``count`` K (1 for a single agent), ``seeds`` (a population's, ``sac.population``; null for a
  single agent) and ``diverged`` (agent index -> why it diverged);
- ``obs_filter``: ``clip`` (null: none), ``epsilon`` and ``count`` (observations seen), or null when the policy
  acts on raw observations;
- ``tickers``; ``env_config``: one agent's env keyword arguments (data, split dates or folds, features, action
  mapping, no-trade band, costs, reward: ``envs.portfolio.PortfolioEnv``), to rebuild its env for a decision;
  ``windows``: each split's first and last date; ``diverged``; ``training_iteration``. ``env_config.features``
  is the feature set the policy observes (``envs.settings.FEATURE_SETS``; absent in older files: the default),
  which a decision, a backtest and an export compute again (``envs.layout`` orders the observation).

``policy/weights.npz``, float32, agent-major (K = 1 for a single agent): ``layer<i>.weight`` ``[K, out, in]``
and ``layer<i>.bias`` ``[K, out]`` for each layer ``i``, and with a filter ``obs_filter.mean`` and
``obs_filter.std``, ``[K, obs_dim]``. Agent ``k``'s action for a raw observation ``o`` of its env::

    x = clip((o - mean[k]) / (std[k] + epsilon), -clip, clip)        # no filter: x = o
    x = activation(x @ weight_i[k].T + bias_i[k])                    # every layer but the last
    y = x @ weight_last[k].T + bias_last[k]
    action = tanh(y[:act_dim])   # the mode of the squashed Gaussian; y[act_dim:] is its log-std, unused

A per-asset or attention actor (``model.type``, ``trainer.evaluation.networks``) is format version
``SET_FORMAT_VERSION``: ``network`` declares its architecture instead of ``layer_sizes`` (``type``, ``layout``:
``n_assets``, ``per_asset`` and ``shared`` feature names; ``hidden``, ``activation``, ``attention_layers``,
``heads``; ``obs_dim`` and ``act_dim``, which must be the layout's), and ``weights.npz`` holds
``SetActor``'s parameters by name, ``actor.<name>`` ``[K, ...]``, each with exactly the shape the declared
architecture gives it (computed without allocating). The reader builds ``SetActor`` from the declaration and
loads the arrays into it: the declaration chooses among this project's classes, it never names code.

That is all a reader needs (torch or numpy; neither RLlib nor this package's training code):
``trainer.evaluation.policy_net`` builds it in plain torch, for backtests and what serves or exports a policy.

The writer lives here with the reader so that one module defines the file names, keys, array names and
checks: what is written is what is read, tested as a round trip. What to write comes from RLlib's modules,
which evaluation never imports: ``trainer.rl.policy_export`` extracts the actor's layers and calls
``write_policy_files``. Reading checks everything before any number is used (format and version, each
field's type and range, the activation by name from a fixed table, never looked up as code; each array's
name, storage, size, dtype, shape and finiteness); a bad file is a ``CheckpointError`` naming the file and what
is wrong.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trainer.evaluation.networks import ACTIVATIONS, SetSpec
from trainer.evaluation.obs_filter import FrozenObsFilter
from trainer.evaluation.policy_spec import (
    ACTOR_PREFIX,
    FILTER_MEAN,
    FILTER_STD,
    FORMAT,
    FORMAT_VERSION,
    POLICY_FILE,
    POLICY_JSON,
    POLICY_WEIGHTS,
    SET_FORMAT_VERSION,
    WEIGHTS_FILE,
    activation_names,
    bad,
    bias_name,
    check_spec,
    expected_shapes,
    weight_name,
)
from trainer.runtime.checkpoint import MANIFEST_FILE, POLICY_DIR, USE_ANOTHER, CheckpointError

_NPY_HEADER = 4096  # an .npy entry holds its array plus a header well under this


def convert_hint(checkpoint: Path) -> str:
    """How to write the policy files of a checkpoint that lacks them (from RLlib's pickles: trusted only)."""
    return (
        "its policy is only in RLlib's pickles, which can run code; if you trust this checkpoint, convert it once "
        f"with: python -m trainer.backtest {checkpoint} --trust-pickle"
    )


@dataclass(frozen=True)
class PolicyFiles:
    """A checked policy file set: ``spec`` is ``policy.json``; the arrays are ``weights.npz``'s, agent-major."""

    spec: dict[str, Any]
    weights: list[NDArray[np.float32]]  # per layer, [K, out, in]
    biases: list[NDArray[np.float32]]  # per layer, [K, out]
    filter_mean: NDArray[np.float32] | None  # [K, obs_dim]
    filter_std: NDArray[np.float32] | None
    actor: dict[str, NDArray[np.float32]] | None = None  # a per-asset or attention actor's, [K, ...] by name

    @property
    def network(self) -> dict[str, Any]:
        return self.spec["network"]

    @property
    def set_spec(self) -> SetSpec | None:
        """The per-asset or attention actor's architecture; None for an MLP actor (``layers``)."""
        return SetSpec.from_dict(self.network) if self.actor is not None else None

    def actor_params(self, agent: int) -> dict[str, NDArray[np.float32]]:
        """Agent ``agent``'s per-asset or attention actor parameters, by ``SetActor`` parameter name."""
        return {name: value[agent] for name, value in (self.actor or {}).items()}

    @property
    def n_agents(self) -> int:
        return int(self.spec["agents"]["count"])

    @property
    def seeds(self) -> list[int] | None:
        return self.spec["agents"]["seeds"]

    def layers(self, agent: int) -> list[tuple[NDArray[np.float32], NDArray[np.float32]]]:
        """Agent ``agent``'s layers: ``(weight [out, in], bias [out])``, input to output."""
        return [(w[agent], b[agent]) for w, b in zip(self.weights, self.biases, strict=True)]

    def obs_filter(self, agent: int) -> FrozenObsFilter | None:
        """Agent ``agent``'s frozen observation filter (None: the policy acts on raw observations)."""
        spec = self.spec["obs_filter"]
        if spec is None or self.filter_mean is None or self.filter_std is None:
            return None
        return FrozenObsFilter(self.filter_mean[agent], self.filter_std[agent], spec["clip"], spec["epsilon"])


# --- writing ----------------------------------------------------------------------------------------------
def write_policy_files(
    checkpoint: Path | str,
    layers: Sequence[tuple[NDArray, NDArray]] | dict[str, NDArray],
    activation: str,
    obs_filter: FrozenObsFilter | None,
    info: dict[str, Any],
    set_spec: SetSpec | None = None,
) -> Path:
    """Write ``policy/policy.json`` and ``policy/weights.npz`` into checkpoint directory ``checkpoint``.

    Args:
        checkpoint: the checkpoint directory (its manifest, written after, must cover these files).
        layers: the actor's layers, input to output, agent-major: ``(weight [K, out, in], bias [K, out])``;
            for a per-asset or attention actor (``set_spec``) its parameters by name, ``[K, ...]``.
        activation: the activation between layers, a key of ``ACTIVATIONS``.
        obs_filter: the frozen filter, its statistics the K agents' side by side (``[K * obs_dim]``), or None.
        info: ``seeds`` (None for a single agent), ``diverged_agents``, ``filter_count``, ``tickers``,
            ``env_config``, ``windows``, ``diverged``, ``training_iteration`` (see the module docstring).
        set_spec: the per-asset or attention actor's architecture (None: an MLP actor).

    Returns:
        The ``policy`` directory.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} cannot be written to a policy file (one of {activation_names()})")
    arrays: dict[str, NDArray[np.float32]] = {}
    version = FORMAT_VERSION
    if set_spec is None:
        assert not isinstance(layers, dict)
        for i, (w, b) in enumerate(layers):
            arrays[weight_name(i)], arrays[bias_name(i)] = np.asarray(w, np.float32), np.asarray(b, np.float32)
        k, _, obs_dim = arrays[weight_name(0)].shape
        act_dim = arrays[bias_name(len(layers) - 1)].shape[1] // 2
        network: dict[str, Any] = {
            "obs_dim": int(obs_dim),
            "act_dim": int(act_dim),
            "layer_sizes": [int(obs_dim), *(int(arrays[bias_name(i)].shape[1]) for i in range(len(layers)))],
            "activation": activation,
        }
    else:
        assert isinstance(layers, dict)
        arrays = {ACTOR_PREFIX + name: np.asarray(v, np.float32) for name, v in layers.items()}
        k, obs_dim, act_dim = next(iter(arrays.values())).shape[0], set_spec.layout.size, set_spec.layout.n_assets + 1
        network = {"obs_dim": obs_dim, "act_dim": act_dim, **set_spec.to_dict()}
        version = SET_FORMAT_VERSION
    filter_spec = None
    if obs_filter is not None:
        arrays[FILTER_MEAN] = np.asarray(obs_filter.mean, np.float32).reshape(k, obs_dim)
        arrays[FILTER_STD] = np.asarray(obs_filter.std, np.float32).reshape(k, obs_dim)
        clip = float(obs_filter.clip) if obs_filter.clip else None
        filter_spec = {"clip": clip, "epsilon": float(obs_filter.epsilon), "count": int(info["filter_count"])}
    seeds = info["seeds"]
    spec = {
        "format": FORMAT,
        "format_version": version,
        "network": network,
        "agents": {
            "count": int(k),
            "seeds": [int(s) for s in seeds] if seeds else None,
            "diverged": {str(i): str(why) for i, why in (info.get("diverged_agents") or {}).items()},
        },
        "obs_filter": filter_spec,
        "tickers": [str(t) for t in info["tickers"]],
        "env_config": dict(info["env_config"]),
        "windows": dict(info["windows"]),
        "diverged": info.get("diverged"),
        "training_iteration": int(info["training_iteration"]),
    }
    out = Path(checkpoint) / POLICY_DIR
    out.mkdir(exist_ok=True)
    with open(out / WEIGHTS_FILE, "wb") as fh:
        np.savez(fh, **arrays)
    (out / POLICY_FILE).write_text(json.dumps(spec, indent=1, default=str))
    return out


# --- reading ----------------------------------------------------------------------------------------------
def has_policy_files(manifest_files: Collection[str]) -> bool:
    """The manifest covers both policy files (so they were checked with the rest of the checkpoint)."""
    return all(rel in manifest_files for rel in (POLICY_JSON, POLICY_WEIGHTS))


def read_policy_files(checkpoint: Path, manifest_files: Collection[str]) -> PolicyFiles:
    """Read and check the policy files of ``checkpoint``, whose manifest (already verified) lists
    ``manifest_files``; never unpickles anything.

    Raises:
        CheckpointError: the files are absent (an older version wrote the checkpoint: how to convert it),
            not covered by the manifest, or not a policy this format can express (what is wrong, by file).
    """
    if not has_policy_files(manifest_files):
        if not any((checkpoint / rel).exists() for rel in (POLICY_JSON, POLICY_WEIGHTS)):
            raise CheckpointError(
                f"{checkpoint / POLICY_DIR}: missing (an older version of this project wrote this checkpoint); "
                + convert_hint(checkpoint)
            )
        missing = next(rel for rel in (POLICY_JSON, POLICY_WEIGHTS) if rel not in manifest_files)
        raise CheckpointError(
            f"{checkpoint / missing}: not listed in {MANIFEST_FILE}, so it cannot be checked (a conversion did not "
            f"finish?); {convert_hint(checkpoint)}, or {USE_ANOTHER}"
        )
    file = checkpoint / POLICY_JSON
    try:
        spec = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad(file, f"damaged ({exc})") from None
    check_spec(spec, file)
    return _read_arrays(spec, checkpoint / POLICY_WEIGHTS)


def _read_arrays(spec: dict[str, Any], file: Path) -> PolicyFiles:
    """``weights.npz`` checked against ``spec``: exactly the expected arrays, float32, shapes, finite values."""
    shapes = expected_shapes(spec)
    try:
        loaded = np.load(file, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise bad(file, "not an .npz archive of arrays")
        with loaded as npz:
            if sorted(npz.files) != sorted(shapes):
                raise bad(file, f"holds arrays {sorted(npz.files)}, {POLICY_JSON} needs {sorted(shapes)}")
            arrays = {}
            for name, shape in shapes.items():
                # checked before the array is read, so that a forged entry cannot take the memory: stored
                # uncompressed (as written), an entry takes no more memory than the file's bytes
                info = npz.zip.getinfo(f"{name}.npy")
                if info.compress_type != zipfile.ZIP_STORED:
                    raise bad(file, f"{name} is compressed; a policy file stores its arrays uncompressed")
                if info.file_size > 4 * math.prod(shape) + _NPY_HEADER:
                    raise bad(file, f"{name} takes {info.file_size:,} bytes, more than its shape {list(shape)} needs")
                arrays[name] = npz[name]
    except CheckpointError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):  # numpy refused a pickled file or object array (allow_pickle=False)
            raise bad(file, "holds pickled data, which is never loaded (it could run code)") from None
        raise bad(file, f"not an .npz archive of arrays ({exc})") from None
    except (OSError, zipfile.BadZipFile, KeyError, EOFError) as exc:
        raise bad(file, f"not an .npz archive of arrays ({exc})") from None
    for name, shape in shapes.items():
        arr = arrays[name]
        if arr.dtype != np.float32 or arr.shape != shape:
            raise bad(file, f"{name} is {arr.dtype} {list(arr.shape)}, {POLICY_JSON} needs float32 {list(shape)}")
        if not np.isfinite(arr).all():
            raise bad(file, f"{name} holds non-finite values")
    if FILTER_STD in arrays and (arrays[FILTER_STD] < 0).any():
        raise bad(file, f"{FILTER_STD} holds negative values")
    if spec["format_version"] == SET_FORMAT_VERSION:
        actor = {name.removeprefix(ACTOR_PREFIX): v for name, v in arrays.items() if name.startswith(ACTOR_PREFIX)}
        return PolicyFiles(spec, [], [], arrays.get(FILTER_MEAN), arrays.get(FILTER_STD), actor)
    layers = range(len(spec["network"]["layer_sizes"]) - 1)
    return PolicyFiles(
        spec,
        [arrays[weight_name(i)] for i in layers],
        [arrays[bias_name(i)] for i in layers],
        arrays.get(FILTER_MEAN),
        arrays.get(FILTER_STD),
    )
