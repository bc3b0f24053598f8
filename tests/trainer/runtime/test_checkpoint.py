"""trainer.runtime.checkpoint: the manifest, verification of damaged checkpoints (by name, before unpickling, in the
backtest and on resume), the filter-statistics guard, atomic saves, pruning and stale temporary directories."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import checkpoints
from trainer.evaluation.policy import load_policy
from trainer.runtime.checkpoint import (
    BUFFER_FILE,
    MANIFEST_FILE,
    OBS_FILTER_DIR,
    POLICY_DIR,
    STATE_FILE,
    CheckpointError,
    checkpoint_iteration,
    list_checkpoints,
    prune,
    read_state,
    read_usable_state,
    remove_stale_temp_dirs,
    resume_state,
    save_atomic,
    write_manifest,
    write_state,
)

USE_ANOTHER = "use another checkpoint of the run"
MODULE_STATE = "learner_group/learner/rl_module/default_policy/module_state.pkl"


@pytest.fixture
def run_copy(smoke_run, tmp_path) -> Path:
    """A copy of the smoke run's directory; returns its last checkpoint."""
    run_dir, _ = smoke_run
    shutil.copytree(run_dir, tmp_path / "run")
    return checkpoints(tmp_path / "run")[-1]


def _manifest(ckpt: Path) -> dict:
    return json.loads((ckpt / MANIFEST_FILE).read_text())


def test_manifest_lists_every_file_with_its_size_hash_and_versions(smoke_run):
    import ray
    import torch

    ckpt = checkpoints(smoke_run[0])[-1]
    manifest = _manifest(ckpt)
    on_disk = {p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk - {MANIFEST_FILE}
    policy_files = {f"{POLICY_DIR}/policy.json", f"{POLICY_DIR}/weights.npz"}
    assert {STATE_FILE, BUFFER_FILE, MODULE_STATE, "rllib_checkpoint.json", *policy_files} <= set(manifest["files"])
    assert any(rel.startswith(OBS_FILTER_DIR) for rel in manifest["files"])
    for rel, entry in manifest["files"].items():
        data = (ckpt / rel).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, rel
    versions = manifest["versions"]
    assert versions["ray"] == ray.__version__ and versions["torch"] == torch.__version__
    assert versions["portfolio-rl"] == metadata.version("portfolio-rl")
    assert manifest["format"] == 1


def _truncate(ckpt: Path, rel: str) -> None:
    path = ckpt / rel
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble(ckpt: Path, rel: str) -> None:
    """Same size, other bytes: only the hash can tell."""
    path = ckpt / rel
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 8] = bytes(b ^ 0xFF for b in data[len(data) // 2 : len(data) // 2 + 8])
    path.write_bytes(bytes(data))


def _damage(case: str, ckpt: Path) -> str:
    """Damage ``ckpt`` as ``case`` says; return the error message expected (without the ``error:`` prefix)."""
    files = _manifest(ckpt)["files"]
    if case == "filter statistics deleted":
        first = min(rel for rel in files if rel.startswith(OBS_FILTER_DIR))
        shutil.rmtree(ckpt / OBS_FILTER_DIR)
        return f"{ckpt / first}: missing (observation-filter statistics); {USE_ANOTHER}"
    if case == "state truncated":
        size = files[STATE_FILE]["size"]
        _truncate(ckpt, STATE_FILE)
        return (
            f"{ckpt / STATE_FILE}: truncated or changed ({size // 2:,} bytes, {size:,} when written; "
            f"counters and settings); {USE_ANOTHER}"
        )
    if case == "module pickle garbled":
        _garble(ckpt, MODULE_STATE)
        return (
            f"{ckpt / MODULE_STATE}: changed since it was written (SHA-256 mismatch; policy and Q networks); "
            f"{USE_ANOTHER}"
        )
    if case == "policy json garbled":
        rel = f"{POLICY_DIR}/policy.json"
        _garble(ckpt, rel)
        return (
            f"{ckpt / rel}: changed since it was written (SHA-256 mismatch; policy weights, filter and settings); "
            f"{USE_ANOTHER}"
        )
    if case == "rllib json garbled":
        _garble(ckpt, "rllib_checkpoint.json")
        return f"{ckpt / 'rllib_checkpoint.json'}: changed since it was written (SHA-256 mismatch); {USE_ANOTHER}"
    if case == "manifest truncated":
        _truncate(ckpt, MANIFEST_FILE)
        try:
            json.loads((ckpt / MANIFEST_FILE).read_text())
        except json.JSONDecodeError as exc:
            return f"{ckpt / MANIFEST_FILE}: damaged ({exc}); {USE_ANOTHER}"
    if case == "manifest missing":
        (ckpt / MANIFEST_FILE).unlink()
        return (
            f"{ckpt}: no {MANIFEST_FILE}, so it cannot be checked (the save did not finish, or an older version "
            f"of this project wrote it); {USE_ANOTHER}, or train again"
        )
    if case == "other ray minor":
        manifest = _manifest(ckpt)
        manifest["versions"]["ray"] = "2.59.1"
        (ckpt / MANIFEST_FILE).write_text(json.dumps(manifest))
        return (
            f"{ckpt}: written with ray 2.59.1, this is ray {metadata.version('ray')}; RLlib checkpoints load only "
            "in the same minor version: use ray 2.59.x to read it"
        )
    raise AssertionError(case)


DAMAGE = [
    "filter statistics deleted",
    "state truncated",
    "module pickle garbled",
    "policy json garbled",
    "rllib json garbled",
    "manifest truncated",
    "manifest missing",
    "other ray minor",
]


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_checkpoint_is_refused_by_name_in_backtest_and_resume(case, run_copy, capsys, signals_restored):
    from trainer import backtest, train

    expected = _damage(case, run_copy)
    out = run_copy.parent.parent / "bt"
    assert backtest.main([str(run_copy), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {expected}\n" and captured.out == ""
    assert not out.exists()  # nothing written from a damaged checkpoint
    progress_before = (run_copy.parent.parent / "progress.jsonl").read_text()
    assert train.main(["--resume", str(run_copy)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {expected}\n"
    assert (run_copy.parent.parent / "progress.jsonl").read_text() == progress_before  # the run is untouched


def test_missing_filter_statistics_is_refused_by_the_real_backtest_cli(run_copy):
    """The checkpoint that used to backtest unnormalised while the report said the frozen filter was used."""
    expected = _damage("filter statistics deleted", run_copy)
    res = subprocess.run(
        [sys.executable, "-m", "trainer.backtest", str(run_copy)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 2 and res.stderr == f"error: {expected}\n" and "Traceback" not in res.stderr
    assert not (run_copy.parent.parent / "backtest_test").exists()


def test_missing_filter_statistics_are_refused_even_under_a_new_manifest(run_copy, capsys):
    from trainer import backtest

    shutil.rmtree(run_copy / OBS_FILTER_DIR)
    write_manifest(run_copy)  # someone "repaired" the checkpoint: the files now match the manifest
    expected = (
        f"{run_copy / OBS_FILTER_DIR}: no observation-filter statistics, but the policy was trained on normalised "
        f"observations (it would act on raw ones); {USE_ANOTHER}"
    )
    with pytest.raises(CheckpointError) as err:
        load_policy(run_copy)
    assert str(err.value) == expected
    assert backtest.main([str(run_copy), "--out", str(run_copy.parent / "bt")]) == 2
    assert capsys.readouterr().err == f"error: {expected}\n"


def test_the_replay_buffer_is_checked_on_resume_only(run_copy):
    buffer_size = _manifest(run_copy)["files"][BUFFER_FILE]["size"]
    _truncate(run_copy, BUFFER_FILE)
    assert read_usable_state(run_copy)["tickers"]  # a backtest does not read the buffer
    problem = (
        f"{run_copy / BUFFER_FILE}: truncated or changed ({buffer_size // 2:,} bytes, {buffer_size:,} when written; "
        "replay buffer)"
    )
    with pytest.raises(CheckpointError) as err:
        resume_state(run_copy)
    assert str(err.value) == (
        f"{problem}; pass --allow-missing-buffer to resume with an empty replay buffer (networks, optimisers, "
        f"filter statistics and step counts come from the rest of the checkpoint), or {USE_ANOTHER}"
    )
    with pytest.raises(CheckpointError, match="replay buffer"):
        read_state(run_copy, replay_buffer=True)
    state, note = resume_state(run_copy, allow_missing_buffer=True)
    assert note == f"{problem}: resuming with an EMPTY replay buffer (--allow-missing-buffer)"
    assert state == json.loads((run_copy / STATE_FILE).read_text())


def test_a_checkpoint_saved_without_its_buffer_resumes_with_a_note(run_copy):
    (run_copy / BUFFER_FILE).unlink()
    write_manifest(run_copy)  # as written with checkpoint.save_buffer: false
    _, note = resume_state(run_copy)
    assert note == (
        f"{run_copy} was saved without its replay buffer (checkpoint.save_buffer: false): "
        "resuming with an empty replay buffer"
    )


def test_a_diverged_checkpoint_is_not_usable(tmp_path):
    ckpt = _FakeAlgo(diverged="qf_loss is nan (non-finite)").save_to_path(tmp_path / "checkpoint_000001")
    assert read_state(ckpt)["diverged"]
    with pytest.raises(CheckpointError) as err:
        read_usable_state(ckpt)
    assert str(err.value) == (
        f"{ckpt}: this checkpoint was written after training diverged (qf_loss is nan (non-finite)); "
        "use an earlier checkpoint of the run"
    )


# --- saving, pruning, temporary directories (no Ray: a stand-in for PortfolioSAC.save_to_path) ---------------
class _FakeAlgo:
    """Writes what PortfolioSAC.save_to_path writes, in miniature: RLlib's marker file, our state, the manifest."""

    def __init__(self, diverged: str | None = None) -> None:
        self.diverged = diverged

    def save_to_path(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True)
        (path / "rllib_checkpoint.json").write_text("{}")
        write_state(path, {"diverged": self.diverged, "tickers": ["A"]})
        write_manifest(path)
        return path


def test_save_atomic_renames_a_complete_checkpoint_and_never_replaces_one(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    final = save_atomic(_FakeAlgo(), ckpt_dir, 3, num_to_keep=None)
    assert final == ckpt_dir / "checkpoint_000003" and [p.name for p in ckpt_dir.iterdir()] == [final.name]
    assert sorted(p.name for p in final.iterdir()) == [MANIFEST_FILE, STATE_FILE, "rllib_checkpoint.json"]
    assert not list(final.glob(f"{MANIFEST_FILE}*.tmp"))
    before = (final / MANIFEST_FILE).read_text()
    with pytest.raises(CheckpointError) as err:
        save_atomic(_FakeAlgo(), ckpt_dir, 3, num_to_keep=None)
    assert str(err.value) == f"{final}: already exists; refusing to replace it (resume from it, or use --out)"
    assert (final / MANIFEST_FILE).read_text() == before and not list(ckpt_dir.glob(".tmp-*"))


def test_pruning_deletes_only_the_runs_own_older_checkpoints(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    foreign = ckpt_dir / "checkpoint_000001"  # not ours (no manifest): never deleted
    foreign.mkdir(parents=True)
    (foreign / "weights.bin").write_bytes(b"x")
    (ckpt_dir / "notes.txt").write_text("mine")
    for iteration in (2, 4, 6):
        save_atomic(_FakeAlgo(), ckpt_dir, iteration, num_to_keep=2)
    kept = ["checkpoint_000001", "checkpoint_000004", "checkpoint_000006"]
    assert [p.name for p in list_checkpoints(ckpt_dir)] == kept
    assert (foreign / "weights.bin").exists() and (ckpt_dir / "notes.txt").read_text() == "mine"
    assert prune(ckpt_dir, 1) == [ckpt_dir / "checkpoint_000004"]


def test_stale_temporary_directories_of_dead_writers_are_removed(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(done.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            "dead": f".tmp-checkpoint_000004-{dead_pid}-1",
            "live": f".tmp-checkpoint_000004-{live.pid}-2",
            "own": f".tmp-checkpoint_000005-{os.getpid()}-3",  # a save of this process that did not finish
            "old format": ".tmp-checkpoint_000002-1700000000",
        }
        for name in names.values():
            (tmp_path / name).mkdir()
            (tmp_path / name / STATE_FILE).write_text("{}")
        (tmp_path / ".tmp-other").mkdir()  # not a checkpoint's temporary directory
        removed = remove_stale_temp_dirs(tmp_path)
        assert sorted(p.name for p in removed) == sorted(names[k] for k in ("dead", "own", "old format"))
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names["live"], ".tmp-other"])
    finally:
        live.kill()
        live.wait()


def test_checkpoint_iteration_reads_the_directory_name():
    assert checkpoint_iteration("runs/x/checkpoints/checkpoint_000042") == 42
    assert checkpoint_iteration("checkpoint_best") is None
    assert checkpoint_iteration(".tmp-checkpoint_000001-1-2") is None
