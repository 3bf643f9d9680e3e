"""Plain-PyTorch mirror of GenCodec's CoD-Lite (``CoD_Lite/``): conv diffusion + one-step codec.

Official names, constructor signatures and state-dict keys: ``DConv``, ``DiCoBlock``,
``LayerNorm2d``, ``OneStepCoD``, ``FinetunedOneStepCoD``, the condition ``Codec`` (CoD's codec with
windowed attention). Presets of the published bitrates live in :mod:`.configs`; the one-step
decode of the official inference script in :mod:`.inference`.
"""
from .common import NerfEmbedder, NerfFinalLayer, RMSNorm
from .condition_codec import Codec, WindowAttnBlock
from .configs import BPP_LADDER, CLASS_PATHS, PRESETS, build, one_step_init_args
from .inference import check_image_size, fp2uint8, one_step_decode, one_step_encode
from .one_step import FinetunedOneStepCoD, OneStepCoD
from .pixel_cnn import (
    BottleneckPatchEmbed,
    DConv,
    DiCoBlock,
    LayerNorm2d,
    ResBlock,
    SimpleMLPAdaLN,
    TimestepEmbedder,
    modulate,
)

__all__ = [
    "BPP_LADDER", "CLASS_PATHS", "PRESETS", "BottleneckPatchEmbed", "Codec", "DConv", "DiCoBlock",
    "FinetunedOneStepCoD", "LayerNorm2d", "NerfEmbedder", "NerfFinalLayer", "OneStepCoD", "RMSNorm",
    "ResBlock", "SimpleMLPAdaLN", "TimestepEmbedder", "WindowAttnBlock", "build", "check_image_size",
    "fp2uint8", "modulate", "one_step_decode", "one_step_encode", "one_step_init_args",
]
