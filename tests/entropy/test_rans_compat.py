"""CompressAI-compatible rANS: byte equality with compressai.ans and decoding its streams."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from rans_testutil import gaussian_symbols, py_compat_encode

from cod_fast.entropy import BitstreamError, GaussianConditionalTables, compat_decode, compat_encode


@pytest.fixture(scope="module")
def tables():
    return GaussianConditionalTables()


@pytest.fixture(scope="module")
def raw_args(tables):
    return (
        tables.quantized_cdf.tolist(),
        tables.cdf_length.tolist(),
        tables.offset.tolist(),
    )


def _inputs(tables, n, seed):
    sym, scales = gaussian_symbols(n, seed)
    idx = tables.build_indexes(scales).numpy()
    rng = np.random.default_rng(seed)
    far = rng.choice(n, size=max(1, n // 50), replace=False)
    sym[far] = rng.integers(-(10**6), 10**6, size=far.size)  # escapes with up to 6 nibbles
    # A long escape payload (7 nibbles). CompressAI's encoder loops forever once a payload needs
    # 8 nibbles (its nibble count shifts a uint32 by 32), so references stay below 2**28.
    sym[0] = 2**26 + 12345
    return sym, idx


@pytest.mark.parametrize("n,seed", [(64, 0), (1000, 1), (20000, 2)])
def test_bytes_equal_compressai(tables, raw_args, n, seed):
    from compressai import ans

    sym, idx = _inputs(tables, n, seed)
    ref = ans.RansEncoder().encode_with_indexes(sym.tolist(), idx.tolist(), *raw_args)
    # Same bytes from lists, numpy arrays and tensors.
    assert compat_encode(sym.tolist(), idx.tolist(), *raw_args) == ref
    assert compat_encode(sym, idx, tables.quantized_cdf, tables.cdf_length, tables.offset) == ref
    assert tables.compat_encode(torch.from_numpy(sym), torch.from_numpy(idx)) == ref
    # We decode CompressAI's stream, and CompressAI decodes ours (the same bytes).
    out = compat_decode(ref, idx, *raw_args)
    assert out.dtype == np.int32 and np.array_equal(out, sym)
    back = ans.RansDecoder().decode_with_indexes(ref, idx.tolist(), *raw_args)
    assert back == sym.tolist()


def test_ragged_cdf_lists(tables, raw_args):
    from compressai import ans

    cdfs, lengths, offsets = raw_args
    ragged = [row[:n] for row, n in zip(cdfs, lengths)]
    sym, idx = _inputs(tables, 500, 3)
    ref = ans.RansEncoder().encode_with_indexes(sym.tolist(), idx.tolist(), ragged, lengths, offsets)
    assert compat_encode(sym, idx, ragged, lengths, offsets) == ref
    assert np.array_equal(compat_decode(ref, idx, ragged, lengths, offsets), sym)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5])
def test_tiny_inputs_match_reference_model(tables, raw_args, n):
    # CompressAI's own flush overflows its buffer for such inputs; compare with a Python model of
    # its algorithm instead.
    sym, idx = _inputs(tables, 8, 4)
    sym, idx = sym[:n], idx[:n]
    got = compat_encode(sym, idx, *raw_args)
    assert got == py_compat_encode(sym, idx, *raw_args)
    assert np.array_equal(compat_decode(got, idx, *raw_args), sym)
    if n == 0:
        assert got == (1 << 31).to_bytes(8, "little")


def test_python_model_agrees_with_compressai(tables, raw_args):
    from compressai import ans

    sym, idx = _inputs(tables, 300, 5)
    assert py_compat_encode(sym, idx, *raw_args) == ans.RansEncoder().encode_with_indexes(
        sym.tolist(), idx.tolist(), *raw_args
    )


def test_extreme_values(tables, raw_args):
    # Payloads of 8 nibbles (CompressAI's encoder hangs on these; its decoder reads them).
    t = 10
    off = int(tables.offset[t])
    maxv = int(tables.cdf_length[t]) - 2
    sym = np.array([off - 2**30, off + maxv + 2**30 - 1, off - 1, off + maxv, 0], dtype=np.int32)
    idx = np.full(sym.size, t, dtype=np.int32)
    data = compat_encode(sym, idx, *raw_args)
    assert data == py_compat_encode(sym, idx, *raw_args)
    assert np.array_equal(compat_decode(data, idx, *raw_args), sym)
    with pytest.raises(ValueError, match="2\\^31"):
        compat_encode([off - 2**30 - 1], [t], *raw_args)


def test_bad_arguments(tables, raw_args):
    with pytest.raises(ValueError, match="indexes"):
        compat_encode([0, 1], [0, 64], *raw_args)
    with pytest.raises(ValueError, match="indexes"):
        compat_encode([0], [-1], *raw_args)
    with pytest.raises(ValueError, match="differ"):
        compat_encode([0, 1], [0], *raw_args)
    with pytest.raises(TypeError):
        compat_encode(np.zeros(3), np.zeros(3, np.int32), *raw_args)
    with pytest.raises(ValueError, match="int32"):
        compat_encode(np.array([2**40]), np.array([0]), *raw_args)
    data = compat_encode([0, 1], [3, 3], *raw_args)
    with pytest.raises(ValueError, match="indexes"):
        compat_decode(data, [3, 99], *raw_args)


def test_truncated_and_corrupted_streams(tables, raw_args):
    sym, idx = _inputs(tables, 300, 6)
    data = compat_encode(sym, idx, *raw_args)
    for cut in sorted({0, 1, 3, 4, 7, 8, 12, len(data) // 2, len(data) - 4, len(data) - 1}):
        with pytest.raises(BitstreamError):
            compat_decode(data[:cut], idx, *raw_args)
    with pytest.raises(BitstreamError):
        compat_decode(data + b"\0\0\0\0", idx, *raw_args)
    rng = np.random.default_rng(0)
    raised = 0
    for _ in range(200):
        bad = bytearray(data)
        bad[rng.integers(len(bad))] ^= 1 << int(rng.integers(8))
        try:
            tables.compat_decode(bytes(bad), idx)
        except BitstreamError:
            raised += 1
    assert raised > 150  # the final-state check catches nearly every flip
