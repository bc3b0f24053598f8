"""The trust boundary of a checkpoint, through the real backtest CLI: pickles that run code are never loaded
(even when the manifest was rewritten to match them), a damaged or impossible policy file is refused by name,
and a checkpoint of an older version is refused with the fix, then converted once by ``--trust-pickle``."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import checkpoints
from trainer.evaluation.backtest_report import run_backtest
from trainer.evaluation.policy_file import POLICY_JSON, POLICY_WEIGHTS
from trainer.runtime.checkpoint import MANIFEST_FILE, POLICY_DIR, write_manifest

MODULE_STATE = "learner_group/learner/rl_module/default_policy/module_state.pkl"


class _Marker:
    """Unpickling it creates the file ``path`` (through ``open``: the pickle names no module of ours)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _backtest(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "trainer.backtest", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def ckpt(smoke_run, tmp_path) -> Path:
    """A copy of the smoke run's last checkpoint, alone in a run directory of its own."""
    original = checkpoints(smoke_run[0])[-1]
    copy = tmp_path / "run" / "checkpoints" / original.name
    shutil.copytree(original, copy)
    return copy


def test_pickles_that_run_code_are_never_loaded_by_the_backtest(ckpt, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Marker(marker))
    pickle.loads(pickle.dumps(_Marker(tmp_path / "live")))
    assert (tmp_path / "live").exists()  # the payload works: the assertions on `marker` below can fail
    pickles = sorted(ckpt.rglob("*.pkl"))
    assert ckpt / MODULE_STATE in pickles and len(pickles) > 3  # module, connector, learner, class files
    for p in pickles:
        p.write_bytes(payload)
    write_manifest(ckpt)  # the tampering is sealed: the manifest cannot tell
    res = _backtest(str(ckpt), "--out", str(tmp_path / "bt"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Backtest on the test split") and not marker.exists()
    # --trust-pickle on a checkpoint that has its policy files reads no pickle either
    res = _backtest(str(ckpt), "--trust-pickle", "--out", str(tmp_path / "bt2"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Backtest on the test split") and not marker.exists()


def test_the_tampered_checkpoint_backtests_as_the_original(smoke_run, ckpt, tmp_path):
    """What the backtest reads is only the policy files: the numbers are the untouched checkpoint's."""
    for p in ckpt.rglob("*.pkl"):
        p.write_bytes(pickle.dumps(_Marker(tmp_path / "pwned")))
    write_manifest(ckpt)
    tampered = run_backtest(ckpt, "test", out_dir=tmp_path / "bt")
    untouched = run_backtest(checkpoints(smoke_run[0])[-1], "test", out_dir=tmp_path / "bt0")
    assert tampered["strategies"] == untouched["strategies"] and not (tmp_path / "pwned").exists()


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_policy_file_is_refused_by_the_manifest(ckpt, tmp_path):
    _garble(ckpt / POLICY_WEIGHTS)
    res = _backtest(str(ckpt), "--out", str(tmp_path / "bt"))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == (
        f"error: {ckpt / POLICY_WEIGHTS}: changed since it was written (SHA-256 mismatch; policy weights, filter "
        "and settings); use another checkpoint of the run\n"
    )
    assert not (tmp_path / "bt").exists()


def test_a_policy_json_that_asks_for_code_is_refused_never_run(ckpt, tmp_path):
    marker = tmp_path / "pwned"
    spec = json.loads((ckpt / POLICY_JSON).read_text())
    spec["network"]["activation"] = f"__import__('os').system('touch {marker}')"
    (ckpt / POLICY_JSON).write_text(json.dumps(spec))
    write_manifest(ckpt)
    res = _backtest(str(ckpt), "--out", str(tmp_path / "bt"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr == (
        f"error: {ckpt / POLICY_JSON}: network.activation {spec['network']['activation']!r} is not one of elu, relu, "
        "silu, tanh; use another checkpoint of the run\n"
    )
    assert not marker.exists() and not (tmp_path / "bt").exists()


def test_an_older_checkpoint_is_refused_with_the_fix_which_converts_it_once(ckpt, tmp_path):
    shutil.rmtree(ckpt / POLICY_DIR)
    write_manifest(ckpt)  # as the previous version wrote it
    res = _backtest(str(ckpt), "--out", str(tmp_path / "bt"))
    fix = f"python -m trainer.backtest {ckpt} --trust-pickle"
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == (
        f"error: {ckpt / POLICY_DIR}: missing (an older version of this project wrote this checkpoint); its policy "
        f"is only in RLlib's pickles, which can run code; if you trust this checkpoint, convert it once with: {fix}\n"
    )
    assert not (tmp_path / "bt").exists()
    # the fix, as printed (plus --out)
    res = _backtest(*fix.split()[3:], "--out", str(tmp_path / "bt"))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    wrote = f"wrote {ckpt / POLICY_DIR} from RLlib's pickles (--trust-pickle); later backtests read it without pickle"
    assert lines[0] == wrote
    assert lines[1].startswith("Backtest on the test split")
    assert {POLICY_JSON, POLICY_WEIGHTS} <= set(json.loads((ckpt / MANIFEST_FILE).read_text())["files"])
    # from now on without the flag, and without pickles: they may as well run code now
    for p in ckpt.rglob("*.pkl"):
        p.write_bytes(pickle.dumps(_Marker(tmp_path / "pwned")))
    write_manifest(ckpt)
    res = _backtest(str(ckpt), "--out", str(tmp_path / "bt2"))
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "pwned").exists()
    first, again = (json.loads((tmp_path / d / "backtest.json").read_text())["strategies"] for d in ("bt", "bt2"))
    assert first == again
