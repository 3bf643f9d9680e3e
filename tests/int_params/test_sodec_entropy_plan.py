"""The one-call C++ entry point of SODEC's integer entropy parameters (csrc/sodec/entropy_plan.cpp).

``cod_fast._C.sodec.entropy_parameters(plan, z)`` runs every layer and the scale index in one call:
z read in its own dtype and clamped while padding, hidden layers requantised straight into the next
layer's padded int16 input (vectorised store, masked 16-bit stores interleaving the up = 2
phases), the last layer split into index and mean planes. Every kernel (forced with ``impl=``, which
also picks the store: portable -> scalar, avx2 -> AVX2, avx512 and amx -> AVX-512), on 1 and 3
threads, must give the torch int64 reference's integers, including at the edges of the spec's
bounds. The AMX kernel (byte-split operands, int32 tile sums combined in int64; runs where the CPU
has AMX-INT8 and the OS grants it) is also checked layer by layer at the extremes of its split.
"""
import pytest
import torch

from cod_fast._ext import cpu_ext
from cod_fast.int_params import backends
from cod_fast.int_params.api import entropy_head
from cod_fast.int_params.backends import cpu_impls
from cod_fast.models.sodec.integer_params import (
    ACT_MAX,
    INT32_MAX,
    INT32_MIN,
    MAX_ABS_BIAS,
    MAX_MULT,
    IntegerConv,
    IntegerEntropyParams,
    entropy_parameters_reference,
)

HAS_PLAN = cpu_ext() is not None and hasattr(cpu_ext(), "sodec") and hasattr(cpu_ext().sodec, "entropy_parameters")
pytestmark = pytest.mark.skipif(not HAS_PLAN, reason="cod_fast._C built without the one-call SODEC entry point")
IMPLS = ("portable", "avx2", "avx512", "amx")


def _layer(gen, ci, co, k, up, lo, hi, shift=(8, 24), bias_bits=20, weights=None):
    w = torch.randint(-127, 128, (co, ci, k, k), generator=gen, dtype=torch.int32) if weights is None else weights
    return IntegerConv(w, torch.randint(-(1 << bias_bits), (1 << bias_bits) + 1, (co,), generator=gen),
                       torch.randint(1, MAX_MULT, (co,), generator=gen),
                       torch.randint(shift[0], shift[1], (co,), generator=gen), up, lo, hi)


def _params(gen, cz, widths, ks, ups, m, hidden_lo=0, thresholds=None, shift=(8, 24)):
    """Layers cz -> widths[0] -> ... -> 2m with kernels ks and upsampling ups."""
    chans = [cz, *widths, 2 * m]
    layers = []
    for i, (k, up) in enumerate(zip(ks, ups)):
        last = i == len(ks) - 1
        lo, hi = (INT32_MIN, INT32_MAX) if last else (hidden_lo, ACT_MAX)
        layers.append(_layer(gen, chans[i], chans[i + 1], k, up, lo, hi,
                             shift=(20, 40) if last else shift, bias_bits=30 if last else 20))
    if thresholds is None:
        thresholds = torch.sort(torch.randint(-(1 << 12), 1 << 12, (63,), generator=gen)).values
    return IntegerEntropyParams(tuple(layers), thresholds, m)


def _plan(params):
    return backends._cpp_plan(cpu_ext().sodec, params)


def _check(params, z, threads=(1, 3)):
    want_idx, want_means = entropy_parameters_reference(params, z)
    want_head = entropy_head(params, z, "reference")
    for impl in cpu_impls(IMPLS):
        for t in threads:
            idx, means = backends.entropy_parameters_cpp(params, z, impl=impl, threads=t)
            assert idx.dtype == torch.int32 and means.dtype == torch.int32
            assert torch.equal(idx, want_idx), (impl, t)
            assert torch.equal(means, want_means), (impl, t)
            assert torch.equal(backends.entropy_head_cpp(params, z, impl=impl, threads=t), want_head), (impl, t)


NETS = [
    # (cz, widths, kernels, ups, m, z shape (n, h, w))
    (5, (7, 6), (3, 3, 3), (1, 2, 2), 3, (1, 4, 5)),      # channels not multiples of the 4-row kernel
    (8, (12, 16), (3, 3, 3), (1, 2, 2), 4, (2, 3, 7)),    # two images, odd widths (runs wrap rows)
    (4, (9,), (5, 1), (2, 1), 5, (1, 6, 3)),              # 5x5 up 2 (pad 2), then a 1x1 head
    (6, (10, 11), (1, 5, 3), (2, 1, 2), 2, (1, 5, 4)),    # pad 0 -> pad 2 -> pad 1 inputs
    (70, (20, 24), (3, 3, 3), (1, 2, 2), 6, (1, 9, 8)),   # K = 630: crosses int32 chunks, > 64 positions
]


@pytest.mark.parametrize("net", NETS, ids=[str(n) for n in NETS])
def test_one_call_matches_reference(net):
    cz, widths, ks, ups, m, (n, h, w) = net
    gen = torch.Generator().manual_seed(hash(net) % (1 << 31))
    params = _params(gen, cz, widths, ks, ups, m)
    z = torch.randint(-ACT_MAX, ACT_MAX + 1, (n, cz, h, w), generator=gen, dtype=torch.int32)
    _check(params, z)


@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.int64, torch.uint8, torch.int8])
def test_z_dtypes_and_out_of_range_values_are_clamped(dtype):
    """z read in its own dtype (int16/32/64 without a copy), clamped to [-32767, 32767] as check_z."""
    gen = torch.Generator().manual_seed(3)
    params = _params(gen, 6, (8, 8), (3, 3, 3), (1, 2, 2), 3, hidden_lo=-ACT_MAX)
    info = torch.iinfo(dtype)
    edges = torch.tensor([info.min, info.min + 1, -ACT_MAX - 1, -ACT_MAX, -1, 0, 1, ACT_MAX, ACT_MAX + 1,
                          info.max - 1, info.max], dtype=torch.int64).clamp(info.min, info.max)
    z = edges[torch.randint(0, edges.numel(), (2, 6, 5, 4), generator=gen)].to(dtype)
    _check(params, z)


def test_extreme_requantisation_and_hidden_clamps():
    """Bias at +-2**40, mult 2**15 - 1, shifts 1 and 62, weights +-127 and activations +-32767 of one
    sign (int32 chunk sums next to 2**31), hidden layers clamping to [-32767, 32767] so that the int16
    store sees both ends, and a head clamped to int32 so that the index sees INT32_MIN and INT32_MAX."""
    gen = torch.Generator().manual_seed(4)
    cz, c1, m = 40, 12, 4
    w0 = torch.full((c1, cz, 3, 3), 127, dtype=torch.int32)
    w0[1::2] = -127
    l0 = IntegerConv(w0, torch.tensor([MAX_ABS_BIAS, -MAX_ABS_BIAS] * (c1 // 2)),
                     torch.full((c1,), MAX_MULT - 1), torch.tensor([40, 41, 44, 45, 1, 62] * 2), 1, -ACT_MAX, ACT_MAX)
    l1 = _layer(gen, c1, 2 * m, 3, 2, INT32_MIN, INT32_MAX, shift=(1, 10), bias_bits=40)
    l1 = IntegerConv(l1.weight, l1.bias, torch.full((2 * m,), MAX_MULT - 1), l1.shift, 2, INT32_MIN, INT32_MAX)
    t = torch.tensor([-(1 << 40), INT32_MIN - 1, INT32_MIN, -5, 0, 0, 7, INT32_MAX - 1, INT32_MAX, 1 << 40])
    params = IntegerEntropyParams((l0, l1), t, m)
    z = torch.full((1, cz, 5, 6), ACT_MAX, dtype=torch.int32)
    z[:, :, 0, 0] = -ACT_MAX
    z[:, ::3] = -ACT_MAX
    head = entropy_head(params, z, "reference")
    assert int(head.min()) == INT32_MIN and int(head.max()) == INT32_MAX  # the clamp is exercised
    _check(params, z)


@pytest.mark.parametrize("kind", ["lookup-table", "binary-search"])
def test_scale_index_paths(kind):
    """<= 255 thresholds in a small range: the uint8 table (vector gather); more: binary search."""
    gen = torch.Generator().manual_seed(5)
    n_t = 63 if kind == "lookup-table" else 300
    t = torch.sort(torch.randint(-(1 << 14), 1 << 14, (n_t,), generator=gen)).values
    params = _params(gen, 5, (6, 7), (3, 3, 3), (1, 2, 2), 4, thresholds=t)
    z = torch.randint(-ACT_MAX, ACT_MAX + 1, (1, 5, 4, 4), generator=gen, dtype=torch.int32)
    _check(params, z)


@pytest.mark.parametrize("shape", [(0, 5, 3, 3), (1, 5, 0, 3), (2, 5, 3, 0)])
def test_empty_z_gives_empty_outputs(shape):
    params = _params(torch.Generator().manual_seed(6), 5, (6, 7), (3, 3, 3), (1, 2, 2), 4)
    z = torch.zeros(shape, dtype=torch.int32)
    n, _, h, w = shape
    for impl in cpu_impls(IMPLS):
        idx, means = backends.entropy_parameters_cpp(params, z, impl=impl)
        assert idx.shape == means.shape == (n, 4, 4 * h, 4 * w)


def test_plan_cache_follows_in_place_changes():
    """The plan is cached per params object; an in-place change of any tensor must rebuild it."""
    gen = torch.Generator().manual_seed(7)
    params = _params(gen, 5, (6, 7), (3, 3, 3), (1, 2, 2), 4)
    z = torch.randint(-ACT_MAX, ACT_MAX + 1, (1, 5, 3, 4), generator=gen, dtype=torch.int32)
    plan = _plan(params)
    assert _plan(params) is plan
    assert (plan.in_channels, plan.n_channels, plan.upsampling, plan.n_layers) == (5, 4, 4, 3)
    for mutate in (lambda: params.layers[1].weight.neg_(), lambda: params.layers[2].bias.add_(12345),
                   lambda: params.layers[0].shift.sub_(1), lambda: params.thresholds.add_(100)):
        mutate()
        assert _plan(params) is not plan
        plan = _plan(params)
        _check(params, z, threads=(2,))


def test_arguments_are_checked():
    ext = cpu_ext().sodec
    gen = torch.Generator().manual_seed(8)
    params = _params(gen, 5, (6, 7), (3, 3, 3), (1, 2, 2), 4)
    plan = _plan(params)
    z = torch.zeros(1, 5, 2, 2, dtype=torch.int32)
    with pytest.raises(ValueError, match="channels"):
        ext.entropy_parameters(plan, torch.zeros(1, 4, 2, 2, dtype=torch.int32).numpy())
    with pytest.raises(TypeError, match="int16, int32 or int64"):
        ext.entropy_parameters(plan, torch.zeros(1, 5, 2, 2, dtype=torch.float32).numpy())
    with pytest.raises(ValueError, match="contiguous"):
        ext.entropy_parameters(plan, torch.zeros(1, 5, 2, 4, dtype=torch.int32).numpy()[:, :, :, ::2])
    with pytest.raises(ValueError, match="impl must be"):
        ext.entropy_parameters(plan, z.numpy(), impl="sse9")
    with pytest.raises(ValueError, match="threads"):
        ext.entropy_parameters(plan, z.numpy(), threads=-1)
    for impl in IMPLS:
        if not ext.impl_supported(impl):
            with pytest.raises(ValueError, match="cannot run"):
                ext.entropy_parameters(plan, z.numpy(), impl=impl)

    def layers(ps):
        return [(la.weight.numpy(), la.bias.numpy(), la.mult.numpy(), la.shift.numpy(), la.up, la.lo, la.hi)
                for la in ps.layers]

    t = params.thresholds.numpy()
    good = layers(params)
    with pytest.raises(ValueError, match="2 \\* n_channels"):
        ext.prepare_entropy_plan(good, t, 3)
    with pytest.raises(ValueError, match="non-decreasing"):
        ext.prepare_entropy_plan(good, t[::-1].copy(), 4)
    bad = list(good)
    bad[0] = (*good[0][:5], -ACT_MAX - 1, ACT_MAX)  # hidden clamp beyond int16
    with pytest.raises(ValueError, match="int16|32767"):
        ext.prepare_entropy_plan(bad, t, 4)
    bad = [good[0], good[2]]  # 6 channels into a layer taking 7
    with pytest.raises(ValueError, match="channels"):
        ext.prepare_entropy_plan(bad, t, 4)
    w = good[1][0].copy()
    w[0, 0, 0, 0] = 128
    with pytest.raises(ValueError, match="127"):
        ext.prepare_entropy_plan([good[0], (w, *good[1][1:]), good[2]], t, 4)
    shift = good[2][3].copy()
    shift[0] = 63
    with pytest.raises(ValueError, match="shift"):
        ext.prepare_entropy_plan([good[0], good[1], (*good[2][:3], shift, *good[2][4:])], t, 4)
    with pytest.raises(ValueError, match="layer"):
        ext.prepare_entropy_plan([], t, 4)


def test_full_config_shapes_against_the_layer_by_layer_path():
    """The benchmark's shapes (192 -> 192 -> 192 -> 2 * 320 at 8x8 -> 32x32; seeded random layers,
    no model build): one call equals the per-layer C++ calls and the reference."""
    gen = torch.Generator().manual_seed(9)
    params = _params(gen, 192, (192, 192), (3, 3, 3), (1, 2, 2), 320, shift=(16, 24))
    z = torch.randint(-64, 65, (1, 192, 8, 8), generator=gen, dtype=torch.int32)
    want = entropy_parameters_reference(params, z)
    per_layer = entropy_head(params, z, "reference")
    for impl in cpu_impls(IMPLS):
        idx, means = backends.entropy_parameters_cpp(params, z, impl=impl, threads=2)
        assert torch.equal(idx, want[0]) and torch.equal(means, want[1]), impl
    a = z
    for layer in params.layers:
        a = backends.conv_cpp(a, layer)
    assert torch.equal(a, per_layer)


AMX_CASES = [
    # (n, ci, co, k, up, h, w): channels not multiples of 16, K not a multiple of 64, partial panels
    (1, 1, 1, 1, 1, 1, 1),
    (2, 3, 5, 3, 1, 7, 9),
    (1, 8, 17, 5, 2, 5, 3),
    (1, 65, 6, 3, 1, 9, 8),
    (1, 130, 33, 3, 2, 4, 5),
    (1, 16, 40, 1, 1, 13, 11),
    (1, 64, 20, 3, 2, 9, 10),     # ci a multiple of 64: single-tap cells skip the hi tiles
]


def _amx_run(a, layer, threads):
    return torch.from_numpy(cpu_ext().sodec.conv_requant(
        a.to(torch.int32).contiguous().numpy(), layer.weight.numpy(), layer.bias.numpy(), layer.mult.numpy(),
        layer.shift.numpy(), layer.up, layer.lo, layer.hi, threads, "amx"))


needs_amx = pytest.mark.skipif(not (HAS_PLAN and cpu_ext().sodec.impl_supported("amx")),
                               reason="no AMX-INT8 (or the OS does not grant it)")


@needs_amx
@pytest.mark.parametrize("case", AMX_CASES, ids=[str(c) for c in AMX_CASES])
def test_amx_layer_matches_reference(case):
    """Random values, and the split's extremes: activations -32767 / -1 / 0 / 255 / 256 / 32767 (high
    byte -128 .. 127, low byte 0 .. 255), weights +-127 so that merged up = 2 weights reach +-508
    (high part +-2)."""
    from cod_fast.models.sodec.integer_params import integer_conv_reference

    n, ci, co, k, up, h, w = case
    gen = torch.Generator().manual_seed(hash(case) % (1 << 31))
    vals_a = torch.tensor([-ACT_MAX, -32512, -257, -256, -1, 0, 1, 255, 256, 32512, ACT_MAX])
    for extreme in (False, True):
        if extreme:
            a = vals_a[torch.randint(0, vals_a.numel(), (n, ci, h, w), generator=gen)]
            wt = torch.tensor([-127, 127, -1, 0, 127, 127], dtype=torch.int32)[
                torch.randint(0, 6, (co, ci, k, k), generator=gen)]
        else:
            a = torch.randint(-ACT_MAX, ACT_MAX + 1, (n, ci, h, w), generator=gen)
            wt = None
        for lo, hi, shift in ((INT32_MIN, INT32_MAX, (20, 40)), (0, ACT_MAX, (1, 63))):
            layer = _layer(gen, ci, co, k, up, lo, hi, shift=shift, bias_bits=40, weights=wt)
            want = integer_conv_reference(a, layer).to(torch.int32)
            for threads in (1, 3):
                assert torch.equal(_amx_run(a, layer, threads), want), (extreme, lo, threads)


@needs_amx
def test_amx_at_overflow_adjacent_magnitudes():
    """Every product at +-127 * 32767 of one sign over K = 2700 (int32 tile sums far from wrapping,
    the int64 combine exact), merged up = 2 weights at 508."""
    from cod_fast.models.sodec.integer_params import integer_conv_reference

    ci, k, co = 300, 3, 18
    for up in (1, 2):
        w = torch.full((co, ci, k, k), 127, dtype=torch.int32)
        w[1::2] = -127
        a = torch.full((1, ci, 4, 5), -ACT_MAX, dtype=torch.int64)
        a[:, :, 0, 0] = ACT_MAX
        bias = torch.tensor([MAX_ABS_BIAS, -MAX_ABS_BIAS, 0] * 6)
        layer = IntegerConv(w, bias, torch.full((co,), MAX_MULT - 1), torch.tensor([1, 62, 30, 20, 45, 14] * 3), up,
                            INT32_MIN, INT32_MAX)
        want = integer_conv_reference(a, layer).to(torch.int32)
        assert want.abs().max() > 0
        assert torch.equal(_amx_run(a, layer, 2), want), up
