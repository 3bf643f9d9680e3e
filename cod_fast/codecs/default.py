"""The codec of the bundled default model (``cod_fast.models.default``): image <-> container.

Stream contents (codec id ``DEFAULT_HYPERPRIOR``): the header with the true image size, then

* ``HYPERPRIOR_PARAMS`` (8 bytes): f32 quality (rate level in [0, levels - 1]), u16 z rows,
  u16 z cols (the z grid of the image padded to multiples of 64);
* ``HYPERPRIOR_Y``: the rANS stream of the y symbols;
* ``HYPERPRIOR_Z``: the rANS stream of the z symbols;
* ``HYPERPRIOR_CHECK`` (4 bytes, optional; written since the unit-domain model): u32 CRC32 of
  the y table indexes the encoder used. The model's hyper-synthesis runs in float32 on the CPU,
  and another CPU or library may round it differently; the decoder recomputes the indexes and
  raises ``EntropyParameterMismatchError`` before parsing y if they differ, instead of decoding
  garbage. Streams without the section decode unchecked.

The parser checks the quality range and that the z grid is the one the header's image size
implies before any symbol is decoded, so a hostile stream cannot ask for a large allocation.
"""
from __future__ import annotations

import math
import struct
import threading
from typing import Any, Union

import torch
from safetensors.torch import load_file

from .. import registry
from ..bitstream import (
    CodecId,
    Container,
    LimitExceededError,
    SectionType,
    check_owner,
    compute_fingerprint,
    read_container,
    write_container,
)
from ..errors import BitstreamError
from ..image_io import ImageLike, to_uint8_chw, uint8_to_unit
from ..models.default import STRIDE, WEIGHTS_DIR, WEIGHTS_FILE, default_model_info, load_default_model
from ..models.default.model import MAX_Z_POSITIONS

#: Class path hashed into the fingerprint (the model is ours; there is no official one).
CLASS_PATH = "cod_fast.models.default.DefaultCodecModel"

_PARAMS = struct.Struct("<fHH")  # quality, z rows, z cols
_CHECK = struct.Struct("<I")  # CRC32 of the y table indexes
_SECTIONS = {SectionType.HYPERPRIOR_PARAMS, SectionType.HYPERPRIOR_Y, SectionType.HYPERPRIOR_Z,
             SectionType.HYPERPRIOR_CHECK}


def default_fingerprint(config: dict[str, Any], stored: dict[str, torch.Tensor]) -> bytes:
    """16-byte fingerprint of the default model from its config dict and its tensors as stored
    (float16 in the shipped file: hashed before the cast to float32, as ``load_model`` does)."""
    return compute_fingerprint({"class_path": CLASS_PATH, "init_args": config, "latent": False}, stored)


class DefaultCodec:
    """Codec over a ``DefaultCodecModel``.

    Attributes: ``net`` (the model, eval mode), ``fingerprint`` (16 bytes), ``device``,
    ``levels`` (number of rate levels; quality lies in [0, levels - 1]), ``stride`` (64).
    """

    codec_id = CodecId.DEFAULT_HYPERPRIOR
    label = "the default model"
    encode_settings, decode_settings = frozenset({"quality"}), frozenset()
    sections = {
        SectionType.HYPERPRIOR_PARAMS: "f32 quality, u16 z rows, u16 z cols",
        SectionType.HYPERPRIOR_Y: "rANS stream of the y symbols",
        SectionType.HYPERPRIOR_Z: "rANS stream of the z symbols",
        SectionType.HYPERPRIOR_CHECK: "u32 CRC32 of the y table indexes the encoder used (optional)",
    }

    @staticmethod
    def describe(c: Container) -> dict[str, Any]:
        """The HYPERPRIOR_PARAMS fields of container ``c`` (no model needed)."""
        p = c.sections.get(SectionType.HYPERPRIOR_PARAMS, b"")
        if len(p) != _PARAMS.size:
            return {}
        q, zh, zw = _PARAMS.unpack(p)
        return {"hyperprior_params": {"quality": q, "z_rows": zh, "z_cols": zw,
                                      "index_check": SectionType.HYPERPRIOR_CHECK in c.sections}}

    def __init__(self, net: torch.nn.Module, fingerprint: bytes, threads: int | None = None) -> None:
        if len(fingerprint) != 16:
            raise ValueError("fingerprint must be 16 bytes")
        entropy = [*net.entropy_parameters(), net.log_gain, net.log_inv_gain]
        if any(p.dtype != torch.float32 for p in entropy):
            # They decide how streams parse; rounded copies would parse other symbols.
            raise ValueError("the default model's entropy model (h_a, h_s, density_z, gains) must stay "
                             "float32; cast only net.g_s (the synthesis) to a lower precision")
        self.net = net.eval()
        self.fingerprint = bytes(fingerprint)
        self.device = next(net.parameters()).device
        self.levels = int(net.cfg.levels)
        self.stride = int(STRIDE)
        self.threads = threads
        self._lock = threading.Lock()  # the model caches its entropy tables lazily

    @property
    def fingerprint_hex(self) -> str:
        """The fingerprint as 32 hex digits."""
        return self.fingerprint.hex()

    def __repr__(self) -> str:
        return f"DefaultCodec(fingerprint={self.fingerprint_hex}, device={self.device}, levels={self.levels})"

    def _z_shape(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.stride), -(-width // self.stride)

    def _check_quality(self, quality: float) -> float:
        q = float(quality)
        if not (math.isfinite(q) and 0.0 <= q <= self.levels - 1):
            raise ValueError(f"quality must lie in [0, {self.levels - 1}], got {quality}")
        return q

    def encode(self, image: ImageLike, quality: float = 3.0, rdoq: bool = True) -> bytes:
        """Image (path, PIL, numpy HWC uint8, torch CHW uint8/float [0,1]) -> container bytes.

        ``quality``: rate level in [0, levels - 1] (higher = more bits); fractional values
        interpolate between levels. ValueError outside the range. ``rdoq``: rate-distortion
        optimised choice of the y symbols (``cod_fast.models.default.model.rdo_symbols``; an
        encoder decision, decoded by the same decoder); False gives plain rounding.
        """
        q = self._check_quality(quality)
        img = to_uint8_chw(image)
        _, h, w = img.shape
        x = uint8_to_unit(img).to(self.device)
        with self._lock:
            out = self.net.compress(x, quality=q, threads=self.threads, rdoq=bool(rdoq))
        zh, zw = out["shape"]
        if (zh, zw) != self._z_shape(h, w):  # invariant of the model's padding policy
            raise RuntimeError(f"model returned z grid {zh}x{zw} for a {h}x{w} image")
        y_bytes, z_bytes = out["strings"]
        sections = {
            SectionType.HYPERPRIOR_PARAMS: _PARAMS.pack(q, zh, zw),
            SectionType.HYPERPRIOR_Y: bytes(y_bytes),
            SectionType.HYPERPRIOR_Z: bytes(z_bytes),
            SectionType.HYPERPRIOR_CHECK: _CHECK.pack(out["index_crc"]),
        }
        return write_container(Container(codec_id=self.codec_id, fingerprint=self.fingerprint,
                                         height=h, width=w, sections=sections))

    def parse(self, data: bytes) -> tuple[Container, float, tuple[int, int], int | None]:
        """Parse and check a stream for this model: (container, quality, z shape, index CRC or None).

        BitstreamError for malformed streams, ModelMismatchError for another model or codec.
        """
        c = read_container(data)
        check_owner(c, self.fingerprint, self.codec_id, "the default model", _SECTIONS)
        payload = c.section(SectionType.HYPERPRIOR_PARAMS)
        if len(payload) != _PARAMS.size:
            raise BitstreamError(f"HYPERPRIOR_PARAMS section must be {_PARAMS.size} bytes, got {len(payload)}")
        q, zh, zw = _PARAMS.unpack(payload)
        if not (math.isfinite(q) and 0.0 <= q <= self.levels - 1):
            raise BitstreamError(f"HYPERPRIOR_PARAMS quality {q} outside [0, {self.levels - 1}]")
        if (zh, zw) != self._z_shape(c.height, c.width):
            raise BitstreamError(f"HYPERPRIOR_PARAMS z grid {zh}x{zw} does not fit a {c.height}x{c.width} image")
        if zh * zw > MAX_Z_POSITIONS:
            raise LimitExceededError(
                f"image of {c.height}x{c.width} exceeds the default model's limit of {MAX_Z_POSITIONS} z positions")
        crc = None
        if SectionType.HYPERPRIOR_CHECK in c.sections:
            check = c.section(SectionType.HYPERPRIOR_CHECK)
            if len(check) != _CHECK.size:
                raise BitstreamError(f"HYPERPRIOR_CHECK section must be {_CHECK.size} bytes, got {len(check)}")
            (crc,) = _CHECK.unpack(check)
        return c, q, (zh, zw), crc

    def decode_symbols(self, data: bytes) -> tuple[torch.Tensor, torch.Tensor]:
        """Container bytes -> the entropy-decoded integers ``(y symbols int32 (1, M, h, w),
        z symbols int32 (1, Nz, h/4, w/4))`` on the CPU, without the synthesis. Same errors as
        ``decode``."""
        c, q, z_shape, crc = self.parse(data)
        strings = [c.section(SectionType.HYPERPRIOR_Y), c.section(SectionType.HYPERPRIOR_Z)]
        try:
            with self._lock:
                return self.net.decode_symbols(strings, z_shape, quality=q, threads=self.threads, index_crc=crc)
        except BitstreamError:
            raise
        except (ValueError, RuntimeError, IndexError) as exc:  # symbols that do not fit the tables
            raise BitstreamError(f"cannot decode the entropy-coded sections: {exc}") from None

    def decode(self, data: bytes) -> torch.Tensor:
        """Container bytes -> ``torch.uint8`` [3, H, W] on the CPU (the true size, cropped)."""
        c, q, z_shape, crc = self.parse(data)
        strings = [c.section(SectionType.HYPERPRIOR_Y), c.section(SectionType.HYPERPRIOR_Z)]
        try:
            with self._lock:
                x_hat = self.net.decompress(strings, z_shape, quality=q, image_size=(c.height, c.width),
                                            threads=self.threads, index_crc=crc)
        except BitstreamError:
            raise
        except (ValueError, RuntimeError, IndexError) as exc:  # symbols that do not fit the tables
            raise BitstreamError(f"cannot decode the entropy-coded sections: {exc}") from None
        img = (x_hat[0].float() * 255.0).round_().clamp_(0, 255).to(torch.uint8)
        return img.to("cpu").contiguous()


_cache: dict[str, DefaultCodec] = {}
_cache_lock = threading.Lock()


def load_default_codec(device: Union[str, torch.device] = "cpu") -> DefaultCodec:
    """The ``DefaultCodec`` with the shipped weights on ``device``: built once per device,
    cached, and registered so that ``cod_fast.decode(data)`` finds it."""
    key = str(torch.device(device))
    with _cache_lock:
        codec = _cache.get(key)
        if codec is None:
            net = load_default_model(device=device)
            info = default_model_info()
            stored = load_file(str(WEIGHTS_DIR / WEIGHTS_FILE))
            codec = DefaultCodec(net, default_fingerprint(info["config"], stored))
            _cache[key] = codec
    registry.register(codec)
    return codec


@registry.named_model("default")
def _load_named_default(name: str) -> DefaultCodec:
    """Loader of the bundled default model (named "default"): built on first use, on the CPU."""
    return load_default_codec()
