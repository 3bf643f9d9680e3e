"""Micro-benchmarks of every kernel family at realistic CoD shapes (pytest-benchmark).

Routes per kernel:
  reference  the unfused plain-torch sequence the official code runs (our ``*_reference``);
  cpu_best   the best CPU route we know in plain torch (fused ATen ops, in-place, no permutes);
  triton     the Triton kernel, only when a CUDA device exists (timed there with
             ``triton.testing.do_bench`` and reported through ``benchmark.extra_info``).
The Triton interpreter is not timed: it measures Python, not the kernel.

    flock /tmp/cod_fast_bench.lock .venv/bin/pytest bench/kernels/test_bench_kernels.py \
        --benchmark-enable -p no:cacheprovider --benchmark-columns=min,median,rounds
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from cod_fast.kernels import KERNELS
from cod_fast.kernels.masked_conv import conv_mask

CUDA = torch.cuda.is_available()
# One thread: the development machines share 2 cores; single-thread CPU figures are repeatable.
torch.set_num_threads(1)
DEVICE = "cuda" if CUDA else "cpu"
DTYPE = torch.float16 if CUDA else torch.float32


def _r(*shape: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(sum(shape))
    return (torch.randn(shape, generator=g) * scale).to(DEVICE, DTYPE)


def _freqs(n: int, d: int) -> torch.Tensor:
    ang = torch.rand((n, d // 2), generator=torch.Generator().manual_seed(0)) * 6.0
    return torch.polar(torch.ones_like(ang), ang).to(DEVICE)


def _cases() -> dict[str, tuple[str, tuple, Callable[..., object]]]:
    """name -> (registry entry, args, cpu_best function with the same signature)."""
    B, N, C, H, D = 1, 1024, 1152, 16, 72
    w = torch.ones(C, device=DEVICE)

    def rms_best(x, weight, shift, scale, eps):
        return torch.addcmul(shift, F.rms_norm(x, (x.shape[-1],), weight.to(x.dtype), eps), 1 + scale)

    def gated_best(res, y, gate, weight, shift, scale, eps):
        x = torch.addcmul(res, gate, y)
        return x, rms_best(x, weight, shift, scale, eps)

    def qk_best(qkv, qw, kw, freqs, eps):
        out = []
        for i, wt in ((0, qw), (1, kw)):
            x = F.rms_norm(qkv[:, :, i].float(), (qkv.shape[-1],), wt, eps)
            xc = torch.view_as_complex(x.unflatten(-1, (-1, 2))) * freqs[None, :, None]
            out.append(torch.view_as_real(xc).flatten(3).to(qkv.dtype).transpose(1, 2).contiguous())
        return tuple(out)

    def attn_best(q, k, v, sm_scale=None):
        return F.scaled_dot_product_attention(q, k, v, scale=sm_scale)

    def spatial_best(q, k, v):
        b, c, h, w_ = q.shape
        t = [z.reshape(b, 1, c, h * w_).transpose(-1, -2) for z in (q, k, v)]
        return F.scaled_dot_product_attention(*t).transpose(-1, -2).reshape(b, c, h, w_)

    def swiglu_best(a, b):
        return F.silu(a).mul_(b)

    def gn_best(x, groups, weight, bias, eps, silu):
        y = F.group_norm(x, groups, weight, bias, eps)
        return F.silu(y, inplace=True) if silu else y

    def ln2d_best(x, shift, scale, eps):
        var, mean = torch.var_mean(x, dim=1, keepdim=True, correction=0)
        y = (x - mean).mul_(torch.rsqrt(var + eps))
        return torch.addcmul(shift[:, :, None, None], y, 1 + scale[:, :, None, None])

    wmask = _r(384, 192, 5, 5, scale=0.05)
    wmasked = wmask * conv_mask("A", 5, 5).to(DEVICE, DTYPE)

    def conv_best(x, weight, bias, mask_type):
        return F.conv2d(x, wmasked, bias, padding=2)  # mask folded into the weight once

    return {
        "rms_norm_modulate": ("rms_norm_modulate",
                              (_r(B, N, C), w, _r(B, 1, C), _r(B, 1, C, scale=0.1), 1e-6), rms_best),
        "gated_residual_rms_norm_modulate": (
            "gated_residual_rms_norm_modulate",
            (_r(B, N, C), _r(B, N, C), _r(B, 1, C), w, _r(B, 1, C), _r(B, 1, C, scale=0.1), 1e-6), gated_best),
        "qk_norm_rope": ("qk_norm_rope", (_r(B, N, 3, H, D), torch.ones(D, device=DEVICE),
                                          torch.ones(D, device=DEVICE), _freqs(N, D), 1e-6), qk_best),
        "attention": ("attention", (_r(B, H, N, D), _r(B, H, N, D), _r(B, H, N, D)), attn_best),
        "spatial_attention": ("spatial_attention", (_r(1, 512, 16, 16), _r(1, 512, 16, 16),
                                                    _r(1, 512, 16, 16)), spatial_best),
        "swiglu": ("swiglu", (_r(N, 3072), _r(N, 3072)), swiglu_best),
        "group_norm": ("group_norm", (_r(1, 128, 128, 128), 32, torch.ones(128, device=DEVICE),
                                      torch.zeros(128, device=DEVICE), 1e-6, True), gn_best),
        "layer_norm2d_modulate": ("layer_norm2d_modulate",
                                  (_r(1, 384, 30, 45), _r(1, 384), _r(1, 384, scale=0.1), 1e-6), ln2d_best),
        "masked_conv2d": ("masked_conv2d", (_r(1, 192, 32, 48), wmask, _r(384), "A"), conv_best),
    }


CASES = _cases()
ROUTES = ["reference", "cpu_best"] + (["triton"] if CUDA else [])


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name", list(CASES))
def test_bench_kernel(benchmark, name: str, route: str) -> None:
    entry, args, best = CASES[name]
    kernel, reference, _ = KERNELS[entry]
    fn = {"reference": reference, "cpu_best": best, "triton": kernel}[route]
    benchmark.group = name
    benchmark.extra_info["device"] = DEVICE
    if CUDA:
        import triton.testing

        benchmark.extra_info["do_bench_ms"] = triton.testing.do_bench(lambda: fn(*args))
    result = benchmark(fn, *args)
    # Every route computes the same thing: a quick sanity check that the benchmark is honest.
    ref = reference(*args)
    got, exp = (result[-1], ref[-1]) if isinstance(result, tuple) else (result, ref)
    torch.testing.assert_close(got.float(), exp.float(), atol=5e-2, rtol=5e-2)
