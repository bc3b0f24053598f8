"""The model registry of rolling retraining: a directory of rounds and the pointer to the live model.

Layout (paths inside the files are relative to the registry directory, so a registry can be moved or copied):

- ``live.json``: ``{"round": ID, "checkpoint": PATH, "agent": I or null, "date": ..., "since": ..., "reason":
  ..., "previous": ID or null}``: the model in use. Replaced atomically (a temporary file and ``os.replace``),
  so a reader sees the old pointer or the new one, never half of one.
- ``rounds/<ID>/round.json``: one round (``ID`` is its date, ``YYYY-MM-DD``, with ``_2``, ``_3``, ... for
  further rounds on the same date): ``{"date", "status", "promoted", "reason", "checkpoint", "agent",
  "figures", ...}``; its training runs and candidate checkpoint live under ``rounds/<ID>/``.
- ``history.jsonl``: one line per change of the live model (a promotion or a rollback).
- ``.lock`` (``trainer.runtime.locks``): held by the one process writing the registry; the operating system
  releases it when that process ends, however it ends, so a killed round never blocks the next.

Nothing here deletes a checkpoint: a round that is started again after an interruption moves its earlier
attempt's files to ``rounds/<ID>/previous-attempt-<time>/``, and a live or formerly live round is never
restarted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.metrics import registry as M
from trainer.runtime.locks import LockedError, lock_dir
from trainer.runtime.run_dir import write_atomic

LIVE_FILE = "live.json"
ROUNDS_DIR = "rounds"
ROUND_FILE = "round.json"
HISTORY_FILE = "history.jsonl"
PREVIOUS_ATTEMPT_PREFIX = "previous-attempt-"
# a round's status: running (or killed while running), interrupted (by a signal), decided (the gate ran)
STATUS_RUNNING = "running"
STATUS_DECIDED = "decided"
STATUS_FAILED = "failed"
UNFINISHED = (STATUS_RUNNING, M.STATUS_INTERRUPTED, STATUS_FAILED)


class RegistryError(ValueError):
    """A registry, round or rollback request that cannot be honoured; the message says which and the fix."""


@dataclass(frozen=True)
class LiveModel:
    """The model in use: its round, its checkpoint (absolute) and the agent of a population checkpoint."""

    round: str
    checkpoint: Path
    agent: int | None
    record: dict[str, Any]


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def registry_dir(path: Path | str, must_exist: bool) -> Path:
    """``path`` as a registry directory (absolute).

    Args:
        path: the ``--registry`` argument.
        must_exist: it must already hold a registry (rollback, decide); otherwise the first round creates it.

    Raises:
        RegistryError: a file in the way, or (``must_exist``) no registry there.
    """
    path = Path(path).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise RegistryError(f"--registry {path}: a file, not a directory; give the registry's directory")
    if must_exist and not (path / ROUNDS_DIR).is_dir():
        raise RegistryError(
            f"--registry {path}: no registry there (no {ROUNDS_DIR}/ folder); a first round creates it: "
            f"python -m trainer.rolling --exp NAME --data PRICES --registry {path}"
        )
    return path


@contextlib.contextmanager
def registry_lock(registry: Path) -> Iterator[None]:
    """Hold the registry's write lock (``trainer.runtime.locks``) for the block, without waiting for it.

    Raises:
        RegistryError: another process holds it (the message names it).
    """

    def busy(pid: int | None) -> str:
        return (
            f"--registry {registry}: another round or rollback (process {pid or 'unknown'}) is writing to it; wait "
            "for it to finish (two rounds never write one registry at once)"
        )

    try:
        lock = lock_dir(registry, busy)
    except LockedError as exc:
        raise RegistryError(str(exc)) from None
    try:
        for note in finish_promotion(registry):  # what a killed holder of the lock left half done
            print(note, flush=True)
        yield
    finally:
        lock.release()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RegistryError(
            f"{path}: cannot be read as JSON ({exc}); restore it from a backup of the registry"
        ) from None
    if not isinstance(value, dict):
        raise RegistryError(f"{path}: not a JSON object; restore it from a backup of the registry")
    return value


def relative(registry: Path, path: Path) -> str:
    """``path`` as written in the registry's files: relative to the registry directory."""
    return Path(os.path.relpath(Path(path).absolute(), registry)).as_posix()


# --- rounds --------------------------------------------------------------------------------------------------
def round_dir(registry: Path, round_id: str) -> Path:
    return registry / ROUNDS_DIR / round_id


def rounds(registry: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every recorded round, ``(ID, round.json)``, in date order (then in the order they ran on one date)."""
    base = registry / ROUNDS_DIR
    found = (
        [(p.name, _read_json(p / ROUND_FILE)) for p in base.iterdir() if (p / ROUND_FILE).is_file()]
        if base.is_dir()
        else []
    )
    return sorted(found, key=lambda item: (str(item[1].get("date")), _attempt_number(item[0])))


def _attempt_number(round_id: str) -> int:
    _, _, tail = round_id.partition("_")
    return int(tail) if tail.isdigit() else 1


def read_round(registry: Path, round_id: str) -> dict[str, Any]:
    """A round's record.

    Raises:
        RegistryError: no such round (the message lists the registry's rounds).
    """
    path = round_dir(registry, round_id) / ROUND_FILE
    if "/" in round_id or round_id in ("", ".", "..") or not path.is_file():
        known = ", ".join(rid for rid, _ in rounds(registry)) or "none yet"
        raise RegistryError(f"round {round_id!r}: not in registry {registry} (its rounds: {known})")
    return _read_json(path)


def write_round(registry: Path, round_id: str, record: dict[str, Any]) -> None:
    """Replace a round's record atomically."""
    write_atomic(round_dir(registry, round_id) / ROUND_FILE, json.dumps(record, indent=2, default=str) + "\n")


def start_round(registry: Path, date: str) -> tuple[str, list[str]]:
    """Claim the round for ``date``: an unfinished one of that date is started again, else a new one.

    An unfinished round (interrupted, failed, or killed while running: only a holder of the lock can be
    running, and the caller holds it) keeps its ID; its earlier attempt's files move to
    ``previous-attempt-<time>/`` inside it. Decided rounds are never touched: a further round on the same date
    gets the next ID (``<date>_2``, ...).

    Returns:
        ``(round ID, notes to print)``.
    """
    live = live_record(registry)
    same_day = [(rid, rec) for rid, rec in rounds(registry) if rec.get("date") == date]
    notes: list[str] = []
    unfinished = [(rid, rec) for rid, rec in same_day if rec.get("status") in UNFINISHED]
    if unfinished and (live is None or live.get("round") != unfinished[-1][0]):
        round_id, status = unfinished[-1][0], unfinished[-1][1].get("status")
        folder = round_dir(registry, round_id)
        aside = folder / f"{PREVIOUS_ATTEMPT_PREFIX}{dt.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
        aside.mkdir()
        for entry in sorted(folder.iterdir()):
            if entry != aside and not entry.name.startswith(PREVIOUS_ATTEMPT_PREFIX):
                entry.rename(aside / entry.name)
        notes.append(f"round {round_id} was {status}: started again (its earlier attempt's files moved to {aside})")
    else:
        taken = {rid for rid, _ in same_day} | {p.name for p in (registry / ROUNDS_DIR).glob(f"{date}*")}
        round_id = date
        n = 2
        while round_id in taken:
            round_id, n = f"{date}_{n}", n + 1
    write_round(
        registry,
        round_id,
        {
            "date": date,
            "status": STATUS_RUNNING,
            "promoted": False,
            "reason": "running",
            "checkpoint": None,
            "agent": None,
            "figures": {},
            "started": _now(),
        },
    )
    return round_id, notes


# --- the live model ------------------------------------------------------------------------------------------
def live_record(registry: Path) -> dict[str, Any] | None:
    """``live.json``, or None when no round has been promoted yet."""
    path = registry / LIVE_FILE
    return _read_json(path) if path.exists() else None


def _history_rounds(registry: Path) -> set[str]:
    path = registry / HISTORY_FILE
    if not path.exists():
        return set()
    found = set()
    for line in path.read_text().splitlines():
        try:
            found.add(str(json.loads(line).get("round")))
        except (ValueError, AttributeError):
            continue  # a line cut short by a kill: the round it named is found again below
    return found


def finish_promotion(registry: Path) -> list[str]:
    """Complete a promotion a killed process left half done; what was done, as notes (none: nothing to do).

    A promotion writes the round's record (promoted), then ``live.json``, then a line of ``history.jsonl``.
    Killed after the record, the newest promoted round is in neither file: it is made live now. Killed after
    ``live.json``, the history lacks its line: the line is added. A rollback is in the history, so a model
    rolled back to is never replaced here. Called by ``registry_lock`` before every write.
    """
    promoted = [(rid, rec) for rid, rec in rounds(registry) if rec.get("promoted") and rec.get("checkpoint")]
    if not promoted:
        return []
    round_id, record = promoted[-1]
    if round_id in _history_rounds(registry):
        return []
    live = live_record(registry)
    if live is not None and live.get("round") == round_id:
        with open(registry / HISTORY_FILE, "a") as fh:
            fh.write(json.dumps(live) + "\n")
        return [f"round {round_id}: its promotion's history line was missing (a killed process); added"]
    set_live(registry, round_id, record, "promoted by the gate (completed after the promoting process was killed)")
    return [f"round {round_id}: promoted, but the process was killed before live.json changed; it is live now"]


def live_model(registry: Path | str) -> LiveModel:
    """The model in use in ``registry``.

    Raises:
        RegistryError: no registry there, no live model yet, or its checkpoint is missing.
    """
    registry = registry_dir(registry, must_exist=True)
    record = live_record(registry)
    if record is None:
        raise RegistryError(
            f"--registry {registry}: no live model yet (no round has been promoted; see {ROUNDS_DIR}/*/{ROUND_FILE})"
        )
    checkpoint = (registry / str(record.get("checkpoint"))).resolve()
    if not checkpoint.is_dir():
        raise RegistryError(
            f"{registry / LIVE_FILE}: the live checkpoint {checkpoint} is missing; make another round live with "
            f"python -m trainer.rolling --registry {registry} --rollback ROUND"
        )
    agent = record.get("agent")
    return LiveModel(str(record.get("round")), checkpoint, None if agent is None else int(agent), record)


def live_checkpoint(registry: Path | str) -> Path:
    """The live model's checkpoint directory (for ``trainer.serve --registry``; raises ``RegistryError``)."""
    return live_model(registry).checkpoint


def set_live(registry: Path, round_id: str, record: dict[str, Any], reason: str) -> dict[str, Any]:
    """Make round ``round_id`` (its ``record``) the live model: ``live.json`` replaced atomically, the change
    appended to ``history.jsonl``. Returns the new ``live.json``."""
    before = live_record(registry)
    live = {
        "round": round_id,
        "checkpoint": record["checkpoint"],
        "agent": record.get("agent"),
        "date": record.get("date"),
        "since": _now(),
        "reason": reason,
        "previous": before.get("round") if before else None,
    }
    write_atomic(registry / LIVE_FILE, json.dumps(live, indent=2) + "\n")
    with open(registry / HISTORY_FILE, "a") as fh:
        fh.write(json.dumps(live) + "\n")
    return live


def rollback(registry: Path, round_id: str) -> tuple[dict[str, Any], bool]:
    """Make an earlier promoted round's model live again.

    Returns:
        ``(live.json, changed)``: ``changed`` is False when that round was live already.

    Raises:
        RegistryError: an unknown round, one that never passed the gate, or one whose checkpoint is gone.
    """
    record = read_round(registry, round_id)
    if not record.get("promoted"):
        passed = ", ".join(rid for rid, rec in rounds(registry) if rec.get("promoted")) or "none"
        raise RegistryError(
            f"round {round_id}: never passed the gate ({record.get('reason', record.get('status'))}); only a round "
            f"that was promoted can be made live again (promoted rounds: {passed})"
        )
    checkpoint = registry / str(record.get("checkpoint"))
    if not checkpoint.is_dir():
        raise RegistryError(f"round {round_id}: its checkpoint {checkpoint} is missing; choose another round")
    live = live_record(registry)
    if live is not None and live.get("round") == round_id:
        return live, False
    return set_live(registry, round_id, record, f"rollback to round {round_id}"), True
