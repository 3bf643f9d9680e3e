"""CompressAI-compatible rANS coding as free functions, and the entropy self-check.

``compat_encode(symbols, indexes, cdfs, cdf_lengths, offsets)`` returns exactly the bytes of
``compressai.ans.RansEncoder().encode_with_indexes`` for the same arguments (including values
outside a table's range, coded with the escape symbol and 4-bit bypass nibbles), and
``compat_decode`` reads its streams. CompressAI writes 32-bit words in host byte order; we always
write little-endian, which is the same bytes on every little-endian host (x86, ARM).
Escape payloads (zig-zag of the out-of-range distance) must stay below 2**31, or ValueError:
CompressAI's decoder cannot return larger ones either. CompressAI's *encoder* never returns for
payloads >= 2**28 (its nibble count shifts a uint32 by 32); we encode those with 8 nibbles, which
CompressAI's decoder reads correctly. Unlike CompressAI, we size the output exactly (its flush
writes past its buffer for 0-3 symbols), and every word read by the decoder is bounds-checked.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._ext import require_cpu_ext
from ._convert import as_cdf_rows, as_int32, as_stream
from .gaussian import GaussianConditionalTables


def _native_tables(cdfs: Any, cdf_lengths: Any, offsets: Any) -> Any:
    rows = as_cdf_rows(cdfs)
    lengths = as_int32(cdf_lengths, "cdf_lengths").reshape(-1)
    offs = as_int32(offsets, "offsets").reshape(-1)
    return require_cpu_ext().rans.Tables(rows, lengths, offs)


def compat_encode(symbols: Any, indexes: Any, cdfs: Any, cdf_lengths: Any, offsets: Any) -> bytes:
    """CompressAI ``RansEncoder().encode_with_indexes`` bytes.

    symbols, indexes: integers [n] (lists, numpy arrays or CPU tensors; flattened);
    cdfs: [n_tables, width] int (ragged lists are padded); cdf_lengths, offsets: [n_tables].
    Empty ``symbols`` give CompressAI's 8-byte empty stream.
    """
    sym = as_int32(symbols, "symbols").reshape(-1)
    idx = as_int32(indexes, "indexes").reshape(-1)
    if sym.size != idx.size:
        raise ValueError(f"symbols ({sym.size}) and indexes ({idx.size}) differ in length")
    tables = _native_tables(cdfs, cdf_lengths, offsets)
    return require_cpu_ext().rans.compat_encode(tables, sym, idx)


def compat_decode(data: Any, indexes: Any, cdfs: Any, cdf_lengths: Any, offsets: Any) -> np.ndarray:
    """Decode a CompressAI rANS stream: numpy.int32 [n] for ``indexes`` [n].

    Raises cod_fast.errors.BitstreamError for a truncated or corrupted stream.
    """
    idx = as_int32(indexes, "indexes").reshape(-1)
    tables = _native_tables(cdfs, cdf_lengths, offsets)
    out = np.empty(idx.size, dtype=np.int32)
    require_cpu_ext().rans.compat_decode(tables, as_stream(data), idx, out)
    return out


def stream_info(data: Any) -> dict:
    """Validated header of a cod_fast rANS stream: version, lanes, n_symbols, segment sizes."""
    return dict(require_cpu_ext().rans.fast_inspect(as_stream(data)))


def selfcheck(n: int = 4096, seed: int = 0) -> str:
    """Round-trip ``n`` Gaussian symbols through both coders; one-line summary, raises on failure."""
    gen = torch.Generator().manual_seed(seed)
    tables = GaussianConditionalTables()
    scales = torch.exp(torch.empty(n).uniform_(np.log(0.11), np.log(256.0), generator=gen))
    symbols = torch.round(torch.randn(n, generator=gen) * scales).to(torch.int32)
    symbols[:4] = torch.tensor([1 << 20, -(1 << 20), 0, 7], dtype=torch.int32)  # escapes too
    indexes = tables.build_indexes(scales)
    compat = tables.compat_encode(symbols, indexes)
    if not np.array_equal(tables.compat_decode(compat, indexes), symbols.numpy()):
        raise RuntimeError("entropy selfcheck: CompressAI-compatible round trip failed")
    fast = tables.encode(symbols, indexes, threads=2, segment_symbols=1024)
    if not torch.equal(tables.decode(fast, indexes, threads=2), symbols):
        raise RuntimeError("entropy selfcheck: fast rANS round trip failed")
    return (
        f"entropy ok: {n} Gaussian symbols, compat {8 * len(compat) / n:.3f} bits/sym, "
        f"fast {8 * len(fast) / n:.3f} bits/sym ({stream_info(fast)['lanes']} lanes)"
    )
