"""``CoDBase``: the condition-codec holder that CoD-Lite's denoisers derive from.

Mirror of ``CoD_Lite/cod/models/cod_base.py``: the codec lives at ``y_embedder`` (so its keys are
``y_embedder.encoder.*``, ``y_embedder.bottleneck.embedding.weight``, ``y_embedder.decoder.*``).
"""
from __future__ import annotations

from torch import nn

from ..cod.condition_codec import CodecPassthrough
from .condition_codec import Codec


class CoDBase(CodecPassthrough, nn.Module):
    """Holds ``y_embedder = Codec(ch=hidden_size, codebook_bits, ds, up2x, light)``."""

    def __init__(
        self,
        hidden_size: int = 1152,
        ds: int = 32,
        codebook_bits: int = 4,
        up2x: bool = False,
        light: bool = False,
        *args,
        **kwargs,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.y_embedder = Codec(ch=hidden_size, codebook_bits=codebook_bits, ds=ds, up2x=up2x, light=light)
