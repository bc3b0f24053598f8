"""trainer.evaluation.policy_file and policy_net without RLlib: the documented formula by hand, the round trip,
TorchScript, reading without RLlib, and every file that asks for something impossible refused by name, never
executed."""

from __future__ import annotations

import io
import itertools
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.evaluation.obs_filter import FILTER_EPSILON, FrozenObsFilter
from trainer.evaluation.policy import load_policy
from trainer.evaluation.policy_file import (
    POLICY_JSON,
    POLICY_WEIGHTS,
    read_policy_files,
    write_policy_files,
)
from trainer.evaluation.policy_net import PolicyNetwork
from trainer.runtime.checkpoint import (
    MANIFEST_FILE,
    OBS_FILTER_DIR,
    RLLIB_CHECKPOINT_FILE,
    CheckpointError,
    write_manifest,
    write_state,
)

USE_ANOTHER = "use another checkpoint of the run"
K, OBS, HIDDEN, ACT = 2, 4, 8, 3
SEEDS = [4, 5]


def _layers(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Two agents' layers [4 -> 8 -> 6], weights large enough that tanh and the clip both matter."""
    rng = np.random.default_rng(seed)
    sizes = [OBS, HIDDEN, 2 * ACT]
    return [
        (rng.normal(0, 1.5, (K, b, a)).astype(np.float32), rng.normal(0, 0.5, (K, b)).astype(np.float32))
        for a, b in itertools.pairwise(sizes)
    ]


def _filter() -> FrozenObsFilter:
    rng = np.random.default_rng(1)
    return FrozenObsFilter(
        rng.normal(0, 2, K * OBS).astype(np.float32), rng.uniform(0.1, 3, K * OBS).astype(np.float32), 3.0
    )


def _info(**changes):
    windows = {"train": {"start": "2010-01-04", "end": "2011-06-30"}}
    info = {"seeds": SEEDS, "diverged_agents": {}, "filter_count": 123, "tickers": ["A0", "A1"]}
    return {
        **info,
        "env_config": {"cost_bps": 5.0},
        "windows": windows,
        "diverged": None,
        "training_iteration": 3,
        **changes,
    }


def _checkpoint(path: Path, activation: str = "relu", obs_filter: FrozenObsFilter | None = None) -> Path:
    """A checkpoint of this project in miniature: RLlib's marker file (and, with a filter, a stand-in for its
    filter state, which a backtest never reads), our state, the policy files, the manifest."""
    path.mkdir(parents=True)
    (path / RLLIB_CHECKPOINT_FILE).write_text("{}")
    if obs_filter is not None:
        _rllib_filter_stand_in(path)
    write_state(path, {"tickers": ["A0", "A1"], "population_seeds": SEEDS, "obs_filter": obs_filter is not None})
    write_policy_files(path, _layers(), activation, obs_filter, _info())
    write_manifest(path)
    return path


def _rllib_filter_stand_in(path: Path) -> None:
    (path / OBS_FILTER_DIR).mkdir(parents=True)
    (path / OBS_FILTER_DIR / "state.pkl").write_bytes(b"never read by a backtest")


def _refusal(ckpt: Path) -> str:
    """The message ``load_policy`` refuses ``ckpt`` with."""
    with pytest.raises(CheckpointError) as err:
        load_policy(ckpt, agent=0)
    return str(err.value)


def _by_hand(obs: np.ndarray, agent: int, activation, filt: FrozenObsFilter | None) -> np.ndarray:
    """The module docstring's formula in float64 numpy: what any reader of the files would compute."""
    x = obs.astype(np.float64)
    if filt is not None:
        sl = slice(agent * OBS, (agent + 1) * OBS)
        x = np.clip((x - filt.mean[sl]) / (filt.std[sl].astype(np.float64) + FILTER_EPSILON), -3.0, 3.0)
    layers = _layers()
    for i, (w, b) in enumerate(layers):
        x = x @ w[agent].T.astype(np.float64) + b[agent]
        if i < len(layers) - 1:
            x = activation(x)
    return np.tanh(x[:, :ACT])


ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
    "silu": lambda x: x / (1 + np.exp(-x)),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
}


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("with_filter", [True, False])
def test_each_agents_policy_is_the_documented_formula(tmp_path, activation, with_filter):
    filt = _filter() if with_filter else None
    ckpt = _checkpoint(tmp_path / "ck", activation, filt)
    files = read_policy_files(ckpt, json.loads((ckpt / MANIFEST_FILE).read_text())["files"])
    obs = np.random.default_rng(2).normal(0, 4, (64, OBS)).astype(np.float32)
    actions = []
    for agent in range(K):
        net = PolicyNetwork(files, agent)
        with torch.no_grad():
            got = net(torch.from_numpy(obs)).numpy()
        expected = _by_hand(obs, agent, ACTIVATIONS[activation], filt)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(net.act(obs[5]), got[5], rtol=0, atol=1e-6)  # one row: another kernel
        actions.append(got)
    assert np.abs(actions[0]).max() > 0.9 and not np.allclose(actions[0], actions[1])  # tanh saturates; agents differ
    if with_filter:  # the clip binds on some components
        assert (np.abs((obs - filt.mean[:OBS]) / filt.std[:OBS]) > 3.0).any()


def test_the_files_round_trip_every_array_and_setting(tmp_path):
    filt = _filter()
    ckpt = _checkpoint(tmp_path / "ck", "elu", filt)
    files = read_policy_files(ckpt, [POLICY_JSON, POLICY_WEIGHTS])
    for (w, b), got_w, got_b in zip(_layers(), files.weights, files.biases, strict=True):
        np.testing.assert_array_equal(got_w, w)
        np.testing.assert_array_equal(got_b, b)
    np.testing.assert_array_equal(files.filter_mean, filt.mean.reshape(K, OBS))
    np.testing.assert_array_equal(files.filter_std, filt.std.reshape(K, OBS))
    own = files.obs_filter(1)
    np.testing.assert_array_equal(own.mean, filt.mean[OBS:])
    assert (own.clip, own.epsilon) == (3.0, FILTER_EPSILON)
    assert files.spec == {
        "format": "portfolio-rl policy",
        "format_version": 1,
        "network": {"obs_dim": OBS, "act_dim": ACT, "layer_sizes": [OBS, HIDDEN, 2 * ACT], "activation": "elu"},
        "agents": {"count": K, "seeds": SEEDS, "diverged": {}},
        "obs_filter": {"clip": 3.0, "epsilon": FILTER_EPSILON, "count": 123},
        "tickers": ["A0", "A1"],
        "env_config": {"cost_bps": 5.0},
        "windows": {"train": {"start": "2010-01-04", "end": "2011-06-30"}},
        "diverged": None,
        "training_iteration": 3,
    }


def test_the_policy_scripts_with_torchscript_and_runs_with_torch_alone(tmp_path):
    ckpt = _checkpoint(tmp_path / "ck", "silu", _filter())
    files = read_policy_files(ckpt, [POLICY_JSON, POLICY_WEIGHTS])
    net = PolicyNetwork(files, 1)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    obs = torch.from_numpy(np.random.default_rng(3).normal(0, 4, (16, OBS)).astype(np.float32))
    code = (
        "import sys, torch; m = torch.jit.load(sys.argv[1]); x = torch.load(sys.argv[2]); "
        "torch.save(m(x), sys.argv[3]); assert not any(n.split('.')[0] in ('trainer', 'ray') for n in sys.modules)"
    )
    (tmp_path / "policy.pt").write_bytes(buffer.getvalue())
    torch.save(obs, tmp_path / "obs.pt")
    # a fresh interpreter that imports torch only
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "policy.pt"), str(tmp_path / "obs.pt"), str(tmp_path / "out.pt")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    with torch.no_grad():
        np.testing.assert_array_equal(torch.load(tmp_path / "out.pt").numpy(), net(obs).numpy())


def test_load_policy_needs_no_rllib(tmp_path):
    ckpt = _checkpoint(tmp_path / "ck", "relu", _filter())
    code = (
        "import sys; import numpy as np; from trainer.evaluation.policy import load_policy; "
        "policy, _ = load_policy(sys.argv[1], agent=1); print(policy(np.zeros(4, np.float32)).tolist()); "
        "assert 'ray.rllib' not in sys.modules, 'RLlib was imported'"
    )
    res = subprocess.run([sys.executable, "-c", code, str(ckpt)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    policy, _ = load_policy(ckpt, agent=1)
    np.testing.assert_allclose(json.loads(res.stdout), policy(np.zeros(OBS, np.float32)), rtol=0, atol=0)


# --- files that ask for something impossible: refused by name, never executed ------------------------------
class _Marker:
    """Unpickling it creates the file ``path``: what a malicious pickle would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _edit_json(ckpt: Path, edit) -> None:
    spec = json.loads((ckpt / POLICY_JSON).read_text())
    edit(spec)
    (ckpt / POLICY_JSON).write_text(json.dumps(spec))


def _save_npz(ckpt: Path, compressed: bool = False, **arrays) -> None:
    with open(ckpt / POLICY_WEIGHTS, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **arrays)


def _current_arrays(ckpt: Path) -> dict[str, np.ndarray]:
    with np.load(ckpt / POLICY_WEIGHTS) as npz:
        return {name: npz[name] for name in npz.files}


def _case(case: str, ckpt: Path, marker: Path) -> str:
    """Tamper with ``ckpt``'s policy files as ``case`` says; return what the error says after the file name."""
    js, npz = ckpt / POLICY_JSON, ckpt / POLICY_WEIGHTS
    if case == "unknown activation":
        _edit_json(ckpt, lambda s: s["network"].update(activation="os.system"))
        return f"{js}: network.activation 'os.system' is not one of elu, relu, silu, tanh"
    if case == "wider layer than the weights":
        _edit_json(ckpt, lambda s: s["network"].update(layer_sizes=[OBS, 9, 2 * ACT]))
        return f"{npz}: layer0.weight is float32 [2, 8, 4], {POLICY_JSON} needs float32 [2, 9, 4]"
    if case == "layers that do not end at the action":
        _edit_json(ckpt, lambda s: s["network"].update(layer_sizes=[OBS, HIDDEN, 5]))
        return (
            f"{js}: network.layer_sizes [4, 8, 5] must run from obs_dim 4 to 2 * act_dim 6 (the Gaussian's mean and "
            "log-std)"
        )
    if case == "more agents than seeds":
        _edit_json(ckpt, lambda s: s["agents"].update(count=3))
        return f"{js}: agents.seeds must be null or 3 integers (agents.count), got [4, 5]"
    if case == "a size that is not a number":
        _edit_json(ckpt, lambda s: s["network"].update(obs_dim="4"))
        return f"{js}: network.obs_dim must be an integer >= 1, got '4'"
    if case == "a newer format":
        _edit_json(ckpt, lambda s: s.update(format_version=3))
        return (
            f"{js}: policy format version 3, this version of the project reads 1 and 2; read it with the version that "
            "wrote it"
        )
    if case == "not our format":
        _edit_json(ckpt, lambda s: s.pop("format"))
        return f"{js}: not a policy file of this project (no 'format': 'portfolio-rl policy')"
    if case == "json that is not json":
        js.write_text("{'network': ")
        return f"{js}: damaged (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"
    if case == "an object array (a pickle) in the npz":
        _save_npz(ckpt, **{**_current_arrays(ckpt), "layer0.weight": np.array([_Marker(marker)], dtype=object)})
        return f"{npz}: holds pickled data, which is never loaded (it could run code)"
    if case == "a pickle instead of the npz":
        npz.write_bytes(pickle.dumps(_Marker(marker)))
        return f"{npz}: holds pickled data, which is never loaded (it could run code)"
    if case == "not an archive":
        npz.write_bytes(b"PK\x03\x04 not a zip")
        return f"{npz}: not an .npz archive of arrays (File is not a zip file)"
    if case == "an extra array":
        _save_npz(ckpt, **_current_arrays(ckpt), extra=np.zeros(1, np.float32))
        needed = ["layer0.bias", "layer0.weight", "layer1.bias", "layer1.weight", "obs_filter.mean", "obs_filter.std"]
        return f"{npz}: holds arrays {['extra', *needed]}, {POLICY_JSON} needs {needed}"
    if case == "float64 weights":
        arrays = _current_arrays(ckpt)
        _save_npz(ckpt, **{**arrays, "layer1.bias": arrays["layer1.bias"].astype(np.float64)})
        return f"{npz}: layer1.bias is float64 [2, 6], {POLICY_JSON} needs float32 [2, 6]"
    if case == "a NaN weight":
        arrays = _current_arrays(ckpt)
        arrays["layer0.weight"][1, 2, 3] = np.nan
        _save_npz(ckpt, **arrays)
        return f"{npz}: layer0.weight holds non-finite values"
    if case == "a compressed giant":
        giant = np.zeros((2, 8, 1_000_000), np.float32)  # 64 MB of zeros, about 60 kB compressed
        _save_npz(ckpt, compressed=True, **{**_current_arrays(ckpt), "layer0.weight": giant})
        return f"{npz}: layer0.weight is compressed; a policy file stores its arrays uncompressed"
    if case == "a larger array than its shape":
        _save_npz(ckpt, **{**_current_arrays(ckpt), "layer0.weight": np.zeros((2, 8, 400), np.float32)})
        size = zipfile.ZipFile(npz).getinfo("layer0.weight.npy").file_size
        assert size > 25_600
        return f"{npz}: layer0.weight takes {size:,} bytes, more than its shape [2, 8, 4] needs"
    if case == "a negative standard deviation":
        arrays = _current_arrays(ckpt)
        arrays["obs_filter.std"][0, 0] = -1.0
        _save_npz(ckpt, **arrays)
        return f"{npz}: obs_filter.std holds negative values"
    if case == "an unknown feature set":
        _edit_json(ckpt, lambda s: s["env_config"].update(features="asset+volume"))
        return (
            f"{js}: env_config.features must be one of asset, asset+rank, asset+market, asset+rank+market, got "
            "'asset+volume'"
        )
    raise AssertionError(case)


CASES = [
    "unknown activation",
    "wider layer than the weights",
    "layers that do not end at the action",
    "more agents than seeds",
    "a size that is not a number",
    "a newer format",
    "not our format",
    "json that is not json",
    "an object array (a pickle) in the npz",
    "a pickle instead of the npz",
    "not an archive",
    "an extra array",
    "float64 weights",
    "a NaN weight",
    "a compressed giant",
    "a larger array than its shape",
    "a negative standard deviation",
    "an unknown feature set",
]


@pytest.mark.parametrize("case", CASES)
def test_an_impossible_policy_file_is_refused_by_name_and_never_executed(tmp_path, case):
    ckpt = _checkpoint(tmp_path / "ck", "relu", _filter())
    marker = tmp_path / "pwned"
    expected = _case(case, ckpt, marker)
    write_manifest(ckpt)  # the files match the manifest: only the reader's checks can tell
    suffix = "" if case == "a newer format" else f"; {USE_ANOTHER}"
    assert _refusal(ckpt) == expected + suffix
    assert not marker.exists()


def test_the_marker_pickle_is_live(tmp_path):
    """The payload of the cases above does create its file when unpickled: their ``not marker.exists()`` can fail."""
    pickle.loads(pickle.dumps(_Marker(tmp_path / "pwned")))
    assert (tmp_path / "pwned").exists()


def test_policy_files_the_manifest_does_not_cover_are_refused(tmp_path):
    ckpt = _checkpoint(tmp_path / "ck")
    manifest = json.loads((ckpt / MANIFEST_FILE).read_text())
    del manifest["files"][POLICY_WEIGHTS]
    (ckpt / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert _refusal(ckpt) == (
        f"{ckpt / POLICY_WEIGHTS}: not listed in {MANIFEST_FILE}, so it cannot be checked (a conversion did not "
        "finish?); its policy is only in RLlib's pickles, which can run code; if you trust this checkpoint, convert "
        f"it once with: python -m trainer.backtest {ckpt} --trust-pickle, or {USE_ANOTHER}"
    )


def test_the_agents_of_the_policy_and_of_the_state_must_agree(tmp_path):
    ckpt = _checkpoint(tmp_path / "ck")
    write_state(ckpt, {"tickers": ["A0", "A1"], "population_seeds": [4, 6]})
    write_manifest(ckpt)
    assert _refusal(ckpt) == (
        f"{ckpt / POLICY_JSON}: holds agents with seeds [4, 5] (2), portfolio_state.json says [4, 6]: the two "
        f"disagree; {USE_ANOTHER}"
    )


def test_a_policy_without_the_filter_its_state_says_it_was_trained_with_is_refused(tmp_path):
    ckpt = _checkpoint(tmp_path / "ck", obs_filter=None)
    _rllib_filter_stand_in(ckpt)  # RLlib's statistics are there, the policy files' are not
    write_state(ckpt, {"tickers": ["A0", "A1"], "population_seeds": SEEDS, "obs_filter": True})
    write_manifest(ckpt)
    assert _refusal(ckpt) == (
        f"{ckpt / POLICY_JSON}: no observation-filter statistics, but the policy was trained on normalised "
        f"observations (it would act on raw ones); {USE_ANOTHER}"
    )
