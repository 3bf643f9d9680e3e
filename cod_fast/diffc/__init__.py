"""DiffC over flow denoisers: DDPM-timestep schedules and the denoiser interface.

- :mod:`.schedule`: the official timestep presets, DDPM timestep -> SNR / alpha_bar / flow time,
  and the per-step Gaussian posterior coefficients (DiffC's ``P``/``Q``).
- :mod:`.denoiser`: ``FlowDenoiser`` (``predict(x_t, t, cond) -> v`` in rectified-flow
  convention), the CoD adapter and the DDPM-space wrapper giving ``x0_hat`` at a DDPM timestep.

The codec itself (stream layout, encoder, decoder) is :mod:`cod_fast.codecs.diffc`.
"""
from .denoiser import CoDFlowDenoiser, DDPMView, FlowDenoiser, shared_net_lock
from .schedule import (
    DENOISING_SCHEDULES,
    ENCODING_SCHEDULES,
    StepCoefficients,
    alpha_bar,
    flow_time,
    ot_sigma,
    snr,
    step_coefficients,
)

__all__ = [
    "DENOISING_SCHEDULES",
    "ENCODING_SCHEDULES",
    "CoDFlowDenoiser",
    "DDPMView",
    "FlowDenoiser",
    "StepCoefficients",
    "alpha_bar",
    "flow_time",
    "ot_sigma",
    "shared_net_lock",
    "snr",
    "step_coefficients",
]
