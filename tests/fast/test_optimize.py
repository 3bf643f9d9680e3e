"""optimize(): every backend gives the reference's outputs (within fp32 rounding) on tiny models,
keeps the state-dict keys, shares the weights and leaves the input model unchanged."""
import os

import pytest
import torch

if not torch.cuda.is_available():  # the Triton backend is exercised through the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fast_helpers import backend_device, close_fp32, exact_fp32, randomize  # noqa: E402

import cod_fast.fast as fast  # noqa: E402
from cod_fast.errors import ExtensionUnavailableError  # noqa: E402
from cod_fast.models.cod import PixNerDiT  # noqa: E402
from cod_fast.models.cod.condition_codec import Decoder  # noqa: E402
from cod_fast.models.cod_lite import OneStepCoD as LiteOneStep  # noqa: E402

PIXEL = dict(in_channels=3, patch_size=16, num_groups=2, hidden_size_x=16, hidden_size=64,
             num_blocks=3, num_cond_blocks=2, nerf_mlpratio=2, ds=32, codebook_bits=4, up2x=True)
LITE = dict(pred="x", in_channels=3, patch_size=16, hidden_size_x=16, hidden_size=64, num_blocks=3,
            num_cond_blocks=2, light=True, up2x=True, ds=16, codebook_bits=8, noise_level=0.0)
TRITON_OK = torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


# Each case: (model, inputs, run) with run(model, *inputs) -> output tensor.
def _pixel_case():
    model = randomize(PixNerDiT(**PIXEL), 0)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 48, generator=gen)
    t = torch.tensor([0.3, 0.8])
    cond = torch.randn(2, 64, 2, 3, generator=gen)
    return model, (x, t, cond), (lambda m, x, t, cond: m(x, t, None, cond)[0])


def _lite_case():
    model = randomize(LiteOneStep(**LITE), 2)
    model.eval()  # rebuilds the t=0 adaLN cache from the randomised weights
    gen = torch.Generator().manual_seed(3)
    y = torch.rand(1, 3, 32, 48, generator=gen)
    cond = torch.randn(1, 64, 2, 3, generator=gen)
    return model, (y, cond), (lambda m, y, cond: m.inference(y, cond))


def _codec_case():
    # The condition decoder (GroupNorm, Swish, single-head spatial attention) on a 3x2 grid; the
    # encoder has the same blocks at 128+ channels, too slow for the interpreter.
    model = randomize(Decoder(out_ch=32, z_ch=16, ds=32, up2x=True, light=True), 4)
    z = torch.randn(1, 16, 3, 2, generator=torch.Generator().manual_seed(5))
    return model, (z,), (lambda m, z: m(z))


CASES = {"pixnerdit": _pixel_case, "cod_lite": _lite_case, "codec": _codec_case}
BACKENDS = ["reference", "cpu", pytest.param("triton", marks=pytest.mark.skipif(
    not TRITON_OK, reason="needs CUDA or TRITON_INTERPRET=1"))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_backend_matches_reference(case: str, backend: str) -> None:
    """On the backend's device (Triton on the GPU when there is one, else the interpreter)."""
    model, inputs, run = CASES[case]()
    device = backend_device(backend)
    model = model.to(device)
    inputs = tuple(t.to(device) for t in inputs)
    keys = list(model.state_dict())
    with torch.inference_mode(), exact_fp32():
        expected = run(model, *inputs)
        fast_model = fast.optimize(model, backend=backend)
        got = run(fast_model, *inputs)
        again = run(model, *inputs)
    assert got.device.type == device.type
    # fp32 everywhere; reductions over <= 256 elements: a few ulps of the output scale
    close_fp32(got, expected)
    torch.testing.assert_close(again, expected, rtol=0, atol=0)  # the input model is untouched
    assert list(fast_model.state_dict()) == keys
    assert fast.replaced(model) == []
    swapped = fast.replaced(fast_model)
    if backend == "reference":
        assert swapped == []
    else:
        assert swapped and all(r.backend == backend for r in swapped)
    shared = {p.data_ptr() for p in model.parameters()}
    assert all(p.data_ptr() in shared for p in fast_model.parameters())


def test_replaced_reports_paths_and_reasons() -> None:
    model, _, _ = _pixel_case()
    report = fast.replaced(fast.optimize(model, backend="cpu"))
    paths = {r.path: r for r in report}
    assert paths["blocks.0"].reference == "FlattenDiTBlock" and paths["blocks.0"].fast == "CpuFlattenDiTBlock"
    assert paths["blocks.2"].reference == "NerfBlock"
    assert all(str(r).startswith(r.path) for r in report)


def test_choose_backend() -> None:
    model = torch.nn.Linear(2, 2)
    assert fast.choose_backend(model, "auto")[0] == "cpu"
    assert fast.choose_backend(model, "reference") == ("reference", "asked for")
    with pytest.raises(ValueError):
        fast.choose_backend(model, "tpu")


def test_triton_backend_refuses_cpu_without_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ExtensionUnavailableError, match="CUDA"):
        fast.optimize(torch.nn.Linear(2, 2), backend="triton")


def test_optimize_rejects_non_models() -> None:
    with pytest.raises(TypeError):
        fast.optimize(object())


def test_optimize_int8_opt_in() -> None:
    model, inputs, run = _pixel_case()
    with torch.inference_mode():
        expected = run(model, *inputs)
        with pytest.raises(ValueError):
            fast.optimize(model, backend="cpu", quantize="int4")
        q = fast.optimize(model, backend="cpu", quantize="int8")
        got = run(q, *inputs)
    assert list(q.state_dict()) == list(model.state_dict())
    rel = float((got - expected).norm() / expected.norm())
    assert 0 < rel < 0.2  # approximate by design, but close
