"""CoD samplers: official timesteps/coefficients, CFG window, goldens, seeds, one-step decode."""
from __future__ import annotations

import math

import pytest
import torch
from cod_golden_utils import assert_close_fp32, load_golden
from tiny_models import (
    ONE_STEP_NET_ARGS,
    PIXEL_NET_ARGS,
    build_seeded,
    seeded_images,
)

from cod_fast.diffusion import (
    AdamLMSampler,
    EulerSampler,
    create_sampler,
    flow_timesteps,
    initial_noise,
    one_step_decode,
    sample,
    unconditional_image,
)
from cod_fast.models.cod import OneStepCoD, PixNerDiT

# Sampler outputs accumulate the rounding of every step: allow 10x the single-forward tolerance.
SAMPLER_REL_TOL = 1e-3


class ConstantNet:
    """Fake denoiser: velocity 0 on the unconditional half and 1 on the conditional half.

    The guided velocity is then exactly the guidance scale used at that step. Records the times.
    """

    def __init__(self) -> None:
        self.calls: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, y: object, cond: torch.Tensor):
        assert x.shape[0] == 2 * (x.shape[0] // 2) and t.shape == (x.shape[0],)
        self.calls.append(t.clone())
        half = x.shape[0] // 2
        out = torch.cat([torch.zeros_like(x[:half]), torch.ones_like(x[half:])])
        return out, cond


def test_timesteps_are_official() -> None:
    gold = load_golden("sampler")
    ts = flow_timesteps(25)
    assert torch.equal(ts, gold["timesteps_25"])
    assert ts.dtype == torch.float32 and ts.shape == (26,)
    assert ts[0] == 0 and ts[-1] == 1
    torch.testing.assert_close(ts[:-1], torch.linspace(0, 0.96, 25), rtol=0, atol=1e-7)
    assert flow_timesteps(1).tolist() == [0.0, 1.0]


def test_adams_coefficients_are_official() -> None:
    gold = load_golden("sampler")["coeffs_25"]
    sampler = AdamLMSampler(num_steps=25, guidance=3.0)
    assert len(sampler.solver_coeffs) == 25
    assert len(sampler.solver_coeffs[0]) == 1 and sampler.solver_coeffs[0][0] == 1.0
    for i, coeffs in enumerate(sampler.solver_coeffs):
        assert torch.equal(torch.stack(list(coeffs)), gold[i, : len(coeffs)])
    # uniform steps: the second-order Adams-Bashforth weights -1/2, 3/2
    c = sampler.solver_coeffs[5]
    assert abs(c[0].item() + 0.5) < 1e-5 and abs(c[1].item() - 1.5) < 1e-5


@pytest.mark.parametrize("name, steps", [("adam2", 25), ("euler", 25), ("adam2", 7), ("euler", 1)])
def test_cfg_window_and_step_count(name: str, steps: int) -> None:
    cfg = 3.0
    net = ConstantNet()
    sampler = create_sampler(name, steps, cfg)
    noise = torch.zeros(1, 1, 2, 2)
    x = sampler(net, noise, codec_cond=torch.zeros(2, 1, 1, 1))
    assert len(net.calls) == steps  # one batch-of-two call per step
    times = sampler.timesteps.tolist()
    scales = []
    for i in range(steps):
        t = net.calls[i][0].item()
        assert math.isclose(t, times[i], abs_tol=1e-6)
        scales.append(cfg if 0.1 < t < 1.0 else 1.0)
    expected = 0.0
    for i in range(steps):
        if name == "euler":
            v = scales[i]
        else:  # Adams: weighted sum of the last len(coeffs) guided velocities
            coeffs = [c.item() for c in sampler.solver_coeffs[i]]
            v = sum(c * s for c, s in zip(coeffs, scales[i + 1 - len(coeffs): i + 1]))
        expected += v * (times[i + 1] - times[i])
    assert math.isclose(x.flatten()[0].item(), expected, rel_tol=1e-5)
    guided = [0.1 < c[0].item() < 1.0 for c in net.calls]
    if steps == 25:  # t = 0, 0.04, 0.08 unguided; 0.12 .. 0.96 guided
        assert guided == [False] * 3 + [True] * 22


def test_sampler_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        create_sampler("heun", 10, 3.0)
    with pytest.raises(ValueError):
        flow_timesteps(0)
    with pytest.raises(ValueError):
        EulerSampler(num_steps=5)(ConstantNet(), torch.zeros(1, 1, 2, 2))  # no condition at all


@pytest.fixture(scope="module")
def tiny_pixel() -> PixNerDiT:
    return build_seeded(PixNerDiT, PIXEL_NET_ARGS, seed=3)


@pytest.mark.parametrize("name, steps, cfg", [("adam2", 25, 3.0), ("euler", 10, 3.0), ("adam2", 3, 1.25)])
def test_sampler_matches_official_golden(tiny_pixel: PixNerDiT, name: str, steps: int, cfg: float) -> None:
    gold = load_golden("sampler")
    bitstream = bytes(gold["bitstream"].tolist())
    with torch.no_grad():
        codec_cond = tiny_pixel.decompress(bitstream, 32, 32, "cpu", uncond=unconditional_image(32, 32))
        assert_close_fp32(codec_cond, gold["codec_cond"])
        out = sample(tiny_pixel, codec_cond[1:], codec_cond[:1], (1, 3, 32, 32), steps=steps,
                     sampler=name, cfg=cfg, seed=0)
    assert_close_fp32(out, gold[f"{name}_{steps}_{cfg}"], rel=SAMPLER_REL_TOL)


@pytest.mark.usefixtures("one_torch_thread")
def test_sampler_evaluate_mode_matches_official_golden(tiny_pixel: PixNerDiT) -> None:
    # The golden was generated with one torch thread. At 2 threads on this AVX-512 CPU the sample
    # differs beyond the tolerance (measured); the VQ indices of this 32x32 image do not change
    # (tests/determinism): the 32x32 image is one token, and a GroupNorm over a 1x1 grid turns
    # rounding differences into different maps (as for the PixNerDiT golden's element 1). The
    # stream-level goldens (tests/golden) pin integers, which do not depend on the thread count.
    gold = load_golden("sampler")
    img = seeded_images(15, (1, 3, 32, 32))
    with torch.no_grad():
        out = create_sampler("adam2", 4, 3.0)(tiny_pixel, initial_noise((1, 3, 32, 32), 0), img,
                                              unconditional_image(32, 32))
    assert_close_fp32(out, gold["adam2_4_3.0_evaluate"], rel=SAMPLER_REL_TOL)


def test_initial_noise_is_the_official_draw_and_seeded() -> None:
    official = torch.randn((1, 4, 8, 8), generator=torch.Generator(device="cpu").manual_seed(7))
    assert torch.equal(initial_noise((1, 4, 8, 8), 7), official)
    assert not torch.equal(initial_noise((1, 4, 8, 8), 8), official)


def test_sample_is_deterministic_given_seed(tiny_pixel: PixNerDiT) -> None:
    cond = load_golden("sampler")["codec_cond"]
    with torch.no_grad():
        a = sample(tiny_pixel, cond[1:], cond[:1], (1, 3, 32, 32), steps=2, seed=5)
        b = sample(tiny_pixel, cond[1:], cond[:1], (1, 3, 32, 32), steps=2, seed=5)
        c = sample(tiny_pixel, cond[1:], cond[:1], (1, 3, 32, 32), steps=2, seed=6)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError):
        sample(tiny_pixel, cond[1:], cond[:1], (1, 3, 32, 32), sampler="ddim")
    with pytest.raises(ValueError):
        sample(tiny_pixel, cond[1:], cond[:1, :, :1], (1, 3, 32, 32))


def test_sample_bf16_autocast_close_to_fp32(tiny_pixel: PixNerDiT) -> None:
    cond = load_golden("sampler")["codec_cond"]
    with torch.no_grad():
        ref = sample(tiny_pixel, cond[1:], cond[:1], (1, 3, 32, 32), steps=3, seed=0)
        low = sample(tiny_pixel, cond[1:], cond[:1], (1, 3, 32, 32), steps=3, seed=0, dtype=torch.bfloat16)
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, rtol=0, atol=0.05 * ref.abs().max().item())


def test_unconditional_image() -> None:
    u = unconditional_image(16, 24)
    assert u.shape == (1, 3, 16, 24) and torch.all(u == -1.0)


def test_one_step_decode_matches_official_golden() -> None:
    gold = load_golden("OneStepCoD")
    model = build_seeded(OneStepCoD, dict(ONE_STEP_NET_ARGS, noise_level=0.0), seed=5)
    with torch.no_grad():
        cond = model.decompress(bytes(gold["bitstream"].tolist()), 32, 32, "cpu")
        out = one_step_decode(model, cond, seed=123)
    assert out.shape == (1, 3, 32, 32)
    assert_close_fp32(out, gold["inference_noise0"])
