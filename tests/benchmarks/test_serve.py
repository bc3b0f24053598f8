"""benchmarks.serve's argument checking (no measurement here: the machines are shared)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

pytest.importorskip("ray.serve", reason='Ray Serve is the serve extra: pip install -e ".[serve]"')

from benchmarks.serve import client_counts


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.serve", *args], capture_output=True, text=True, timeout=300
    )


def test_client_counts():
    assert client_counts("1,8,32") == [1, 8, 32]
    for bad in ("0,8", "", "eight", "1,,8"):
        with pytest.raises(
            argparse.ArgumentTypeError, match=r"expected client counts >= 1 separated by commas \(1,8,32\)"
        ):
            client_counts(bad)


def test_bad_arguments_are_refused_before_anything_starts(tmp_path):
    for args, message in [
        (
            ["--requests", "0"],
            "python -m benchmarks.serve: error: argument --requests: expected a whole number >= 1, got 0",
        ),
        (
            ["--clients", "1,0"],
            "python -m benchmarks.serve: error: argument --clients: expected client counts >= 1 "
            "separated by commas (1,8,32), got '1,0'",
        ),
        (
            ["--json", str(tmp_path / "no" / "r.json")],
            f"python -m benchmarks.serve: error: argument --json: "
            f"{tmp_path / 'no' / 'r.json'}: folder {tmp_path / 'no'} does not exist; create it or choose another",
        ),
    ]:
        res = _bench(str(tmp_path), *args)
        assert res.returncode == 2 and res.stderr.strip().splitlines()[-1] == message
    res = _bench(str(tmp_path / "nope"))
    assert res.returncode == 2 and res.stderr.strip() == (
        f"error: {tmp_path / 'nope'}: not found; pass a checkpoint (runs/.../checkpoint_NNNNNN), a run directory or a "
        "sweep directory"
    )
