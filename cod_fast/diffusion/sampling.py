"""CoD decoding loops: starting noise, the unconditional branch, multi-step and one-step decode.

Mirrors the ``decompress`` paths of GenCodec ``CoD/cod/inference.py`` and
``CoD/downstream/finetuned_one_step_cod.py``, on any device, fp32 by default or bf16 autocast.

:class:`CapturableSampling` runs the same loops with nothing that waits for the device (for CUDA
graphs); :class:`SamplingGraphs` caches one CUDA graph per whole sampling loop.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Any, Callable, ContextManager, Hashable, Sequence

import torch
from torch import nn

from ..fast.graphs import GraphRunner
from .samplers import SAMPLERS, AdamLMSampler, DenoiserFn, EulerSampler, create_sampler, guidance_combine

DEFAULT_STEPS = 25  # inference.py: --step default 25
DEFAULT_SAMPLER = "adam2"  # inference.py: --sampler default "adam2"
DEFAULT_SEED = 0  # inference.py: --seed default 0
DEFAULT_CFG = 3.0  # inference.py: --cfg default 3.0 (README: 1.25 for latent 0.0039 bpp)
UNCOND_VALUE = -1.0  # autoencoder.py PixelConditioner: uncondition = y * 0. - 1.


def autocast_context(device: torch.device | str, dtype: torch.dtype) -> ContextManager[None]:
    """``torch.autocast`` to ``dtype`` on ``device``'s type for bf16/fp16; a no-op for fp32.

    The official scripts run everything under CUDA bf16 autocast; ``dtype=torch.float32`` is the
    exact reference.
    """
    if dtype == torch.float32:
        return contextlib.nullcontext()
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def initial_noise(shape: Sequence[int], seed: int) -> torch.Tensor:
    """Starting noise exactly as ``inference.py`` draws it: ``torch.randn(shape)`` in fp32 from a
    CPU generator seeded with ``seed`` (pixel: ``(1, 3, H, W)``; latent: ``(1, 4, H/8, W/8)``)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, device="cpu", dtype=torch.float32)


def unconditional_image(
    height: int, width: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The unconditional input of classifier-free guidance: ``(1, 3, height, width)`` filled with -1.

    The official decompress builds it from ``rand_like(xT)``, which for latent models has the
    latent's shape (4 channels, 1/8 size) and cannot enter the 3-channel encoder; the
    ``evaluate`` path and pixel models use the image's shape, as here.
    """
    return torch.full((1, 3, height, width), UNCOND_VALUE, device=device, dtype=dtype)


def sample(
    net: DenoiserFn,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    shape: Sequence[int],
    steps: int = DEFAULT_STEPS,
    sampler: str = DEFAULT_SAMPLER,
    cfg: float = DEFAULT_CFG,
    seed: int = DEFAULT_SEED,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Multi-step CoD decode of one condition map.

    Args:
        net: a :class:`~cod_fast.models.cod.PixNerDiT` or :class:`~cod_fast.models.cod.DDT`.
        cond: condition map ``(1, hidden, h, w)`` (``net.y_embedder.decompress(...)``).
        uncond: map of the unconditional image ``(1, hidden, h, w)`` (see :func:`unconditional_image`).
        shape: output shape, ``(1, 3, H, W)`` pixel or ``(1, 4, H/8, W/8)`` latent.
        steps, sampler, cfg, seed: as the official ``--step``, ``--sampler``, ``--cfg``, ``--seed``.
        dtype: ``torch.float32`` (reference) or ``torch.bfloat16`` (autocast, as the official run).

    Returns:
        ``shape`` tensor on ``cond``'s device: the decoded image in about [-1, 1] (pixel) or the
        latent (to be decoded by the SD-VAE).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    if cond.shape != uncond.shape or cond.ndim != 4:
        raise ValueError(f"cond {tuple(cond.shape)} and uncond {tuple(uncond.shape)} must be equal 4D shapes")
    if len(shape) != 4 or shape[0] != cond.shape[0]:
        raise ValueError(f"shape {tuple(shape)} must be 4D with the batch of cond ({cond.shape[0]})")
    diffusion_sampler = create_sampler(sampler, steps, cfg)
    noise = initial_noise(shape, seed).to(cond.device)
    codec_cond = torch.cat([uncond, cond], dim=0)
    with autocast_context(cond.device, dtype):
        return diffusion_sampler(net, noise, codec_cond=codec_cond)


def one_step_decode(
    net: nn.Module,
    cond: torch.Tensor,
    seed: int = DEFAULT_SEED,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One-step decode with a :class:`~cod_fast.models.cod.OneStepCoD`: ``(B, hidden, h, w) -> (B, 3, 16h, 16w)``.

    The model is switched to eval mode (which caches its t=0 modulation); its input noise
    (scaled by ``net.noise_level``) comes from a CPU generator seeded with ``seed``.
    """
    if net.training:
        net.eval()
    patch = net.patch_size
    b, _, h, w = cond.shape
    y = torch.zeros((b, 3, h * patch, w * patch), device=cond.device, dtype=cond.dtype)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with autocast_context(cond.device, dtype):
        return net.inference(y, cond=cond, generator=generator)


class CapturableSampling:
    """One sampler's loop with its host-side decisions made in advance, safe to capture in a CUDA graph.

    The eager samplers decide per step whether guidance applies by reading the current time on the
    host (``bool(t > 0.1)``), and Euler copies its timesteps to the device inside the loop; both
    would stop a CUDA graph capture. Here they are done once, at construction, with exactly the
    eager operations on the same device and dtype (so the decisions and the device-side times are
    the eager ones), and :meth:`__call__` replays the eager arithmetic op for op without reading
    anything back: it is bit-identical to the eager sampler (tested) and captures as one graph.

    Args:
        sampler: the eager sampler (``create_sampler(...)``), ``EulerSampler`` or ``AdamLMSampler``.
        batch: the batch ``B`` of the noise.
        device, dtype: device and dtype of the noise (the samplers keep time in the noise dtype).
    """

    def __init__(self, sampler: EulerSampler | AdamLMSampler, batch: int, device: torch.device | str,
                 dtype: torch.dtype) -> None:
        if not isinstance(sampler, (EulerSampler, AdamLMSampler)):
            raise TypeError(f"sampler must be an EulerSampler or AdamLMSampler, got {type(sampler).__name__}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.sampler = sampler
        self.batch = batch
        self.device = torch.device(device)
        self.dtype = dtype
        self.times: torch.Tensor | None = None  # Euler's device timesteps (N+1,), made before capture
        if isinstance(sampler, AdamLMSampler):
            # AdamLMSampler accumulates t_cur += dt in the noise dtype and tests the window on it.
            t_cur = torch.zeros([batch]).to(self.device, dtype)
            guided = []
            for dt in sampler.timedeltas:
                guided.append(sampler.guided(t_cur[0]))
                t_cur += dt
        else:
            self.times = sampler.timesteps.to(self.device, dtype)
            guided = [sampler.guided(t) for t in self.times[:-1]]
        #: Guidance scale of each step: the sampler's inside the window, 1.0 outside (as eager).
        self.scales: tuple[float, ...] = tuple(sampler.guidance if g else 1.0 for g in guided)
        #: What a captured loop bakes in: sampler, steps, guidance settings, schedule, per-step scales.
        self.key: Hashable = (self.name, sampler.num_steps, sampler.guidance, sampler.guidance_interval_min,
                              sampler.guidance_interval_max, tuple(sampler.timesteps.tolist()), self.scales,
                              batch, str(self.device), dtype)

    @property
    def name(self) -> str:
        """``"adam2"`` (Adams order 2), ``"adam1"`` or ``"euler"``."""
        if isinstance(self.sampler, AdamLMSampler):
            return f"adam{self.sampler.order}"
        return "euler"

    def __call__(self, net: DenoiserFn, noise: torch.Tensor, codec_cond: torch.Tensor) -> torch.Tensor:
        """Integrate ``noise (B, C, H, W)`` from t=0 to t=1 given the codec maps ``(2B, hidden, h, w)``
        (``cat([uncond, cond])``); returns ``(B, C, H, W)`` in the noise dtype. No host sync inside."""
        if noise.shape[0] != self.batch or noise.device != self.device or noise.dtype != self.dtype:
            raise ValueError(f"noise {tuple(noise.shape)} {noise.dtype} on {noise.device} does not match "
                             f"this plan (batch {self.batch}, {self.dtype} on {self.device})")
        if isinstance(self.sampler, AdamLMSampler):
            return self._adams(net, noise, codec_cond)
        return self._euler(net, noise, codec_cond)

    def _velocity(self, net: DenoiserFn, x: torch.Tensor, t: torch.Tensor, codec_cond: torch.Tensor,
                  step: int) -> tuple[torch.Tensor, torch.Tensor]:
        # _GuidedSampler.velocity with the window decision taken from the plan.
        out, codec_cond = net(torch.cat([x, x], dim=0), t.repeat(2), None, codec_cond)
        return guidance_combine(out, self.scales[step]), codec_cond

    def _euler(self, net: DenoiserFn, noise: torch.Tensor, codec_cond: torch.Tensor) -> torch.Tensor:
        assert self.times is not None  # set for Euler plans in __init__
        x = noise
        for i, (t_cur, t_next) in enumerate(zip(self.times[:-1], self.times[1:])):
            v, codec_cond = self._velocity(net, x, t_cur.repeat(noise.shape[0]), codec_cond, i)
            x = x + v * (t_next - t_cur)
        return x

    def _adams(self, net: DenoiserFn, noise: torch.Tensor, codec_cond: torch.Tensor) -> torch.Tensor:
        s = self.sampler
        assert isinstance(s, AdamLMSampler)
        x = noise
        # zeros made on the device (a fill kernel) instead of copied from the host: the same values.
        t_cur = torch.zeros([noise.shape[0]], device=noise.device, dtype=noise.dtype)
        history: list[torch.Tensor] = []
        for i in range(s.num_steps):
            v_new, codec_cond = self._velocity(net, x, t_cur, codec_cond, i)
            history = (history + [v_new])[-s.order:]
            coeffs = s.solver_coeffs[i]  # 0-d CPU tensors: read on the host as kernel scalars, no sync
            v = torch.zeros_like(v_new)
            for c, v_j in zip(coeffs, history[-len(coeffs):]):
                v += c * v_j
            dt = s.timedeltas[i]
            x = x + v * dt
            t_cur += dt
        return x


class SamplingGraphs:
    """CUDA graphs of whole multi-step decodes: one graph per (noise and condition shapes, dtype,
    device, autocast, sampler, steps, guidance), least recently used evicted first.

    One graph holds the whole loop (every step's denoiser call with cond and uncond batched, the
    guidance and the update): one replay per decode, no per-step launches or copies, and the step
    constants stay the host scalars the eager sampler uses, so the result is bit-identical to it.
    Memory stays that of about one step, because blocks freed during the capture are reused within
    it (the graph's private pool); each cached graph keeps that pool, hence the small default cache.

    Args:
        max_graphs: graphs kept (each holds its activations pool and static buffers).
        capture: capture hook of :class:`~cod_fast.fast.graphs.GraphRunner` (tests inject a fake).
        enabled: as ``GraphRunner`` (True: require CUDA graphs; "auto": on CUDA inputs only).
        max_plans: host-side plans kept (tiny: per-step scales and a timestep vector each).
        warmup: eager loops before capture; one is enough here, since every lazy set-up (RoPE and
            DCT tables, Triton JIT, cuBLAS handles) happens on the first call, and each costs a decode.
    """

    def __init__(self, max_graphs: int = 2, capture: Callable[..., Any] | None = None,
                 enabled: bool | str = True, max_plans: int = 8, warmup: int = 1) -> None:
        self.runner = GraphRunner(self._unbound, max_graphs=max_graphs, warmup=warmup, enabled=enabled,
                                  capture=capture)
        self.max_plans = max_plans
        self._plans: OrderedDict[Hashable, CapturableSampling] = OrderedDict()

    @staticmethod
    def _unbound(*inputs: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("SamplingGraphs passes its loop function with every call")

    def plan(self, sampler: str, steps: int, cfg: float, noise: torch.Tensor) -> CapturableSampling:
        """The (cached) :class:`CapturableSampling` for these settings and ``noise``'s batch, device, dtype."""
        key = (sampler, steps, float(cfg), noise.shape[0], str(noise.device), noise.dtype)
        found = self._plans.get(key)
        if found is None:
            found = CapturableSampling(create_sampler(sampler, steps, cfg), noise.shape[0], noise.device,
                                       noise.dtype)
            while len(self._plans) >= self.max_plans:
                self._plans.popitem(last=False)
            self._plans[key] = found
        else:
            self._plans.move_to_end(key)
        return found

    def __call__(self, net: DenoiserFn, noise: torch.Tensor, codec_cond: torch.Tensor, sampler: str,
                 steps: int, cfg: float) -> torch.Tensor:
        """Sample as ``create_sampler(sampler, steps, cfg)(net, noise, codec_cond=codec_cond)`` does,
        through the graph of this call's key; ``noise (B, C, H, W)``, ``codec_cond (2B, hidden, h, w)``."""
        plan = self.plan(sampler, steps, cfg, noise)

        def loop(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return plan(net, x, c)

        # id(net) is unique while the graph lives: the graph keeps `loop`, hence `net`, alive.
        return self.runner(noise, codec_cond, key_extra=(plan.key, id(net)), fn=loop)
