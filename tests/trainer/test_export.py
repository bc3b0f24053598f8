"""python -m trainer.export through the real CLI: one agent of a population, and every refusal in one line with
nothing written."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch

from envs.data import load_prices
from tests.trainer.test_trust_boundary import _Marker
from trainer.evaluation.decision import Member, decide
from trainer.evaluation.holdings import Holdings
from trainer.runtime import checkpoint as C


def _export(*args: str, cwd=None, prelude: str = "") -> subprocess.CompletedProcess:
    """The CLI in a fresh process; ``prelude`` runs first (e.g. to hide a package)."""
    command = ["-m", "trainer.export"]
    if prelude:
        command = ["-c", f"import sys; {prelude}; from trainer.export import main; sys.exit(main(sys.argv[1:]))"]
    return subprocess.run([sys.executable, *command, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def _refused(res: subprocess.CompletedProcess, message: str) -> None:
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr == f"error: {message}\n" and res.stdout == ""


def test_one_agent_of_a_population_is_exported_and_decides_as_decide(population_run, tmp_path):
    ckpt = population_run[0]
    res = _export(str(ckpt), "--out", str(tmp_path / "p.pt"))
    _refused(res, f"{ckpt}: a population of 2 agents; choose one with --agent I (agent=I): 0 (seed 4), 1 (seed 5)")
    assert list(tmp_path.iterdir()) == []
    targets = []
    for agent in (0, 1):
        res = _export(str(ckpt), "--agent", str(agent), "--out", str(tmp_path / f"agent{agent}.pt"))
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines()[0] == (
            f"exported {ckpt} (agent {agent}, seed {4 + agent}): 20 tickers, at least 61 rows of prices"
        )
        extra = {"metadata.json": ""}
        policy = torch.jit.load(str(tmp_path / f"agent{agent}.pt"), _extra_files=extra)
        meta = json.loads(extra["metadata.json"])
        assert (meta["agent"], meta["seed"]) == (agent, 4 + agent)
        data = load_prices("sp500")
        prices = torch.from_numpy(data.prices[meta["tickers"]].to_numpy(dtype=np.float64))
        held = np.random.default_rng(agent).dirichlet(np.ones(21))
        decision = decide([Member(ckpt, agent)], data, Holdings(held, None, None, "test"), as_of=data.prices.index[-1])
        target = policy(prices, torch.from_numpy(held)).numpy()
        assert np.abs(target - decision.target).max() <= 1e-6
        targets.append(target)
    assert np.abs(targets[0] - targets[1]).max() > 1e-3  # two agents, two policies


def test_refusals_name_the_path_and_the_fix_and_write_nothing(limited_run, tmp_path):
    ckpt = limited_run[0][-1]
    out = tmp_path / "out"
    out.mkdir()
    missing = tmp_path / "checkpoint_000099"
    _refused(
        _export(str(missing), "--out", str(out / "p.pt")),
        f"{missing}: checkpoint not found; pass a checkpoint directory (runs/.../checkpoint_NNNNNN)",
    )
    empty_run = tmp_path / "run"
    (empty_run / "checkpoints").mkdir(parents=True)
    _refused(
        _export(str(empty_run), "--out", str(out / "p.pt")),
        f"{empty_run / 'checkpoints'}: the run has no checkpoint yet",
    )
    _refused(
        _export(str(ckpt), "--out", str(out)),
        f"--out {out}: a folder; give the file to write, e.g. --out {out / 'policy.pt'}",
    )
    _refused(
        _export(str(ckpt), "--out", str(tmp_path / "nowhere" / "p.pt")),
        f"--out {tmp_path / 'nowhere' / 'p.pt'}: the folder {tmp_path / 'nowhere'} does not exist; create it or "
        "write elsewhere",
    )
    _refused(
        _export(str(ckpt), "--out", str(out / "p.pt"), "--onnx", str(out / "p.pt")),
        f"--onnx {out / 'p.pt'}: the same file as --out; give the ONNX file another name",
    )
    _refused(
        _export(
            str(ckpt), "--out", str(out / "p.pt"), "--onnx", str(out / "p.onnx"), prelude="sys.modules['onnx'] = None"
        ),
        "--onnx needs the onnx package, which is not installed: pip install -e '.[onnx]'",
    )
    _refused(
        _export(str(ckpt), "--agent", "0", "--out", str(out / "p.pt")),
        f"{ckpt}: a single-agent checkpoint has no agent 0 (only a population's checkpoint, sac.population, does); "
        "drop --agent (agent=) to use its one policy",
    )
    # a checkpoint of an older version (no policy files): never unpickled, the user is told how to convert it
    old = tmp_path / "checkpoint_000002"
    shutil.copytree(ckpt, old)
    shutil.rmtree(old / C.POLICY_DIR)
    C.write_manifest(old)
    _refused(
        _export(str(old), "--out", str(out / "p.pt")),
        f"{old / C.POLICY_DIR}: missing (an older version of this project wrote this checkpoint); its policy is only "
        "in RLlib's pickles, which can run code; if you trust this checkpoint, convert it once with: python -m "
        f"trainer.backtest {old} --trust-pickle",
    )
    assert list(out.iterdir()) == []  # not even a temporary file


def _unwritable_folder(tmp_path):
    """A folder this process cannot create files in (``/sys`` when running as root), or None."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    for candidate in (folder, "/sys"):
        try:
            with tempfile.TemporaryFile(dir=candidate):
                pass
        except OSError:
            return candidate
    return None


def test_a_folder_that_cannot_be_written_is_refused(limited_run, tmp_path):
    folder = _unwritable_folder(tmp_path)
    if folder is None:
        pytest.skip("no folder here refuses this process's writes (neither a read-only one nor /sys)")
    target = f"{folder}/p.pt"
    _refused(
        _export(str(limited_run[0][-1]), "--out", target),
        f"--out {target}: the folder {folder} cannot be written (Permission denied)",
    )


def test_the_export_never_loads_a_pickle(limited_run, tmp_path):
    ckpt = tmp_path / "checkpoint_000002"
    shutil.copytree(limited_run[0][-1], ckpt)
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Marker(tmp_path / "live")))
    assert (tmp_path / "live").exists()  # the payload works: the assertion on `marker` below can fail
    pickles = sorted(ckpt.rglob("*.pkl"))
    assert len(pickles) > 3  # module, connector, learner, class files
    for p in pickles:
        p.write_bytes(pickle.dumps(_Marker(marker)))  # unpickling it creates `marker`
    C.write_manifest(ckpt)  # the tampering is sealed: the manifest cannot tell
    res = _export(str(ckpt), "--out", str(tmp_path / "p.pt"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "p.pt").is_file() and not marker.exists()
