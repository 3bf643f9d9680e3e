"""Every fused Triton block under autocast, with the mixed dtypes autocast produces (bf16/fp16 conv
and linear outputs, fp32 residual streams, gates and norms): the optimized model runs, returns the
reference's dtype, and its error against the fp32 reference is no worse than the reference's own
autocast error (plus a margin). fp16 in Triton's interpreter on the CPU; fp16 and bf16 on a GPU (the
interpreter's bf16 arithmetic is broken)."""
import os

import pytest
import torch

if not torch.cuda.is_available():  # the Triton backend is exercised through the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fast_helpers import backend_device, exact_fp32, randomize  # noqa: E402
from test_optimize import CASES as MODEL_CASES  # noqa: E402
from test_optimize_sodec import CONV_PROJ_UNET, _tiny_vae  # noqa: E402

import cod_fast.fast as fast  # noqa: E402
from cod_fast.models.sodec import UNet2DConditionModel  # noqa: E402

TRITON_OK = torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"
pytestmark = [pytest.mark.skipif(not TRITON_OK, reason="needs CUDA or TRITON_INTERPRET=1"),
              pytest.mark.usefixtures("one_torch_thread")]


def _unet_case():
    unet = randomize(UNet2DConditionModel(CONV_PROJ_UNET), 1)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 6, 10, generator=gen)
    ctx = torch.randn(1, 5, CONV_PROJ_UNET.cross_attention_dim, generator=gen)
    return unet, (x, ctx), (lambda m, x, ctx: m(x, 999, ctx))


def _vae_case():
    z = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(4))
    return _tiny_vae("silu"), (z,), (lambda m, z: m.decode(z))


CASES = {**MODEL_CASES, "sodec_unet": _unet_case, "sd_vae": _vae_case}
DTYPES = [torch.float16, pytest.param(torch.bfloat16, marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="bf16 arithmetic is broken in Triton's interpreter")])]


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref.double()).norm() / ref.double().norm())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_fused_blocks_under_autocast(case: str, dtype: torch.dtype) -> None:
    model, inputs, run = CASES[case]()
    device = backend_device("triton")
    model = model.to(device)
    inputs = tuple(t.to(device) for t in inputs)
    with torch.inference_mode(), exact_fp32():
        exact = run(model, *inputs).cpu()
        fast_model = fast.optimize(model, backend="triton")
        with torch.autocast(device.type, dtype=dtype):
            ref = run(model, *inputs)
            got = run(fast_model, *inputs)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert bool(torch.isfinite(got).all())
    err_ref, err_got = _rel(ref.cpu(), exact), _rel(got.cpu(), exact)
    # Same operations in the same precision; only the fused kernels' fp32 internals differ.
    assert err_got <= 1.5 * err_ref + 1e-4, f"autocast {dtype}: fast {err_got:.2e} vs reference {err_ref:.2e}"
