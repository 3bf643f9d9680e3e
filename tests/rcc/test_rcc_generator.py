"""Shared randomness: Philox4x32-10 known answers, bit equality reference vs C++, normal quality."""
import math

import numpy as np
import pytest
import torch

from cod_fast import _ext
from cod_fast.rcc import reference as ref

_C = _ext.cpu_ext()
rcc_cpp = getattr(_C, "rcc", None)
needs_cpp = pytest.mark.skipif(rcc_cpp is None, reason="cod_fast._C.rcc is not built")

# Random123's published known-answer vectors (counter, key, output).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]

# (seed, step, stream, c1, start) covering the extremes of every field of key and counter.
KEYS = [
    (0, 0, 0, 0, 0),
    (2**64 - 1, 2**32 - 1, 0xFFFFFFFF, 0xFFFFFFFF, 2**34 - (1 << 14)),  # last counters
    (0x0123456789ABCDEF, 142, 7, 65535, 123457),
    (2**32, 1, 0xFFFFFFFE, 0x80000000, 3),
    (987654321, 77, 3, 12, 2**33 + 1),
]


@pytest.mark.parametrize("ctr,key,out", KAT)
def test_philox_known_answers_reference(ctr, key, out):
    got = ref.philox4x32_10(*(torch.tensor(c, dtype=torch.int64) for c in ctr), *key)
    assert tuple(int(g) for g in got) == out


@needs_cpp
@pytest.mark.parametrize("ctr,key,out", KAT)
def test_philox_known_answers_cpp(ctr, key, out):
    assert tuple(rcc_cpp.philox_block(*ctr, *key)) == out


@needs_cpp
@pytest.mark.parametrize("seed,step,stream,c1,start", KEYS)
def test_words_reference_equals_cpp(seed, step, stream, c1, start):
    n = 512
    want = rcc_cpp.philox_words(seed, step, stream, c1, start, n)
    got = ref.stream_words(seed, step, stream, c1, torch.arange(start, start + n)).numpy()
    np.testing.assert_array_equal(got.astype(np.uint32), want)


@needs_cpp
@pytest.mark.parametrize("seed,step,stream,c1,start", KEYS)
def test_normals_reference_equals_cpp_bitwise(seed, step, stream, c1, start):
    n = 1 << 14  # about 55 draws in the erfinv tail branch per key
    want = rcc_cpp.normals(seed, step, stream, c1, start, n)
    got = ref.normals(seed, step, stream, c1, start, n).numpy()
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@needs_cpp
def test_tail_branch_is_exercised_and_matches():
    n = 1 << 16
    r = ref.stream_words(5, 6, 7, 8, torch.arange(n))
    t = ref.uniform(r)
    w = -ref.log_pos(t * (2.0 - t))
    assert int((w >= 5.0).sum()) > 100
    z = ref.normal(r).numpy()
    np.testing.assert_array_equal(z.view(np.uint32), rcc_cpp.normals(5, 6, 7, 8, 0, n).view(np.uint32))


def test_log_pos_accuracy():
    a = torch.cat([torch.logspace(-31 * math.log10(2), 15, 20001, dtype=torch.float32),
                   torch.linspace(0.5, 2.0, 20001, dtype=torch.float32)])
    got = ref.log_pos(a).double()
    want = torch.log(a.double())
    ulp = torch.finfo(torch.float32).eps * want.abs().clamp_min(2**-20)
    assert float(((got - want).abs() / ulp).max()) <= 2.0


def _ks_stat(sorted_x: torch.Tensor, cdf: torch.Tensor) -> float:
    n = sorted_x.numel()
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - cdf, cdf - (i - 1) / n).max())


@needs_cpp
def test_normal_quality_moments_and_ks():
    n = 1 << 20
    z = torch.from_numpy(rcc_cpp.normals(2024, 1, 0, 0, 0, n)).double()
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / n)
    assert abs(float((z**3).mean())) < 5 * math.sqrt(15 / n)
    assert abs(float((z**4).mean()) - 3) < 5 * math.sqrt(96 / n)
    d = _ks_stat(torch.sort(z).values, torch.special.ndtr(torch.sort(z).values))
    assert d < 1.63 / math.sqrt(n)  # Kolmogorov-Smirnov, alpha = 0.01
    assert float(z.abs().max()) < 6.2  # t >= 2^-31 bounds the tails


def test_exponential_quality_ks():
    n = 1 << 18
    r = ref.stream_words(11, 3, 0, ref.ARRIVAL_COUNTER_HI, torch.arange(n))
    e = ref.exp1_fixed(r).double() / 2**32
    assert abs(float(e.mean()) - 1) < 5 / math.sqrt(n)
    x = torch.sort(e).values
    assert _ks_stat(x, 1 - torch.exp(-x)) < 1.63 / math.sqrt(n)


@needs_cpp
@pytest.mark.parametrize("d", [1, 5, 31, 32, 33, 100])
def test_log_weights_reference_equals_cpp_kernels(d):
    mu = torch.randn(d, generator=torch.Generator().manual_seed(d)) * 0.7
    want = ref.log_weights(mu, 99, 4, 2, 10, 74).numpy()
    impls = ["generic"] + (["avx2"] if rcc_cpp.avx2_supported() else [])
    for impl in impls:
        got = rcc_cpp.log_weights(mu.numpy(), 99, 4, 2, 10, 74, impl)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=impl)


@needs_cpp
def test_log_weights_match_float64_dot():
    d = 300
    mu = torch.randn(d, generator=torch.Generator().manual_seed(1))
    got = torch.from_numpy(rcc_cpp.log_weights(mu.numpy(), 3, 0, 0, 0, 50, "auto")).double()
    z = ref.candidates(3, 0, 0, torch.arange(50), d).double()
    want = z @ mu.double()
    tol = 8 * d * torch.finfo(torch.float32).eps * (z.abs() @ mu.double().abs())
    assert bool(((got - want).abs() <= tol).all())


@needs_cpp
@pytest.mark.parametrize("dim,seed,step", [(1, 0, 0), (7, 3, 1), (1000, 2**64 - 1, 2**32 - 1)])
def test_permutation_reference_equals_cpp(dim, seed, step):
    want = rcc_cpp.permutation(seed, step, dim)
    got = ref.permutation(seed, step, dim).numpy()
    np.testing.assert_array_equal(got, want)
    assert sorted(got.tolist()) == list(range(dim))
