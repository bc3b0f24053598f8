"""trainer.runtime.paths: output folders and remote storage refused before anything is written, by name."""

from __future__ import annotations

import errno
import os

import pytest

from trainer.runtime.paths import OutputPathError, check_output_dir, check_remote_storage, os_error_text


def test_a_file_in_the_way_is_named(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    check_output_dir(tmp_path / "a" / "b" / "c", "--out")  # a new path under a folder: fine
    check_output_dir(tmp_path, "--out")
    with pytest.raises(OutputPathError) as info:
        check_output_dir(afile / "run" / "deeper", "--out")
    assert str(info.value) == (
        f"{afile / 'run' / 'deeper'}: {afile} is a file, not a directory; pass a directory (or a new path) as --out"
    )
    with pytest.raises(OutputPathError) as info:
        check_output_dir(afile, "--storage")
    assert str(info.value) == f"{afile}: is a file, not a directory; pass a directory (or a new path) as --storage"
    link = tmp_path / "gone"
    link.symlink_to(tmp_path / "missing")
    with pytest.raises(OutputPathError) as info:
        check_output_dir(link / "run", "--out")
    assert str(info.value) == (
        f"{link / 'run'}: {link} is a broken symbolic link; pass a directory (or a new path) as --out"
    )


def test_a_folder_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    # the tests may run as root, who may write anywhere: the permission the check reads is simulated
    monkeypatch.setattr(os, "access", lambda path, mode: str(path) != str(tmp_path))
    with pytest.raises(OutputPathError) as info:
        check_output_dir(tmp_path / "run", "--out")
    assert str(info.value) == (
        f"{tmp_path / 'run'}: {tmp_path} is not writable (permission denied); pass a directory you can write in as "
        "--out"
    )


def test_an_unknown_storage_scheme_is_refused_without_network():
    with pytest.raises(OutputPathError) as info:
        check_remote_storage("foo://bucket/results", "--storage")
    assert str(info.value).startswith("foo://bucket/results: cannot reach this storage (")
    assert str(info.value).endswith(
        "); check the bucket name, the credentials and the network, or pass a local folder as --storage"
    )


def test_an_unresolvable_bucket_is_refused_with_pyarrows_reason(monkeypatch):
    import pyarrow.fs

    class Unreachable:
        @staticmethod
        def from_uri(uri):
            raise OSError(
                "When resolving region for bucket 'no-such-bucket': AWS Error NETWORK_CONNECTION during HeadBucket "
                "operation: curlCode: 6, Couldn't resolve host name"
            )

    monkeypatch.setattr(pyarrow.fs, "FileSystem", Unreachable)
    with pytest.raises(OutputPathError) as info:
        check_remote_storage("s3://no-such-bucket/sweeps", "--storage")
    assert str(info.value) == (
        "s3://no-such-bucket/sweeps: cannot reach this storage (When resolving region for bucket 'no-such-bucket': "
        "AWS Error NETWORK_CONNECTION during HeadBucket operation: curlCode: 6, Couldn't resolve host name); check "
        "the bucket name, the credentials and the network, or pass a local folder as --storage"
    )


def test_os_error_text():
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/run/progress.jsonl")
    assert os_error_text(full) == "/data/run/progress.jsonl: No space left on device"
    assert os_error_text(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) == "No space left on device"
