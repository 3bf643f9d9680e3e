"""CoD condition codec: image -> encoder -> VQ indices -> decoder -> condition map ``c``.

Mirror of GenCodec ``CoD/cod/models/condition_codec.py`` (classes ``Encoder``, ``Decoder``,
``Codec``). Images enter in ``[0, 1]`` (``to_tensor``), ``(1, 3, H, W)``; the unconditional branch of
classifier-free guidance is an image filled with ``-1`` passed through the same path.

Geometry (``ds`` is the nominal downsampling; ``up2x`` makes ``conv_in`` stride 2). VQ tokens
sit every ``ds`` pixels with ``up2x`` and every ``ds/2`` without; the decoder always brings the
condition map ``c`` to 1/16 of the image, the DiT token grid:

- ``ds=32, up2x``: tokens at 1/32 (4 bits each: 0.0039 bpp), ``ada`` (UpSample) to 1/16;
- ``ds=32``: tokens at 1/16, no ``ada``;
- ``ds=128, up2x``: tokens at 1/128 (64 bits for 512x512), two UpSample stages + ``ada``;
- ``ds=128``: tokens at 1/64, two UpSample stages;
- ``ds=16/8/4`` (``up2x`` required): tokens at 1/16, 1/8, 1/4; stride-2 convs in ``conv_out``.
"""
from __future__ import annotations

import torch
from torch import nn

from ...errors import BitstreamError
from .layers import AttnBlock, Downsample, Normalize, ResnetBlock, UpSample, swish
from .packing import pack_bits, packed_size, unpack_bits
from .vq import VectorQuantizer

# Nominal downsampling factors the official Encoder/Decoder pair supports.
SUPPORTED_DS = (4, 8, 16, 32, 128)
# Official codebook vector size (``codebook_dim`` in ``Codec.__init__``).
CODEBOOK_DIM = 128
# Largest image side decompress() accepts: the official .cod header stores sides as uint16.
MAX_SIDE = 65535


def _check_geometry(ds: int, up2x: bool) -> None:
    if ds not in SUPPORTED_DS:
        raise ValueError(f"ds must be one of {SUPPORTED_DS}, got {ds!r}")
    if ds in (4, 8, 16) and not up2x:
        raise ValueError(f"ds={ds} requires up2x=True (as in the official Decoder)")


class Encoder(nn.Module):
    """Condition encoder ``(B, 3, H, W) -> (B, z_ch, H/r, W/r)`` with ``r = ds`` (``up2x``) or ``ds/2``.

    ``ch`` base channels with multipliers 1, 1, 2, 2, 4 (and 8 for ``ds=128``), two ResnetBlocks per
    stage, attention in the last stage, a Res-Attn-Res middle block, GN + swish + conv3x3 out.
    ``light`` is accepted for signature compatibility; the official encoder ignores it.
    """

    def __init__(self, ch: int, z_ch: int, ds: int, up2x: bool, light: bool = False) -> None:
        super().__init__()
        _check_geometry(ds, up2x)
        self.conv_in = nn.Conv2d(3, ch, kernel_size=3, stride=2 if up2x else 1, padding=1)
        self.down_block_0 = nn.Sequential(
            ResnetBlock(in_channels=ch, out_channels=ch),
            ResnetBlock(in_channels=ch, out_channels=ch),
            Downsample(ch),
        )
        self.down_block_1 = nn.Sequential(
            ResnetBlock(in_channels=ch, out_channels=ch),
            ResnetBlock(in_channels=ch, out_channels=ch),
            Downsample(ch) if ds >= 8 else nn.Identity(),
        )
        self.down_block_2 = nn.Sequential(
            ResnetBlock(in_channels=ch, out_channels=ch * 2),
            ResnetBlock(in_channels=ch * 2, out_channels=ch * 2),
            Downsample(ch * 2) if ds >= 16 else nn.Identity(),
        )
        self.down_block_3 = nn.Sequential(
            ResnetBlock(in_channels=ch * 2, out_channels=ch * 2),
            ResnetBlock(in_channels=ch * 2, out_channels=ch * 2),
            Downsample(ch * 2) if ds >= 32 else nn.Identity(),
        )
        stage4: list[nn.Module] = [
            ResnetBlock(in_channels=ch * 2, out_channels=ch * 4), AttnBlock(ch * 4),
            ResnetBlock(in_channels=ch * 4, out_channels=ch * 4), AttnBlock(ch * 4),
        ]
        out_ch = ch * 4
        if ds == 128:  # two more stride-2 stages
            stage4 += [
                Downsample(ch * 4),
                ResnetBlock(in_channels=ch * 4, out_channels=ch * 8), AttnBlock(ch * 8),
                ResnetBlock(in_channels=ch * 8, out_channels=ch * 8), AttnBlock(ch * 8),
                Downsample(ch * 8),
            ]
            out_ch = ch * 8
        self.down_block_4 = nn.Sequential(*stage4)
        self.mid_block = nn.Sequential(
            ResnetBlock(in_channels=out_ch, out_channels=out_ch),
            AttnBlock(out_ch),
            ResnetBlock(in_channels=out_ch, out_channels=out_ch),
        )
        self.norm_out = Normalize(out_ch)
        self.conv_out = nn.Conv2d(out_ch, z_ch, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        h = self.down_block_0(h)
        h = self.down_block_1(h)
        h = self.down_block_2(h)
        h = self.down_block_3(h)
        h = self.down_block_4(h)
        h = self.mid_block(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """Condition decoder ``(B, z_ch, h, w) -> (B, out_ch, H/16, W/16)`` (the DiT token grid).

    ``conv_in`` to ``out_ch`` (1152 officially), then at that width 4 ResnetBlocks + 3 AttnBlocks
    (``light``: 3 + 2; ``ds=128``: with two UpSample stages), GN + swish + ``conv_out`` (zeroed by
    :meth:`initialize_weights`), and ``ada`` (UpSample) when ``up2x`` and ``ds`` is 32 or 128.
    """

    def __init__(self, out_ch: int, z_ch: int, ds: int, up2x: bool, light: bool = False) -> None:
        super().__init__()
        _check_geometry(ds, up2x)
        if ds == 128 and light:
            raise ValueError("light=True is not available with ds=128 (as in the official Decoder)")
        self.conv_in = nn.Conv2d(z_ch, out_ch, kernel_size=3, stride=1, padding=1)

        def res() -> ResnetBlock:
            return ResnetBlock(in_channels=out_ch, out_channels=out_ch)

        if ds == 128:
            body = [res(), AttnBlock(out_ch), UpSample(out_ch),
                    res(), AttnBlock(out_ch), UpSample(out_ch),
                    res(), AttnBlock(out_ch), res()]
        elif light:
            body = [res(), AttnBlock(out_ch), res(), AttnBlock(out_ch), res()]
        else:
            body = [res(), AttnBlock(out_ch), res(), AttnBlock(out_ch),
                    res(), AttnBlock(out_ch), res()]
        self.block = nn.Sequential(*body)
        self.norm_out = Normalize(out_ch)
        self.ds = ds
        self.up2x = up2x
        if ds == 4:
            self.conv_out = nn.Sequential(
                nn.Conv2d(out_ch, out_ch, kernel_size=3, stride=2, padding=1),
                ResnetBlock(in_channels=out_ch, out_channels=out_ch),
                nn.Conv2d(out_ch, out_ch, kernel_size=3, stride=2, padding=1),
            )
            self.ada = nn.Identity()
        elif ds == 8:
            self.conv_out = nn.Conv2d(out_ch, out_ch, kernel_size=3, stride=2, padding=1)
            self.ada = nn.Identity()
        else:
            self.conv_out = nn.Conv2d(out_ch, out_ch, kernel_size=3, stride=1, padding=1)
            if ds == 16:
                self.ada = nn.Identity()
            elif up2x:  # ds 32 or 128
                self.ada = UpSample(out_ch)
            # ds 32/128 without up2x: no ``ada`` attribute, as officially.

    def initialize_weights(self) -> None:
        """Zero every conv in ``conv_out`` (its weights and biases), as the DiTs do at construction."""
        for module in self.conv_out.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.zeros_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.block(self.conv_in(z))
        h = self.conv_out(swish(self.norm_out(h)))
        if self.up2x:
            h = self.ada(h)
        return h


class Codec(nn.Module):
    """Condition codec: ``encoder`` + ``bottleneck`` (VQ, ``2**codebook_bits`` x 128) + ``decoder``.

    Constructor arguments are the official ones: ``ch`` is the decoder width (the DiT hidden size),
    the encoder width is always 128. ``light`` selects the lighter decoder.
    """

    def __init__(self, ch: int, codebook_bits: int, ds: int, up2x: bool, light: bool = False) -> None:
        super().__init__()
        if not isinstance(codebook_bits, int) or not 1 <= codebook_bits <= 16:
            raise ValueError(f"codebook_bits must be an int in [1, 16], got {codebook_bits!r}")
        self.codebook_bits = codebook_bits
        self.ds = ds
        self.up2x = up2x
        self.encoder = Encoder(128, CODEBOOK_DIM, ds, up2x, light=light)
        self.bottleneck = VectorQuantizer(2 ** codebook_bits, CODEBOOK_DIM, 0.25)
        self.decoder = Decoder(ch, CODEBOOK_DIM, ds, up2x, light=light)
        self.bottleneck.codebook_bits = codebook_bits
        # Decoded unconditional map (official attribute); see calculate_uncond().
        self.pre_calculated_uncond: torch.Tensor | None = None
        self._uncond_key: tuple | None = None  # (shape, device, dtype) of the image behind it

    # -- geometry -----------------------------------------------------------------------------
    @property
    def token_stride(self) -> int:
        """Image pixels per VQ token along each side: ``ds`` with ``up2x``, else ``ds // 2``."""
        return self.ds if self.up2x else self.ds // 2

    def calculate_indices_size(self, H: int, W: int) -> tuple[int, int]:  # noqa: N803
        """Token grid ``(h, w) = (H // stride, W // stride)`` for an ``H x W`` image."""
        return H // self.token_stride, W // self.token_stride

    def calculate_indices_bytes(self, H: int, W: int) -> int:  # noqa: N803
        """Bytes of packed indices for an ``H x W`` image: ``ceil(h * w * codebook_bits / 8)``."""
        h, w = self.calculate_indices_size(H, W)
        return packed_size(h * w, self.codebook_bits)

    # -- coding -------------------------------------------------------------------------------
    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """VQ indices of images ``(B, 3, H, W)`` in [0, 1]: int64 ``(B*h*w,)``, raster order per image."""
        _, _, indices = self.bottleneck(self.encoder(x))
        return indices

    def compress(self, x: torch.Tensor) -> bytes:
        """Encode one image ``(1, 3, H, W)`` (values in [0, 1]) to packed indices (official format)."""
        if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError(f"compress takes one RGB image of shape (1, 3, H, W), got {tuple(x.shape)}")
        return pack_bits(self.encode_indices(x), self.codebook_bits)

    def decompress(
        self,
        bitstream: bytes | bytearray | list[int],
        H: int,  # noqa: N803
        W: int,  # noqa: N803
        device: torch.device | str,
    ) -> torch.Tensor:
        """Decode packed indices of an ``H x W`` image to the condition map ``(1, ch, H/16, W/16)``.

        Raises :class:`~cod_fast.errors.BitstreamError` when the stream length does not match
        ``calculate_indices_bytes(H, W)`` (the official code reads past it or ignores the rest),
        ``ValueError`` for a size with an empty token grid or a side above 65535.
        """
        if not (0 < H <= MAX_SIDE and 0 < W <= MAX_SIDE):
            raise ValueError(f"image size must be in [1, {MAX_SIDE}], got {H}x{W}")
        h, w = self.calculate_indices_size(H, W)
        if h == 0 or w == 0:
            raise ValueError(f"an image of {H}x{W} is smaller than one token ({self.token_stride} px)")
        try:
            indices = unpack_bits(bitstream, h * w, self.codebook_bits)
        except TypeError as exc:
            raise BitstreamError(f"bitstream must be bytes-like: {exc}") from exc
        y_hat = self.bottleneck.get_codebook_entry(indices.to(device), (h, w))
        return self.decoder(y_hat)

    def calculate_uncond(self, uncond: torch.Tensor) -> None:
        """Store ``decoder(VQ(encoder(uncond)))`` in ``pre_calculated_uncond``.

        ``uncond`` is the unconditional image (all ``-1``), ``(1, 3, H, W)``. The official method
        computes it once and never again; here it is recomputed when the size, device or dtype of
        the stored map does not fit ``uncond`` (the official cache breaks on a second image size).
        """
        key = (tuple(uncond.shape), uncond.device, uncond.dtype)
        if self.pre_calculated_uncond is not None and key == self._uncond_key:
            return
        y_hat, _, _ = self.bottleneck(self.encoder(uncond))
        self.pre_calculated_uncond = self.decoder(y_hat)
        self._uncond_key = key

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        # New weights make a stored unconditional map stale.
        self.pre_calculated_uncond = None
        self._uncond_key = None
        super()._load_from_state_dict(*args, **kwargs)

    def forward(
        self, x: torch.Tensor, fix_encoder: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training-style pass: ``(B, 3, H, W) -> (c (B, ch, H/16, W/16), res)``.

        ``res`` holds ``vq_loss``, ``indices`` (``(B*h*w,)``) and ``bpp_hard``
        (``codebook_bits / ds**2``, the official nominal rate). ``fix_encoder`` runs the encoder
        and VQ without gradients.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not fix_encoder):
            y_hat, vq_loss, indices = self.bottleneck(self.encoder(x))
        x_hat = self.decoder(y_hat)
        res = {
            "vq_loss": vq_loss,
            "indices": indices,
            "bpp_hard": torch.tensor(self.codebook_bits / self.ds ** 2),
        }
        return x_hat, res


class CodecPassthrough:
    """The official denoisers' codec methods, delegating to ``self.y_embedder`` (a :class:`Codec`).

    Mixed into ``PixNerDiT``, ``DDT`` and CoD-Lite's ``CoDBase``, which hold their condition codec
    at ``y_embedder`` as the official classes do.
    """

    y_embedder: Codec

    def calculate_uncond(self, uncond: torch.Tensor) -> None:
        """See :meth:`Codec.calculate_uncond`."""
        self.y_embedder.calculate_uncond(uncond)

    def calculate_indices_bytes(self, H: int, W: int) -> int:  # noqa: N803
        """See :meth:`Codec.calculate_indices_bytes`."""
        return self.y_embedder.calculate_indices_bytes(H, W)

    def compress(self, x: torch.Tensor) -> bytes:
        """See :meth:`Codec.compress`: ``(1, 3, H, W)`` image in [0, 1] -> packed indices."""
        return self.y_embedder.compress(x)

    def decompress(
        self,
        bitstream: bytes | bytearray | list[int],
        H: int,  # noqa: N803
        W: int,  # noqa: N803
        device: torch.device | str,
        uncond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Condition map ``(1, hidden, H/16, W/16)``; with ``uncond`` (the -1 image of the
        picture's size, ``(1, 3, H, W)``), the CFG batch ``cat([uncond map, cond map])`` of shape
        ``(2, hidden, H/16, W/16)``, as the official code builds it."""
        x_hat = self.y_embedder.decompress(bitstream, H, W, device)
        if uncond is not None:
            self.calculate_uncond(uncond)
            x_hat = torch.cat([self.y_embedder.pre_calculated_uncond, x_hat], dim=0)
        return x_hat
