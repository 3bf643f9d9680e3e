"""SODEC one-step denoising: the SD DDPM schedule and the x0 conversion at t = 999."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cod_fast.models.sodec import (
    SD21_BASE_SCHEDULE,
    TINY_UNET,
    DDPMSchedule,
    UNet2DConditionModel,
    one_step_denoise,
    x0_from_prediction,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: see tests/conftest.py


def test_schedule_values() -> None:
    a = SD21_BASE_SCHEDULE.alphas_cumprod
    assert a.dtype == torch.float64 and a.shape == (1000,)
    # first value: 1 - 0.00085 exactly (up to float64 rounding of sqrt then square)
    assert a[0].item() == pytest.approx(0.99915, rel=1e-15, abs=0)
    assert SD21_BASE_SCHEDULE.alpha_bar(999) == pytest.approx(0.004660098513077238, rel=1e-12)
    # diffusers builds the same schedule in float32: agreement to its resolution
    betas32 = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    a32 = torch.cumprod(1 - betas32, dim=0).double()
    assert ((a32 - a) / a).abs().max().item() < 2e-6
    assert torch.all(a[1:] < a[:-1])


def test_x0_inverts_forward_noising() -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 6, 6, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 4, 6, 6, generator=g, dtype=torch.float64)
    for t in (0, 500, 999):
        a = SD21_BASE_SCHEDULE.alpha_bar(t)
        z = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
        torch.testing.assert_close(x0_from_prediction(z, eps, t), x0, atol=1e-12, rtol=1e-12)
        v = math.sqrt(a) * eps - math.sqrt(1 - a) * x0
        vsched = DDPMSchedule(prediction_type="v_prediction")
        torch.testing.assert_close(x0_from_prediction(z, v, t, vsched), x0, atol=1e-12, rtol=1e-12)


class _Oracle(nn.Module):
    """Returns a fixed prediction and records the timestep it was called with."""

    def __init__(self, prediction: torch.Tensor) -> None:
        super().__init__()
        self.prediction = prediction
        self.calls: list[object] = []

    def forward(self, sample: torch.Tensor, timestep: object, ctx: torch.Tensor) -> torch.Tensor:
        self.calls.append(timestep)
        return self.prediction


def test_one_step_calls_unet_at_999_and_converts() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(1, 4, 8, 8, generator=g)
    eps = torch.randn(1, 4, 8, 8, generator=g)
    oracle = _Oracle(eps)
    z0 = one_step_denoise(oracle, z, torch.zeros(1, 2, 32))
    assert oracle.calls == [999]
    a = 0.004660098513077238
    torch.testing.assert_close(z0, (z - math.sqrt(1 - a) * eps) / math.sqrt(a), atol=1e-5, rtol=1e-6)
    assert z0.dtype == torch.float32


def test_one_step_with_tiny_unet() -> None:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(TINY_UNET).eval()
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, 4, 8, 8, generator=g)
    ctx = torch.randn(1, 3, 32, generator=g)
    with torch.inference_mode():
        z0 = one_step_denoise(unet, z, ctx)
        eps = unet(z, 999, ctx)
    torch.testing.assert_close(z0, x0_from_prediction(z, eps, 999), atol=0, rtol=0)
    assert z0.shape == z.shape


def test_schedule_and_timestep_validation() -> None:
    oracle = _Oracle(torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match="t must be in"):
        one_step_denoise(oracle, torch.zeros(1, 4, 2, 2), torch.zeros(1, 1, 32), t=1000)
    with pytest.raises(TypeError, match="t must be an int"):
        one_step_denoise(oracle, torch.zeros(1, 4, 2, 2), torch.zeros(1, 1, 32), t=999.0)  # type: ignore[arg-type]
    assert oracle.calls == []
    with pytest.raises(ValueError, match="prediction_type"):
        DDPMSchedule(prediction_type="sample")
    with pytest.raises(ValueError, match="beta"):
        DDPMSchedule(beta_start=0.5, beta_end=0.1)
    with pytest.raises(ValueError, match="shape"):
        x0_from_prediction(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 3), 999)
