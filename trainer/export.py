"""Export a trained policy as one TorchScript file that runs with torch alone:
``python -m trainer.export CHECKPOINT --out policy.pt``.

CHECKPOINT is a checkpoint directory or a ``trainer.train`` run directory (its latest checkpoint); of a
population checkpoint, ``--agent I`` chooses the agent.

The file maps the price history (float64 ``[T, N]``, rows oldest first, columns in the metadata's ticker order,
``T`` at least the metadata's ``window``) and the weights held now (float64 ``[N + 1]``, cash last) to the target
weights for the last row: ``trainer.decide``'s decision (features, frozen filter, actor, tanh of the mean,
action mapping, no-trade band and position limits; ``trainer.evaluation.export_module``). Its
``metadata.json`` holds the tickers, window, feature and env settings, training windows, and the checkpoint
and SHA-256 of the policy files. ``--onnx FILE`` writes the same decision as ONNX too (the ``onnx`` extra),
without the input checks (ONNX has no exceptions). Only the checkpoint's policy files are read (JSON and plain
arrays, never a pickle). Every refusal is one line (exit 2), and nothing is written then.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

from trainer.evaluation.export_module import build_core, metadata, save_onnx, save_torchscript
from trainer.evaluation.policy import load_policy_files
from trainer.runtime.checkpoint import CheckpointError, absolute, list_checkpoints, read_manifest
from trainer.runtime.run_dir import CHECKPOINTS_DIR

EXIT_BAD_INPUT = 2
ONNX_EXTRA = "pip install -e '.[onnx]'"


class ExportError(ValueError):
    """An export that cannot be made from these arguments; the message names the path and the fix."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer.export", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, help="a checkpoint, or a trainer.train run directory (its latest)")
    p.add_argument("--agent", type=int, help="of a population checkpoint: the agent to export, 0 .. K-1")
    p.add_argument("--out", type=Path, required=True, help="the TorchScript file to write (e.g. policy.pt)")
    p.add_argument("--onnx", type=Path, help="also write the policy as ONNX to this file (the onnx extra)")
    return p


def _stage(flag: str, path: Path) -> Path:
    """A temporary file beside ``path`` (proving its folder can be written), renamed over ``path`` at the end.

    Raises:
        ExportError: ``path`` is a folder, or its folder is missing or cannot be written.
    """
    if path.is_dir():
        raise ExportError(f"{flag} {path}: a folder; give the file to write, e.g. {flag} {path / 'policy.pt'}")
    folder = path.parent
    if not folder.is_dir():
        raise ExportError(f"{flag} {path}: the folder {folder} does not exist; create it or write elsewhere")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ExportError(f"{flag} {path}: the folder {folder} cannot be written ({exc.strerror})") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file, not mkstemp's owner-only mode
    return Path(tmp)


def _check_outputs(args: argparse.Namespace) -> None:
    if args.onnx is None:
        return
    if args.onnx.resolve() == args.out.resolve():
        raise ExportError(f"--onnx {args.onnx}: the same file as --out; give the ONNX file another name")
    if importlib.util.find_spec("onnx") is None:
        raise ExportError(f"--onnx needs the onnx package, which is not installed: {ONNX_EXTRA}")


def _checkpoint(path: Path) -> Path:
    """``path``, or the latest checkpoint of the ``trainer.train`` run directory ``path``."""
    if not (path / CHECKPOINTS_DIR).is_dir():
        return path
    found = list_checkpoints(path / CHECKPOINTS_DIR)
    if not found:
        raise ExportError(f"{path / CHECKPOINTS_DIR}: the run has no checkpoint yet")
    return found[-1]


def export(args: argparse.Namespace, staged: dict[Path, Path]) -> str:
    """Write the files into their staged temporary paths; returns what was exported, in words.

    Raises:
        ExportError: a checkpoint that cannot be exported, or an output that cannot be written.
    """
    _check_outputs(args)
    staged[args.out] = _stage("--out", args.out)
    if args.onnx is not None:
        staged[args.onnx] = _stage("--onnx", args.onnx)
    checkpoint = _checkpoint(Path(absolute(args.checkpoint)))
    try:
        files, _ = load_policy_files(checkpoint, usable=True, agent=args.agent)
        core = build_core(files, args.agent or 0)
        hashes = {rel: entry["sha256"] for rel, entry in read_manifest(checkpoint)["files"].items()}
    except (CheckpointError, ValueError) as exc:
        raise ExportError(str(exc)) from None
    meta = metadata(files, args.agent, checkpoint, hashes, core)
    try:
        save_torchscript(core, meta, staged[args.out])
        if args.onnx is not None:
            save_onnx(core, meta, staged[args.onnx])
    except OSError as exc:
        raise ExportError(f"{exc.filename or args.out}: cannot be written ({exc.strerror or exc})") from None
    agent = "" if args.agent is None else f" (agent {args.agent}, seed {meta['seed']})"
    return f"{checkpoint}{agent}: {len(meta['tickers'])} tickers, at least {meta['window']} rows of prices"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    staged: dict[Path, Path] = {}
    try:
        what = export(args, staged)
        for path, tmp in staged.items():
            os.replace(tmp, path)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
    print(f"exported {what}")
    for flag, path in (("torchscript", args.out), ("onnx", args.onnx)):
        if path is not None:
            print(f"{flag}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
