"""The fixed-point entropy-parameter spec: exact values, ties, thresholds, backend agreement."""

import pytest
import torch

from cod_fast._ext import cpu_ext
from cod_fast.entropy import default_scale_table
from cod_fast.kernels import int_entropy_params as tk
from cod_fast.models.sodec.integer_params import (
    ACT_MAX,
    INT32_MAX,
    INT32_MIN,
    IntegerConv,
    IntegerEntropyParams,
    entropy_parameters,
    entropy_parameters_reference,
    integer_conv_reference,
    quantize_y,
    round_shift,
    thresholds_from_table,
)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
THRESHOLDS = thresholds_from_table(default_scale_table(), 8)
HAS_CPP = cpu_ext() is not None and hasattr(cpu_ext(), "sodec")
needs_cpp = pytest.mark.skipif(not HAS_CPP, reason="cod_fast._C built without the sodec component")
#: Backends compared with the reference bit for bit (the C++ one when the extension has it).
OTHER_BACKENDS = ["triton", pytest.param("cpp", marks=needs_cpp)]


def _cpp_conv(a, layer):
    """One layer on the C++ backend (int32 in, int32 out)."""
    return torch.from_numpy(cpu_ext().sodec.conv_requant(
        a.to(torch.int32).contiguous().numpy(), layer.weight.numpy(), layer.bias.numpy(),
        layer.mult.numpy(), layer.shift.numpy(), layer.up, layer.lo, layer.hi))


def _layer(gen, ci, co, k, up, lo, hi, shift=(8, 24)):
    return IntegerConv(
        torch.randint(-127, 128, (co, ci, k, k), generator=gen, dtype=torch.int32),
        torch.randint(-(1 << 20), 1 << 20, (co,), generator=gen),
        torch.randint(1, 1 << 15, (co,), generator=gen),
        torch.randint(shift[0], shift[1], (co,), generator=gen), up, lo, hi)


def _identity(c, mult, shift, lo=INT32_MIN, hi=INT32_MAX, bias=None):
    """1x1 layer computing clamp(round_shift((a + bias) * mult, shift))."""
    w = torch.eye(c, dtype=torch.int32).view(c, c, 1, 1)
    b = torch.zeros(c, dtype=torch.int64) if bias is None else bias
    full = lambda v: torch.full((c,), v, dtype=torch.int64)  # noqa: E731
    return IntegerConv(w, b, full(mult), full(shift), 1, lo, hi)


def _oracle_conv(a, layer):
    """The spec in plain Python ints (slow; tiny shapes only)."""
    n, ci, h, w = a.shape
    up = layer.up
    H, W = h * up, w * up
    co, _, k, _ = layer.weight.shape
    wt, A = layer.weight.tolist(), a.tolist()
    out = torch.zeros((n, co, H, W), dtype=torch.int64)
    for b in range(n):
        for o in range(co):
            m, s = int(layer.mult[o]), int(layer.shift[o])
            for y in range(H):
                for x in range(W):
                    acc = int(layer.bias[o])
                    for i in range(ci):
                        for ky in range(k):
                            for kx in range(k):
                                yy, xx = y + ky - k // 2, x + kx - k // 2
                                if 0 <= yy < H and 0 <= xx < W:
                                    acc += wt[o][i][ky][kx] * A[b][i][yy // up][xx // up]
                    q = (acc * m + (1 << (s - 1))) // (1 << s)  # Python // is floor division
                    out[b, o, y, x] = min(max(q, layer.lo), layer.hi)
    return out


def test_round_shift_ties_round_half_up():
    v = torch.tensor([-5, -3, -1, 1, 3, 5, -4, 4, 7, -7], dtype=torch.int64)
    # v / 2 with halves rounded towards +inf.
    assert round_shift(v, 1).tolist() == [-2, -1, 0, 1, 2, 3, -2, 2, 4, -3]
    assert round_shift(torch.tensor([-24, -8, 8, 24, 23, -25]), 4).tolist() == [-1, 0, 1, 2, 1, -2]
    with pytest.raises(TypeError):
        round_shift(torch.tensor([1], dtype=torch.int32), 1)


def test_reference_matches_python_oracle():
    gen = torch.Generator().manual_seed(1)
    for up in (1, 2):
        layer = _layer(gen, 3, 4, 3, up, -ACT_MAX, ACT_MAX)
        a = torch.randint(-ACT_MAX, ACT_MAX + 1, (2, 3, 3, 2), generator=gen)
        assert torch.equal(integer_conv_reference(a, layer), _oracle_conv(a, layer))


def test_extreme_values_do_not_overflow():
    """Largest weights, activations, bias and multiplier of the spec: reference == oracle."""
    c, k = 8, 5  # |acc * m| ~ 2**55: any int32 step would overflow
    w = torch.full((2, c, k, k), 127, dtype=torch.int32)
    w[1] = -127
    layer = IntegerConv(w, torch.tensor([1 << 40, -(1 << 40)]), torch.full((2,), (1 << 15) - 1),
                        torch.full((2,), 20), 1, INT32_MIN, INT32_MAX)
    a = torch.full((1, c, 3, 3), ACT_MAX, dtype=torch.int64)
    assert torch.equal(integer_conv_reference(a, layer), _oracle_conv(a, layer))
    got = tk.int_conv_requant(a.to(torch.int32).to(DEV), layer).cpu()
    assert torch.equal(got, _oracle_conv(a, layer).to(torch.int32))
    if HAS_CPP:
        assert torch.equal(_cpp_conv(a, layer), got)


def test_rounding_ties_both_backends():
    # (a * 1 + 1) >> 1: every odd a is a tie; negative ties go up too. Hidden-layer clamp = ReLU.
    a = torch.arange(-9, 9, dtype=torch.int32).view(1, 2, 3, 3)
    for lo, hi in ((INT32_MIN, INT32_MAX), (0, ACT_MAX)):
        layer = _identity(2, 1, 1, lo, hi)
        expected = torch.clamp(torch.div(a.to(torch.int64) + 1, 2, rounding_mode="floor"), lo, hi)
        assert torch.equal(integer_conv_reference(a.to(torch.int64), layer), expected)
        assert torch.equal(tk.int_conv_requant(a.to(DEV), layer).cpu(), expected.to(torch.int32))
        if HAS_CPP:
            assert torch.equal(_cpp_conv(a, layer), expected.to(torch.int32))


def test_scale_index_on_thresholds_both_backends():
    t = THRESHOLDS
    assert t.tolist() == sorted(t.tolist()) and len(set(t.tolist())) == t.numel()
    values = torch.cat([t - 1, t, t + 1, torch.tensor([INT32_MIN, -1, 0, INT32_MAX])]).to(torch.int32)
    expected = torch.tensor([sum(int(v) > int(th) for th in t) for v in values], dtype=torch.int32)
    # On a threshold: the table scale equals or exceeds sigma, so that scale's index is chosen.
    assert expected[t.numel():2 * t.numel()].tolist() == list(range(t.numel()))
    assert torch.equal(tk.scale_index_reference(values, t), expected)
    assert torch.equal(tk.scale_index(values.to(DEV), t).cpu(), expected)
    if HAS_CPP:
        assert torch.equal(torch.from_numpy(cpu_ext().sodec.scale_index(values.numpy(), t.numpy())), expected)


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_full_path_threshold_and_tie_values(backend):
    """z placed so that the scale code hits T[k]-1, T[k], T[k]+1 and the mean code hits ties."""
    t = THRESHOLDS[THRESHOLDS < ACT_MAX]
    z_scale = torch.cat([t - 1, t, t + 1])
    z = torch.stack([z_scale, torch.arange(z_scale.numel()) - z_scale.numel() // 2]).view(1, 2, 1, -1)
    # One 1x1 layer: scale code = z (mult 2**14, shift 14), mean code = round_half_up(z / 2).
    layer = IntegerConv(torch.eye(2, dtype=torch.int32).view(2, 2, 1, 1), torch.zeros(2, dtype=torch.int64),
                        torch.tensor([1 << 14, 1 << 14]), torch.tensor([14, 15]), 1, INT32_MIN, INT32_MAX)
    params = IntegerEntropyParams((layer,), THRESHOLDS, 1)
    idx, means = entropy_parameters_reference(params, z)
    exp_idx = torch.tensor([sum(int(v) > int(th) for th in THRESHOLDS) for v in z_scale], dtype=torch.int32)
    assert torch.equal(idx.view(-1), exp_idx)
    assert torch.equal(means.view(-1), torch.div(z[0, 1, 0] + 1, 2, rounding_mode="floor").to(torch.int32))
    idx_t, means_t = entropy_parameters(params, z.to(DEV) if backend == "triton" else z, backend)
    assert torch.equal(idx_t, idx) and torch.equal(means_t, means)


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_backends_agree_on_random_latents(backend):
    """4096 y positions per batch through a random 3-layer hyper synthesis (with upsampling)."""
    gen = torch.Generator().manual_seed(7)
    params = IntegerEntropyParams(
        (_layer(gen, 4, 8, 3, 1, 0, ACT_MAX), _layer(gen, 8, 8, 3, 2, 0, ACT_MAX),
         _layer(gen, 8, 16, 3, 2, INT32_MIN, INT32_MAX, shift=(14, 30))), THRESHOLDS, 8)
    z = torch.randint(-40, 41, (2, 4, 4, 4), generator=gen)
    z[0, 0, 0, :2] = torch.tensor([1 << 20, -(1 << 20)])  # clamped to int16 range by the spec
    idx, means = entropy_parameters(params, z, "reference")
    idx_t, means_t = entropy_parameters(params, z.to(DEV) if backend == "triton" else z, backend)
    assert idx.shape == (2, 8, 16, 16) and idx.dtype == torch.int32 and means.dtype == torch.int32
    assert torch.equal(idx_t, idx) and torch.equal(means_t, means)
    assert idx.unique().numel() > 20  # the random layers spread scales over the table


def test_quantize_y_exact_grid():
    means = torch.tensor([0, 8, -8, 3, 0, 0], dtype=torch.int32)
    y = torch.tensor([0.5, 0.0, 0.0, 1.0, -0.5, 2.96875])
    # y*16 = [8, 0, 0, 16, -8, 47.5 -> 48]; (y_q - m + 8) >> 4
    assert quantize_y(y, means, 4).tolist() == [1, 0, 1, 1, 0, 3]
    with pytest.raises(ValueError):
        quantize_y(torch.tensor([float("nan")]), torch.zeros(1, dtype=torch.int32), 4)


def test_bad_arguments_raise():
    params = IntegerEntropyParams((_identity(2, 1, 1),), THRESHOLDS, 1)
    with pytest.raises(TypeError):
        entropy_parameters(params, torch.zeros(1, 2, 2, 2), "reference")
    with pytest.raises(ValueError):
        entropy_parameters(params, torch.zeros(1, 3, 2, 2, dtype=torch.int32), "reference")
    with pytest.raises(ValueError):
        entropy_parameters(params, torch.zeros(1, 2, 2, 2, dtype=torch.int32), "cuda-float")
    bad = IntegerConv(torch.full((2, 2, 1, 1), 128, dtype=torch.int32), torch.zeros(2, dtype=torch.int64),
                      torch.ones(2, dtype=torch.int64), torch.ones(2, dtype=torch.int64), 1, 0, 1)
    with pytest.raises(ValueError, match="127"):
        IntegerEntropyParams((bad,), THRESHOLDS, 1)
    with pytest.raises(ValueError, match="shift"):
        IntegerEntropyParams((_identity(2, 1, 63),), THRESHOLDS, 1)
    with pytest.raises(ValueError, match="non-decreasing"):
        IntegerEntropyParams((_identity(2, 1, 1),), THRESHOLDS.flip(0), 1)
    with pytest.raises(TypeError):
        tk.int_conv_requant(torch.zeros(1, 2, 2, 2), _identity(2, 1, 1))
    with pytest.raises(ValueError, match="int16"):
        tk.int_conv_requant(torch.full((1, 2, 2, 2), 40000, dtype=torch.int32, device=DEV), _identity(2, 1, 1))


@needs_cpp
def test_cpp_rejects_out_of_spec_arguments():
    """The native layer re-checks every bound of the overflow proof and every dtype."""
    layer = _identity(2, 1, 1)
    native = cpu_ext().sodec
    ok = dict(weight=layer.weight.numpy(), bias=layer.bias.numpy(), mult=layer.mult.numpy(),
              shift=layer.shift.numpy(), up=1, lo=INT32_MIN, hi=INT32_MAX)
    a = torch.zeros(1, 2, 2, 2, dtype=torch.int32)
    assert native.conv_requant(a.numpy(), **ok).shape == (1, 2, 2, 2)
    with pytest.raises(ValueError, match="32767"):
        native.conv_requant(torch.full((1, 2, 2, 2), 40000, dtype=torch.int32).numpy(), **ok)
    with pytest.raises(TypeError):
        native.conv_requant(a.to(torch.int64).numpy(), **ok)
    with pytest.raises(ValueError, match="127"):
        native.conv_requant(a.numpy(), **{**ok, "weight": (layer.weight * 200).numpy()})
    with pytest.raises(ValueError, match="shift"):
        native.conv_requant(a.numpy(), **{**ok, "shift": (layer.shift * 0).numpy()})
    with pytest.raises(ValueError, match="up"):
        native.conv_requant(a.numpy(), **{**ok, "up": 3})
    with pytest.raises(ValueError, match="channels"):
        native.conv_requant(torch.zeros(1, 3, 2, 2, dtype=torch.int32).numpy(), **ok)
    with pytest.raises(ValueError, match="non-decreasing"):
        native.scale_index(a.numpy(), THRESHOLDS.flip(0).numpy())


def test_state_dict_round_trip():
    gen = torch.Generator().manual_seed(3)
    params = IntegerEntropyParams((_layer(gen, 2, 3, 3, 1, 0, ACT_MAX),
                                   _layer(gen, 3, 4, 1, 2, INT32_MIN, INT32_MAX)), THRESHOLDS, 2)
    again = IntegerEntropyParams.from_state_dict(params.state_dict())
    z = torch.randint(-9, 10, (1, 2, 3, 3), generator=gen)
    a, b = entropy_parameters_reference(params, z), entropy_parameters_reference(again, z)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    sd = params.state_dict()
    del sd["layers.1.mult"]
    with pytest.raises(ValueError, match="layers.1.mult"):
        IntegerEntropyParams.from_state_dict(sd)
