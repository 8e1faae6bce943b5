"""A reader for the IDX format of (Fashion-)MNIST, plain or gzipped."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from softlabels.errors import DataError

#: IDX type code -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
#: magic numbers of uint8 image files (3 dims) and uint8 label files (1 dim).
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

_REFETCH = "re-download the file (or reinstall the package that provides it)"


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise DataError(f"{path} is a truncated or corrupt gzip file ({err}); {_REFETCH}") from None
    return raw


def read_idx(path: str | Path, expected_magic: int | None = None) -> torch.Tensor:
    """Read an IDX file (gzip detected from its first bytes) into a tensor.

    Args:
        path: the file.
        expected_magic: e.g. 2051 (uint8 images) or 2049 (uint8 labels); None accepts any IDX type.
    Returns:
        tensor of shape ``dims`` from the header; uint8 for type 0x08, else int8/int16/int32/
        float32/float64 (converted to native byte order).
    Raises:
        DataError naming the file when the magic number, the header or the length is wrong.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path} is truncated ({len(raw)} bytes, no IDX header); {_REFETCH}")
    magic = int.from_bytes(raw[:4], "big")
    type_code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or type_code not in IDX_DTYPES or ndim == 0:
        raise DataError(f"{path} is not an IDX file (magic number {magic}); {_REFETCH}")
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f"{path}: IDX magic number {magic}, expected {expected_magic}; {_REFETCH}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (header needs {header} bytes, file has {len(raw)}); {_REFETCH}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[type_code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "corrupt (too long)"
        raise DataError(f"{path} is {what}: header says {dims} -> {expected} bytes, file has {len(raw)}; {_REFETCH}")
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: str | Path, tensor: torch.Tensor, compress: bool | None = None) -> Path:
    """Write a uint8 tensor as an IDX file (gzipped when ``compress`` or the name ends in .gz)."""
    path = Path(path)
    array = tensor.detach().cpu().numpy()
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx writes uint8 tensors only, got {array.dtype}")
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=1)
    path.write_bytes(data)
    return path
