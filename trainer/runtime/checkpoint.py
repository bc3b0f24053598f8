"""Our checkpoints, in one place: layout, manifest, verification, atomic save, pruning.

A checkpoint is RLlib's checkpoint directory (``rllib_checkpoint.json`` and the component folders) plus our
files: ``portfolio_state.json`` (counters, last evaluation, tickers, the env config and settings, training
curves), the replay buffer (``trainer.rl.buffer``), the policy file set ``policy/`` (``policy.json`` and
``weights.npz``: the deterministic policy, its frozen observation filter and its settings as JSON and plain
arrays, ``trainer.evaluation.policy_file``) and, written last, ``manifest.json``: every file's size and
SHA-256 and the versions of Ray, torch and this package that wrote it. ``PortfolioSAC.save_to_path`` writes
them (for ``trainer.train`` and for Tune trials alike).

Reading any checkpoint starts with ``read_state``, which checks the manifest before anything else is read:
a missing, truncated or changed file, or a checkpoint of another Ray minor version, is refused with a
``CheckpointError`` naming the file and what to do, never a raw decoding error. The backtest does not read
the replay buffer, so only a resume checks it (``resume_state``).

``save_atomic`` writes a checkpoint under a temporary name and renames it, so a ``checkpoint_<iteration>``
directory either is complete or does not exist; a save that fails removes its temporary directory, and
``remove_stale_temp_dirs`` deletes what a killed save left.
The deterministic policy is restored from a checkpoint by ``trainer.evaluation.policy.load_policy``.

The trust boundary: RLlib stores its module, optimiser and connector state as pickles, and unpickling can
run any code; the manifest catches damage, not tampering (whoever changes a file can rewrite the manifest).
So the paths that read other people's checkpoints (``trainer.backtest``, the sweep report, and deciding,
exporting or serving a policy) read only JSON and ``policy/`` (``trainer.evaluation.policy.load_policy``),
never a pickle. A resume (``trainer.train --resume``, Tune's resume) restores RLlib's pickles and so runs
code from the checkpoint: resume only checkpoints you trust. Our own files are never pickles (JSON, and
``np.load(allow_pickle=False)`` for the buffer and the policy weights).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

STATE_FILE = "portfolio_state.json"
BUFFER_FILE = "replay_buffer.npz"  # written and read by trainer.rl.buffer
RLLIB_CHECKPOINT_FILE = "rllib_checkpoint.json"
MANIFEST_FILE = "manifest.json"
# a population's entries in STATE_FILE: the agents' last validation figures, and which diverged (index -> why)
AGENT_EVALUATIONS_KEY = "agent_evaluations"
DATA_KEY = "data"  # the training data's windows and price fingerprints (envs.fingerprint.data_record)
DIVERGED_AGENTS_KEY = "diverged_agents"
MANIFEST_FORMAT = 1
CHECKPOINT_PREFIX = "checkpoint_"
TMP_PREFIX = ".tmp-"
PACKAGE = "portfolio-rl"
# Where the observation-filter statistics live in RLlib's layout (ray.rllib.core COMPONENT_* names).
OBS_FILTER_DIR = "env_runner/env_to_module_connector"
# The policy file set (trainer.evaluation.policy_file): what a backtest reads, no pickle.
POLICY_DIR = "policy"
_ROLES = (  # what a file is for, so that a message about it says what is lost
    (POLICY_DIR + "/", "policy weights, filter and settings"),
    (OBS_FILTER_DIR, "observation-filter statistics"),
    ("learner_group/learner/rl_module", "policy and Q networks"),
    ("learner_group", "learner and optimiser state"),
    (BUFFER_FILE, "replay buffer"),
    (STATE_FILE, "counters and settings"),
)
USE_ANOTHER = "use another checkpoint of the run"


class CheckpointError(ValueError):
    """A missing, foreign, damaged or unusable checkpoint; the message names the file and the fix."""


# --- manifest ---------------------------------------------------------------------------------------------
def software_versions() -> dict[str, str]:
    """Versions of what writes and reads checkpoints: this package, Ray, torch, numpy and Python."""
    out = {}
    for dist in (PACKAGE, "ray", "torch", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    out["python"] = platform.python_version()
    return out


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _what(rel: str, detail: str = "") -> str:
    """`` (detail; what the file holds)`` for a message about checkpoint file ``rel``."""
    role = next((role for prefix, role in _ROLES if rel.startswith(prefix)), "")
    parts = [p for p in (detail, role) if p]
    return f" ({'; '.join(parts)})" if parts else ""


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def absolute(path: Any) -> Any:
    """A local checkpoint path made absolute; a URI (``s3://...``) as it is.

    RLlib's ``save_to_path``/``restore_from_path``/``from_checkpoint`` hand the path to pyarrow's
    ``FileSystem.from_uri``, which refuses a relative path (``URI has empty scheme``).
    """
    if isinstance(path, str | os.PathLike) and "://" not in str(path):
        return str(Path(path).absolute())
    return path


def write_manifest(path: Path | str) -> Path:
    """List every file of the checkpoint directory ``path`` (size, SHA-256) with the software versions.

    Call it after everything else is written: a file added later is not covered. The manifest itself is
    written to a temporary file and renamed, so it is either complete or absent.
    """
    path = Path(path)
    files = {}
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if not rel.startswith(MANIFEST_FILE):
            files[rel] = {"size": f.stat().st_size, "sha256": _sha256(f)}
    manifest = {"format": MANIFEST_FORMAT, "versions": software_versions(), "files": files}
    tmp = path / f"{MANIFEST_FILE}.tmp"
    with open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path / MANIFEST_FILE)
    return path / MANIFEST_FILE


def read_manifest(path: Path | str) -> dict[str, Any]:
    """The checkpoint's manifest, checked for form and for the Ray minor version that wrote it."""
    path = Path(path)
    file = path / MANIFEST_FILE
    if not file.exists():
        raise CheckpointError(
            f"{path}: no {MANIFEST_FILE}, so it cannot be checked (the save did not finish, or an older version "
            f"of this project wrote it); {USE_ANOTHER}, or train again"
        )
    try:
        manifest = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file}: damaged ({exc}); {USE_ANOTHER}") from None
    if not isinstance(manifest, dict) or not all(isinstance(manifest.get(k), dict) for k in ("files", "versions")):
        raise CheckpointError(f"{file}: damaged (no 'files' or 'versions' mapping); {USE_ANOTHER}")
    saved_ray = str(manifest["versions"].get("ray", "unknown"))
    here = software_versions()["ray"]
    if _minor(saved_ray) != _minor(here):
        # RLlib's checkpoint state changes between minor versions (the package pins one minor).
        raise CheckpointError(
            f"{path}: written with ray {saved_ray}, this is ray {here}; RLlib checkpoints load only in the "
            f"same minor version: use ray {_minor(saved_ray)}.x to read it"
        )
    return manifest


def verify_files(path: Path | str, manifest: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Check that every file the manifest lists (except ``skip``) is there, with its size and SHA-256.

    Raises:
        CheckpointError: naming the first missing, truncated or changed file and what it holds.
    """
    path = Path(path)
    for rel, entry in sorted(manifest["files"].items()):
        problem = None if rel in skip else file_problem(path, rel, entry)
        if problem is not None:
            raise CheckpointError(f"{problem}; {USE_ANOTHER}")


def file_problem(path: Path, rel: str, entry: Any) -> str | None:
    """What is wrong with checkpoint file ``rel`` against its manifest ``entry``, or None when it matches."""
    f = path / rel
    try:
        size, digest = int(entry["size"]), str(entry["sha256"])
    except (TypeError, KeyError, ValueError):
        return f"{path / MANIFEST_FILE}: damaged (bad entry for {rel})"
    if not f.is_file():
        return f"{f}: missing{_what(rel)}"
    if f.stat().st_size != size:
        return f"{f}: truncated or changed{_what(rel, f'{f.stat().st_size:,} bytes, {size:,} when written')}"
    if _sha256(f) != digest:
        return f"{f}: changed since it was written{_what(rel, 'SHA-256 mismatch')}"
    return None


# --- reading ----------------------------------------------------------------------------------------------
def read_state(path: Path | str, *, replay_buffer: bool = False) -> dict[str, Any]:
    """Check that ``path`` is a complete, unchanged checkpoint of this project; return ``portfolio_state.json``.

    Every file the manifest lists is checked (size and SHA-256) before anything else is read; the replay
    buffer only when ``replay_buffer`` (a resume reads it, a backtest does not).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found; pass a checkpoint directory (runs/.../checkpoint_NNNNNN)")
    if not path.is_dir() or not (path / RLLIB_CHECKPOINT_FILE).exists():
        raise CheckpointError(f"{path}: not an RLlib checkpoint directory (no {RLLIB_CHECKPOINT_FILE})")
    state_file = path / STATE_FILE
    if not state_file.exists():
        raise CheckpointError(
            f"{path}: not a checkpoint of this project (no {STATE_FILE}); train it with trainer.train or trainer.tune"
        )
    verify_files(path, read_manifest(path), skip=() if replay_buffer else (BUFFER_FILE,))
    try:
        state = json.loads(state_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{state_file}: damaged ({exc}); {USE_ANOTHER}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{state_file}: damaged (not a JSON object); {USE_ANOTHER}")
    if needs_obs_filter(state) and not any(p.is_file() for p in (path / OBS_FILTER_DIR).rglob("*")):
        raise no_obs_filter(path / OBS_FILTER_DIR)
    return state


def needs_obs_filter(state: dict[str, Any]) -> bool:
    """The policy was trained on normalised observations (older states only say how many were seen)."""
    return bool(state.get("obs_filter", state.get("obs_filter_count", 0) > 0))


def no_obs_filter(where: Path) -> CheckpointError:
    """The error for a policy trained on normalised observations whose statistics are not at ``where``."""
    return CheckpointError(
        f"{where}: no observation-filter statistics, but the policy was trained on normalised "
        f"observations (it would act on raw ones); {USE_ANOTHER}"
    )


def read_usable_state(path: Path | str) -> dict[str, Any]:
    """``read_state``, refusing a checkpoint written after training diverged (its policy is not usable)."""
    return usable_state(path, read_state(path))


def usable_state(path: Path | str, state: dict[str, Any]) -> dict[str, Any]:
    if state.get("diverged"):
        raise CheckpointError(
            f"{path}: this checkpoint was written after training diverged ({state['diverged']}); "
            "use an earlier checkpoint of the run"
        )
    return state


def resume_state(path: Path | str, allow_missing_buffer: bool = False) -> tuple[dict[str, Any], str | None]:
    """Check a checkpoint for a resume: everything ``read_state`` checks, and the replay buffer.

    Args:
        path: the checkpoint directory.
        allow_missing_buffer: resume even when the saved replay buffer is missing or damaged (with an
            empty buffer); otherwise that is an error.

    Returns:
        ``(portfolio_state, note)``: ``note`` says why the resume starts with an empty replay buffer
        (the buffer is unusable and ``allow_missing_buffer``, or it was never saved), None when it is restored.
    """
    path = Path(path)
    state = read_usable_state(path)
    entry = read_manifest(path)["files"].get(BUFFER_FILE)
    if entry is None:
        return state, (
            f"{path} was saved without its replay buffer (checkpoint.save_buffer: false): "
            "resuming with an empty replay buffer"
        )
    problem = file_problem(path, BUFFER_FILE, entry)
    if problem is None:
        return state, None
    if not allow_missing_buffer:
        raise CheckpointError(
            f"{problem}; pass --allow-missing-buffer to resume with an empty replay buffer (networks, "
            f"optimisers, filter statistics and step counts come from the rest of the checkpoint), or {USE_ANOTHER}"
        )
    return state, f"{problem}: resuming with an EMPTY replay buffer (--allow-missing-buffer)"


def checkpoint_iteration(path: Path | str) -> int | None:
    """The iteration in a ``checkpoint_<iteration>`` directory name (None for other names)."""
    name = Path(path).name
    digits = name.removeprefix(CHECKPOINT_PREFIX)
    return int(digits) if name.startswith(CHECKPOINT_PREFIX) and digits.isdigit() else None


def write_state(path: Path | str, state: dict[str, Any]) -> None:
    """Write ``portfolio_state.json`` into a checkpoint directory."""
    (Path(path) / STATE_FILE).write_text(json.dumps(state, indent=2, default=str))


# --- writing a run's checkpoints ----------------------------------------------------------------------------
def save_atomic(algo: Any, checkpoint_dir: Path, iteration: int, num_to_keep: int | None) -> Path:
    """Save ``algo`` to ``checkpoint_dir/checkpoint_<iteration>`` via a temporary directory and a rename.

    Never replaces an existing checkpoint. A save that fails (``OSError``: a full disk) removes its temporary
    directory and raises; the run's earlier checkpoints are untouched. Then keeps the newest ``num_to_keep`` of
    the run's checkpoints (all when None); see ``prune``.
    """
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir / f"{CHECKPOINT_PREFIX}{iteration:06d}"
    if final.exists():
        raise CheckpointError(f"{final}: already exists; refusing to replace it (resume from it, or use --out)")
    # The writer's pid in the name lets remove_stale_temp_dirs tell a killed save from a running one.
    tmp = checkpoint_dir / f"{TMP_PREFIX}{final.name}-{os.getpid()}-{time.time_ns()}"
    try:
        algo.save_to_path(str(tmp))  # PortfolioSAC writes the manifest last
        tmp.rename(final)
    except BaseException:
        # A save that failed (a full disk) leaves no partial directory behind, and frees what it took.
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if num_to_keep:
        prune(checkpoint_dir, num_to_keep)
    return final


def prune(checkpoint_dir: Path, num_to_keep: int) -> list[Path]:
    """Delete all but the newest ``num_to_keep`` checkpoints of a run's checkpoint directory.

    Only complete checkpoints of this project (``checkpoint_<iteration>`` with a manifest) count and are
    deleted; anything else in the directory is left alone.
    """
    ours = [p for p in list_checkpoints(checkpoint_dir) if (p / MANIFEST_FILE).is_file()]
    old = ours[:-num_to_keep]
    for p in old:
        shutil.rmtree(p)
    return old


def list_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """The ``checkpoint_<iteration>`` directories of a run's checkpoint directory, oldest first."""
    found = {checkpoint_iteration(p): p for p in checkpoint_dir.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir()}
    return [found[i] for i in sorted(i for i in found if i is not None)]


def _writer_alive(tmp: Path) -> bool:
    parts = tmp.name.split("-")
    if len(parts) < 4 or not parts[2].isdigit():
        return False
    pid = int(parts[2])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_dirs(checkpoint_dir: Path) -> list[Path]:
    """Delete the temporary directories of checkpoint saves that were killed (their writer is gone).

    A save in progress in another live process is left alone.
    """
    stale = [
        p
        for p in sorted(checkpoint_dir.glob(f"{TMP_PREFIX}{CHECKPOINT_PREFIX}*"))
        if p.is_dir() and not _writer_alive(p)
    ]
    for p in stale:
        shutil.rmtree(p)
    return stale
