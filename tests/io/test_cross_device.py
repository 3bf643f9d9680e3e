"""Streams cross devices: written on the GPU, read on the CPU, and the other way round, for every
codec family (CoD pixel, one-step CoD-Lite, DiffC over CoD, SODEC, the default model).

The integers a stream carries are parsed the same on every device (the container and the entropy
decoders are integer code); the pixels come from float networks, so a decode on the GPU is compared
with the decode of the same stream on the CPU within a stated tolerance: PSNR >= 35 dB between the
two uint8 images (cuDNN runs fp32 convolutions in TF32 by default, as users run it).
Skipped without a GPU."""
import copy

import pytest
import torch
from tiny_models import TINY_LITE, TINY_PIXEL, official_checkpoint  # noqa: E402

import cod_fast  # noqa: E402
from cod_fast.loading import load_model  # noqa: E402

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

MIN_PSNR_DB = 35.0


def _image(h: int = 64, w: int = 96) -> torch.Tensor:
    """A smooth test image uint8 [3, h, w] (gradients plus a little seeded noise)."""
    gen = torch.Generator().manual_seed(0)
    y = torch.linspace(0, 1, h)[:, None]
    x = torch.linspace(0, 1, w)[None, :]
    base = torch.stack([x * y, (0.5 + 0.4 * torch.sin(6 * x)).expand(h, w), (1 - y).expand(h, w)]) * 255
    return (base + 8 * torch.randn(3, h, w, generator=gen)).clamp(0, 255).to(torch.uint8)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(255.0**2 / mse)).item()


def _check_both_ways(cpu_codec, gpu_codec, encode_kw=None, decode_kw=None) -> None:
    encode_kw, decode_kw = encode_kw or {}, decode_kw or {}
    img = _image()
    from_cpu = cpu_codec.encode(img, **encode_kw)
    from_gpu = gpu_codec.encode(img, **encode_kw)
    for data in (from_cpu, from_gpu):
        on_cpu = cpu_codec.decode(data, **decode_kw)
        on_gpu = gpu_codec.decode(data, **decode_kw)
        assert on_cpu.dtype == on_gpu.dtype == torch.uint8 and on_cpu.shape == on_gpu.shape
        psnr = _psnr(on_cpu.cpu(), on_gpu.cpu())
        print(f"{type(cpu_codec).__name__}: CPU vs GPU decode of one stream: {psnr:.1f} dB")
        assert psnr >= MIN_PSNR_DB


@pytest.mark.parametrize("config", [TINY_PIXEL, TINY_LITE], ids=["cod_pixel", "cod_lite_one_step"])
def test_cod_streams_cross_devices(config: dict) -> None:
    ckpt = official_checkpoint(config, seed=11)
    cpu = load_model(copy.deepcopy(config), ckpt)
    gpu = load_model(copy.deepcopy(config), ckpt, device="cuda")
    kw = {"steps": 4} if config is TINY_PIXEL else {}
    _check_both_ways(cpu, gpu, encode_kw=kw)


def test_diffc_streams_cross_devices() -> None:
    import tiny_models

    from cod_fast.codecs.diffc import DiffCCodec

    ckpt = {"ema_denoiser." + k: v for k, v in tiny_models.seeded_state_dict(tiny_models.TINY_PIXEL, 11).items()}
    cpu = DiffCCodec(load_model(copy.deepcopy(tiny_models.TINY_PIXEL), ckpt))
    gpu = DiffCCodec(load_model(copy.deepcopy(tiny_models.TINY_PIXEL), ckpt, device="cuda"))
    _check_both_ways(cpu, gpu, encode_kw={"steps": 6})


@pytest.mark.parametrize("entropy", ["cpp", "triton"])
def test_sodec_streams_cross_devices(entropy: str) -> None:
    cpu = load_model("sodec-tiny")
    gpu = load_model("sodec-tiny", device="cuda")
    img = _image()
    data = cpu.encode(img, entropy_backend="reference")
    assert gpu.encode(img, entropy_backend=entropy) == data  # integer entropy parameters: same bytes
    on_cpu, on_gpu = cpu.decode(data), gpu.decode(data, entropy_backend=entropy)
    psnr = _psnr(on_cpu.cpu(), on_gpu.cpu())
    print(f"SODEC tiny: CPU vs GPU decode: {psnr:.1f} dB")
    assert psnr >= MIN_PSNR_DB


def test_default_model_streams_cross_devices() -> None:
    cpu = cod_fast.load_model()
    gpu = cod_fast.load_model(device="cuda")
    _check_both_ways(cpu, gpu)
