"""The C++ conv_requant kernels (portable, AVX2, AVX-512 VNNI) against the torch int64 reference.

The SIMD kernels take activations and weights as int16 pairs and sum them in int32 chunks of 256
pairs before widening to int64 (csrc/sodec/int_params.cpp); the shapes and values here hit every
edge of that scheme: channel counts that are not multiples of the 4-row microkernel, odd reduction
lengths (a zero-padded last pair), positions that do not fill the last panel, reductions longer
than one chunk, and overflow-adjacent magnitudes (every product at 127 * 32767 with one sign, so
each int32 chunk sum sits next to its 2**31 bound; bias at 2**40, multiplier 2**15 - 1).
"""
import pytest
import torch

from cod_fast._ext import cpu_ext
from cod_fast.int_params.backends import cpu_impls
from cod_fast.models.sodec.integer_params import (
    ACT_MAX,
    INT32_MAX,
    INT32_MIN,
    IntegerConv,
    integer_conv_reference,
    scale_index_reference,
)

HAS_CPP = cpu_ext() is not None and hasattr(cpu_ext(), "sodec") and hasattr(cpu_ext().sodec, "impl_supported")
pytestmark = pytest.mark.skipif(not HAS_CPP, reason="cod_fast._C built without the sodec kernels")
IMPLS = ("portable", "avx2", "avx512")


def _run(a: torch.Tensor, layer: IntegerConv, impl: str, threads: int = 0) -> torch.Tensor:
    return torch.from_numpy(cpu_ext().sodec.conv_requant(
        a.to(torch.int32).contiguous().numpy(), layer.weight.numpy(), layer.bias.numpy(),
        layer.mult.numpy(), layer.shift.numpy(), layer.up, layer.lo, layer.hi, threads, impl))


def _random_layer(gen, ci, co, k, up, lo=INT32_MIN, hi=INT32_MAX, shift=(1, 63), bias_bits=40):
    return IntegerConv(
        torch.randint(-127, 128, (co, ci, k, k), generator=gen, dtype=torch.int32),
        torch.randint(-(1 << bias_bits), (1 << bias_bits) + 1, (co,), generator=gen),
        torch.randint(1, 1 << 15, (co,), generator=gen),
        torch.randint(shift[0], shift[1], (co,), generator=gen), up, lo, hi)


CASES = [
    # (n, ci, co, k, up, h, w)
    (1, 1, 1, 1, 1, 1, 1),
    (2, 3, 5, 3, 1, 7, 9),      # co not a multiple of 4, K = 27 odd
    (1, 8, 7, 5, 2, 5, 3),      # upsampling, 5x5 kernel, K = 200
    (1, 65, 6, 3, 1, 9, 8),     # K = 585 -> 293 pairs: crosses one 256-pair chunk
    (1, 130, 9, 3, 2, 4, 5),    # K = 1170: five chunks, 8x10 positions (partial panels)
    (1, 16, 33, 1, 1, 13, 11),  # 1x1, many channels, 143 positions
]


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_kernels_match_reference_on_random_values(case):
    n, ci, co, k, up, h, w = case
    gen = torch.Generator().manual_seed(hash(case) % (1 << 31))
    a = torch.randint(-ACT_MAX, ACT_MAX + 1, (n, ci, h, w), generator=gen)
    for lo, hi, shift in ((INT32_MIN, INT32_MAX, (20, 40)), (0, ACT_MAX, (1, 63))):
        layer = _random_layer(gen, ci, co, k, up, lo, hi, shift)
        want = integer_conv_reference(a, layer).to(torch.int32)
        for impl in cpu_impls(IMPLS):
            for threads in (1, 3):
                assert torch.equal(_run(a, layer, impl, threads), want), (impl, threads, lo, hi)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("sign", [1, -1])
def test_kernels_exact_at_overflow_adjacent_magnitudes(sign, up):
    """All products at +-127 * 32767 of one sign: int32 chunk sums within 0.8 % of 2**31; the
    int64 total (~2**33) and acc * mult (~2**48) are exact only without any int32 wrap. With
    up = 2 the merged effective weights reach 4 * 127 = 508, and the chunks shrink to 64 pairs."""
    ci, k, co = 300, 3, 6  # K = 2700: 1350 pairs, 6 chunks of 256 (the last partial)
    w = torch.full((co, ci, k, k), 127, dtype=torch.int32)
    w[1::2] = -127
    a = torch.full((1, ci, 4, 4), sign * ACT_MAX, dtype=torch.int64)
    a[:, :, 0, 0] = -sign * ACT_MAX  # one position with the opposite sign
    bias = torch.tensor([1 << 40, -(1 << 40), 0, 5, -(1 << 40), 1 << 40])
    layer = IntegerConv(w, bias, torch.full((co,), (1 << 15) - 1), torch.tensor([1, 62, 30, 20, 45, 14]),
                        up, INT32_MIN, INT32_MAX)
    want = integer_conv_reference(a, layer).to(torch.int32)
    assert want.abs().max() > 0
    for impl in cpu_impls(IMPLS):
        assert torch.equal(_run(a, layer, impl), want), impl


def test_simd_and_portable_agree_on_mixed_extremes():
    """Activations drawn from {-32767, -1, 0, 1, 32767}, weights from {-127, -1, 0, 1, 127}."""
    gen = torch.Generator().manual_seed(5)
    vals_a = torch.tensor([-ACT_MAX, -1, 0, 1, ACT_MAX])
    vals_w = torch.tensor([-127, -1, 0, 1, 127], dtype=torch.int32)
    ci, co, k = 70, 10, 3
    a = vals_a[torch.randint(0, 5, (2, ci, 6, 7), generator=gen)]
    layer = IntegerConv(vals_w[torch.randint(0, 5, (co, ci, k, k), generator=gen)],
                        torch.randint(-(1 << 40), (1 << 40) + 1, (co,), generator=gen),
                        torch.randint(1, 1 << 15, (co,), generator=gen),
                        torch.randint(1, 63, (co,), generator=gen), 2, INT32_MIN, INT32_MAX)
    outs = {impl: _run(a, layer, impl, 2) for impl in cpu_impls(IMPLS)}
    want = integer_conv_reference(a, layer).to(torch.int32)
    for impl, got in outs.items():
        assert torch.equal(got, want), impl


def test_bad_impl_and_threads_raise():
    a = torch.zeros(1, 1, 2, 2, dtype=torch.int32)
    layer = _random_layer(torch.Generator().manual_seed(0), 1, 1, 1, 1)
    with pytest.raises(ValueError, match="impl must be"):
        _run(a, layer, "sse9")
    with pytest.raises(ValueError, match="threads"):
        _run(a, layer, "auto", -1)
    for impl in IMPLS:
        if not cpu_ext().sodec.impl_supported(impl):
            with pytest.raises(ValueError, match="cannot run"):
                _run(a, layer, impl)


def test_scale_index_matches_reference_at_int32_edges():
    t = torch.tensor([-(1 << 40), INT32_MIN - 1, INT32_MIN, -5, -5, 0, 7, INT32_MAX - 1, INT32_MAX,
                      INT32_MAX + 1, 1 << 40], dtype=torch.int64)
    s = torch.tensor([INT32_MIN, INT32_MIN + 1, -6, -5, -4, -1, 0, 1, 7, 8, INT32_MAX - 1, INT32_MAX],
                     dtype=torch.int32)
    s = torch.cat([s, torch.randint(INT32_MIN, INT32_MAX, (5000,), generator=torch.Generator().manual_seed(3),
                                    dtype=torch.int32)])
    got = torch.from_numpy(cpu_ext().sodec.scale_index(s.numpy(), t.numpy()))
    assert torch.equal(got, scale_index_reference(s, t))
    empty = torch.zeros(0, dtype=torch.int64)
    assert torch.equal(torch.from_numpy(cpu_ext().sodec.scale_index(s.numpy(), empty.numpy())),
                       torch.zeros_like(s))


def test_prepared_weights_cache_follows_in_place_changes():
    """backend 'cpp' caches each layer's prepared weights; an in-place weight change must be seen."""
    from cod_fast.models.sodec.integer_params import backend_conv

    gen = torch.Generator().manual_seed(11)
    layer = _random_layer(gen, 6, 5, 3, 2, 0, ACT_MAX, (10, 30))
    a = torch.randint(-ACT_MAX, ACT_MAX + 1, (1, 6, 5, 4), generator=gen)
    assert torch.equal(backend_conv(a, layer, "cpp"), integer_conv_reference(a, layer).to(torch.int32))
    layer.weight.neg_()  # same storage, new version
    assert torch.equal(backend_conv(a, layer, "cpp"), integer_conv_reference(a, layer).to(torch.int32))
    prep = cpu_ext().sodec.prepare_conv(layer.weight.numpy(), 2)
    assert (prep.out_channels, prep.in_channels, prep.kernel_size, prep.up) == (5, 6, 3, 2)
    with pytest.raises(ValueError, match="channels"):
        cpu_ext().sodec.conv_requant_prepared(torch.zeros(1, 7, 2, 2, dtype=torch.int32).numpy(), prep,
                                              layer.bias.numpy(), layer.mult.numpy(), layer.shift.numpy(),
                                              0, ACT_MAX)


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (1, 3, 0, 4), (2, 3, 4, 0)])
def test_empty_inputs_give_empty_outputs(shape):
    gen = torch.Generator().manual_seed(2)
    layer = _random_layer(gen, 3, 5, 3, 2)
    a = torch.zeros(shape, dtype=torch.int32)
    n, _, h, w = shape
    want = torch.zeros((n, 5, 2 * h, 2 * w), dtype=torch.int32)  # (the torch reference's unfold rejects 0-size planes)
    for impl in cpu_impls(IMPLS):
        assert torch.equal(_run(a, layer, impl), want)


def test_scale_index_lookup_table_path_on_the_default_thresholds():
    """>= 4096 codes and thresholds spanning < 2**18 values take the lookup-table path."""
    from cod_fast.entropy import default_scale_table
    from cod_fast.models.sodec.integer_params import thresholds_from_table

    t = thresholds_from_table(default_scale_table(), 8)
    near = torch.cat([t - 1, t, t + 1]).to(torch.int32)
    edges = torch.tensor([INT32_MIN, -1, 0, 1, int(t[0]) - 2, int(t[-1]) + 2, INT32_MAX], dtype=torch.int32)
    rand = torch.randint(-1000, int(t[-1]) + 1000, (20000,), generator=torch.Generator().manual_seed(4),
                         dtype=torch.int32)
    s = torch.cat([near, edges, rand])
    got = torch.from_numpy(cpu_ext().sodec.scale_index(s.numpy(), t.numpy()))
    assert torch.equal(got, scale_index_reference(s, t))
    # Duplicated thresholds and one below int32: counts must include them.
    t2 = torch.cat([torch.tensor([INT32_MIN - 5]), t[:10], t[:10]]).sort().values
    got2 = torch.from_numpy(cpu_ext().sodec.scale_index(s.numpy(), t2.numpy()))
    assert torch.equal(got2, scale_index_reference(s, t2))


@pytest.mark.parametrize("wide", [False, True], ids=["lookup-table", "binary-search"])
@pytest.mark.parametrize("index_channels", [0, 3, 8])
def test_scale_index_fused_into_the_store_matches_the_separate_pass(wide, index_channels):
    """conv_requant_prepared(..., index=, index_channels=) == scale_index of the plain output's
    first channels, the rest untouched; thresholds spanning more than the table takes (wide) use the
    binary search, with INT32 edges and thresholds beyond int32 included."""
    ext = cpu_ext().sodec
    gen = torch.Generator().manual_seed(11)
    layer = _random_layer(gen, 5, 8, 3, 2, lo=INT32_MIN, hi=INT32_MAX, shift=(20, 40), bias_bits=30)
    a = torch.randint(-ACT_MAX, ACT_MAX + 1, (2, 5, 6, 7), generator=gen, dtype=torch.int32)
    if wide:
        t = torch.tensor([-(1 << 40), INT32_MIN, -5, 0, 0, 7, 1 << 20, INT32_MAX, 1 << 40], dtype=torch.int64)
    else:
        t = torch.sort(torch.randint(-(1 << 16), 1 << 16, (63,), generator=gen, dtype=torch.int64)).values
    prep = ext.prepare_conv(layer.weight.numpy(), layer.up)
    args = (a.numpy(), prep, layer.bias.numpy(), layer.mult.numpy(), layer.shift.numpy(), layer.lo, layer.hi)
    for threads in (1, 2):
        plain = torch.from_numpy(ext.conv_requant_prepared(*args, threads=threads))
        fused = torch.from_numpy(ext.conv_requant_prepared(*args, threads=threads, index=ext.prepare_scale_index(t.numpy()),
                                                           index_channels=index_channels))
        want = plain.clone()
        want[:, :index_channels] = scale_index_reference(plain[:, :index_channels].contiguous(), t)
        assert torch.equal(fused, want)


def test_fused_scale_index_arguments_are_checked():
    ext = cpu_ext().sodec
    gen = torch.Generator().manual_seed(12)
    layer = _random_layer(gen, 2, 4, 1, 1)
    prep = ext.prepare_conv(layer.weight.numpy(), layer.up)
    a = torch.zeros(1, 2, 3, 3, dtype=torch.int32).numpy()
    args = (a, prep, layer.bias.numpy(), layer.mult.numpy(), layer.shift.numpy(), layer.lo, layer.hi)
    t = ext.prepare_scale_index(torch.tensor([0, 5], dtype=torch.int64).numpy())
    with pytest.raises(ValueError, match="index_channels"):
        ext.conv_requant_prepared(*args, index=t, index_channels=5)
    with pytest.raises(ValueError, match="needs an index"):
        ext.conv_requant_prepared(*args, index_channels=1)
    with pytest.raises(ValueError, match="non-decreasing"):
        ext.prepare_scale_index(torch.tensor([5, 0], dtype=torch.int64).numpy())
