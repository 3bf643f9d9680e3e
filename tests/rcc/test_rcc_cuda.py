"""The CUDA reverse-channel coder: its binding's argument conversion and the backend choice (both
checked on the CPU too), and on a GPU bit-identity with the C++ coder in both directions."""
import importlib
import math
import types

import pytest
import torch

from cod_fast import _ext, rcc
from cod_fast.rcc import api as rcc_api

_C = _ext.cpu_ext()
has_cpp = getattr(_C, "rcc", None) is not None
needs_cpp = pytest.mark.skipif(not has_cpp, reason="cod_fast._C.rcc is not built")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available() or _ext.cuda_ext() is None,
                               reason="needs a GPU and cod_fast._C_cuda")


def _cuda_module():
    """cod_fast._C_cuda imported directly (it links cudart statically: importing it needs no GPU)."""
    try:
        return importlib.import_module("cod_fast._C_cuda")
    except ImportError as exc:
        pytest.skip(f"cod_fast._C_cuda is not built here (no nvcc at build time): {exc}")


def _mu(dim: int, kl_bits: float, seed: int) -> torch.Tensor:
    """A mu whose KL 0.5*||mu||^2/ln2 equals kl_bits."""
    g = torch.randn(dim, generator=torch.Generator().manual_seed(seed))
    return (g / g.norm() * math.sqrt(2 * math.log(2) * kl_bits)).float()


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32)


def test_binding_converts_python_lists_and_checks_before_the_device() -> None:
    """The plan crosses as Python lists (pybind11/stl.h): an empty step returns without a CUDA
    call, and an inconsistent plan raises ValueError before any device is touched."""
    cu = _cuda_module().rcc
    for seq in (list, tuple):
        assert cu.encode(0, 0, seq(), seq(), 0, 1, 2, 0, 0, 0) is None
        assert cu.decode(0, 0, seq(), seq(), 0, 1, 2, 0, 0) is None
    with pytest.raises(ValueError, match="sum to dim"):
        cu.encode(0, 10, [4], [9], 0, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="one chunk_bits"):
        cu.decode(0, 10, [4, 4], [10], 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match=r"\[0, 16\]"):
        cu.encode(0, 10, [17], [10], 0, 0, 0, 0, 0, 0)
    with pytest.raises(TypeError):
        cu.encode(0, 10, "4", [10], 0, 0, 0, 0, 0, 0)


@needs_cpp
def test_auto_backend_follows_the_data_not_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a CUDA coder present, "auto" still runs CPU tensors on the C++ coder (DiffC used to
    pick the GPU for a CPU codec on any machine with a GPU)."""
    touched = []

    class FakeCudaRcc:
        def __getattr__(self, name):
            touched.append(name)
            raise AssertionError("the CUDA coder was used for CPU data")

    monkeypatch.setattr(rcc_api._ext, "cuda_ext", lambda: types.SimpleNamespace(rcc=FakeCudaRcc()))
    assert rcc_api.resolve_backend("auto", "cpu") == "cpp"
    assert rcc_api.resolve_backend("auto", torch.device("cuda", 0)) == "cuda"
    mu = _mu(40, 5.0, 1)
    idx, sample = rcc.encode(mu, 5.0, 3, 1)
    assert torch.equal(_bits(rcc.decode(idx, 40, 5.0, 3, 1)), _bits(sample))
    assert touched == []


def test_auto_backend_without_the_cuda_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rcc_api._ext, "cuda_ext", lambda: None)
    assert rcc_api.resolve_backend("auto", "cuda") in ("cpp", "reference")
    with pytest.raises(rcc_api.ExtensionUnavailableError, match="cuda"):
        rcc_api.resolve_backend("cuda", "cuda")


# (dim, KL budget in bits, seed, step): small and large steps, zero budget, 64-bit seeds.
CASES = [(40, 5.0, 1, 0), (333, 0.0, 7, 5), (5000, 90.0, 2**40, 3), (70_000, 14.0, 9, 1),
         (4096, 600.0, 2**63 + 11, 77), (786_432, 0.5, 123, 141)]


@pytest.mark.cuda
@needs_gpu
@needs_cpp
@pytest.mark.parametrize("dim, kl, seed, step", CASES)
def test_cuda_and_cpp_coders_agree_bitwise(dim: int, kl: float, seed: int, step: int) -> None:
    mu = _mu(dim, max(kl, 0.5), seed % 97)
    idx_c, s_c = rcc.encode(mu, kl, seed, step, backend="cpp")
    idx_g, s_g = rcc.encode(mu.cuda(), kl, seed, step, backend="cuda")
    assert idx_g.is_cuda and s_g.is_cuda
    assert torch.equal(idx_c, idx_g.cpu())  # the same candidate in every chunk
    assert torch.equal(_bits(s_c), _bits(s_g.cpu()))  # and the same sample bits
    # Written on one device, read on the other.
    from_gpu_on_cpu = rcc.decode(idx_g.cpu(), dim, kl, seed, step, backend="cpp")
    from_cpu_on_gpu = rcc.decode(idx_c.cuda(), dim, kl, seed, step, backend="cuda")
    assert torch.equal(_bits(from_gpu_on_cpu), _bits(s_c))
    assert torch.equal(_bits(from_cpu_on_gpu.cpu()), _bits(s_c))
    # "auto" puts each on its data's device.
    assert rcc.decode(idx_g, dim, kl, seed, step).is_cuda
    assert not rcc.decode(idx_c, dim, kl, seed, step).is_cuda


@pytest.mark.cuda
@needs_gpu
@needs_cpp
def test_cuda_decode_of_a_pixel_step_past_int32_offsets() -> None:
    """A pixel-CoD step (786,432 dims) with full 16-bit chunks: candidate k's normals start at
    k * dims, past 2^31 for large k (DiffC's int32 overflow); decoding any index agrees with C++."""
    dim, kl, seed, step = 786_432, 60.0, 5, 9
    plan = rcc.make_plan(dim, kl)
    gen = torch.Generator().manual_seed(0)
    idx = torch.stack([torch.randint(0, 1 << b, (1,), generator=gen)[0] for b in plan.bits])
    idx[0] = (1 << plan.bits[0]) - 1  # the last candidate of the first chunk
    cpu = rcc.decode(idx, dim, kl, seed, step, backend="cpp")
    gpu = rcc.decode(idx.cuda(), dim, kl, seed, step, backend="cuda")
    assert torch.equal(_bits(cpu), _bits(gpu.cpu()))
