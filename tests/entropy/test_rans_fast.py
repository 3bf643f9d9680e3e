"""cod_fast's segmented multi-lane rANS format: round trips, thread independence, rate, errors."""
from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from rans_testutil import gaussian_symbols

from cod_fast.entropy import BitstreamError, GaussianConditionalTables, stream_info


@pytest.fixture(scope="module")
def tables():
    return GaussianConditionalTables()


def _data(tables, n, seed, shape=None):
    sym, scales = gaussian_symbols(n, seed)
    if n:
        sym[:: max(1, n // 7)] += 5000  # some escapes
    sym_t = torch.from_numpy(sym)
    idx = tables.build_indexes(scales)
    if shape is not None:
        sym_t, idx = sym_t.reshape(shape), idx.reshape(shape)
    return sym_t, idx


@pytest.mark.parametrize("n,seg", [(1, 1), (5, 2), (7, 4), (1000, 64), (30001, 4096), (70000, None)])
def test_round_trip_and_thread_independence(tables, n, seg):
    sym, idx = _data(tables, n, n)
    ref = tables.encode(sym, idx, threads=1, segment_symbols=seg)
    for threads in (2, 3, None):
        assert tables.encode(sym, idx, threads=threads, segment_symbols=seg) == ref
    for threads in (1, 2, 5):
        out = tables.decode(ref, idx, threads=threads)
        assert out.dtype == torch.int32 and torch.equal(out, sym)
    info = stream_info(ref)
    assert info["n_symbols"] == n and info["version"] == 1 and info["lanes"] == 4
    assert sum(info["segment_symbols"]) == n
    assert info["header_bytes"] + sum(info["segment_bytes"]) == len(ref)


def test_shapes_and_inputs(tables):
    sym, idx = _data(tables, 2 * 3 * 50, 1, shape=(2, 3, 50))
    data = tables.encode(sym, idx)
    out = tables.decode(data, idx)
    assert out.shape == (2, 3, 50) and torch.equal(out, sym)
    assert tables.encode(sym.numpy(), idx.numpy()) == data
    assert tables.encode(sym.tolist(), idx.tolist()) == data
    assert tables.encode(sym.to(torch.int64), idx.to(torch.int16)) == data
    assert torch.equal(tables.decode(bytearray(data), idx.numpy()), sym)
    assert torch.equal(tables.decode(memoryview(data), idx.tolist()), sym)


def test_empty(tables):
    data = tables.encode(torch.zeros(0, dtype=torch.int32), torch.zeros(0, dtype=torch.int32))
    assert len(data) == 20
    out = tables.decode(data, torch.zeros((0, 4), dtype=torch.int32))
    assert out.shape == (0, 4)
    assert stream_info(data)["n_symbols"] == 0


def test_rate_close_to_compressai(tables):
    sym, idx = _data(tables, 200_000, 9)
    fast = tables.encode(sym, idx)
    compat = tables.compat_encode(sym, idx)
    assert len(fast) <= len(compat) * 1.005


def test_errors(tables):
    sym, idx = _data(tables, 100, 2)
    with pytest.raises(ValueError, match="shape"):
        tables.encode(sym, idx[:-1])
    with pytest.raises(ValueError, match="indexes"):
        tables.encode(sym, torch.full_like(idx, 64))
    with pytest.raises(ValueError, match="threads"):
        tables.encode(sym, idx, threads=0)
    with pytest.raises(ValueError, match="segment_symbols"):
        tables.encode(sym, idx, segment_symbols=0)
    data = tables.encode(sym, idx)
    with pytest.raises(BitstreamError, match="symbols"):
        tables.decode(data, idx[:-1])
    bad_idx = idx.clone()
    bad_idx[50] = -3
    with pytest.raises(ValueError, match="indexes"):
        tables.decode(data, bad_idx)
    with pytest.raises(TypeError):
        tables.decode("not bytes", idx)


def test_bad_indexes_named_by_their_first_position(tables):
    """The decoder checks each segment's indexes before decoding it: the error names the first
    out-of-range position (in a segment's whole groups, its tail, or a later segment) at any
    thread count, and a table number past the end is refused like a negative one."""
    sym, idx = _data(tables, 1001, 3)
    data = tables.encode(sym, idx, segment_symbols=256)
    for pos, value in ((0, 64), (255, -1), (999, 1 << 30), (1000, 64), (600, -2**31)):
        bad = idx.clone()
        bad[pos] = value
        bad[pos + 1 :: 97] = 64  # later bad entries do not hide the first one
        for threads in (1, 2, 3):
            with pytest.raises(ValueError, match=rf"indexes\[{pos}\] = {value} outside \[0, 64\)"):
                tables.decode(data, bad, threads=threads)


def _header(n, segs):
    out = b"CFRS" + bytes([1, 4, 0, 0]) + struct.pack("<QI", n, len(segs))
    return out + b"".join(struct.pack("<II", m, b) for m, b in segs)


def test_hostile_headers(tables):
    idx = torch.zeros(10, dtype=torch.int32)
    cases = [
        b"",
        b"CFRS",
        b"XXXX" + bytes(16),
        b"CFRS" + bytes([2, 4, 0, 0]) + bytes(12),  # version 2
        b"CFRS" + bytes([1, 8, 0, 0]) + bytes(12),  # lanes 8
        _header(10, [(10, 2**32 - 4)]),  # length beyond the stream
        _header(10, [(5, 32)] * 4096)[:100],  # segment table beyond the stream
        _header(10, [(4, 32), (4, 32)]) + bytes(64),  # counts do not add up
        _header(10, [(10, 30)]) + bytes(30),  # not a multiple of 4
        _header(10, [(10, 16)]) + bytes(16),  # shorter than the lane states
        _header(10, [(10, 32)]) + bytes(32),  # states of zero
        _header(10, [(10, 32)]) + bytes(36),  # trailing bytes
        _header(2**62, [(10, 32)]) + bytes(32),
    ]
    for data in cases:
        with pytest.raises(BitstreamError):
            tables.decode(data, idx)


def test_truncation_and_bit_flips(tables):
    sym, idx = _data(tables, 3000, 4)
    data = tables.encode(sym, idx, segment_symbols=1000)
    for cut in range(0, len(data), max(1, len(data) // 97)):
        with pytest.raises(BitstreamError):
            tables.decode(data[:cut], idx)
    rng = np.random.default_rng(1)
    for _ in range(300):
        bad = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            bad[rng.integers(len(bad))] ^= 1 << int(rng.integers(8))
        try:
            tables.decode(bytes(bad), idx, threads=2)
        except BitstreamError:
            pass
