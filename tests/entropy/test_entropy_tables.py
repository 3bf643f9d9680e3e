"""CDF tables: exact equality with CompressAI's GaussianConditional, quantizers, validation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from rans_testutil import compressai_gc

from cod_fast.entropy import (
    CdfTables,
    GaussianConditionalTables,
    counts_to_quantized_cdf,
    default_scale_table,
    pmf_to_quantized_cdf,
)

CASES = [
    (None, 1e-9),
    ([0.5, 1.0, 3.0, 10.0], 1e-9),
    ([0.11, 0.2, 40.0], 1e-6),
    ([1.0, 2.0, 4.0, 8.0, 16.0, 32.0], 1e-3),
    ([0.3], 1e-9),
]


@pytest.fixture(scope="module")
def default_pair():
    return compressai_gc(), GaussianConditionalTables()


@pytest.mark.parametrize("scale_table,tail_mass", CASES)
def test_gaussian_tables_equal_compressai(scale_table, tail_mass, default_pair):
    if scale_table is None:
        gc, ours = default_pair
    else:
        gc = compressai_gc(scale_table, tail_mass)
        ours = GaussianConditionalTables(scale_table, tail_mass=tail_mass)
    assert ours.quantized_cdf.dtype == torch.int32
    assert torch.equal(ours.quantized_cdf, gc._quantized_cdf)
    assert torch.equal(ours.cdf_length, gc._cdf_length)
    assert torch.equal(ours.offset, gc._offset)
    assert torch.equal(ours.scale_table, gc.scale_table)


def test_default_scale_table_is_compressais(default_pair):
    from compressai.models.base import get_scale_table

    assert torch.equal(default_scale_table(), get_scale_table())
    assert default_pair[1].n_tables == 64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_build_indexes_equal_compressai(dtype, default_pair):
    gc, ours = default_pair
    torch.manual_seed(0)
    special = torch.tensor([0.0, -1.0, 1e-9, 0.11, 0.1100001, 256.0, 300.0, float("inf"), float("nan")])
    scales = torch.cat([torch.exp(torch.randn(4000) * 3), special, gc.scale_table]).to(dtype)
    scales = scales.reshape(1, -1, 1)
    got = ours.build_indexes(scales)
    assert got.dtype == torch.int32 and got.shape == scales.shape
    assert torch.equal(got, gc.build_indexes(scales))


def test_pmf_to_quantized_cdf_equals_compressai():
    from compressai._CXX import pmf_to_quantized_cdf as ref

    rng = np.random.default_rng(1)
    for k in [1, 2, 5, 40, 700]:
        for zeros in [0, 1, k // 3]:
            p = rng.random(k).astype(np.float32) ** 4
            p[rng.choice(k, size=zeros, replace=False)] = 0
            if p.sum() == 0:
                p[0] = 1
            p /= p.sum()
            assert pmf_to_quantized_cdf(p).tolist() == ref(p.tolist(), 16)


def test_from_pmfs_matches_compressai_path():
    from compressai._CXX import pmf_to_quantized_cdf as ref

    pmfs = [np.array([0.2, 0.5, 0.25], np.float32), np.array([1e-12, 0.999, 1e-4, 0, 0], np.float32)]
    tables = CdfTables.from_pmfs(pmfs, offsets=[-1, 3], tail_mass=[0.05, 1e-9])
    for t, (p, tail) in enumerate(zip(pmfs, [0.05, 1e-9])):
        row = ref(np.append(p, np.float32(tail)).tolist(), 16)
        assert tables.quantized_cdf[t, : len(row)].tolist() == row
        assert int(tables.cdf_length[t]) == len(p) + 2
    assert tables.offset.tolist() == [-1, 3]
    assert tables.quantized_cdf.shape == (2, 7)


def test_counts_to_quantized_cdf_properties():
    rng = np.random.default_rng(2)
    for k in [1, 3, 17, 300]:
        counts = rng.integers(0, 1000, size=k)
        counts[rng.integers(0, k)] = 5
        cdf = counts_to_quantized_cdf(counts)
        freq = np.diff(cdf)
        assert cdf[0] == 0 and cdf[-1] == 65536 and len(cdf) == k + 2
        assert np.all((freq[:-1] > 0) == (counts > 0))  # every observed symbol codable
        assert freq[-1] == 1  # escape
        # proportional: within one unit of the ideal share after the floors of one
        ideal = (65535 - (counts > 0).sum()) * counts / counts.sum() + (counts > 0)
        assert np.all(np.abs(freq[:-1] - ideal) < 1.0 + 1e-9)
    assert counts_to_quantized_cdf([5]).tolist() == [0, 65535, 65536]


def test_from_counts_round_trip_and_zero_probability():
    tables = CdfTables.from_counts([np.array([3, 0, 9]), np.array([1])], offsets=[10, -2])
    sym = torch.tensor([10, 12, 12, -2, -2, 100, -50, 0], dtype=torch.int32)
    idx = torch.tensor([0, 0, 0, 1, 1, 0, 1, 1], dtype=torch.int32)
    assert torch.equal(tables.decode(tables.encode(sym, idx), idx), sym)
    with pytest.raises(ValueError, match="probability 0"):
        tables.encode(torch.tensor([11]), torch.tensor([0]))
    with pytest.raises(ValueError, match="probability 0"):
        tables.compat_encode(torch.tensor([11]), torch.tensor([0]))


@pytest.mark.parametrize(
    "cdf,length,match",
    [
        ([[0, 65536]], [3], "cdf_length"),
        ([[0, 65535]], [2], "end at 65536"),
        ([[1, 65536]], [2], "start at 0"),
        ([[0, 40000, 30000, 65536]], [4], "decreases"),
        ([[0, 65536]], [1], "cdf_length"),
    ],
)
def test_bad_tables_raise(cdf, length, match):
    with pytest.raises(ValueError, match=match):
        CdfTables(cdf, length, [0] * len(length))


def test_bad_table_arguments():
    with pytest.raises(ValueError):
        CdfTables([[0, 65536]], [2, 2], [0])
    with pytest.raises(TypeError):
        CdfTables([[0.0, 65536.0]], [2], [0])
    with pytest.raises(ValueError):
        CdfTables.from_counts([np.array([0, 0])], [0])
    with pytest.raises(ValueError):
        CdfTables.from_counts([np.array([-1, 3])], [0])
    with pytest.raises(ValueError):
        GaussianConditionalTables([2.0, 1.0])
    with pytest.raises(ValueError):
        pmf_to_quantized_cdf([0.0, 0.0])
    with pytest.raises(ValueError):
        pmf_to_quantized_cdf([float("nan"), 1.0])
