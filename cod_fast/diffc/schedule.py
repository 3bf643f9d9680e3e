"""DiffC schedules on DDPM timesteps and their mapping onto CoD's rectified flow.

Mapping (as the official GenCodec ``CoD/downstream/diffc/lib/models/CoD.py``; verified there):

* DDPM timestep ``tau`` in 0..1000 (1000 = pure noise). Its SNR is that of the flow noise level
  ``sigma = (tau - 1) / 1000`` -- note the offset by one, from the official table lookup
  ``snr_values[tau - 1]`` over ``arange(1000) / 1000`` -- with ``snr = (1 - sigma) / sigma``;
  ``tau = 0`` and ``tau = 1`` have infinite SNR (clean data).
* DDPM variance-preserving space: ``alpha_bar = snr^2 / (1 + snr^2)`` (1 at infinite SNR),
  ``x_ddpm = sqrt(alpha_bar) * x0 + sqrt(1 - alpha_bar) * eps``.
* Flow space (CoD): ``x_ot = (1 - s) * x0 + s * eps`` with ``s = ot_sigma(tau) = 1 / (snr + 1)``,
  i.e. ``x_ot = x_ddpm * s / sqrt(1 - alpha_bar)``. The network is called at flow time
  ``t = 1 - tau / 1000`` (CoD's t: 0 noise, 1 data) -- *not* ``1 - s``: the official code mixes
  the two by the same offset of one timestep, and we mirror it.

All schedule scalars are computed in Python float64 and applied to float32 tensors, identically
on the encoder and the decoder.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

#: Official ``encoding_timesteps`` of ``configs/CoD-pixel-{cond,base}.yaml`` (142 steps).
COD_PIXEL_ENCODING = (
    972, 949, 929, 897, 869, 834, 805, 780, 751, 726, 704, 688, 670, 648, 627, 608, 591, 578, 561,
    546, 530, 520, 510, 498, 491, 480, 465, 455, 447, 438, 429, 419, 410, 402, 390, 380, 371, 361,
    353, 345, 336, 326, 319, 313, 305, 296, 289, 282, 276, 269, 261, 254, 247, 242, 237, 231, 224,
    219, 213, 209, 204, 200, 194, 189, 185, 181, 175, 170, 167, 163, 160, 156, 153, 149, 146, 143,
    139, 135, 132, 129, 125, 121, 118, 116, 113, 110, 107, 104, 101, 99, 96, 94, 92, 90, 87, 85,
    82, 80, 78, 76, 74, 72, 70, 68, 66, 64, 62, 60, 58, 56, 54, 52, 50, 48, 47, 46, 45, 44, 43,
    42, 41, 40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20,
)
#: Official ``encoding_timesteps`` of ``configs/CoD-latent-{cond,base}.yaml``: the pixel ones
#: continued down to 2 (160 steps).
COD_LATENT_ENCODING = COD_PIXEL_ENCODING + tuple(range(19, 1, -1))
#: Official ``denoising_timesteps`` (all four CoD configs): 981, 961, ..., 21, then 10, 5, 0.
COD_DENOISING = tuple(range(981, 20, -20)) + (10, 5, 0)

#: Encoding schedules by the id stored in the stream. Never renumber: add new ids.
ENCODING_SCHEDULES: dict[int, tuple[int, ...]] = {1: COD_PIXEL_ENCODING, 2: COD_LATENT_ENCODING}
#: Denoising (probability-flow) schedules by the id stored in the stream.
DENOISING_SCHEDULES: dict[int, tuple[int, ...]] = {1: COD_DENOISING}
#: Timestep of the starting noise (official ``current_timestep = 1000``).
START_TIMESTEP = 1000
#: Official guidance scales (``encoding_guidance_scale`` / ``denoising_guidance_scale``, cond configs).
OFFICIAL_GUIDANCE = {"pixel": (1.0, 3.0), "latent": (1.0, 1.25)}


def _check_tau(tau: int) -> int:
    if isinstance(tau, bool) or not isinstance(tau, int) or not 0 <= tau <= START_TIMESTEP:
        raise ValueError(f"DDPM timestep must be an int in [0, {START_TIMESTEP}], got {tau!r}")
    return tau


def snr(tau: int) -> float:
    """SNR of DDPM timestep ``tau``: ``(1 - s) / s`` with ``s = (tau - 1) / 1000``; inf for tau <= 1."""
    _check_tau(tau)
    if tau <= 1:
        return math.inf
    s = (tau - 1) / 1000
    return (1 - s) / s


def alpha_bar(tau: int) -> float:
    """DDPM ``alpha_bar`` of ``tau``: ``snr^2 / (1 + snr^2)`` (1.0 at infinite SNR)."""
    r = snr(tau)
    return 1.0 if math.isinf(r) else r * r / (1 + r * r)


def ot_sigma(tau: int) -> float:
    """Flow-space noise level ``1 / (snr + 1)`` of ``tau`` (0 at infinite SNR)."""
    r = snr(tau)
    return 0.0 if math.isinf(r) else 1 / (r + 1)


def flow_time(tau: int) -> float:
    """CoD flow time given to the network at ``tau``: ``1 - tau / 1000``."""
    return 1 - _check_tau(tau) / 1000


@dataclass(frozen=True)
class StepCoefficients:
    """Scalars of one DiffC step ``tau -> tau_prev`` (``tau_prev < tau``; DDPM posterior).

    ``q(x_prev | x, x0) = N(c_x0 * x0 + c_x * x, std^2)`` and the model's ``p`` uses ``x0_hat``
    in place of ``x0`` (official ``utils/q.py`` / ``utils/p.py``).
    """

    c_x0: float
    c_x: float
    std: float


def step_coefficients(tau: int, tau_prev: int) -> StepCoefficients:
    """Posterior coefficients between two DDPM timesteps, ``tau > tau_prev >= 0``."""
    if not _check_tau(tau) > _check_tau(tau_prev):
        raise ValueError(f"steps go towards data: need tau > tau_prev, got {tau} -> {tau_prev}")
    a_t, a_p = alpha_bar(tau), alpha_bar(tau_prev)
    b_t, b_p = 1 - a_t, 1 - a_p
    if b_t <= 0:
        raise ValueError(f"timestep {tau} has no noise left to remove")
    cur_a = a_t / a_p
    cur_b = 1 - cur_a
    return StepCoefficients(
        c_x0=math.sqrt(a_p) * cur_b / b_t,
        c_x=math.sqrt(cur_a) * b_p / b_t,
        std=math.sqrt(b_p / b_t * cur_b),
    )


def check_schedule(timesteps: tuple[int, ...]) -> None:
    """ValueError unless ``timesteps`` is strictly decreasing within (0, 1000)."""
    prev = START_TIMESTEP
    for tau in timesteps:
        if _check_tau(tau) >= prev:
            raise ValueError(f"schedule must decrease strictly from {START_TIMESTEP}: {tau} after {prev}")
        prev = tau
