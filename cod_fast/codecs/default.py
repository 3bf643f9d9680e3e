"""The codec of the bundled default model (``cod_fast.models.default``): image <-> container.

Stream contents (codec id ``DEFAULT_HYPERPRIOR``): the header with the true image size, then

* ``HYPERPRIOR_PARAMS`` (8 bytes): f32 quality (rate level in [0, levels - 1]), u16 z rows,
  u16 z cols (the z grid of the image padded to multiples of 64);
* ``HYPERPRIOR_Y``: the rANS stream of the y symbols;
* ``HYPERPRIOR_Z``: the rANS stream of the z symbols;
* ``HYPERPRIOR_CHECK`` (4 bytes, optional, 8 with the checkerboard context; written since the
  unit-domain model): u32 CRC32 of the y table indexes the encoder used. The decoder recomputes the indexes and raises
  ``EntropyParameterMismatchError`` before parsing y if they differ, instead of decoding
  garbage. Streams without the section decode unchecked;
* ``HYPERPRIOR_Y_NONANCHOR`` (models with the checkerboard context only, layout 3): the rANS
  stream of the non-anchor y symbols; ``HYPERPRIOR_Y`` then holds the anchors' (row + col even),
  each in raster order, and the CHECK section is 8 bytes: u32 CRC32 of all the indexes (raster
  order; checked before the non-anchors are parsed), u32 CRC32 of the anchors' indexes (their
  packed raster order; checked before the anchors are parsed).

Layouts (``DefaultCodec.layout``: how a stream is parsed; the model fingerprint tells weights
apart) and the releases of the shipped weights (``DefaultCodec.release``):

* **layout 3** -- **release 4** (current, shipped since cod_fast 0.3.0, ``load_default_codec()``)
  and release 3 (cod_fast 0.2.0, other weights): a model with the checkerboard context
  (``context="checkerboard"``); the z/y rANS tables, the y table indexes and the y means come
  from integers only (``cod_fast.models.default.integer_params``, SODEC's fixed-point spec, plus
  the context in integers: "Checkerboard context"), so a stream decodes identically whatever the
  torch thread count, process, CPU kind or entropy backend; the fingerprint hashes
  ``"release": 3`` (the layout), the config with its ``context`` keys and the integers;
* **layout 2** -- release 2 (cod_fast 0.1.0; other float weights, no context): the same fixed
  point without the context. ``load_default_codec_from(dir)`` still builds layout 2 from the
  files of a model without a context;
* **layout 1** -- release 1 (cod_fast 0.1.0, release 2's float weights): indexes and means from
  the float32 hyper synthesis, whose rounding depends on the thread count, the CPU's kernels and
  the BLAS.

The weights of releases 1-3 are no longer shipped: their fingerprints are registered as retired
(``RETIRED_FINGERPRINTS``), so their streams are refused with ``ModelMismatchError`` naming the
release and the cod_fast version that decodes them, never misdecoded.

The parser checks the quality range and that the z grid is the one the header's image size
implies before any symbol is decoded, so a hostile stream cannot ask for a large allocation.
"""
from __future__ import annotations

import contextlib
import math
import struct
import threading
from pathlib import Path
from typing import Any, Union

import torch
from safetensors.torch import load_file

from .. import memory, registry
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
from ..errors import BitstreamError, EntropyParameterMismatchError
from ..image_io import ImageLike, to_uint8_chw, uint8_to_unit
from ..models.default import (
    INT_WEIGHTS_FILE,
    STRIDE,
    WEIGHTS_DIR,
    WEIGHTS_FILE,
    default_model_info,
    load_default_model,
    load_integer_state,
)
from ..models.default.integer_params import BACKENDS, DefaultIntegerParams, IntegerEntropyModel
from ..models.default.model import MAX_Z_POSITIONS
from ..models.default.refine import REFINE_BYTES_PER_PIXEL, check_refine_steps, refine_latents
from ..portable import ModelRef, PortableCodec, register_loader

#: Class path hashed into the fingerprint (the model is ours; there is no official one).
CLASS_PATH = "cod_fast.models.default.DefaultCodecModel"

_PARAMS = struct.Struct("<fHH")  # quality, z rows, z cols
_CHECK = struct.Struct("<I")  # CRC32 of the y table indexes
_CHECK_CONTEXT = struct.Struct("<II")  # layout 3: CRC32 of all the y table indexes, then of the anchors'
_SECTIONS = {SectionType.HYPERPRIOR_PARAMS, SectionType.HYPERPRIOR_Y, SectionType.HYPERPRIOR_Z,
             SectionType.HYPERPRIOR_CHECK}
#: The sections of a release with the checkerboard context (layout 3).
_CONTEXT_SECTIONS = _SECTIONS | {SectionType.HYPERPRIOR_Y_NONANCHOR}


#: Default-model weights shipped by earlier versions: fingerprint (hex) -> what wrote the stream.
#: Registered as retired (``cod_fast.registry.retire``) so their streams get an error that names
#: them and says where they still decode.
RETIRED_FINGERPRINTS = {
    "d14ced709defdfb3da4b726fd4c19b4f": "the default model's first weights (step 450, before cod_fast 0.1.0)",
    "ce5b5023c7ebb2f8f593d00b5141a4eb": "release 1 of the default model (float32 entropy parameters, cod_fast 0.1.0)",
    "7f22313cbcb4f2f69cc082fd4f109d80": "release 2 of the default model (cod_fast 0.1.0)",
    "7e4941766918a9cf102b74873c38c3c7": "release 3 of the default model (cod_fast 0.2.0)",
}
_RETIRED_HINT = ("; this version no longer ships the weights that wrote it: decode it with the cod_fast version "
                 "named, or encode the image again with the current default model (cod_fast.load_model())")
#: Where the weights of earlier releases still load (for ``load_default_codec(release=...)``'s error).
_EARLIER_RELEASES = "releases 1 and 2: cod_fast 0.1.0; release 3: cod_fast 0.2.0"
for _fp, _what in RETIRED_FINGERPRINTS.items():
    registry.retire(bytes.fromhex(_fp), _what + _RETIRED_HINT)


def default_fingerprint(config: dict[str, Any], stored: dict[str, torch.Tensor],
                        integer: dict[str, torch.Tensor] | None = None) -> bytes:
    """16-byte fingerprint of the default model from its config dict and its tensors as stored
    (float16 in the shipped file: hashed before the cast to float32, as ``load_model`` does).

    ``integer``: the stored integer entropy state, hashed under ``integer.`` with ``"release": 2``
    in the hashed config, or ``"release": 3`` when it holds a checkerboard context
    (``context.*`` entries); None gives release 1's fingerprint. The hashed ``"release"`` is the
    stream layout (``DefaultCodec.layout``), not the weights' release number: releases 3 and 4
    share layout 3 and differ by their tensors."""
    if integer is None:
        return compute_fingerprint({"class_path": CLASS_PATH, "init_args": config, "latent": False}, stored)
    tensors = {**stored, **{f"integer.{k}": v for k, v in integer.items()}}
    layout = 3 if "context.meta" in integer else 2
    return compute_fingerprint({"class_path": CLASS_PATH, "init_args": config, "latent": False, "release": layout},
                               tensors)


class DefaultCodec(PortableCodec):
    """Codec over a ``DefaultCodecModel``.

    Attributes: ``net`` (the model, eval mode), ``fingerprint`` (16 bytes), ``device``,
    ``levels`` (number of rate levels; quality lies in [0, levels - 1]), ``stride`` (64),
    ``integer`` (layout 2's or 3's ``IntegerEntropyModel``, or None for layout 1's float32 entropy
    parameters), ``layout`` (how streams are laid out and parsed: 1 float32 entropy parameters,
    2 fixed point, 3 fixed point with the checkerboard context; derived from ``net`` and
    ``integer``), ``release`` (the weights' release number: the ``release`` argument, e.g. 4
    for the shipped weights, else the layout, which was the release number of releases 1-3),
    ``entropy_backend`` ("auto", the default: C++ when built, else the reference; "reference",
    "cpp" or "triton": where the fixed-point convolutions run; every backend gives the same
    integers).
    """

    codec_id = CodecId.DEFAULT_HYPERPRIOR
    label = "the default model"
    encode_settings, decode_settings = frozenset({"quality", "refine"}), frozenset()
    sections = {
        SectionType.HYPERPRIOR_PARAMS: "f32 quality, u16 z rows, u16 z cols",
        SectionType.HYPERPRIOR_Y: "rANS stream of the y symbols",
        SectionType.HYPERPRIOR_Z: "rANS stream of the z symbols",
        SectionType.HYPERPRIOR_CHECK: ("u32 CRC32 of the y table indexes the encoder used (optional; layout 3: "
                                       "then u32 CRC32 of the anchors' indexes)"),
        SectionType.HYPERPRIOR_Y_NONANCHOR: "rANS stream of the non-anchor y symbols (layout 3: checkerboard)",
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

    def __init__(self, net: torch.nn.Module, fingerprint: bytes, threads: int | None = None,
                 integer: Any = None, entropy_backend: str = "auto", release: int | None = None) -> None:
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
        if entropy_backend not in BACKENDS:
            raise ValueError(f"entropy_backend must be one of {BACKENDS}, got {entropy_backend!r}")
        has_context = integer is not None and integer.params.context is not None
        if has_context != (getattr(net, "context", None) is not None):
            raise ValueError("the model and its integer entropy parameters disagree on the checkerboard context")
        self.integer = integer
        self.layout = 1 if integer is None else 3 if has_context else 2
        self.release = self.layout if release is None else int(release)
        self._sections = _CONTEXT_SECTIONS if has_context else _SECTIONS
        self.entropy_backend = entropy_backend
        self._lock = threading.Lock()  # the model caches its entropy tables lazily

    @property
    def fingerprint_hex(self) -> str:
        """The fingerprint as 32 hex digits."""
        return self.fingerprint.hex()

    def portable_reference(self) -> ModelRef | None:
        """The reference this codec pickles to when it is a release of the bundled model (by
        fingerprint) or was loaded from a folder (``load_default_codec_from``), else None
        (``cod_fast.portable``)."""
        for release, fp in bundled_fingerprints().items():
            if bytes(self.fingerprint) == fp:
                return ModelRef(kind="default", name=f"release{release}")
        folder = getattr(self, "_source_dir", None)  # load_default_codec_from
        return None if folder is None else ModelRef(kind="default", name="folder", checkpoint=folder)

    def memory_estimate(self, phase: str, height: int, width: int) -> int:
        """Peak activation bytes of ``phase`` ("decode"/"encode") for an image of this size
        (``cod_fast.memory``): 40 MiB + 104 B per padded pixel to decode; to encode the smaller
        of 16 MiB + 400 B/px (small images: the bands' fixed buffers are not yet the bulk) and
        96 MiB + 92 B/px: the banded transforms (``models.default.lowmem``) keep whole only y,
        the integer symbols and indexes, and one pre-attention tensor per DiCoBlock (48 B/px at
        half resolution). Measured above the level before the call (peak RSS, sampled): decode 42,
        58, 126 MB and ~0.65 GB, encode 34, 76, 148 MB and ~0.61 GB at 256x256, 384x512, 768x1024
        and 2048x3072; with the kernel's exact high-water mark (tests/test_memory.py), encode 31-33
        and 77-99 MiB at 256x256 and 384x512."""
        p = memory.pad(height, STRIDE) * memory.pad(width, STRIDE)
        # layout 3 also holds the context's input (int32, three y coefficients per pixel) and packs
        # the two passes' halves: measured on kodim01 (768x512, fresh processes, rise of the peak RSS
        # above a warmed-up codec) decode 60-69 MB and encode 73-81 MB, release 2 58-69 / 81-108 MB;
        # 16 B/px of margin for the context's input
        extra = 16 * p if self.layout == 3 else 0
        if phase == "decode":
            return extra + (40 << 20) + p * 104
        return extra + min((16 << 20) + p * 400, (96 << 20) + p * 92)

    def check_decodable_size(self, height: int, width: int) -> None:
        """LimitExceededError when the decoder would refuse a stream of this size (its z grid)."""
        zh, zw = self._z_shape(height, width)
        if zh * zw > MAX_Z_POSITIONS:
            raise LimitExceededError(f"a {height}x{width} image exceeds the default model's limit of "
                                     f"{MAX_Z_POSITIONS} z positions: its decoder would refuse the stream")

    def __repr__(self) -> str:
        return (f"DefaultCodec(release={self.release}, fingerprint={self.fingerprint_hex}, device={self.device}, "
                f"levels={self.levels})")

    def _z_shape(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.stride), -(-width // self.stride)

    def _check_quality(self, quality: float) -> float:
        q = float(quality)
        if not (math.isfinite(q) and 0.0 <= q <= self.levels - 1):
            raise ValueError(f"quality must lie in [0, {self.levels - 1}], got {quality}")
        return q

    @memory.allocation_guard
    def encode(self, image: ImageLike, quality: float = 3.0, rdoq: bool | None = None, *, refine: int = 0,
               max_memory: memory.MemoryLike = None) -> bytes:
        """Image (path, PIL, numpy HWC uint8, torch CHW uint8/float [0,1]) -> container bytes.

        ``quality``: rate level in [0, levels - 1] (higher = more bits); fractional values
        interpolate between levels. ValueError outside the range. ``refine``: steps of
        encoder-side latent refinement (``cod_fast.models.default.refine``; 0, the default:
        none; 20 is the measured setting, a few seconds per step per megapixel on a CPU, and a
        few percent fewer bytes at the same PSNR); TypeError / ValueError outside
        [0, ``MAX_REFINE_STEPS``]; its memory is checked against ``max_memory`` too.
        ``rdoq``: rate-distortion optimised choice of the y symbols
        (``cod_fast.models.default.model.rdo_symbols``); None (default): on without refinement,
        off after it (measured better); False: plain rounding. Both are encoder decisions: the
        stream is decoded by the same decoder.
        """
        q = self._check_quality(quality)
        steps = check_refine_steps(refine)
        img = to_uint8_chw(image)
        _, h, w = img.shape
        memory.check(self, "encode", h, w, max_memory)  # max_memory: see cod_fast.memory
        if steps:
            self._check_refine_memory(h, w, max_memory)
        x = uint8_to_unit(img).to(self.device)
        use_rdoq = steps == 0 if rdoq is None else bool(rdoq)
        with self._lock:
            y_unit = refine_latents(self.net, x, q, steps) if steps else None
            out = self.net.compress(x, quality=q, threads=self.threads, rdoq=use_rdoq, integer=self.integer,
                                    backend=self.entropy_backend, y_unit=y_unit)
        zh, zw = out["shape"]
        if (zh, zw) != self._z_shape(h, w):  # invariant of the model's padding policy
            raise RuntimeError(f"model returned z grid {zh}x{zw} for a {h}x{w} image")
        y_bytes, z_bytes = out["strings"][:2]
        sections = {
            SectionType.HYPERPRIOR_PARAMS: _PARAMS.pack(q, zh, zw),
            SectionType.HYPERPRIOR_Y: bytes(y_bytes),
            SectionType.HYPERPRIOR_Z: bytes(z_bytes),
            SectionType.HYPERPRIOR_CHECK: (_CHECK_CONTEXT.pack(*out["index_crc"]) if self.layout == 3
                                           else _CHECK.pack(out["index_crc"])),
        }
        if self.layout == 3:
            sections[SectionType.HYPERPRIOR_Y_NONANCHOR] = bytes(out["strings"][2])
        return write_container(Container(codec_id=self.codec_id, fingerprint=self.fingerprint,
                                         height=h, width=w, sections=sections))

    def _check_refine_memory(self, height: int, width: int, max_memory: memory.MemoryLike) -> None:
        """LimitExceededError when latent refinement of a ``height`` x ``width`` image (its
        autograd graph: ``REFINE_BYTES_PER_PIXEL`` per padded pixel) exceeds the memory budget."""
        need = memory.pad(height, STRIDE) * memory.pad(width, STRIDE) * REFINE_BYTES_PER_PIXEL
        limit = memory.budget(max_memory, self.device)
        if need > limit:
            raise LimitExceededError(
                f"refining the latent of a {height}x{width} image needs about {need / (1 << 30):.1f} GiB, over the "
                f"memory budget of {limit / (1 << 30):.1f} GiB; encode with refine=0, or pass max_memory= "
                "(CLI --max-memory) to allow more")

    def parse(self, data: bytes) -> tuple[Container, float, tuple[int, int], int | tuple[int, int] | None]:
        """Parse and check a stream for this model: (container, quality, z shape, index CRC -- for
        layout 3 the pair (all the indexes', the anchors') -- or None).

        BitstreamError for malformed streams, ModelMismatchError for another model or codec.
        """
        c = read_container(data)
        check_owner(c, self.fingerprint, self.codec_id, "the default model", self._sections)
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
        crc: int | tuple[int, int] | None = None
        if SectionType.HYPERPRIOR_CHECK in c.sections:
            check = c.section(SectionType.HYPERPRIOR_CHECK)
            fmt = _CHECK_CONTEXT if self.layout == 3 else _CHECK
            if len(check) != fmt.size:
                raise BitstreamError(f"HYPERPRIOR_CHECK section must be {fmt.size} bytes, got {len(check)}")
            crc = fmt.unpack(check) if self.layout == 3 else fmt.unpack(check)[0]
        return c, q, (zh, zw), crc

    @memory.allocation_guard
    def _strings(self, c: Container) -> list[bytes]:
        """The model's byte strings from a parsed container: [y, z], or with the checkerboard
        context [y anchors, z, y non-anchors] (BitstreamError when a section is missing)."""
        strings = [c.section(SectionType.HYPERPRIOR_Y), c.section(SectionType.HYPERPRIOR_Z)]
        if self.layout == 3:
            strings.append(c.section(SectionType.HYPERPRIOR_Y_NONANCHOR))
        return strings

    def decode_symbols(self, data: bytes) -> tuple[torch.Tensor, torch.Tensor]:
        """Container bytes -> the entropy-decoded integers ``(y symbols int32 (1, M, h, w),
        z symbols int32 (1, Nz, h/4, w/4))`` on the CPU, without the synthesis. Same errors as
        ``decode``."""
        y_sym, z_sym, _, _, _ = self._entropy_decode(data)
        return y_sym, z_sym

    @memory.allocation_guard
    def decode_latents(self, data: bytes, *, max_memory: memory.MemoryLike = None
                       ) -> tuple[torch.Tensor, float, tuple[int, int]]:
        """Container bytes -> ``(y_hat float32 (1, M, h, w) CPU, quality, (H, W))``: the first half
        of ``decode`` (parse, memory budget, entropy decoding; y_hat = y symbols + means, before the
        inverse gain). ``synthesize`` is the second half. Same errors and memory budget as ``decode``.

        Thread safety: layouts 2 and 3 compute their entropy parameters in integers, so this runs without the
        codec's lock, from any thread and at any torch thread count (``cod_fast.decode_many``
        decodes several streams side by side); layout 1's float32 hyper synthesis takes the lock
        and depends on the thread count (``entropy_depends_on_threads``)."""
        parsed = self.parse(data)
        c = parsed[0]
        memory.check(self, "decode", c.height, c.width, max_memory)
        y_sym, _, means, q, size = self._entropy_decode(data, parsed)
        with torch.inference_mode():  # means is an inference tensor: add in place
            return means.add_(y_sym.to(torch.float32)), q, size  # y_sym + means

    @memory.allocation_guard
    def synthesize(self, y_hat: torch.Tensor, quality: float, size: tuple[int, int], *,
                   g_s: torch.nn.Module | None = None) -> torch.Tensor:
        """The second half of ``decode``: ``decode_latents``' outputs -> uint8 [3, H, W] on the CPU
        (``y_hat`` is consumed). ``decode(data)`` is exactly ``synthesize(*decode_latents(data))``,
        so the pixels are bitwise those of ``decode`` when this runs at the same torch thread count
        (the CPU convolutions round by thread count).

        ``g_s``: a private ``copy.deepcopy`` of ``net.g_s`` to run instead, without the codec's
        lock (the caller owns the copy: ``cod_fast.decode_many`` runs several syntheses side by
        side, one copy each; same pixels)."""
        lock = self._lock if g_s is None else contextlib.nullcontext()
        with lock, torch.inference_mode():
            return self.net.synthesize(y_hat, quality, size, as_uint8=True, g_s=g_s)

    @property
    def entropy_depends_on_threads(self) -> bool:
        """Whether the entropy stage's integers depend on the torch thread count: True for layout
        1 (float32 hyper synthesis), False for layouts 2 and 3 (fixed point)."""
        return self.integer is None

    def _entropy_decode(self, data: bytes, parsed: tuple | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, tuple[int, int]]:
        """(y symbols, z symbols, y means, quality, (H, W)) with this codec's error mapping;
        ``parsed``: ``parse(data)`` when the caller has it."""
        c, q, z_shape, crc = self.parse(data) if parsed is None else parsed
        strings = self._strings(c)
        # layout 1 builds its tables lazily in the model: one thread at a time; layouts 2 and 3
        # read only immutable integer state
        lock = self._lock if self.integer is None else contextlib.nullcontext()
        try:
            with lock:
                qt = self.net._check_levels(q, 1, torch.device("cpu"))
                with torch.inference_mode():
                    y_sym, z_sym, means = self.net._decode_symbols(strings, z_shape, qt, self.threads, crc,
                                                                   integer=self.integer, backend=self.entropy_backend)
        except EntropyParameterMismatchError as exc:
            raise self._mismatch(exc) from None
        except BitstreamError:
            raise
        except (ValueError, RuntimeError, IndexError) as exc:  # symbols that do not fit the tables
            if memory.is_allocation_failure(exc):  # not the stream's fault: AllocationError
                raise
            raise BitstreamError(f"cannot decode the entropy-coded sections: {exc}") from None
        return y_sym, z_sym, means, float(q), (c.height, c.width)

    def _mismatch(self, exc: Exception) -> EntropyParameterMismatchError:
        """The CHECK failure, reworded for this codec's release (never blames a platform)."""
        crcs = ""
        if hasattr(exc, "computed_crc"):
            crcs = f" (CRC32 {exc.computed_crc:08x} here, {exc.stream_crc:08x} in the stream)"
        if self.layout == 1:
            return EntropyParameterMismatchError(
                f"cannot parse this stream: it was written by release 1 of the default model (fingerprint "
                f"{self.fingerprint_hex}), whose y table indexes come from a float32 hyper synthesis, and the "
                f"indexes computed here differ from the encoder's{crcs}. That float maths rounds differently with "
                "the torch thread count, the CPU's kernels and the BLAS, so release-1 streams decode only where it "
                "rounds as the encoder's did (e.g. the same thread count on the same kind of CPU). Re-encode the "
                "image with a fixed-point release (release 2 or later; the current default model, "
                "cod_fast.load_model()), whose streams decode identically everywhere")
        return EntropyParameterMismatchError(
            f"default model release {self.release} (fingerprint {self.fingerprint_hex}): {exc}")

    @memory.allocation_guard
    def decode(self, data: bytes, *, max_memory: memory.MemoryLike = None) -> torch.Tensor:
        """Container bytes -> ``torch.uint8`` [3, H, W] on the CPU (the true size, cropped).
        ``max_memory``: see ``cod_fast.memory``. The two halves are ``decode_latents`` (entropy)
        and ``synthesize`` (banded synthesis on a CPU float32 model)."""
        return self.synthesize(*self.decode_latents(data, max_memory=max_memory))


_cache: dict[str, DefaultCodec] = {}
_cache_lock = threading.Lock()


def load_default_codec(device: Union[str, torch.device] = "cpu", release: int | None = None) -> DefaultCodec:
    """The ``DefaultCodec`` with the shipped weights (``cod_fast/weights``, release 4) on
    ``device``: built once per device, cached, and registered, so that ``cod_fast.decode(data)``
    finds it by fingerprint. ``release``: None or the shipped release's number; an earlier
    release's number raises ValueError (its weights are no longer shipped: ``_EARLIER_RELEASES``)."""
    key = str(torch.device(device))
    with _cache_lock:
        if key not in _cache:
            net = load_default_model(device=device)
            int_state = load_integer_state()
            fp = default_fingerprint(default_model_info()["config"], load_file(str(WEIGHTS_DIR / WEIGHTS_FILE)),
                                     int_state)
            _cache[key] = DefaultCodec(net, fp, integer=IntegerEntropyModel(DefaultIntegerParams.from_state_dict(int_state)),
                                       release=default_model_info().get("release"))
            # the shipped weights' fingerprint, now known: portable_reference needs no second hash
            _bundled.update({_cache[key].release: bytes(fp)})
        codec = _cache[key]
    if release is not None and release != codec.release:
        raise ValueError(f"cod_fast ships release {codec.release} of the default model; the weights of release "
                         f"{release!r} are not shipped ({_EARLIER_RELEASES})")
    registry.register(codec)
    return codec


_bundled: dict[int, bytes] = {}


def bundled_fingerprints() -> dict[int, bytes]:
    """Release -> fingerprint of the shipped weights (hashed from the files, without building)."""
    with _cache_lock:
        if not _bundled:
            int_state = load_integer_state()
            release = default_model_info().get("release", 3 if "context.meta" in int_state else 2)
            _bundled[int(release)] = default_fingerprint(default_model_info()["config"],
                                                    load_file(str(WEIGHTS_DIR / WEIGHTS_FILE)), int_state)
        return dict(_bundled)


def load_default_codec_from(weights_dir: Union[str, Path], device: Union[str, torch.device] = "cpu",
                            entropy_backend: str = "auto") -> DefaultCodec:
    """A ``DefaultCodec`` of default-model files in ``weights_dir`` (``default.json``,
    ``default.safetensors``, ``default_int.safetensors``, as ``tools/export_default_int.py`` and
    the trainer write them): layout 2, or layout 3 when the model has the checkerboard context.
    Registered, so ``cod_fast.decode`` finds it by fingerprint. Not cached."""
    d = Path(weights_dir)
    net = load_default_model(device=device, weights_dir=d)
    info = default_model_info(d)
    stored = load_file(str(d / WEIGHTS_FILE))
    int_path = d / INT_WEIGHTS_FILE
    if not int_path.exists():
        raise FileNotFoundError(f"integer entropy parameters not found at {int_path} (tools/export_default_int.py)")
    int_state = load_file(str(int_path))
    integer = IntegerEntropyModel(DefaultIntegerParams.from_state_dict(int_state))
    codec = DefaultCodec(net, default_fingerprint(info["config"], stored, int_state), integer=integer,
                         entropy_backend=entropy_backend, release=info.get("release"))
    codec._source_dir = str(d.resolve())  # its portable reference: pickles rebuild it from the folder
    registry.register(codec)
    return codec


@register_loader("default")
def _load_reference(ref: ModelRef, device: Any, dtype: Any) -> DefaultCodec:
    """Rebuild a pickled default codec (``cod_fast.portable``): a bundled release, or the files of
    the folder it was loaded from (``load_default_codec_from``), on ``device``."""
    if ref.name == "folder":
        return load_default_codec_from(ref.checkpoint, device)
    return load_default_codec(device, release=int(ref.name.removeprefix("release")))


@registry.named_model("default")
def _load_named_default(name: str) -> DefaultCodec:
    """Loader of the bundled default model (named "default"): built on first use, on the CPU."""
    return load_default_codec()
