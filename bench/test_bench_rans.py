"""pytest-benchmark micro-benchmarks of the rANS coders against CompressAI's raw API (same run).

    flock /tmp/cod_fast_bench.lock .venv/bin/pytest bench/test_bench_rans.py --benchmark-enable

With the project's default ``--benchmark-disable`` each case runs once. The assertions only guard
the timings (a benchmark of a wrong result is no benchmark): CI checks the same cases in
``tests/entropy/test_rans_large.py`` (this folder is outside ``testpaths``).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from bench_common import gaussian_case

from cod_fast.entropy import GaussianConditionalTables

N = 1 << 18


@pytest.fixture(scope="module")
def case():
    symbols, scales = gaussian_case(N, 0)
    tables = GaussianConditionalTables()
    indexes = tables.build_indexes(scales)
    lists = (
        symbols.tolist(),
        indexes.tolist(),
        tables.quantized_cdf.tolist(),
        tables.cdf_length.tolist(),
        tables.offset.tolist(),
    )
    return tables, symbols, indexes, lists


def _ans():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from compressai import ans
    return ans


def test_compressai_raw_encode(benchmark, case):
    tables, symbols, indexes, lists = case
    data = benchmark(lambda: _ans().RansEncoder().encode_with_indexes(*lists))
    assert data == tables.compat_encode(symbols, indexes)


def test_compressai_raw_decode(benchmark, case):
    tables, symbols, indexes, lists = case
    data = tables.compat_encode(symbols, indexes)
    sl, il, cl, ll, ol = lists
    out = benchmark(lambda: _ans().RansDecoder().decode_with_indexes(data, il, cl, ll, ol))
    assert out == sl


def test_cod_fast_compat_encode(benchmark, case):
    tables, symbols, indexes, _ = case
    data = benchmark(lambda: tables.compat_encode(symbols, indexes))
    assert np.array_equal(tables.compat_decode(data, indexes), symbols.numpy())


def test_cod_fast_compat_decode(benchmark, case):
    tables, symbols, indexes, _ = case
    data = tables.compat_encode(symbols, indexes)
    out = benchmark(lambda: tables.compat_decode(data, indexes))
    assert np.array_equal(out, symbols.numpy())


@pytest.mark.parametrize("threads", [1, 2])
def test_cod_fast_fast_encode(benchmark, case, threads):
    tables, symbols, indexes, _ = case
    data = benchmark(lambda: tables.encode(symbols, indexes, threads=threads))
    assert torch.equal(tables.decode(data, indexes), symbols)


@pytest.mark.parametrize("threads", [1, 2])
def test_cod_fast_fast_decode(benchmark, case, threads):
    tables, symbols, indexes, _ = case
    data = tables.encode(symbols, indexes)
    out = benchmark(lambda: tables.decode(data, indexes, threads=threads))
    assert torch.equal(out, symbols)
