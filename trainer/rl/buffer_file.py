"""The replay buffer's file: arrays streamed into and out of an ``.npz`` (zip of ``.npy``) in bounded pieces,
read without pickle, with a damaged file reported as such (never numpy's misleading decoding errors)."""

from __future__ import annotations

import zipfile
from typing import Any

import numpy as np
from numpy.typing import NDArray

CHUNK_BYTES = 64 * 1024 * 1024  # streamed in pieces of this size: bounded temporary memory


def reason(exc: Exception) -> str:
    # numpy's own messages can mislead here (a non-zip file is reported as pickled data to be loaded with
    # allow_pickle), so name the missing field or just the kind of failure.
    return str(exc.args[0]) if isinstance(exc, KeyError) else type(exc).__name__


def write_npy(zf: zipfile.ZipFile, name: str, shape: tuple[int, ...], dtype: np.dtype, chunks: list[NDArray]) -> None:
    """Write ``chunks`` (C-contiguous, together ``shape``) as member ``name.npy`` of an ``.npz`` archive."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
        np.lib.format.write_array_header_2_0(out, header)
        for chunk in chunks:
            flat = np.ascontiguousarray(chunk).reshape(-1).view(np.uint8)
            for start in range(0, flat.size, CHUNK_BYTES):
                out.write(flat[start : start + CHUNK_BYTES].data)


def open_npy(data: Any, name: str) -> tuple[Any, tuple[int, ...], np.dtype]:
    """Member ``name.npy`` of an open ``NpzFile``: the stream positioned at its data, its shape and dtype."""
    if name not in data.files:
        raise KeyError(f"{name} is not a file in the archive")
    stream = data.zip.open(f"{name}.npy")
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(stream)
        if fortran_order or dtype.hasobject:
            raise ValueError(f"{name} is not a plain C-ordered array")
    except BaseException:
        stream.close()
        raise
    return stream, shape, dtype


def npy_header(data: Any, name: str) -> NDArray:
    """A zero-memory stand-in with member ``name``'s shape and dtype (for the layout and shape checks)."""
    stream, shape, dtype = open_npy(data, name)
    stream.close()
    return np.broadcast_to(np.zeros((), dtype), shape)


def read_npy_into(data: Any, name: str, skip_rows: int, targets: list[NDArray]) -> None:
    """Stream member ``name``'s rows, after the first ``skip_rows``, into ``targets`` (views, in order)."""
    stream, shape, dtype = open_npy(data, name)
    with stream:
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        to_skip = skip_rows * row_bytes
        while to_skip:
            piece = stream.read(min(to_skip, CHUNK_BYTES))
            if not piece:
                raise EOFError(name)
            to_skip -= len(piece)
        for target in targets:
            flat = target.reshape(-1).view(np.uint8)  # a view: targets are contiguous row ranges
            for start in range(0, flat.size, CHUNK_BYTES):
                piece = stream.read(min(CHUNK_BYTES, flat.size - start))
                if len(piece) != min(CHUNK_BYTES, flat.size - start):
                    raise EOFError(name)
                flat[start : start + len(piece)] = np.frombuffer(piece, np.uint8)
        stream.read()  # to the member's end: the zip checks its CRC there
