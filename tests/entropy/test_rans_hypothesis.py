"""Property tests: random tables and symbols round-trip through both formats; random corruption
and random byte strings never crash the decoders (they decode or raise BitstreamError)."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cod_fast.entropy import BitstreamError, CdfTables

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def coding_case(draw):
    n_tables = draw(st.integers(1, 4))
    counts = [
        np.array(draw(st.lists(st.integers(0, 50), min_size=1, max_size=40)), dtype=np.int64)
        for _ in range(n_tables)
    ]
    for c in counts:
        if c.sum() == 0:
            c[0] = 1
    offsets = draw(st.lists(st.integers(-100, 100), min_size=n_tables, max_size=n_tables))
    tables = CdfTables.from_counts(counts, offsets)
    n = draw(st.integers(0, 300))
    idx = np.array(draw(st.lists(st.integers(0, n_tables - 1), min_size=n, max_size=n)), dtype=np.int32)
    sym = np.empty(n, dtype=np.int32)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    for i, t in enumerate(idx):
        if rng.random() < 0.1:  # escaped: outside the table's range
            sym[i] = offsets[t] + int(rng.choice([-1, 1])) * int(rng.integers(len(counts[t]), 10**6))
        else:  # a symbol with non-zero count
            sym[i] = offsets[t] + int(rng.choice(np.flatnonzero(counts[t])))
    seg = draw(st.integers(1, 64))
    return tables, sym, idx, seg


@SETTINGS
@given(coding_case())
def test_round_trip(case):
    tables, sym, idx, seg = case
    fast = tables.encode(sym, idx, threads=2, segment_symbols=seg)
    assert np.array_equal(tables.decode(fast, idx, threads=3).numpy(), sym)
    compat = tables.compat_encode(sym, idx)
    assert np.array_equal(tables.compat_decode(compat, idx), sym)


@SETTINGS
@given(coding_case(), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4))
def test_corruption_never_crashes(case, edits):
    tables, sym, idx, seg = case
    for data, decode in (
        (tables.encode(sym, idx, segment_symbols=seg), tables.decode),
        (tables.compat_encode(sym, idx), tables.compat_decode),
    ):
        bad = bytearray(data)
        for pos, val in edits:
            bad[pos % len(bad)] = val
        try:
            out = decode(bytes(bad), idx)
            assert len(out) == len(idx)
        except BitstreamError:
            pass


@SETTINGS
@given(st.binary(max_size=200), st.integers(0, 50))
def test_random_bytes_never_crash(data, n):
    tables = CdfTables.from_counts([np.array([5, 1, 0, 3])], [0])
    idx = torch.zeros(n, dtype=torch.int32)
    for decode in (tables.decode, tables.compat_decode):
        try:
            decode(data, idx)
        except BitstreamError:
            pass
