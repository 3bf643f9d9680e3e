"""Index coding: exact round trips, deterministic tables, rate close to the ideal Zipf code."""
import math

import numpy as np
import pytest

from cod_fast import BitstreamError, _ext
from cod_fast.rcc import make_plan
from cod_fast.rcc.index_coding import (
    bucket_counts,
    chunk_parameters,
    decode_indices,
    encode_indices,
    zipf_code_length,
    zipf_exponent,
)

_C = _ext.cpu_ext()
pytestmark = pytest.mark.skipif(
    getattr(_C, "rans", None) is None, reason="cod_fast._C.rans (the rANS coder) is not built"
)


def _zipf_draws(rng, bits, kl, n):
    s = zipf_exponent(kl)
    x = np.arange(1, (1 << bits) + 1, dtype=np.float64)
    p = x**-s
    return rng.choice(1 << bits, size=n, p=p / p.sum()).tolist()


def test_round_trip_mixed_chunks():
    rng = np.random.default_rng(0)
    bits = [16, 16, 15, 12, 0, 3, 1, 2, 16]
    kls = [14.0, 14.0, 13.0, 10.0, 0.0, 1.0, 0.0, 0.5, 13.9]
    for trial in range(20):
        idx = [int(rng.integers(0, 2**b)) if b else 0 for b in bits]
        if trial == 0:
            idx = [(1 << b) - 1 for b in bits]  # every index at its maximum
        if trial == 1:
            idx = [0] * len(bits)
        data = encode_indices(idx, bits, kls)
        assert decode_indices(data, bits, kls) == idx


def test_round_trip_with_plans():
    plans = [make_plan(16384, kl) for kl in (164.0, 0.0, 3.2, 30.0)]
    bits, kls = chunk_parameters(plans)
    assert len(bits) == sum(p.n_chunks for p in plans)
    rng = np.random.default_rng(1)
    idx = [int(rng.integers(0, 2**b)) for b in bits]
    assert decode_indices(encode_indices(idx, bits, kls), bits, kls) == idx


def test_tables_are_pinned():
    """The integer counts are a format: they must never change (pinned values)."""
    c = bucket_counts(16, zipf_exponent(12.0))
    assert len(c) == 17
    assert c[0] == 138619923688 and c[16] == 40636831445
    assert sum(c) <= 2**40 + 17


def test_rate_close_to_ideal_zipf():
    """Bytes against the ideal Zipf code length of the same indices (drawn from the model).

    Two separate costs: the bucket + raw-bits model loses < 0.05 bit per index against the exact
    Zipf code, and the rANS stream adds a fixed overhead (its final states and segment header,
    about 400 bits) plus the 32-bit length header.
    """
    rng = np.random.default_rng(2)
    bits, kl, n = 16, 14.0, 2000
    idx = _zipf_draws(rng, bits, kl, n)
    data = encode_indices(idx, [bits] * n, [kl] * n)
    s = zipf_exponent(kl)
    log2_h = math.log2(float(np.sum(np.arange(1, (1 << bits) + 1, dtype=np.float64) ** -s)))
    ideal = sum(s * math.log2(k + 1) + log2_h for k in idx)
    for k in idx[:3]:
        assert math.isclose(zipf_code_length(k, bits, kl), s * math.log2(k + 1) + log2_h, rel_tol=1e-12)
    counts = np.asarray(bucket_counts(bits, s), dtype=np.float64)
    q = counts / counts.sum()
    model = sum(-math.log2(q[k.bit_length()]) + max(k.bit_length() - 1, 0) for k in idx)
    assert model - ideal < 0.05 * n, (model, ideal)
    assert 8 * len(data) <= model + 0.01 * n + 512 + 32, (8 * len(data), model)
    assert 8 * len(data) >= ideal * 0.97  # cannot beat the model's entropy by much on its own draws


def test_bad_streams_raise_bitstream_error():
    bits, kls = [12, 10], [10.0, 8.0]
    data = encode_indices([1000, 3], bits, kls)
    with pytest.raises(BitstreamError):
        decode_indices(data[:3], bits, kls)
    with pytest.raises(BitstreamError):
        decode_indices(data[:-1], bits, kls)
    with pytest.raises(BitstreamError):
        decode_indices(data + b"\x00", bits, kls)
    with pytest.raises(BitstreamError):
        decode_indices(b"\xff\xff\xff\x7f" + data[4:], bits, kls)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        encode_indices([16], [4], [1.0])  # index does not fit 4 bits
    with pytest.raises(ValueError):
        encode_indices([1], [17], [1.0])
    with pytest.raises(ValueError):
        encode_indices([1], [4], [-1.0])
    with pytest.raises(ValueError):
        encode_indices([1, 2], [4], [1.0])


def test_exponent_matches_diffc_formula():
    for kl in (0.0, 0.5, 3.0, 14.0):
        assert math.isclose(zipf_exponent(kl), 1 + 1 / (kl + math.exp(-1) * math.log(math.e + 1)), rel_tol=1e-15)
