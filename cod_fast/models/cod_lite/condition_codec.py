"""CoD-Lite's condition codec: CoD's ``Codec`` with windowed attention at inference.

``CoD_Lite/cod/models/condition_codec.py`` is CoD's condition codec with one change: every
``AttnBlock`` takes a ``patch_size`` (32 in the encoder's ``down_block_4`` and ``mid_block`` and in
the decoder's ``block`` for ``ds <= 32``; the default 16 elsewhere, i.e. the ``ds == 128`` stages)
and, in eval mode, attends within non-overlapping ``patch_size x patch_size`` windows instead of
over the whole map. Parameters, keys and shapes are unchanged, so this module reuses CoD's
``Codec`` (:mod:`cod_fast.models.cod.condition_codec`) and swaps its attention blocks for
:class:`WindowAttnBlock`, which shares the parameters' names.

Windowing, exactly as officially (this decides the numbers, so it is part of the mirror):

* a map no larger than the window in both dimensions (``H <= d and W <= d``) uses global
  attention (e.g. ds=32 at 512x512: a 16x16 map);
* otherwise q, k and v are padded on the bottom/right to multiples of ``d`` by replicating the
  last row/column, each window attends within itself (padded positions included as keys), and
  the output is cropped back to ``H x W`` before ``proj_out``. For 720x480 at ds=16 the 30x45 map
  is padded to 32x64: two windows, the keys of each include replicated border positions.

In training mode the block attends globally (the official training path).
"""
from __future__ import annotations

import torch
from torch import nn

from ..cod import condition_codec as _cod_codec
from ..cod.layers import AttnBlock

__all__ = ["Codec", "WindowAttnBlock", "windowed_attention"]


def windowed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, d: int) -> torch.Tensor:
    """Single-head attention of (B, C, H, W) q, k, v within d x d windows -> (B, C, H, W).

    Scale ``C ** -0.5``; q/k/v are replicate-padded to multiples of d (see the module docstring)
    unless ``H <= d and W <= d``, in which case the attention is global.
    """
    b, c, h, w = q.shape
    scale = int(c) ** (-0.5)
    if h <= d and w <= d:
        qf = q.reshape(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        attn = torch.softmax(torch.bmm(qf, k.reshape(b, c, h * w)) * scale, dim=2)
        return torch.bmm(v.reshape(b, c, h * w), attn.transpose(1, 2)).reshape(b, c, h, w)

    pad_h = (d - h % d) % d
    pad_w = (d - w % d) % d
    if pad_h or pad_w:
        pad = (0, pad_w, 0, pad_h)
        q = nn.functional.pad(q, pad, mode="replicate")
        k = nn.functional.pad(k, pad, mode="replicate")
        v = nn.functional.pad(v, pad, mode="replicate")
    nh, nw = (h + pad_h) // d, (w + pad_w) // d

    def to_windows(t: torch.Tensor) -> torch.Tensor:
        # (B, C, nh*d, nw*d) -> (B*nh*nw, C, d*d), windows in raster order.
        t = t.reshape(b, c, nh, d, nw, d).permute(0, 2, 4, 1, 3, 5)
        return t.reshape(b * nh * nw, c, d * d)

    qw, kw, vw = to_windows(q), to_windows(k), to_windows(v)
    attn = torch.softmax(torch.bmm(qw.transpose(1, 2), kw) * scale, dim=2)  # (N, d*d q, d*d k)
    out = torch.bmm(vw, attn.transpose(1, 2))  # (N, C, d*d)
    out = out.reshape(b, nh, nw, c, d, d).permute(0, 3, 1, 4, 2, 5).reshape(b, c, nh * d, nw * d)
    return out[:, :, :h, :w]


class WindowAttnBlock(AttnBlock):
    """CoD-Lite ``AttnBlock(in_channels, patch_size)``: (B, C, H, W) -> (B, C, H, W).

    Same parameters as CoD's block (``norm``, ``q``, ``k``, ``v``, ``proj_out``); global attention
    in training mode, :func:`windowed_attention` with ``patch_size`` windows in eval mode.
    """

    def __init__(self, in_channels: int, patch_size: int = 16) -> None:
        super().__init__(in_channels)
        self.patch_size = patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        hn = self.norm(x)
        out = windowed_attention(self.q(hn), self.k(hn), self.v(hn), self.patch_size)
        return x + self.proj_out(out)


def _windowize(seq: nn.Module, patch_size: int) -> None:
    """Replace every CoD ``AttnBlock`` child of ``seq`` by a :class:`WindowAttnBlock` in place."""
    for name, child in seq.named_children():
        if type(child) is AttnBlock:
            setattr(seq, name, WindowAttnBlock(child.in_channels, patch_size=patch_size))


class Codec(_cod_codec.Codec):
    """CoD-Lite condition codec; constructor and methods as CoD's ``Codec(ch, codebook_bits, ds, up2x, light)``.

    image (B, 3, H, W) in [0, 1] -> encoder -> VQ (``2**codebook_bits`` x 128) -> decoder ->
    condition map (B, ch, H/16, W/16) (the token grid of the 16-pixel patches; with ``ds=32``
    the decoder's ``ada`` upsamples 2x to reach it).
    """

    def __init__(self, ch: int, codebook_bits: int, ds: int, up2x: bool, light: bool = False) -> None:
        super().__init__(ch, codebook_bits, ds, up2x, light=light)
        # Official window sizes: 32 where the block was built with patch_size=32, else the default 16.
        wide = 32 if ds <= 32 else 16
        _windowize(self.encoder.down_block_4, wide)
        _windowize(self.encoder.mid_block, 32)
        _windowize(self.decoder.block, wide)
        # Any other attention block (none in the official layouts) would silently keep CoD's
        # global attention; refuse instead.
        for name, module in self.named_modules():
            if type(module) is AttnBlock:
                raise RuntimeError(f"unexpected CoD AttnBlock at {name}")
