"""Fixed-length packing of VQ indices, bit-compatible with GenCodec ``cod/models/utils/stream_utils.py``.

Layout: index ``i`` occupies bits ``[i*bits, (i+1)*bits)`` of the stream, most significant bit
first, bytes filled from their most significant bit; the last byte is padded with zero bits.
Indices are taken in the order given (the codec passes them in raster order, row by row).
"""
from __future__ import annotations

import numpy as np
import torch

from ...errors import BitstreamError

# Largest index width the packer accepts: codebooks here have 2**4 .. 2**8 entries, and 16 bits
# keeps every index inside a uint16 during (un)packing.
MAX_BITS = 16


def packed_size(n: int, bits: int) -> int:
    """Number of bytes that ``n`` indices of ``bits`` bits occupy: ``ceil(n * bits / 8)``."""
    _check_bits(bits)
    if n < 0:
        raise ValueError(f"index count must be >= 0, got {n}")
    return (n * bits + 7) // 8


def pack_bits(indices: torch.Tensor, bits: int) -> bytes:
    """Pack a 1D integer tensor of indices in ``[0, 2**bits)`` into ``ceil(n*bits/8)`` bytes.

    Raises ``ValueError`` for a tensor that is not 1D integer, or an index out of range.
    """
    _check_bits(bits)
    if not isinstance(indices, torch.Tensor) or indices.ndim != 1:
        raise ValueError("indices must be a 1D tensor")
    if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise TypeError(f"indices must have an integer dtype, got {indices.dtype}")
    if indices.numel() == 0:
        return b""
    values = indices.detach().to(device="cpu", dtype=torch.int64).numpy()
    if values.min() < 0 or values.max() >= (1 << bits):
        raise ValueError(f"indices must lie in [0, {1 << bits}) to be packed on {bits} bits")
    # (n, bits) matrix of bits, most significant first; packbits pads the tail with zeros.
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    bit_matrix = ((values[:, None] >> shifts[None, :]) & 1).astype(np.uint8)
    return np.packbits(bit_matrix.reshape(-1)).tobytes()


def unpack_bits(data: bytes | bytearray | memoryview | list[int], n: int, bits: int) -> torch.Tensor:
    """Unpack exactly ``n`` indices of ``bits`` bits: the inverse of :func:`pack_bits`.

    ``data`` must hold exactly ``ceil(n*bits/8)`` bytes with zero padding bits, else
    :class:`~cod_fast.errors.BitstreamError`. Returns an int64 tensor of shape ``(n,)``.
    """
    expected = packed_size(n, bits)
    if isinstance(data, list):
        if any((not isinstance(b, int)) or b < 0 or b > 255 for b in data):
            raise BitstreamError("a byte list must hold integers in [0, 255]")
        data = bytes(data)
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    if buf.size != expected:
        raise BitstreamError(
            f"index stream has {buf.size} bytes, expected {expected} for {n} indices of {bits} bits"
        )
    if n == 0:
        return torch.zeros(0, dtype=torch.int64)
    all_bits = np.unpackbits(buf)
    if all_bits[n * bits:].any():
        raise BitstreamError("index stream has non-zero padding bits")
    bit_matrix = all_bits[: n * bits].reshape(n, bits).astype(np.int64)
    weights = (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))
    return torch.from_numpy(bit_matrix @ weights)


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an int in [1, {MAX_BITS}], got {bits!r}")
