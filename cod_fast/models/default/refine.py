"""Encoder-side latent refinement of the default model: a search for better y, same decoder.

The analysis ``g_a`` is trained to give good latents on average; for one given image, a few
gradient steps on the latent itself find a y that the unchanged entropy model and synthesis
code at a lower rate-distortion cost (Campos et al. 2019, "Content adaptive optimization for
neural image compression"; Yang et al. 2020, "Improving inference for neural image
compression"). Only the encoder's choice of y changes: the stream format, the entropy
parameters (computed afterwards from the refined y by the usual fixed-point path) and the
decoder are those of a plain encode, so every decoder decodes a refined stream.

The search (``refine_latents``): the variable is y in the gain domain of the rate level (where
one quantizer step is 1, so the step size ``lr`` means the same at every level), the loss the
training loss of that level, ``lambda_q * 255^2 * MSE + bpp``, with the training's proxies: the
rate of y under additive uniform noise (from a seeded generator), z and the synthesis's input
rounded with a straight-through gradient. Adam with a cosine-decayed step. The model's weights
are not touched.

Determinism: the search is float arithmetic, so a refined encode is reproducible on the same
machine at the same torch thread count (the noise is seeded), and may pick other symbols on
another CPU or thread count, as any encoder decision may. Decoding is not affected: the
symbols are in the stream and their entropy parameters are integers (the fixed-point path),
so every machine decodes a refined stream to the same pixels as any other stream.

Measured while choosing (Kodak kodim05 and kodim23, real bytes, against the RDOQ encoder's own
curve at the same PSNR): 20 steps of 0.005 save 2-7 % of the rate; more steps or larger steps
over-fit the proxies (60 steps: -1.0 % where 20 gave -1.9 %; lr 0.05: +40 %), the
straight-through rate proxy gives 0.3-1.3 points less, and RDOQ on top of a refined latent costs
1.5 points (its distortion weight was fitted to unrefined latents), so a refined encode rounds
plainly (``DefaultCodec.encode``'s ``rdoq=None``). Cost: one forward and backward pass of the
whole model per step (about 0.75 s at 768x512 on two cores, ``bench/default_refine_cost.py``) and its autograd memory
(``REFINE_BYTES_PER_PIXEL``).
"""
from __future__ import annotations

import math

import torch

from .entropy_models import gaussian_likelihood, quantize
from .model import DefaultCodecModel, bits_of, pad_to_stride

#: Refinement steps ``DefaultCodec.encode(refine=...)`` accepts at most (a step is a full forward
#: and backward pass: 1,000 are over ten minutes for a Kodak image on two cores).
MAX_REFINE_STEPS = 1000

#: The chosen search settings (see the module docstring): Adam step in quantizer steps, the seed
#: of the rate proxy's noise.
REFINE_LR = 0.005
REFINE_SEED = 0

#: Peak bytes per padded pixel the search holds on top of a plain encode (the autograd graph of
#: one forward pass of the float32 model, Adam's two moments of y): measured at most 1.24 GB of
#: peak RSS above a plain encode's at 768x512 (393,216 px: 3,150 B/px; 1.07-1.15 GB in
#: ``bench/default_refine_cost.py``), with about 40 % margin.
REFINE_BYTES_PER_PIXEL = 4500


def refine_latents(net: DefaultCodecModel, x: torch.Tensor, quality: float, steps: int,
                   lr: float = REFINE_LR, seed: int = REFINE_SEED) -> torch.Tensor:
    """The refined gain-free analysis output for one image.

    x: (1, 3, H, W) float32 in [0, 1], any H, W (padded to multiples of 64 as ``compress``
    pads); quality: rate level in [0, levels - 1]; steps in [0, ``MAX_REFINE_STEPS``] (0 returns ``g_a``'s output; TypeError / ValueError otherwise).
    Returns y_unit float32 (1, M, H'/16, W'/16) on the model's device, detached: what
    ``net.g_a(pad_to_stride(x))`` returns, after the search. The loss compares the synthesis with
    the unpadded image only. The model's parameters get no gradient and keep their values.
    """
    check_refine_steps(steps)
    # a caller inside torch.inference_mode (cod_fast.evaluate, the benches) still gets the search:
    # autograd needs ordinary tensors, so x is copied outside inference mode
    with torch.inference_mode(False), torch.enable_grad():
        return _search(net, x.clone(), quality, steps, lr, seed)


def _search(net: DefaultCodecModel, x: torch.Tensor, quality: float, steps: int, lr: float,
            seed: int) -> torch.Tensor:
    """``refine_latents``' body, run with autograd enabled outside inference mode."""
    dev = next(net.parameters()).device
    x = x.to(device=dev, dtype=torch.float32)
    h, w = int(x.shape[2]), int(x.shape[3])
    xp = pad_to_stride(x)
    q = net._check_levels(quality, 1, dev)
    with torch.no_grad():
        y_unit = net.g_a(xp).float()
    if steps == 0:
        return y_unit
    gain = net._gain(net.log_gain, q).detach()
    inv_gain = net._gain(net.log_inv_gain, q).detach()
    lam = net.rd_lambda(float(q[0]))
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    y = (y_unit * gain).requires_grad_(True)
    opt = torch.optim.Adam([y], lr=lr)
    was_training = net.training
    frozen = [p for p in net.parameters() if p.requires_grad]
    net.eval()
    for p in frozen:
        p.requires_grad_(False)
    try:
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
            y_s, z, hyper_gain = net._analyse(y / gain, q)
            z_hat = quantize(z, "ste")
            scales, means = net._y_params(y_s, z_hat, hyper_gain)
            noise = torch.rand(y_s.shape, generator=gen, device=dev, dtype=y_s.dtype) - 0.5
            bits = (bits_of(gaussian_likelihood(y_s + noise, means, scales))
                    + bits_of(net.density_z.likelihood(z_hat)))
            y_hat = quantize(y_s, "ste", means)
            x_hat = net.g_s(y_hat * inv_gain, q)[:, :, :h, :w]
            loss = lam * 255.0**2 * (x_hat - x).pow(2).mean() + bits.sum() / (h * w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
        net.train(was_training)
    return (y.detach() / gain).contiguous()


def check_refine_steps(steps: object) -> int:
    """``steps`` as an int in [0, MAX_REFINE_STEPS]; TypeError / ValueError otherwise."""
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(f"refine must be an int number of steps, got {type(steps).__name__}")
    if not 0 <= steps <= MAX_REFINE_STEPS:
        raise ValueError(f"refine must lie in [0, {MAX_REFINE_STEPS}] steps, got {steps}")
    return steps


__all__ = ["refine_latents", "check_refine_steps", "MAX_REFINE_STEPS", "REFINE_BYTES_PER_PIXEL"]
