"""The rANS coders at the benchmark's size (2**18 Gaussian symbols, ``bench/test_bench_rans.py``):
byte equality with CompressAI both ways and multi-threaded round trips. The benchmark file runs the
same operations for timing only; this is where CI checks them."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from cod_fast.entropy import GaussianConditionalTables

N = 1 << 18


@pytest.fixture(scope="module")
def case():
    gen = torch.Generator().manual_seed(0)
    scales = torch.exp(torch.empty(N).uniform_(np.log(0.11), np.log(256.0), generator=gen))
    symbols = torch.round(torch.randn(N, generator=gen) * scales).to(torch.int32)
    tables = GaussianConditionalTables()
    return tables, symbols, tables.build_indexes(scales)


def test_compat_coder_equals_compressai_at_scale(case) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from compressai import ans
    tables, symbols, indexes = case
    lists = (indexes.tolist(), tables.quantized_cdf.tolist(), tables.cdf_length.tolist(), tables.offset.tolist())
    ours = tables.compat_encode(symbols, indexes)
    assert ans.RansEncoder().encode_with_indexes(symbols.tolist(), *lists) == ours
    assert ans.RansDecoder().decode_with_indexes(ours, *lists) == symbols.tolist()
    assert np.array_equal(tables.compat_decode(ours, indexes), symbols.numpy())


def test_fast_coder_round_trip_at_scale(case) -> None:
    tables, symbols, indexes = case
    one = tables.encode(symbols, indexes, threads=1)
    assert tables.encode(symbols, indexes, threads=2) == one  # the stream does not depend on threads
    for threads in (1, 2):
        assert torch.equal(tables.decode(one, indexes, threads=threads), symbols)
