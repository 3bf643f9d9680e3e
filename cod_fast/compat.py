"""Official GenCodec ``.cod`` files, byte for byte.

An official ``.cod`` file is::

    u16 little-endian  first size field
    u16 little-endian  second size field
    bytes              the VQ indices, ``codebook_bits`` bits each, MSB first, raster order
                       (row-major over the token grid), zero-padded to a whole byte

The token grid is ``(H // s, W // s)`` with ``s = ds if up2x else ds // 2`` (32 for the
0.0039 bpp models): 512x512 at 4 bits -> 16x16 tokens -> 128 bytes.

The height/width quirk. Every official reader unpacks ``W, H = first, second``. The writers differ:

* ``CoD/cod/inference.py`` and ``CoD/downstream/finetuned_one_step_cod.py`` call
  ``write_cod_file(bitstream, H, W, ...)`` on a function whose parameters are ``(width, height)``:
  the file holds **H first, then W**, and the official decoder swaps H and W for non-square
  images (square images, e.g. the 512x512 Kodak crops, are unaffected).
* ``CoD_Lite/finetuned_one_step_codec/inference.py`` calls ``write_cod_file(bitstream, W, H, ...)``:
  the file holds **W first, then H**, which is correct.

Policy: ``write_cod`` reproduces the official bytes exactly for the chosen ``layout``
(``"cod"`` -> H first, the default; ``"cod_lite"`` -> W first). ``read_cod`` interprets the fields
by the same ``layout``, so a file written by a given official writer (or by ``write_cod`` with the
same layout) reads back with the true ``(height, width)``. The two fields are indistinguishable
in the file, so the caller supplies the layout (the orientation of the writer that produced it);
the index count ``(H//s)*(W//s)`` does not depend on the orientation, so the payload length is
checked either way. Our own container (``cod_fast.bitstream``) stores height and width by name
and has no such ambiguity.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

import numpy as np

from .bitstream import MAX_IMAGE_SIDE
from .errors import BitstreamError

Layout = Literal["cod", "cod_lite"]
_LAYOUTS = ("cod", "cod_lite")
_SIZE = struct.Struct("<HH")
#: Largest .cod file read_cod accepts (the payload of a 32768x32768 image at 16 bits/token, s=4).
MAX_COD_BYTES = 4 + (MAX_IMAGE_SIDE // 4) ** 2 * 2


def pack_bits(indices: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers ``indices`` (1-D, each < 2**bits) into ``ceil(n*bits/8)`` bytes,
    MSB first, the last byte zero-padded. Matches the official ``pack_bits``."""
    idx = np.asarray(indices)
    if idx.ndim != 1:
        raise ValueError(f"indices must be 1-D, got shape {idx.shape}")
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    if idx.size == 0:
        return b""
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"indices must be integers, got {idx.dtype}")
    idx = idx.astype(np.int64)
    if idx.min() < 0 or idx.max() >= (1 << bits):
        raise ValueError(f"indices must lie in 0..{(1 << bits) - 1}")
    # bit matrix [n, bits], MSB of each value first; flattening gives the stream bit order
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    bitmat = ((idx[:, None] >> shifts[None, :]) & 1).astype(np.uint8)
    return np.packbits(bitmat.reshape(-1), bitorder="big").tobytes()


def unpack_bits(data: bytes, n: int, bits: int) -> np.ndarray:
    """Read ``n`` values of ``bits`` bits (MSB first) from ``data``: int64 array of shape [n].
    Raises BitstreamError when ``data`` holds fewer than ``n*bits`` bits."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    if n < 0:
        raise ValueError("n must be non-negative")
    need = (n * bits + 7) // 8
    if len(data) < need:
        raise BitstreamError(f"{len(data)} bytes hold fewer than {n} indices of {bits} bits")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    raw = np.frombuffer(bytes(data[:need]), dtype=np.uint8)
    bitvec = np.unpackbits(raw, bitorder="big")[: n * bits].reshape(n, bits).astype(np.int64)
    weights = (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))
    return bitvec @ weights


def token_grid(height: int, width: int, ds: int, up2x: bool) -> tuple[int, int]:
    """Official token grid ``(H // s, W // s)`` with ``s = ds if up2x else ds // 2``."""
    s = ds if up2x else ds // 2
    return height // s, width // s


def indices_bytes(height: int, width: int, ds: int, up2x: bool, codebook_bits: int) -> int:
    """Payload length of an official .cod file for an image of ``height`` x ``width``."""
    h, w = token_grid(height, width, ds, up2x)
    return (h * w * codebook_bits + 7) // 8


@dataclass(frozen=True)
class CodFile:
    """An official .cod file: true ``height``/``width`` (per the layout) and the packed indices."""

    height: int
    width: int
    payload: bytes

    def indices(self, ds: int = 32, up2x: bool = True, codebook_bits: int = 4) -> np.ndarray:
        """The VQ indices as int64 [rows, cols] for a model with stride ``ds``/``up2x``/bits."""
        rows, cols = token_grid(self.height, self.width, ds, up2x)
        return unpack_bits(self.payload, rows * cols, codebook_bits).reshape(rows, cols)


def write_cod(path: Union[str, os.PathLike, None], payload: bytes, height: int, width: int,
              layout: Layout = "cod") -> bytes:
    """Official .cod bytes for packed ``payload`` and the true image size; written to ``path``
    unless it is None. ``layout="cod"`` stores H then W (official CoD writer), ``"cod_lite"``
    stores W then H (official CoD-Lite writer). Returns the bytes."""
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
    for name, v in (("height", height), ("width", width)):
        if not 0 <= v <= 0xFFFF:
            raise ValueError(f"{name} {v} does not fit the .cod u16 field")
    first, second = (height, width) if layout == "cod" else (width, height)
    data = _SIZE.pack(first, second) + bytes(payload)
    if path is not None:
        Path(path).write_bytes(data)
    return data


def read_cod(src: Union[str, os.PathLike, bytes, bytearray, memoryview], layout: Layout = "cod",
             *, ds: int | None = None, up2x: bool = True, codebook_bits: int | None = None) -> CodFile:
    """Parse an official .cod file (path or bytes) into the true ``(height, width)`` and payload.

    ``layout`` names the writer that produced the file (see the module docstring). When ``ds``
    and ``codebook_bits`` are given, the payload length must equal the official length for that
    model; otherwise any payload is accepted. Raises BitstreamError for short or inconsistent files.
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    else:
        p = Path(src)
        size = p.stat().st_size
        if size > MAX_COD_BYTES:
            raise BitstreamError(f"{p} is {size} bytes, larger than any valid .cod file")
        data = p.read_bytes()
    if len(data) < _SIZE.size:
        raise BitstreamError(f".cod data of {len(data)} bytes is shorter than its 4-byte header")
    if len(data) > MAX_COD_BYTES:
        raise BitstreamError(f".cod data of {len(data)} bytes is larger than any valid .cod file")
    first, second = _SIZE.unpack_from(data)
    height, width = (first, second) if layout == "cod" else (second, first)
    if height == 0 or width == 0:
        raise BitstreamError(f".cod header gives an empty image ({height}x{width})")
    payload = data[_SIZE.size:]
    if ds is not None and codebook_bits is not None:
        need = indices_bytes(height, width, ds, up2x, codebook_bits)
        if need == 0:
            raise BitstreamError(f"a {height}x{width} image is smaller than one token of the model")
        if len(payload) != need:
            raise BitstreamError(
                f".cod payload is {len(payload)} bytes; a {height}x{width} image needs {need}")
    return CodFile(height=height, width=width, payload=payload)
