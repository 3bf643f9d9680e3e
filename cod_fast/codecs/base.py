"""Shared machinery of the VQ-condition codecs: image -> padded tensor -> indices -> container,
and container -> checked indices -> condition map. Subclasses add the pixel synthesis.

Stream contents (see ``docs/bitstream.md``): header with the true image size, an INDICES
section (codebook bits, token grid of the padded image, packed indices) and a DECODE_PARAMS
section (the sampler settings chosen at encode time).
"""
from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any, ClassVar, Union

import torch

from .. import memory
from ..bitstream import (
    DEFAULT_MAX_PIXELS,
    CodecId,
    Container,
    DecodeParams,
    LimitExceededError,
    SectionType,
    check_owner,
    pack_indices_section,
    read_container,
    unpack_indices_section,
    write_container,
)
from ..checkpoints import parse_dtype
from ..compat import read_cod, write_cod
from ..errors import BitstreamError
from ..image_io import ImageLike, pad_to_multiple, padded_size, to_uint8_chw, uint8_to_unit, unit_to_uint8
from ..portable import PortableCodec


class VQCodec(PortableCodec, ABC):
    """Base of the codecs built on a CoD-style network ``net`` with a condition codec at
    ``net.y_embedder`` (``compress``/``decompress`` as the official modules).

    Attributes: ``net`` (the mirrored network, eval mode), ``spec`` (loading.ModelSpec),
    ``fingerprint`` (16 bytes), ``device``, ``dtype``, ``stride`` (images are padded to it).
    """

    codec_id: ClassVar[CodecId]
    sections: ClassVar[Mapping[int, str]] = {
        SectionType.INDICES: "packed VQ indices: codebook bits, token grid of the padded image",
        SectionType.DECODE_PARAMS: "sampler settings chosen at encode time (decode may override them)",
    }
    #: Layout of the official writer of this model family (see ``compat``): "cod" = H first.
    official_layout: str = "cod"
    #: Whether decode samples many steps with guidance (batch 2, the unconditional map): the
    #: memory estimate's shape; one-step codecs set False.
    memory_multi_step: bool = True

    def __init__(self, spec: Any, net: torch.nn.Module, fingerprint: bytes,
                 device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32,
                 vae: torch.nn.Module | None = None) -> None:
        if len(fingerprint) != 16:
            raise ValueError("fingerprint must be 16 bytes")
        self.spec = spec
        self.device = torch.device(device)
        self.dtype = dtype
        self.net = net.to(device=self.device, dtype=dtype).eval()
        self.vae = vae.to(device=self.device, dtype=dtype).eval() if vae is not None else None
        self.fingerprint = bytes(fingerprint)
        self._lock = threading.Lock()  # decode may touch per-call attributes of net

    def memory_estimate(self, phase: str, height: int, width: int) -> int:
        """Peak activation bytes of ``phase`` ("decode"/"encode") for an image of this size
        (``cod_fast.memory``: condition codec, attention, denoiser, sampler, SD-VAE terms)."""
        hp, wp = memory.pad(height, self.stride), memory.pad(width, self.stride)
        if phase == "encode":
            return memory.vq_encode_bytes(self, hp, wp)
        multi = self.memory_multi_step
        return memory.vq_decode_bytes(self, hp, wp, batch=2 if multi else 1, multi_step=multi)

    # -- geometry --------------------------------------------------------------------------------
    @property
    def codebook_bits(self) -> int:
        """Bits per VQ index."""
        return int(self.net.y_embedder.codebook_bits)

    @property
    def token_stride(self) -> int:
        """Image pixels per VQ token along a side."""
        e = self.net.y_embedder
        return int(e.ds if e.up2x else e.ds // 2)

    @property
    def pixel_patch(self) -> int:
        """Image pixels per denoiser patch along a side (latent models: VAE factor 8 x patch)."""
        return int(self.net.patch_size) * (8 if self.spec.latent else 1)

    @property
    def stride(self) -> int:
        """Images are padded (bottom/right, replicate) to multiples of this many pixels."""
        a, b = self.token_stride, self.pixel_patch
        return a * b // math.gcd(a, b)

    @property
    def fingerprint_hex(self) -> str:
        """The fingerprint as 32 hex digits."""
        return self.fingerprint.hex()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.spec.class_path}, fingerprint={self.fingerprint_hex}, "
                f"device={self.device}, dtype={self.dtype})")

    # -- encode ----------------------------------------------------------------------------------
    @abstractmethod
    def default_params(self) -> DecodeParams:
        """Decode settings recorded when encode() is given none."""

    @memory.allocation_guard
    def encode(self, image: ImageLike, *, max_memory: memory.MemoryLike = None, **params: Any) -> bytes:
        """Image (path, PIL, numpy HWC uint8, torch CHW uint8/float [0,1]) -> container bytes.

        Keyword ``params`` (e.g. ``steps``, ``cfg``, ``sampler``, ``seed``) override the default
        decode settings recorded in the stream. ``max_memory``: see ``cod_fast.memory``.
        """
        img = to_uint8_chw(image)
        _, h, w = img.shape
        memory.check(self, "encode", h, w, max_memory)
        dp = self._merge_params(self.default_params(), params)
        problem = self.check_params(dp)
        if problem:
            raise ValueError(problem)
        x = pad_to_multiple(uint8_to_unit(img), self.stride).to(self.device, self.dtype)
        with torch.inference_mode():
            packed = self.net.compress(x)
        rows, cols = x.shape[-2] // self.token_stride, x.shape[-1] // self.token_stride
        sections = {
            SectionType.INDICES: pack_indices_section(packed, self.codebook_bits, rows, cols),
            SectionType.DECODE_PARAMS: dp.to_bytes(),
        }
        return write_container(Container(codec_id=self.codec_id, fingerprint=self.fingerprint,
                                         height=h, width=w, sections=sections))

    @abstractmethod
    def check_params(self, params: DecodeParams) -> str | None:
        """Why ``params`` are invalid for this codec (None when valid): encode raises ValueError
        with it, decode BitstreamError."""

    @staticmethod
    def _merge_params(base: DecodeParams, params: dict[str, Any]) -> DecodeParams:
        fields = {"sampler", "steps", "cfg", "seed", "noise_level"}
        bad = set(params) - fields
        if bad:
            raise TypeError(f"unknown decode parameter(s) {sorted(bad)}; known: {sorted(fields)}")
        merged = {k: getattr(base, k) for k in fields}
        merged.update({k: v for k, v in params.items() if v is not None})
        dp = DecodeParams(sampler=str(merged["sampler"]), steps=int(merged["steps"]),
                          cfg=float(merged["cfg"]), seed=int(merged["seed"]),
                          noise_level=float(merged["noise_level"]))
        dp.to_bytes()  # validates ranges and the sampler name
        return dp

    # -- decode ----------------------------------------------------------------------------------
    @staticmethod
    def describe(c: Container) -> dict[str, Any]:
        """The INDICES grid and the recorded DECODE_PARAMS of container ``c`` (no model needed)."""
        out: dict[str, Any] = {}
        if SectionType.INDICES in c.sections:
            bits, rows, cols, _ = unpack_indices_section(c.sections[SectionType.INDICES])
            out["indices"] = {"bits": bits, "rows": rows, "cols": cols}
        if SectionType.DECODE_PARAMS in c.sections:
            out["decode_params"] = vars(DecodeParams.from_bytes(c.sections[SectionType.DECODE_PARAMS]))
        return out

    def parse(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Container, bytes, DecodeParams]:
        """Parse and check a stream for this model: (container, packed indices, params).

        BitstreamError for malformed streams, ModelMismatchError for another model or codec.
        """
        c = read_container(data)
        check_owner(c, self.fingerprint, self.codec_id, "model", set(self.sections))
        bits, rows, cols, packed = unpack_indices_section(c.section(SectionType.INDICES))
        hp, wp = padded_size(c.height, c.width, self.stride)
        if hp * wp > max_pixels:
            raise LimitExceededError(
                f"image of {c.height}x{c.width} exceeds max_pixels={max_pixels}; pass a larger limit")
        if bits != self.codebook_bits or (rows, cols) != (hp // self.token_stride, wp // self.token_stride):
            raise BitstreamError(
                f"INDICES grid {rows}x{cols} at {bits} bits does not fit a {c.height}x{c.width} image "
                f"for this model ({hp // self.token_stride}x{wp // self.token_stride} at {self.codebook_bits} bits)")
        params = DecodeParams.from_bytes(c.section(SectionType.DECODE_PARAMS))
        problem = self.check_params(params)
        if problem:
            raise BitstreamError(f"DECODE_PARAMS: {problem}")
        return c, packed, params

    def _autocast(self, dtype: Union[str, torch.dtype, None]):
        if dtype is None:
            return nullcontext()
        dt = parse_dtype(dtype)
        if dt == self.dtype:
            return nullcontext()
        if dt == torch.float32:  # autocast only lowers precision
            raise ValueError(f"this codec's weights are {self.dtype}; load the model with dtype=float32 "
                             "to decode in float32")
        return torch.autocast(self.device.type, dtype=dt)

    @memory.allocation_guard
    def decode(self, data: bytes, *, dtype: Union[str, torch.dtype, None] = None,
               max_pixels: int = DEFAULT_MAX_PIXELS, max_memory: memory.MemoryLike = None,
               **overrides: Any) -> torch.Tensor:
        """Container bytes -> ``torch.uint8`` [3, H, W] on the CPU (the true, uncropped size).

        ``overrides`` (``steps``, ``cfg``, ``sampler``, ``seed``, ``noise_level``; None = keep)
        replace the settings the encoder recorded; ``dtype`` (bfloat16/float16) runs the networks
        under autocast to that dtype when it differs from the codec's (float32 needs a float32 model).
        """
        c, packed, params = self.parse(data, max_pixels=max_pixels)
        memory.check(self, "decode", c.height, c.width, max_memory)
        params = self._merge_params(params, overrides)
        problem = self.check_params(params)
        if problem:
            raise ValueError(problem)
        hp, wp = padded_size(c.height, c.width, self.stride)
        with torch.inference_mode(), self._lock, self._autocast(dtype):
            out = self._synthesise(packed, hp, wp, params)
        img = unit_to_uint8(out[0, :, : c.height, : c.width])
        return img.to("cpu").contiguous()

    @abstractmethod
    def _synthesise(self, packed: bytes, hp: int, wp: int, params: DecodeParams) -> torch.Tensor:
        """Packed indices of a padded hp x wp image -> (1, 3, hp, wp) in about [-1, 1]."""

    # -- official .cod files -----------------------------------------------------------------------
    @memory.allocation_guard
    def encode_cod(self, image: ImageLike, layout: str | None = None, *,
                   max_memory: memory.MemoryLike = None) -> bytes:
        """Image -> official ``.cod`` bytes in ``layout`` (default: ``official_layout``, the layout
        of this model family's official writer). Official files carry no padding, so H and W must
        be multiples of ``stride`` (ValueError otherwise)."""
        img = to_uint8_chw(image)
        _, h, w = img.shape
        memory.check(self, "encode", h, w, max_memory)
        if h % self.stride or w % self.stride:
            raise ValueError(f"official .cod files need sizes that are multiples of {self.stride}, "
                             f"got {h}x{w}; use encode() (our container pads and crops)")
        x = uint8_to_unit(img).to(self.device, self.dtype)
        with torch.inference_mode():
            packed = self.net.compress(x)
        return write_cod(None, packed, h, w, layout=layout or self.official_layout)  # type: ignore[arg-type]

    @memory.allocation_guard
    def decode_cod(self, data: bytes, layout: str | None = None, *, dtype: Union[str, torch.dtype, None] = None,
                   max_pixels: int = DEFAULT_MAX_PIXELS, max_memory: memory.MemoryLike = None,
                   **overrides: Any) -> torch.Tensor:
        """Official ``.cod`` bytes -> uint8 [3, H, W]. The file carries no model id and no decode
        settings: this codec's model and defaults are used (``overrides`` replace them).
        ``layout`` defaults to ``official_layout``."""
        e = self.net.y_embedder
        cod = read_cod(data, layout=layout or self.official_layout, ds=int(e.ds), up2x=bool(e.up2x),  # type: ignore[arg-type]
                       codebook_bits=self.codebook_bits)
        if cod.height % self.stride or cod.width % self.stride:
            raise BitstreamError(f".cod image size {cod.height}x{cod.width} is not a multiple of "
                                 f"{self.stride}: no official encoder writes it for this model")
        if cod.height * cod.width > max_pixels:
            raise LimitExceededError(f"image of {cod.height}x{cod.width} exceeds max_pixels={max_pixels}")
        memory.check(self, "decode", cod.height, cod.width, max_memory)
        params = self._merge_params(self.default_params(), overrides)
        problem = self.check_params(params)
        if problem:
            raise ValueError(problem)
        with torch.inference_mode(), self._lock, self._autocast(dtype):
            out = self._synthesise(cod.payload, cod.height, cod.width, params)
        return unit_to_uint8(out[0]).to("cpu").contiguous()
