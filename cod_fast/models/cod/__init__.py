"""CoD (microsoft/GenCodec ``CoD/``) in plain PyTorch: condition codec, pixel and latent DiTs, one-step model.

Class, attribute and state-dict names are the official ones, so official checkpoints (with the
``ema_denoiser.`` prefix removed) load with ``strict=True``. Everything runs on any device in fp32
by default; nothing here moves tensors to CUDA by itself.
"""
from .condition_codec import Codec, Decoder, Encoder
from .configs import CLASS_PATHS, ONE_STEP_PRESETS, PRESETS, build_model, get_preset, resolve_class
from .latent_dit import DDT
from .one_step import OneStepCoD
from .packing import pack_bits, unpack_bits
from .pixel_dit import PixNerDiT
from .vq import VectorQuantizer

__all__ = [
    "CLASS_PATHS",
    "Codec",
    "DDT",
    "Decoder",
    "Encoder",
    "ONE_STEP_PRESETS",
    "OneStepCoD",
    "PRESETS",
    "PixNerDiT",
    "VectorQuantizer",
    "build_model",
    "get_preset",
    "pack_bits",
    "resolve_class",
    "unpack_bits",
]
