"""Where the commands write, checked before anything is written or started.

A local output folder (``--out``, ``--storage``, the default ``runs/...``) must be a folder, or a new path whose
first existing parent is a folder this user can write in: a file in the way would otherwise surface as a raw
``NotADirectoryError`` once a run, a sweep or a whole backtest simulation was done. A remote storage URI
(``s3://``, ``gs://``) must name a file system Ray Tune can reach: an unresolvable bucket would otherwise stop a
sweep with pyarrow's raw ``OSError``.
"""

from __future__ import annotations

import os
from pathlib import Path

from trainer.runtime.errors import ExperimentError


class OutputPathError(ExperimentError):
    """An output folder or storage that cannot be written; the message names the path and the fix."""


def is_uri(path: Path | str) -> bool:
    """A storage URI (``s3://bucket/path``), not a local path."""
    return "://" in str(path)


def check_output_dir(path: Path, flag: str) -> None:
    """Refuse an output folder that cannot be created or written.

    Args:
        path: the folder (it may not exist yet).
        flag: the command-line option that gave it (``--out``), for the fix.

    Raises:
        OutputPathError: ``path`` or one of its parents is a file, or the first existing one is not writable.
    """
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists() or p.is_symlink())
    named = "" if existing == path else f"{existing} "
    if not existing.is_dir():
        what = "a broken symbolic link" if not existing.exists() else "a file, not a directory"
        raise OutputPathError(f"{path}: {named}is {what}; pass a directory (or a new path) as {flag}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"{path}: {named}is not writable (permission denied); pass a directory you can write in as {flag}"
        )


def check_remote_storage(uri: str, flag: str) -> None:
    """Reach a storage URI once, as Ray Tune will (pyarrow's file system for the URI), before anything starts.

    Raises:
        OutputPathError: the URI's file system is unknown or unavailable, or the location cannot be reached
            (an unresolvable bucket, no network, missing credentials): pyarrow's reason, first line.
    """
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(uri)
        fs.get_file_info(path)
    except (OSError, ValueError, NotImplementedError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise OutputPathError(
            f"{uri}: cannot reach this storage ({reason}); check the bucket name, the credentials and the network, "
            f"or pass a local folder as {flag}"
        ) from None


def os_error_text(exc: OSError) -> str:
    """``<file>: <reason>`` of a failed write or read (``No space left on device``), for a one-line error."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{exc.filename}: {reason}" if exc.filename else reason
