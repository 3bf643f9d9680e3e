"""Diffusion sampling for CoD: rectified-flow samplers (Euler, Adams ``adam2``), CFG, one-step decode."""
from .samplers import (
    AdamLMSampler,
    EulerSampler,
    adams_coefficients,
    create_sampler,
    flow_timesteps,
    guidance_combine,
)
from .sampling import (
    autocast_context,
    initial_noise,
    one_step_decode,
    sample,
    unconditional_image,
)

__all__ = [
    "AdamLMSampler",
    "EulerSampler",
    "adams_coefficients",
    "autocast_context",
    "create_sampler",
    "flow_timesteps",
    "guidance_combine",
    "initial_noise",
    "one_step_decode",
    "sample",
    "unconditional_image",
]
