"""The denoiser interface DiffC runs over, and its CoD adapter.

One convention for every model: a :class:`FlowDenoiser` predicts the rectified-flow velocity
``v = x0 - eps`` at a flow state ``x_t = t * x0 + (1 - t) * eps`` (t = 0 noise, t = 1 data).
A DDPM (eps-prediction) network fits the same interface through ``v = (x_t - eps_hat) / t`` -- not
needed for CoD, so not shipped. :class:`DDPMView` turns any ``FlowDenoiser`` into the quantity
DiffC needs at a DDPM timestep: ``x0_hat`` from a DDPM-space state (see :mod:`.schedule`).
"""
from __future__ import annotations

import math
import threading
import weakref
from typing import Any, Protocol

import torch

from .schedule import alpha_bar, flow_time, ot_sigma

_net_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_net_locks_guard = threading.Lock()


def shared_net_lock(codec: Any) -> Any:
    """The lock guarding the per-network caches (the unconditional map) of ``codec.net``: the
    codec's own ``_lock`` (held by ``VQCodec.decode`` around its synthesis) when it has one, else
    one lock per network object, created on first use."""
    lock = getattr(codec, "_lock", None)
    if lock is not None:
        return lock
    net = codec.net
    with _net_locks_guard:
        lock = _net_locks.get(net)
        if lock is None:
            lock = _net_locks[net] = threading.Lock()
        return lock


class FlowDenoiser(Protocol):
    """``predict(x_t (1, C, H, W) float, t float in [0, 1], guidance float) -> v (1, C, H, W)``.

    ``guidance > 1`` applies classifier-free guidance ``u + w (c - u)``; ``guidance <= 1`` is the
    conditional prediction alone (the official DiffC ``predict_noise``: guidance only above 1).
    """

    def predict(self, x_t: torch.Tensor, t: float, guidance: float) -> torch.Tensor: ...


class CoDFlowDenoiser:
    """CoD network (``PixNerDiT`` / ``DDT``) with a fixed condition, as a :class:`FlowDenoiser`.

    ``cond_maps``: the condition maps ``(2, hidden, h, w)`` = ``cat([unconditional, conditional])``
    from ``net.decompress(..., uncond=...)``, or ``(1, ...)`` for the unconditional ("base") variant
    (then guidance is ignored: there is only one branch).
    """

    def __init__(self, net: torch.nn.Module, cond_maps: torch.Tensor) -> None:
        if cond_maps.dim() != 4 or cond_maps.shape[0] not in (1, 2):
            raise ValueError(f"cond_maps must be (1 or 2, C, h, w), got {tuple(cond_maps.shape)}")
        self.net = net
        self.cond_maps = cond_maps

    def predict(self, x_t: torch.Tensor, t: float, guidance: float) -> torch.Tensor:
        """Velocity at ``x_t`` (1, C, H, W) and flow time ``t``; output float32 like ``x_t``'s shape."""
        p = next(self.net.parameters())
        guided = guidance > 1 and self.cond_maps.shape[0] == 2
        x = x_t.to(p.dtype)
        if guided:
            x = torch.cat([x, x], dim=0)
            cond = self.cond_maps
        else:
            cond = self.cond_maps[-1:]
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=p.dtype)
        out = self.net(x, tt, None, cond)[0].to(torch.float32)
        if guided:
            u, c = out.chunk(2, dim=0)
            out = u + guidance * (c - u)
        return out


class DDPMView:
    """``x0_hat`` of a DDPM-space state at DDPM timestep ``tau`` through a flow denoiser.

    Official ``CoDModel.predict_noise``: ``x_ot = x_ddpm * s / sqrt(1 - alpha_bar)``,
    ``v = net(x_ot, 1 - tau/1000)``, ``x0_hat = x_ot + s * v`` (with ``s = ot_sigma(tau)``). The
    official code then converts ``x0_hat`` to an eps prediction and DiffC's ``P`` converts it back;
    we return ``x0_hat`` directly (the same value up to rounding, on both encoder and decoder).
    """

    def __init__(self, denoiser: FlowDenoiser) -> None:
        self.denoiser = denoiser

    def x0_hat(self, x: torch.Tensor, tau: int, guidance: float) -> torch.Tensor:
        """``x`` float32 (1, C, H, W) in DDPM space at ``tau`` (1 < tau <= 1000) -> x0_hat float32."""
        s = ot_sigma(tau)
        if s <= 0:
            raise ValueError(f"timestep {tau} is already clean data")
        x_ot = x * (s / math.sqrt(1 - alpha_bar(tau)))
        v = self.denoiser.predict(x_ot, flow_time(tau), guidance)
        return x_ot + s * v
