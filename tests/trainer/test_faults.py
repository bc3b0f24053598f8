"""Faults with real processes: SIGTERM mid-iteration, SIGKILL mid-checkpoint, a full disk mid-checkpoint, two
runs into one directory at once, a reused run directory, and resumes (overrides a resume may and may not change,
a refused resume that changes nothing, a missing replay buffer, progress numbering)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LOOPBACK, checkpoints, cli_env, listening_addresses, train_cli
from trainer.evaluation.policy import load_policy
from trainer.runtime.checkpoint import BUFFER_FILE, MANIFEST_FILE, STATE_FILE, read_usable_state, resume_state
from trainer.runtime.locks import LOCK_FILE

TINY = ("--set", "stopping.steps_per_iteration=100", "--set", "checkpoint.frequency=1")


def _iterations(run_dir: Path, name: str = "progress.jsonl") -> list[int]:
    return [json.loads(line)["training_iteration"] for line in (run_dir / name).read_text().splitlines()]


def test_sigterm_mid_iteration_writes_a_checkpoint_says_how_to_resume_and_exits_143(tmp_path):
    """A standalone run (its own local Ray instance, as a user or a scheduler starts it)."""
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-m", "trainer.train", "--exp", "smoke", "--steps", "100000", "--out", str(out), *TINY]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    lines, addresses = [], []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[iter    1]"):
                # the next iteration is running: Ray's services must be reachable from this machine only
                addresses = listening_addresses(proc.pid)
                proc.send_signal(signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(lines) + rest
    assert proc.returncode == 143, output[-3000:]
    assert len(addresses) >= 3 and all(a.startswith(LOOPBACK) for a in addresses), addresses
    assert "SIGTERM received: finishing this iteration, then writing a final checkpoint..." in output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["reason"] == "SIGTERM"
    ckpt = out / "checkpoints" / f"checkpoint_{summary['iterations']:06d}"
    # The signal lands while iteration 2 runs or just before it starts (the loop checks the flag between
    # iterations): either way the run stops at an iteration boundary with a checkpoint of it.
    assert summary["iterations"] >= 1 and summary["final_checkpoint"] == str(ckpt)
    assert f"status: interrupted (SIGTERM)\nfinal checkpoint: {ckpt}\n" in output
    remaining = 100000 - summary["env_steps"]
    assert output.endswith(f"resume with: python -m trainer.train --resume {ckpt} --additional-steps {remaining}\n"), (
        output[-500:]
    )
    assert resume_state(ckpt) == (json.loads((ckpt / STATE_FILE).read_text()), None)  # complete, buffer included
    assert _iterations(out) == list(range(1, summary["iterations"] + 1))
    assert "Traceback" not in output


KILL_IN_SECOND_SAVE = """
import os, signal, sys
from trainer.runtime import checkpoint
real = checkpoint.write_manifest
calls = []
def write_manifest(path):
    calls.append(path)
    if len(calls) == 2:  # the second checkpoint's files are written; its manifest and rename are not
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path)
checkpoint.write_manifest = write_manifest
from trainer.train import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_mid_checkpoint_keeps_the_previous_one_and_the_resume_cleans_up(ray_session, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-c", KILL_IN_SECOND_SAVE, "--exp", "smoke", "--steps", "1000", "--out", str(run), *TINY]
    res = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(ray_session), timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stdout[-2000:] + res.stderr[-2000:]
    ckpt_dir = run / "checkpoints"
    (tmp,) = ckpt_dir.glob(".tmp-checkpoint_000002-*")
    assert (tmp / BUFFER_FILE).exists() and not (tmp / MANIFEST_FILE).exists()  # killed inside the save
    assert [p.name for p in checkpoints(run)] == ["checkpoint_000001"]
    previous = ckpt_dir / "checkpoint_000001"
    assert read_usable_state(previous)["training_iteration"] == 1  # complete and verified
    policy, _ = load_policy(previous)
    assert callable(policy)
    assert _iterations(run) == [1, 2]  # iteration 2 finished before its checkpoint was cut short
    killed = int((run / LOCK_FILE).read_text())  # the killed run's lock file stays behind, naming it ...
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)  # ... a process that is gone, so the OS released its lock

    res = train_cli(run, ray_session, "--resume", str(previous), "--additional-steps", "200")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert not (run / LOCK_FILE).exists()  # the killed run blocked nothing; this one released its lock
    assert f"removed {tmp}: a temporary checkpoint directory left by a save that was killed\n" in res.stdout
    assert (
        f"moved 1 row(s) after iteration 1 from {run / 'progress.jsonl'} to {run / 'progress.superseded.jsonl'}: "
        "the resumed run redoes those iterations\n"
    ) in res.stdout
    assert not list(ckpt_dir.glob(".tmp-*"))
    assert _iterations(run) == [1, 2, 3]  # numbering continues: no 1, 2, 2, 3
    assert _iterations(run, "progress.superseded.jsonl") == [2]  # the row of the lost iteration is kept aside
    assert [p.name for p in checkpoints(run)] == ["checkpoint_000001", "checkpoint_000002", "checkpoint_000003"]


def test_a_used_run_directory_is_refused_and_overwrite_moves_the_previous_run_aside(smoke_run, ray_session, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run[0], run)
    (run / "my_notes.txt").write_text("not the trainer's")
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    res = train_cli(run, ray_session, "--exp", "smoke")
    assert res.returncode == 2
    assert res.stderr == (
        f"error: {run}: run directory is not empty (checkpoints, experiment.yaml, my_notes.txt, ...); pass another "
        "--out, continue its run with --resume <checkpoint>, or pass --overwrite to start over there (the previous "
        "run's files are moved to previous-run-<time>/, nothing is deleted)\n"
    )
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before  # nothing touched

    res = train_cli(run, ray_session, "--exp", "smoke", "--steps", "200", "--overwrite", *TINY)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (previous,) = run.glob("previous-run-*")
    moved = ["checkpoints", "experiment.yaml", "progress.jsonl", "summary.json", "train.log"]
    assert f"--overwrite: moved the previous run's {', '.join(moved)} to {previous}\n" in res.stdout
    assert sorted(p.name for p in previous.iterdir()) == moved
    old = [p.name for p in checkpoints(previous)]
    assert old == ["checkpoint_000002", "checkpoint_000004", "checkpoint_000005"]  # all of them, still usable
    for name in old:
        read_usable_state(previous / "checkpoints" / name)
    assert (run / "my_notes.txt").read_text() == "not the trainer's"
    # the new run's checkpoints are its own, and pruning (num_to_keep 3) left them all
    assert [p.name for p in checkpoints(run)] == ["checkpoint_000001", "checkpoint_000002"]
    assert _iterations(run) == [1, 2]


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]


@pytest.fixture
def smoke_copy(smoke_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(smoke_run[0], run)
    return run


def test_resume_refuses_overrides_that_change_the_problem(smoke_copy, capsys, signals_restored):
    from trainer.train import main

    ckpt = checkpoints(smoke_copy)[-1]
    allowed = (
        "description, stopping.*, checkpoint.*, evaluation.interval, divergence.*, resources.*, sac.training_intensity"
    )
    for args, refused in (
        # a relative path is the current directory's file, named absolutely
        (("--data", "prices.csv"), f"data.source ('sp500' -> {str(Path('prices.csv').absolute())!r})"),
        (("--set", "sac.batch_size=32", "--seed", "1"), "sac.batch_size (64 -> 32), seed (0 -> 1)"),
        (
            ("--set", "model.hidden=[8]", "--set", "reward.clip=5"),
            "model.hidden ([32, 32] -> [8]), reward.clip (20.0 -> 5.0)",
        ),
        (("--set", "obs_filter.enabled=false"), "obs_filter.enabled (True -> False)"),
    ):
        assert main(["--resume", str(ckpt), *args]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err == (
            f"error: --resume: cannot change {refused}: it changes the problem the checkpoint was trained on; "
            f"start a new run instead (a resume may change {allowed})\n"
        )
    assert main(["--resume", str(ckpt), "--exp", "smoke"]) == 2
    assert capsys.readouterr().err == (
        "error: --exp smoke with --resume: a run continues with the experiment it was trained with; drop --exp "
        "(--set changes what a resume may change)\n"
    )
    assert main(["--exp", "smoke", "--additional-steps", "100"]) == 2
    assert capsys.readouterr().err == "error: --additional-steps continues a run: use it with --resume CHECKPOINT\n"
    assert [r["training_iteration"] for r in _rows(smoke_copy)] == [1, 2, 3, 4, 5]  # the run is untouched


def test_resume_applies_safe_overrides_and_a_missing_buffer_only_when_allowed(smoke_copy, ray_session):
    ckpt = checkpoints(smoke_copy)[-1]
    (ckpt / BUFFER_FILE).unlink()
    res = train_cli(smoke_copy, ray_session, "--resume", str(ckpt))
    assert res.returncode == 2
    assert res.stderr == (
        f"error: {ckpt / BUFFER_FILE}: missing (replay buffer); pass --allow-missing-buffer to resume with an empty "
        "replay buffer (networks, optimisers, filter statistics and step counts come from the rest of the "
        "checkpoint), or use another checkpoint of the run\n"
    )
    res = train_cli(
        smoke_copy,
        ray_session,
        "--resume",
        str(ckpt),
        "--allow-missing-buffer",
        "--steps",
        "600",
        "--set",
        "evaluation.interval=1",
        "--set",
        "checkpoint.num_to_keep=1",
        "--set",
        "sac.training_intensity=32",
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stderr.startswith(
        f"warning: {ckpt / BUFFER_FILE}: missing (replay buffer): resuming with an EMPTY replay buffer "
        "(--allow-missing-buffer)\n"
    )
    for applied in (
        "stopping.env_steps 1500 -> 600",
        "evaluation.interval 2 -> 1",
        "checkpoint.num_to_keep 3 -> 1",
        "sac.training_intensity 16.0 -> 32.0",
    ):
        assert f"on resume: {applied}\n" in res.stdout
    assert f"resumed {ckpt} at 1,500 env steps, buffer 0 transitions" in res.stdout
    rows = _rows(smoke_copy)
    assert [r["training_iteration"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert rows[-1]["env_steps"] == 2100 and rows[-1]["buffer_size"] == 600
    # applied, not just printed: the replay ratio (trained samples per env step) doubled ...
    assert rows[3]["trained_samples_per_s"] / rows[3]["env_steps_per_s"] == pytest.approx(16.0, rel=1e-9)
    assert rows[6]["trained_samples_per_s"] / rows[6]["env_steps_per_s"] == pytest.approx(32.0, rel=1e-9)
    # ... one checkpoint is kept, and it and the run's experiment.yaml carry the new settings
    (last,) = checkpoints(smoke_copy)
    assert last.name == "checkpoint_000007"
    settings = json.loads((last / STATE_FILE).read_text())["experiment"]
    assert settings["evaluation"]["interval"] == 1 and settings["checkpoint"]["num_to_keep"] == 1
    import yaml

    saved = yaml.safe_load((smoke_copy / "experiment.yaml").read_text())
    assert saved["evaluation"]["interval"] == 1 and saved["sac"]["training_intensity"] == 32.0
    assert saved["sac"]["batch_size"] == 64 and saved["model"]["hidden"] == [32, 32]


FULL_DISK_IN_SECOND_SAVE = """
import errno, os, sys
from trainer.runtime import checkpoint
real = checkpoint.write_manifest
calls = []
def write_manifest(path):
    calls.append(path)
    if len(calls) == 2:  # the disk fills up while the second checkpoint is written (its other files are there)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(path, "manifest.json.tmp"))
    return real(path)
checkpoint.write_manifest = write_manifest
from trainer.train import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_mid_checkpoint_stops_with_how_to_continue_and_leaves_no_partial_checkpoint(ray_session, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-c", FULL_DISK_IN_SECOND_SAVE, "--exp", "smoke", "--steps", "1000", "--out", str(run)]
    res = subprocess.run([*cmd, *TINY], capture_output=True, text=True, env=cli_env(ray_session), timeout=300)
    ckpt_dir = run / "checkpoints"
    first = ckpt_dir / "checkpoint_000001"
    resume = f"python -m trainer.train --resume {first} --additional-steps 900"
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    assert res.stderr.splitlines()[-1] == (
        f"error: {ckpt_dir / 'checkpoint_000002'}: not written (No space left on device); training stopped at "
        f"iteration 2; the last complete checkpoint is {first}, intact: make room, then continue with: {resume}"
    )
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["checkpoint_000001"]  # no temporary directory left
    assert read_usable_state(first)["training_iteration"] == 1 and resume_state(first)[1] is None  # intact
    assert _iterations(run) == [1, 2] and not (run / LOCK_FILE).exists()

    res = train_cli(run, ray_session, *resume.split()[3:])  # the printed command, once there is room
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert _iterations(run) == list(range(1, 11)) and _iterations(run, "progress.superseded.jsonl") == [2]
    assert json.loads((run / "summary.json").read_text())["env_steps"] == 1000


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_a_refused_resume_or_overwrite_changes_nothing(smoke_copy, ray_session):
    """A resume (or an --overwrite run) the cluster cannot place leaves every file as it was, so the plain resume
    afterwards runs; a killed save's temporary directory is removed only by the resume that runs."""
    ckpt = checkpoints(smoke_copy)[-1]
    stale = smoke_copy / "checkpoints" / ".tmp-checkpoint_000006-4194303-1"  # of a writer that is gone
    stale.mkdir()
    (stale / "part").write_text("half a checkpoint")
    before = _files(smoke_copy)
    too_many = ("--set", "resources.num_env_runners=3")
    cpus = (
        "error: this run needs CPU=3 but the Ray cluster has CPU=2 in total; its env runners and learners could "
        "never start (it takes one CPU per env runner and per remote learner: use fewer, e.g. --set "
        "resources.num_env_runners=1; or add nodes that have it)"
    )
    for args in (("--resume", str(ckpt), *too_many), ("--exp", "smoke", "--overwrite", *too_many)):
        res = train_cli(smoke_copy, ray_session, *args, timeout=120)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
        assert res.stderr.splitlines()[-1] == cpus
        assert _files(smoke_copy) == before  # experiment.yaml, train.log, progress, checkpoints: byte for byte
        assert not list(smoke_copy.glob("previous-run-*")) and not (smoke_copy / LOCK_FILE).exists()

    res = train_cli(smoke_copy, ray_session, "--resume", str(ckpt), "--additional-steps", "300")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"removed {stale}: a temporary checkpoint directory left by a save that was killed\n" in res.stdout
    assert _iterations(smoke_copy) == [1, 2, 3, 4, 5, 6]


def test_two_runs_into_one_directory_at_once_the_second_is_refused_and_the_first_runs_on(ray_session, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "trainer.train", "--exp", "smoke", "--steps", "3000", "--out", str(out), *TINY]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env(ray_session))
    lines = []
    try:
        for line in first.stdout:
            lines.append(line)
            if line.startswith("[iter    1]"):  # the first run is training in its locked directory
                break
        second = train_cli(out, ray_session, "--exp", "smoke", timeout=120)
        assert first.poll() is None, "the first run ended before the second was refused: raise its --steps"
        rest, _ = first.communicate(timeout=400)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 2 and second.stdout == ""
    assert second.stderr == (
        f"error: {out}: another trainer.train run is writing there (pid {first.pid}); wait for it to finish, or pass "
        "another --out\n"
    )
    output = "".join(lines) + rest
    assert first.returncode == 0, output[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["env_steps"] == 3000
    assert _iterations(out) == list(range(1, 31))
    assert re.search(r"^status: completed$", output, re.M) and not (out / LOCK_FILE).exists()
    # once the first has finished, the same command is refused for what is there, not for a lock
    res = train_cli(out, ray_session, "--exp", "smoke", timeout=120)
    assert res.returncode == 2 and "run directory is not empty" in res.stderr
