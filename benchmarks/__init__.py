"""Speed and memory benchmarks (``python -m benchmarks.<name>``); not timed tests."""

from __future__ import annotations

import argparse
from pathlib import Path

from trainer.runtime.cli_types import whole_number

# An argparse type: a whole number >= 1 (a bad value is argparse's one-line usage error, exit 2).
positive_int = whole_number(1)


def json_path(text: str) -> Path:
    """An argparse type for ``--json FILE``: its folder must exist, checked before minutes of measuring."""
    path = Path(text)
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: folder {path.parent} does not exist; create it or choose another")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name for the JSON results")
    return path


def existing_file(text: str) -> Path:
    """An argparse type: a file that exists (checked before minutes of measuring)."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return Path(text)
