"""Bounded-memory inference of the default model's transforms: the same arithmetic, in row bands.

``Analysis`` and ``Synthesis`` run layer by layer over the whole image and materialise every
intermediate (a DiCoBlock at half resolution holds several 48-96 channel copies of the image),
which is what made a 6-megapixel image take 2-3 GB. The functions here compute the same tensors
with every per-pixel step (LayerNorm, modulation, 1x1 convolutions, GELU, the FFN) done on row
bands, the 3x3 / 5x5 / transposed convolutions on bands with halos as wide as their receptive
field (zero rows where the whole-image convolution pads), and the largest inputs recomputed per
band from the stage below instead of stored.

**Bit-exactness.** Every output element is computed by the same torch operations on the same
operands as in the whole-image forward, so the results are bitwise identical (checked by
``tests/models/default/test_lowmem.py`` with small forced bands): torch's CPU convolutions give
the same value for a pixel whatever the band around it for the band sizes used here (bands hold
at least ``MIN_BAND_PIXELS``; tested per layer, and on a 6.3 MP image against the whole-image
code: same stream bytes, same pixels; ``up1``/``up2`` run whole because ``up2``'s projection did
round differently on ~1000-pixel bands), and
the one global operation, each DiCoBlock's channel attention (a mean over the whole image), is
taken with the block's own ``ca`` module over the whole pre-attention tensor, which is the one
activation per block kept whole. Hence encoder streams and decoder pixels are unchanged.

Shapes: ``analysis(g_a, x)``: x (1, 3, H, W) float32 in [0, 1] (H, W multiples of 64) -> y
(1, M, H/16, W/16). ``synthesis_uint8(g_s, y, q)``: y (1, M, h, w) float32 (already multiplied by
the inverse gain), q (1,) -> uint8 (3, min(16h, out_h), min(16w, out_w)), the clamped, rounded
pixels of ``g_s(y, q).clamp(0, 1) * 255``. CPU float32 models only (callers fall back otherwise).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cod_fast.models.cod_lite.pixel_cnn import modulate

#: Target size in bytes of the largest per-band temporary (tests set it small to force many bands).
BAND_BYTES = 8 << 20

Rows = Callable[[int, int], torch.Tensor]


#: Fewest pixels per band: oneDNN picks other kernels (other rounding) for 1x1 convolutions over
#: a few hundred pixels, so bands never go below this (measured bitwise equal from ~150 up).
MIN_BAND_PIXELS = 4096


def band_rows(height: int, bytes_per_row: int, multiple: int = 2, width: int = 1) -> int:
    """Rows per band so that a band tensor of ``bytes_per_row`` per row stays near BAND_BYTES
    (and a band holds at least MIN_BAND_PIXELS pixels of ``width``)."""
    r = max(BAND_BYTES // max(1, bytes_per_row), -(-MIN_BAND_PIXELS // max(1, width)))
    r = max(multiple, -(-r // multiple) * multiple)
    return min(r, height + (-height) % multiple)


def bands(height: int, rows: int) -> list[tuple[int, int]]:
    """Row bands [r0, r1) of ``rows`` rows covering [0, height); a short last band is merged into
    the one before (so no band falls under MIN_BAND_PIXELS). ``rows`` keeps its alignment."""
    out = [(r0, min(r0 + rows, height)) for r0 in range(0, height, rows)]
    if len(out) > 1 and out[-1][1] - out[-1][0] < rows // 2 + 1:
        out[-2:] = [(out[-2][0], height)]
    return out


def _rows_padded(src: Rows, lo: int, hi: int, height: int) -> torch.Tensor:
    """Rows [lo, hi) of a (1, C, height, W) tensor given by ``src``, zero rows outside [0, height)."""
    a, b = max(lo, 0), min(hi, height)
    t = src(a, b)
    if lo < a or hi > b:
        t = F.pad(t, (0, 0, a - lo, hi - b))
    return t


def dico_block(blk: torch.nn.Module, inp: Rows, shape: tuple[int, int, int], c: torch.Tensor | None) -> torch.Tensor:
    """``blk(inp, c)`` for a CoD-Lite ``DiCoBlock`` with its input given by rows: ``inp(r0, r1)``
    -> (1, C, r1 - r0, W) float32. shape = (C, H, W). Returns the block output (1, C, H, W) in
    channels-last memory; its values are bitwise those of ``blk.forward`` (module docstring).

    Memory formats matter to the convolutions' rounding, so they follow ``forward``'s: the
    pre-attention activation is channels-last there (LayerNorm2d's permutes), and so is the
    buffer here; the block output is contiguous there, so readers of the returned tensor that
    convolve it take ``.contiguous()`` bands."""
    ch, h, w = shape
    mod = blk.cached_modulation if blk.cached_modulation is not None else blk.adaLN_modulation(c)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)
    rows = band_rows(h, w * ch * 4 * 4, width=w)
    pre = torch.empty((1, ch, h, w), dtype=torch.float32, memory_format=torch.channels_last)
    k = blk.conv2
    for r0, r1 in bands(h, rows):
        a, b = max(r0 - 1, 0), min(r1 + 1, h)
        t = blk.conv1(modulate(blk.norm1(inp(a, b)), shift_msa, scale_msa))
        t = F.pad(t, (0, 0, a - (r0 - 1), (r1 + 1) - b))  # the 3x3 conv's zero padding, rows
        pre[:, :, r0:r1] = F.gelu(F.conv2d(t, k.weight, k.bias, padding=(0, 1), groups=k.groups))
    ca = blk.ca(pre)  # the block's global mean, over the whole tensor as in forward
    dst = pre  # band r0:r1 of pre is read only by band r0:r1 below
    for r0, r1 in bands(h, rows):
        x = inp(r0, r1) + gate_msa[:, :, None, None] * blk.conv3(pre[:, :, r0:r1] * ca)
        y = modulate(blk.norm2(x), shift_mlp, scale_mlp)
        dst[:, :, r0:r1] = x + gate_mlp[:, :, None, None] * blk.conv5(F.gelu(blk.conv4(y)))
    return dst


def stage(st: torch.nn.Module, inp: Rows, shape: tuple[int, int, int], q: torch.Tensor) -> torch.Tensor:
    """``ConditionedStage.forward`` with its input by rows (see ``dico_block``); (1, C, H, W)."""
    if len(st.blocks) == 0:
        return inp(0, shape[1]).contiguous()
    c = st.condition(q).to(torch.float32)
    h = None
    for blk in st.blocks:
        src = inp if h is None else (lambda r0, r1, t=h: t[:, :, r0:r1])
        h = dico_block(blk, src, shape, c)
    return h


def _upsampled(up: torch.nn.Module, src: torch.Tensor) -> Rows:
    """Rows of ``up(src)`` (Upsample2x: 1x1 conv + PixelShuffle(2)) computed per band."""
    def rows(r0: int, r1: int) -> torch.Tensor:
        a, b = r0 // 2, (r1 + 1) // 2
        t = up(src[:, :, a:b].contiguous())  # src is channels-last; forward convolves it contiguous
        return t[:, :, r0 - 2 * a: r1 - 2 * a]
    return rows


def synthesis_uint8(g_s: torch.nn.Module, y: torch.Tensor, q: torch.Tensor,
                    out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 (3, H, W) pixels of ``g_s(y, q).clamp(0, 1)`` (module docstring), bitwise equal to
    ``(g_s(y, q).clamp_(0, 1)[0] * 255).round_().clamp_(0, 255).to(torch.uint8)`` cropped."""
    _, _, hy, wy = y.shape
    d1, d2, d3 = (g_s.up1.proj.out_channels // 4, g_s.up2.proj.out_channels // 4, g_s.up3.proj.out_channels // 4)
    h0 = g_s.stage0(g_s.proj_in(y), q)  # 1/16: small
    # up1 and up2 run whole, as in forward (their outputs are at most a quarter of the largest
    # tensor): oneDNN rounded up2's 1x1 projection over bands of ~1000 pixels otherwise than over
    # the whole image, moving a few pixels by one level. up3 (half resolution) stays banded.
    u = g_s.up1(h0)
    del h0
    h1 = stage(g_s.stage1, lambda a, b, t=u: t[:, :, a:b], (d1, 2 * hy, 2 * wy), q)
    u = g_s.up2(h1.contiguous())  # forward's layout: the block output is contiguous there
    del h1
    h2 = stage(g_s.stage2, lambda a, b, t=u: t[:, :, a:b], (d2, 4 * hy, 4 * wy), q)
    del u
    h3 = stage(g_s.stage3, _upsampled(g_s.up3, h2), (d3, 8 * hy, 8 * wy), q)
    del h2
    H, W = 16 * hy, 16 * wy
    oh, ow = (H, W) if out_size is None else (min(H, out_size[0]), min(W, out_size[1]))
    img = torch.empty((3, oh, ow), dtype=torch.uint8)
    po = g_s.proj_out
    rows = band_rows(8 * hy, 8 * wy * d3 * 4 * 4, multiple=8, width=8 * wy)  # h3 rows; 8 h3 rows = 1 y row
    for a, b in bands(8 * hy, rows):  # output rows [2a, 2b) need h3 rows [a-1, b] (k5, s2, p2)
        if 2 * a >= oh:
            break
        lo, hi = max(a - 1, 0), min(b + 1, 8 * hy)
        o = F.conv_transpose2d(h3[:, :, lo:hi].contiguous(), po.weight, po.bias, stride=2, padding=(0, 2), output_padding=(0, 1))
        start = 2 * lo - 2
        o = o[:, :, 2 * a - start: 2 * b - start]
        if g_s.base is not None:
            o = o + g_s.base(y[:, :, a // 8: b // 8])
        o = (o * 0.5 + 0.5).clamp_(0.0, 1.0)
        r1 = min(2 * b, oh)
        img[:, 2 * a: r1] = (o[0, :, : r1 - 2 * a, :ow] * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    return img


def analysis(g_a: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``g_a(x)`` (1, M, H/16, W/16) float32, bitwise equal, without the half-resolution tensors."""
    _, _, H, W = x.shape
    q0 = torch.zeros(1, dtype=x.dtype)
    stem, down1 = g_a.stem, g_a.down1
    h1h, h1w = H // 4, W // 4
    c1 = down1.out_channels
    h1 = torch.empty((1, c1, h1h, h1w), dtype=torch.float32)
    rows = band_rows(h1h, 4 * W * stem.out_channels * 4 * 2, width=W // 2)
    hs = H // 2  # rows of the stem output
    for o0, o1 in bands(h1h, rows):
        s0, s1 = max(2 * o0 - 1, 0), min(2 * o1, hs)  # stem rows down1 reads (k3, s2, p1)
        xs = _rows_padded(lambda a, b: x[:, :, a:b] * 2.0 - 1.0, 2 * s0 - 2, 2 * (s1 - 1) + 3, H)
        t = F.gelu(F.conv2d(xs, stem.weight, stem.bias, stride=2, padding=(0, 2)))
        t = F.pad(t, (0, 0, s0 - (2 * o0 - 1), 2 * o1 - s1))
        h1[:, :, o0:o1] = F.conv2d(t, down1.weight, down1.bias, stride=2, padding=(0, 1))
    h = stage(g_a.stage1, lambda a, b, t=h1: t[:, :, a:b], (c1, h1h, h1w), q0)
    del h1
    h = g_a.down2(h.contiguous())
    h = stage(g_a.stage2, lambda a, b, t=h: t[:, :, a:b], tuple(h.shape[1:]), q0)
    y = g_a.down3(h.contiguous())
    del h
    if g_a.base is not None:
        rows = band_rows(y.shape[2], 16 * W * 3 * 4 * 2, multiple=1, width=W // 16)
        for r0, r1 in bands(y.shape[2], rows):
            y[:, :, r0:r1] = y[:, :, r0:r1] + g_a.base(x[:, :, 16 * r0: 16 * r1] * 2.0 - 1.0)
    return y


def usable(module: torch.nn.Module, *tensors: torch.Tensor) -> bool:
    """True when the banded path applies: CPU float32 weights and inputs, batch 1."""
    p = next(module.parameters())
    return (p.device.type == "cpu" and p.dtype == torch.float32
            and all(t.device.type == "cpu" and t.dtype == torch.float32 and t.shape[0] == 1 for t in tensors))


__all__ = ["BAND_BYTES", "analysis", "synthesis_uint8", "dico_block", "stage", "usable"]
