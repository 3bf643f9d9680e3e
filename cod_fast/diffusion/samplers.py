"""Rectified-flow ODE samplers of CoD (GenCodec ``CoD/cod/diffusion/diffusion.py``).

Conventions (``LinearScheduler``): ``x_t = t * x + (1 - t) * eps`` with ``t = 0`` pure noise and
``t = 1`` data; the network predicts the velocity ``v = x - eps`` and the ODE ``dx/dt = v`` is
integrated from 0 to 1.

Both samplers evaluate the network on a batch of two, ``[unconditional, conditional]``, at every
step and combine the halves with ``u + w * (c - u)``; the guidance scale ``w`` is used only for
``guidance_interval_min < t < guidance_interval_max`` and ``w = 1`` elsewhere (still through the
same formula, as officially).

Defaults are those of ``create_sampler`` in ``CoD/cod/inference.py`` (the decode path):
``timeshift=1.0, guidance_interval_min=0.1, guidance_interval_max=1.0, last_step=0.04``.
All scalar schedule arithmetic is done on fp32 tensors in the official order, so timesteps,
step sizes, Adams coefficients and the guidance window agree bit for bit with the official code.
"""
from __future__ import annotations

from typing import Callable

import torch

# net(x (2B, C, H, W), t (2B,), y, cond) -> (out (2B, C, H, W), cond): the PixNerDiT/DDT call.
DenoiserFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]

DEFAULT_LAST_STEP = 0.04  # inference.py create_sampler(last_step=0.04)
DEFAULT_GUIDANCE_INTERVAL = (0.1, 1.0)  # inference.py create_sampler(guidance_interval_min/max)
DEFAULT_TIMESHIFT = 1.0  # inference.py create_sampler(timeshift=1.0)


def time_shift(t: torch.Tensor, shift: float) -> torch.Tensor:
    """``t / (t + (1 - t) * shift)`` (official ``shift_respace_fn``; not exactly ``t`` at shift 1)."""
    return t / (t + (1 - t) * shift)


def flow_timesteps(
    num_steps: int, last_step: float | None = DEFAULT_LAST_STEP, timeshift: float = DEFAULT_TIMESHIFT
) -> torch.Tensor:
    """The ``num_steps + 1`` fp32 times ``linspace(0, 1 - last_step, num_steps)`` then ``1.0``, shifted.

    ``last_step=None`` means ``1 / num_steps`` (the official fallback).
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if last_step is None:
        last_step = 1.0 / num_steps
    if not 0.0 < last_step <= 1.0:
        raise ValueError(f"last_step must be in (0, 1], got {last_step}")
    ts = torch.cat([torch.linspace(0.0, 1 - last_step, num_steps), torch.tensor([1.0])], dim=0)
    return time_shift(ts, timeshift)


def guidance_combine(out: torch.Tensor, scale: float) -> torch.Tensor:
    """``u + scale * (c - u)`` for ``out = cat([u, c])`` (official ``simple_guidance_fn``)."""
    uncond, cond = out.chunk(2, dim=0)
    return uncond + scale * (cond - uncond)


def _adams_weights(ts: list[torch.Tensor], start: torch.Tensor, end: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Normalised integrals over ``[start, end]`` of the Lagrange basis polynomials through ``ts``.

    Orders 1 and 2 (the official ``lagrange_preint_o1/o2``), same fp32 operation order.
    """
    if len(ts) == 1:
        span = end - start
        return (span / span,)
    t1, t2 = ts
    w1 = 0.5 / (t1 - t2) * ((end - t2) ** 2 - (start - t2) ** 2)
    w2 = 0.5 / (t2 - t1) * ((end - t1) ** 2 - (start - t1) ** 2)
    total = w1 + w2
    return (w1 / total, w2 / total)


def adams_coefficients(timesteps: torch.Tensor, order: int = 2) -> list[tuple[torch.Tensor, ...]]:
    """Per-step Adams-Bashforth weights on the last ``min(order, i+1)`` velocities (oldest first).

    ``timesteps``: the ``N+1`` times from :func:`flow_timesteps`. Orders 1 and 2 are supported
    (the official sampler is used with order 2: ``adam2``).
    """
    if order not in (1, 2):
        raise ValueError(f"Adams order must be 1 or 2, got {order}")
    coeffs = []
    for i in range(len(timesteps) - 1):
        k = min(order, i + 1)
        coeffs.append(_adams_weights(list(timesteps[i + 1 - k: i + 1]), timesteps[i], timesteps[i + 1]))
    return coeffs


class _GuidedSampler:
    """Shared set-up of the two samplers: schedule, guidance and the CFG network call."""

    def __init__(
        self,
        num_steps: int = 25,
        guidance: float = 1.0,
        guidance_interval_min: float = DEFAULT_GUIDANCE_INTERVAL[0],
        guidance_interval_max: float = DEFAULT_GUIDANCE_INTERVAL[1],
        last_step: float | None = DEFAULT_LAST_STEP,
        timeshift: float = DEFAULT_TIMESHIFT,
    ) -> None:
        self.num_steps = num_steps
        self.guidance = float(guidance)
        self.guidance_interval_min = guidance_interval_min
        self.guidance_interval_max = guidance_interval_max
        self.timesteps = flow_timesteps(num_steps, last_step, timeshift)

    def guided(self, t: torch.Tensor) -> bool:
        """Whether guidance applies at time ``t`` (a 0-d tensor, compared in its own dtype)."""
        return bool(t > self.guidance_interval_min) and bool(t < self.guidance_interval_max)

    def velocity(
        self,
        net: DenoiserFn,
        x: torch.Tensor,
        t: torch.Tensor,
        condition: torch.Tensor | None,
        codec_cond: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Guided velocity at ``x (B, C, H, W)`` and times ``t (B,)``; also returns the codec maps
        ``(2B, ...)`` so that the codec runs only on the first call."""
        out, codec_cond = net(torch.cat([x, x], dim=0), t.repeat(2), condition, codec_cond)
        scale = self.guidance if self.guided(t[0]) else 1.0
        return guidance_combine(out, scale), codec_cond

    @staticmethod
    def _condition(
        condition: torch.Tensor | None,
        uncondition: torch.Tensor | None,
        codec_cond: torch.Tensor | None,
    ) -> torch.Tensor | None:
        if codec_cond is not None:
            return None
        if condition is None or uncondition is None:
            raise ValueError("give either codec_cond or both condition and uncondition images")
        return torch.cat([uncondition, condition], dim=0)


class EulerSampler(_GuidedSampler):
    """First-order Euler ODE sampler: ``x += v * (t_next - t_cur)`` over :func:`flow_timesteps`."""

    def __call__(
        self,
        net: DenoiserFn,
        noise: torch.Tensor,
        condition: torch.Tensor | None = None,
        uncondition: torch.Tensor | None = None,
        codec_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Integrate from ``noise`` ``(B, C, H, W)`` at t=0 to t=1.

        Either ``codec_cond`` (decoded maps ``cat([uncond, cond])``, ``(2B, hidden, h, w)``) or the
        ``condition``/``uncondition`` images ``(B, 3, H', W')`` that the network's codec encodes.
        """
        cfg_condition = self._condition(condition, uncondition, codec_cond)
        steps = self.timesteps.to(noise.device, noise.dtype)
        x = noise
        for t_cur, t_next in zip(steps[:-1], steps[1:]):
            v, codec_cond = self.velocity(net, x, t_cur.repeat(noise.shape[0]), cfg_condition, codec_cond)
            x = x + v * (t_next - t_cur)
        return x


class AdamLMSampler(_GuidedSampler):
    """Adams-Bashforth linear multistep sampler (``order=2``: the official ``adam2``).

    The step uses the Lagrange extrapolation of the last ``order`` velocities over the step.
    The current time is accumulated (``t += dt`` in the noise dtype), as officially; the guidance
    window is tested on that accumulated time.
    """

    def __init__(self, num_steps: int = 25, guidance: float = 1.0, order: int = 2, **kwargs: float | None) -> None:
        super().__init__(num_steps=num_steps, guidance=guidance, **kwargs)
        self.order = order
        self.timedeltas = self.timesteps[1:] - self.timesteps[:-1]
        self.solver_coeffs = adams_coefficients(self.timesteps, order)

    def __call__(
        self,
        net: DenoiserFn,
        noise: torch.Tensor,
        condition: torch.Tensor | None = None,
        uncondition: torch.Tensor | None = None,
        codec_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Integrate from ``noise`` ``(B, C, H, W)`` at t=0 to t=1; arguments as :class:`EulerSampler`."""
        cfg_condition = self._condition(condition, uncondition, codec_cond)
        x = noise
        t_cur = torch.zeros([noise.shape[0]]).to(noise.device, noise.dtype)
        history: list[torch.Tensor] = []
        for i in range(self.num_steps):
            v_new, codec_cond = self.velocity(net, x, t_cur, cfg_condition, codec_cond)
            history = (history + [v_new])[-self.order:]
            coeffs = self.solver_coeffs[i]
            v = torch.zeros_like(v_new)
            for c, v_j in zip(coeffs, history[-len(coeffs):]):
                v += c * v_j
            dt = self.timedeltas[i]
            x = x + v * dt
            t_cur += dt
        return x


SAMPLERS = {"adam2": AdamLMSampler, "euler": EulerSampler}


def create_sampler(sampler: str, steps: int, cfg: float) -> EulerSampler | AdamLMSampler:
    """The sampler the official ``inference.py`` builds for ``--sampler``, ``--step``, ``--cfg``."""
    if sampler == "adam2":
        return AdamLMSampler(num_steps=steps, guidance=cfg, order=2)
    if sampler == "euler":
        return EulerSampler(num_steps=steps, guidance=cfg)
    raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
