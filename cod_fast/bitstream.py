"""The cod_fast container (format version 1): one framing for every codec.

Byte layout (all integers little-endian)::

    offset  size  field
    ------  ----  ----------------------------------------------------------------
         0     4  magic  b"CODF"
         4     1  format version (1)
         5     1  codec id (see ``CodecId``)
         6     2  flags (u16, must be 0 in version 1)
         8    16  model fingerprint (see ``compute_fingerprint``)
        24     4  image height in pixels (u32, 1 .. MAX_IMAGE_SIDE)
        28     4  image width in pixels (u32, 1 .. MAX_IMAGE_SIDE)
        32     1  channels (u8, 3 in version 1)
        33     1  section count (u8, 0 .. MAX_SECTIONS)
        34     4  CRC32 of bytes 0 .. 33
        38        sections, back to back, each:
                    1  type tag (u8, 1 .. 255; unique within a stream)
                    4  payload length L (u32, <= MAX_SECTION_BYTES)
                    4  CRC32 of (type tag, length, payload)
                    L  payload

Nothing may follow the last section. The image size is the true size of the image; a codec that
needs a multiple of its stride pads internally and crops after decoding.

The parser never trusts a length: every length is checked against the bytes present and against
the limits before anything is sliced or allocated, and every failure raises ``BitstreamError``
(or one of its subclasses below). ``docs/bitstream.md`` holds the same table and the section
payloads defined by the codecs.
"""
from __future__ import annotations

import enum
import hashlib
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import registry
from .errors import BitstreamError, ModelMismatchError

MAGIC = b"CODF"
FORMAT_VERSION = 1
#: Format versions this build can read.
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)

MAX_IMAGE_SIDE = 1 << 15  # 32768 px: larger sides are rejected before any allocation
#: Default limit of every codec's decode on decoded pixels (padded H * W): 64 Mpx; pass max_pixels=
#: to decode more.
DEFAULT_MAX_PIXELS = 1 << 26
MAX_SECTIONS = 16
MAX_SECTION_BYTES = 1 << 26  # 64 MiB per section

FINGERPRINT_BYTES = 16
_HEADER = struct.Struct("<4sBBH16sIIBB")  # everything up to the header CRC
_CRC = struct.Struct("<I")
_SECTION_HEAD = struct.Struct("<BI")  # type tag, payload length
HEADER_BYTES = _HEADER.size + _CRC.size  # 38
SECTION_OVERHEAD = _SECTION_HEAD.size + _CRC.size  # 9
#: Largest container the limits allow (readers of files check the size before reading).
MAX_CONTAINER_BYTES = HEADER_BYTES + MAX_SECTIONS * (SECTION_OVERHEAD + MAX_SECTION_BYTES)


class TruncatedStreamError(BitstreamError):
    """The stream ends before a field or section it announces."""


class ChecksumError(BitstreamError):
    """A CRC32 does not match: the stream was corrupted."""


class UnsupportedVersionError(BitstreamError):
    """The stream's format version is not one this build reads."""


class LimitExceededError(BitstreamError):
    """A size field exceeds a hard limit of this build (image side, section count or size)."""


class CodecId(enum.IntEnum):
    """Codec identifiers stored in byte 5 of the header. Never renumber: add new values."""

    COD = 1  # multi-step CoD (pixel PixNerDiT or latent DDT), VQ indices
    COD_ONE_STEP = 2  # one-step CoD (PixNerDiT distilled), VQ indices
    COD_LITE_ONE_STEP = 3  # one-step CoD-Lite (DConv distilled), VQ indices
    DIFFC = 4  # DiffC over a CoD denoiser (cod_fast.codecs.diffc): per-step channel-simulation indices
    DEFAULT_HYPERPRIOR = 5  # the bundled default hyperprior model (cod_fast.codecs.default)
    SODEC = 6  # SODEC: hyperprior latent + one-step diffusion decoder (cod_fast.codecs.sodec)


class SectionType(enum.IntEnum):
    """Section type tags. Never renumber: add new values."""

    INDICES = 1  # packed VQ indices, see ``pack_indices_section``
    DECODE_PARAMS = 2  # sampler settings chosen by the encoder, see ``DecodeParams``
    DIFFC_PARAMS = 3  # DiffC schedule ids, seed, step count, guidance (cod_fast.codecs.diffc)
    DIFFC_STEPS = 4  # DiffC per-step records (KL budget + coded indices); the last section
    HYPERPRIOR_Y = 5  # rANS stream of the y symbols (cod_fast.codecs.default)
    HYPERPRIOR_Z = 6  # rANS stream of the z symbols (cod_fast.codecs.default)
    HYPERPRIOR_PARAMS = 7  # f32 quality, u16 z rows, u16 z cols (cod_fast.codecs.default)
    SODEC_PARAMS = 8  # u8 flags, u16 z rows, u16 z cols, u32 anchor bytes (cod_fast.codecs.sodec)
    HYPERPRIOR_CHECK = 9  # u32 CRC32 of the y table indexes the encoder used (cod_fast.codecs.default)
    HYPERPRIOR_Y_NONANCHOR = 10  # rANS stream of the non-anchor y symbols (default model, checkerboard releases)


@dataclass(frozen=True)
class Container:
    """A parsed (or to-be-written) container.

    ``sections`` maps type tag (int) -> payload bytes; ``height``/``width`` are the true image size.
    """

    codec_id: int
    fingerprint: bytes
    height: int
    width: int
    channels: int = 3
    sections: Mapping[int, bytes] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    def section(self, tag: int) -> bytes:
        """The payload of section ``tag``; BitstreamError when the stream lacks it."""
        try:
            return self.sections[tag]
        except KeyError:
            raise BitstreamError(f"stream lacks the required section {_tag_name(tag)}") from None


def _tag_name(tag: int) -> str:
    try:
        return f"{SectionType(tag).name} ({tag})"
    except ValueError:
        return str(tag)


def _check_size(height: int, width: int, channels: int) -> None:
    for name, v in (("height", height), ("width", width)):
        if not 1 <= v <= MAX_IMAGE_SIDE:
            raise LimitExceededError(f"image {name} {v} outside 1..{MAX_IMAGE_SIDE}")
    if channels != 3:
        raise BitstreamError(f"channels must be 3 in format version 1, got {channels}")


def write_container(c: Container) -> bytes:
    """Serialise ``c`` to bytes (format version 1). Raises ValueError on out-of-range fields."""
    if len(c.fingerprint) != FINGERPRINT_BYTES:
        raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes, got {len(c.fingerprint)}")
    if not 0 < int(c.codec_id) < 256:
        raise ValueError(f"codec id {c.codec_id} outside 1..255")
    if c.version != FORMAT_VERSION:
        raise ValueError(f"this build writes format version {FORMAT_VERSION} only")
    _check_size(c.height, c.width, c.channels)
    if len(c.sections) > MAX_SECTIONS:
        raise ValueError(f"{len(c.sections)} sections exceed the limit {MAX_SECTIONS}")
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, int(c.codec_id), 0, bytes(c.fingerprint),
                        c.height, c.width, c.channels, len(c.sections))
    out = [head, _CRC.pack(zlib.crc32(head))]
    for tag in sorted(c.sections):
        payload = bytes(c.sections[tag])
        if not 0 < tag < 256:
            raise ValueError(f"section tag {tag} outside 1..255")
        if len(payload) > MAX_SECTION_BYTES:
            raise ValueError(f"section {tag} of {len(payload)} bytes exceeds {MAX_SECTION_BYTES}")
        sh = _SECTION_HEAD.pack(tag, len(payload))
        out += [sh, _CRC.pack(zlib.crc32(payload, zlib.crc32(sh))), payload]
    return b"".join(out)


def read_container_prefix(data: bytes | bytearray | memoryview, last_tag: int) -> tuple[Container, bool]:
    """Parse a container that may be cut inside its last section, when that section has the type
    ``last_tag`` (a progressive stream: DiffC's DIFFC_STEPS records can be decoded from a prefix).

    Returns (container, complete). When the stream ends inside that last section, its payload is
    the bytes present (its CRC cannot be checked: the caller checks the records it reads) and
    complete is False. Every other truncation, corruption or limit raises as ``read_container``.
    """
    return _parse_prefix(data, header_only=False, cut_tag=int(last_tag))


def read_header(data: bytes | bytearray | memoryview) -> Container:
    """Parse and verify only the fixed header (no sections). Returns a Container with no sections."""
    return _parse(data, header_only=True)


def check_owner(
    c: "Container", fingerprint: bytes, codec_id: int, model: str, sections: set[int] | None = None
) -> None:
    """Check that container ``c`` belongs to the decoder holding ``fingerprint`` / ``codec_id``.

    ``model`` names the decoder in the messages (e.g. "the default model"). Raises
    ``ModelMismatchError`` (naming both fingerprints) for another model or codec id, and
    ``BitstreamError`` when ``sections`` is given and the stream holds a section type outside it.
    """
    expected, found = bytes(fingerprint).hex(), c.fingerprint.hex()
    if c.fingerprint != bytes(fingerprint):
        note = registry.retired(c.fingerprint)
        raise ModelMismatchError(
            expected, found, f"stream was written by model {found}, but this decoder holds {model} {expected}"
            + ("" if note is None else f"; {found}: {note}"))
    if c.codec_id != codec_id:
        raise ModelMismatchError(
            expected, found, f"stream holds codec id {c.codec_id}, {model} decodes codec id {int(codec_id)}")
    if sections is not None:
        unknown = set(c.sections) - set(sections)
        if unknown:
            raise BitstreamError(f"stream holds section types {sorted(unknown)} this codec does not define")


def read_container(data: bytes | bytearray | memoryview) -> Container:
    """Parse and verify a whole container. Every malformed input raises BitstreamError."""
    return _parse(data, header_only=False)


#: Header fields ``replace_container`` may change (channels and version have one valid value).
_REPLACEABLE = ("codec_id", "fingerprint", "height", "width")


def replace_container(data: bytes | bytearray | memoryview, *, sections: Mapping[int, bytes] | None = None,
                      **fields: Any) -> bytes:
    """Re-serialise the container ``data`` with header fields and/or section payloads replaced.

    ``fields`` are any of ``codec_id``, ``fingerprint`` (16 bytes), ``height``, ``width``; the others
    keep their values. ``sections`` maps type tag -> payload: each replaces the stream's section of
    that tag or is added; the stream's other sections are kept. The header and section CRCs are
    recomputed, so the result parses as a container whatever the payloads hold (re-stamping a
    stream, forging test streams). Raises BitstreamError when ``data`` is not a valid container,
    TypeError for an unknown field name, ValueError (or LimitExceededError) for out-of-range values,
    as ``write_container``.
    """
    unknown = sorted(set(fields) - set(_REPLACEABLE))
    if unknown:
        raise TypeError(f"replace_container: unknown field(s) {unknown}; replaceable: {list(_REPLACEABLE)}")
    c = read_container(data)
    header = {name: getattr(c, name) for name in _REPLACEABLE}
    header.update(fields)
    return write_container(Container(sections={**c.sections, **(sections or {})}, **header))


def _parse(data: Any, header_only: bool) -> Container:
    return _parse_prefix(data, header_only, None)[0]


def _parse_prefix(data: Any, header_only: bool, cut_tag: int | None) -> tuple[Container, bool]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    buf = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
    n = len(buf)
    if n < 5:
        raise TruncatedStreamError(f"stream of {n} bytes is shorter than the header")
    if bytes(buf[:4]) != MAGIC:
        raise BitstreamError(f"not a cod_fast container (magic {bytes(buf[:4])!r}, expected {MAGIC!r})")
    version = buf[4]
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersionError(
            f"container format version {version} is not supported; this build reads versions "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}"
        )
    if n < HEADER_BYTES:
        raise TruncatedStreamError(f"stream of {n} bytes is shorter than the {HEADER_BYTES}-byte header")
    head = bytes(buf[: _HEADER.size])
    (crc,) = _CRC.unpack_from(buf, _HEADER.size)
    if zlib.crc32(head) != crc:
        raise ChecksumError("header CRC32 mismatch: the stream is corrupted")
    _, _, codec_id, flags, fp, height, width, channels, count = _HEADER.unpack(head)
    if flags != 0:
        raise BitstreamError(f"header flags {flags:#06x} are not defined in format version 1")
    if codec_id == 0:
        raise BitstreamError("codec id 0 is reserved")
    _check_size(height, width, channels)
    if count > MAX_SECTIONS:
        raise LimitExceededError(f"{count} sections exceed the limit {MAX_SECTIONS}")
    sections: dict[int, bytes] = {}
    complete = True
    if not header_only:
        pos = HEADER_BYTES
        for i in range(count):
            if n - pos < SECTION_OVERHEAD:
                raise TruncatedStreamError(f"stream ends inside the header of section {i}")
            tag, length = _SECTION_HEAD.unpack_from(buf, pos)
            (scrc,) = _CRC.unpack_from(buf, pos + _SECTION_HEAD.size)
            if tag == 0:
                raise BitstreamError(f"section {i} has the reserved type tag 0")
            if length > MAX_SECTION_BYTES:
                raise LimitExceededError(
                    f"section {i} announces {length} bytes, over the limit {MAX_SECTION_BYTES}")
            start = pos + SECTION_OVERHEAD
            if length > n - start and cut_tag is not None and tag == cut_tag and i == count - 1:
                if tag in sections:
                    raise BitstreamError(f"section {_tag_name(tag)} appears twice")
                sections[tag] = bytes(buf[start:])  # the prefix of the last section
                complete, pos = False, n
                break
            if length > n - start:  # checked before slicing: never trust a length
                raise TruncatedStreamError(
                    f"section {i} announces {length} bytes but only {n - start} remain")
            payload = bytes(buf[start:start + length])
            if zlib.crc32(payload, zlib.crc32(bytes(buf[pos:pos + _SECTION_HEAD.size]))) != scrc:
                raise ChecksumError(f"CRC32 mismatch in section {i} ({_tag_name(tag)})")
            if tag in sections:
                raise BitstreamError(f"section {_tag_name(tag)} appears twice")
            sections[tag] = payload
            pos = start + length
        if pos != n:
            raise BitstreamError(f"{n - pos} unexpected bytes after the last section")
    return Container(codec_id=codec_id, fingerprint=fp, height=height, width=width,
                     channels=channels, sections=sections, version=version), complete


# ----------------------------------------------------------------------------------------------
# Section payloads shared by the VQ codecs
# ----------------------------------------------------------------------------------------------

_INDICES_HEAD = struct.Struct("<BHH")  # codebook bits, token rows, token cols


def pack_indices_section(packed: bytes, bits: int, rows: int, cols: int) -> bytes:
    """INDICES payload: u8 codebook bits, u16 token rows, u16 token cols, then the packed indices
    (``rows*cols`` values of ``bits`` bits each, MSB first, raster order, as ``compat.pack_bits``)."""
    if not (1 <= bits <= 16 and 0 < rows < 65536 and 0 < cols < 65536):
        raise ValueError(f"bad index grid: bits={bits} rows={rows} cols={cols}")
    if len(packed) != (rows * cols * bits + 7) // 8:
        raise ValueError("packed index length does not match the grid")
    return _INDICES_HEAD.pack(bits, rows, cols) + bytes(packed)


def unpack_indices_section(payload: bytes) -> tuple[int, int, int, bytes]:
    """Inverse of ``pack_indices_section``: (bits, rows, cols, packed). Raises BitstreamError."""
    if len(payload) < _INDICES_HEAD.size:
        raise TruncatedStreamError("INDICES section shorter than its header")
    bits, rows, cols = _INDICES_HEAD.unpack_from(payload)
    if not (1 <= bits <= 16 and rows > 0 and cols > 0):
        raise BitstreamError(f"INDICES section has a bad grid: bits={bits} rows={rows} cols={cols}")
    packed = payload[_INDICES_HEAD.size:]
    need = (rows * cols * bits + 7) // 8
    if len(packed) != need:
        raise BitstreamError(f"INDICES section holds {len(packed)} bytes, the grid needs {need}")
    return bits, rows, cols, packed


class Sampler(enum.IntEnum):
    """Sampler ids stored in DECODE_PARAMS."""

    NONE = 0  # one-step codecs
    EULER = 1
    ADAM2 = 2


_PARAMS = struct.Struct("<BHfQf")  # sampler, steps, cfg, seed, noise level


@dataclass(frozen=True)
class DecodeParams:
    """Encoder-chosen settings that change the decoded pixels (DECODE_PARAMS section, 19 bytes:
    u8 sampler, u16 steps, f32 cfg scale, u64 seed, f32 noise level)."""

    sampler: str = "none"
    steps: int = 0
    cfg: float = 1.0
    seed: int = 0
    noise_level: float = 0.0

    def to_bytes(self) -> bytes:
        """Serialise (validating ranges: steps 0..65535, seed 0..2**64-1)."""
        try:
            sid = Sampler[self.sampler.upper()]
        except KeyError:
            raise ValueError(f"unknown sampler {self.sampler!r}; known: "
                             f"{', '.join(s.name.lower() for s in Sampler)}") from None
        if not 0 <= self.steps < 65536:
            raise ValueError(f"steps {self.steps} outside 0..65535")
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed {self.seed} outside 0..2**64-1")
        return _PARAMS.pack(sid, self.steps, self.cfg, self.seed, self.noise_level)

    @classmethod
    def from_bytes(cls, payload: bytes) -> "DecodeParams":
        """Parse a DECODE_PARAMS payload; BitstreamError on bad length, sampler or non-finite values."""
        if len(payload) != _PARAMS.size:
            raise BitstreamError(f"DECODE_PARAMS section must be {_PARAMS.size} bytes, got {len(payload)}")
        sid, steps, cfg, seed, noise = _PARAMS.unpack(payload)
        try:
            name = Sampler(sid).name.lower()
        except ValueError:
            raise BitstreamError(f"unknown sampler id {sid} in DECODE_PARAMS") from None
        for label, v in (("cfg", cfg), ("noise level", noise)):
            if not abs(v) < 1e6:  # also rejects NaN and inf
                raise BitstreamError(f"DECODE_PARAMS {label} {v} is not a sane finite number")
        return cls(sampler=name, steps=steps, cfg=cfg, seed=seed, noise_level=noise)


# ----------------------------------------------------------------------------------------------
# Model fingerprint
# ----------------------------------------------------------------------------------------------

FINGERPRINT_DOMAIN = b"cod_fast-fingerprint-v1\x00"


def canonical_json(obj: Any) -> bytes:
    """UTF-8 JSON with sorted keys, no spaces, ASCII escapes; non-JSON values by ``str``."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      default=str).encode("ascii")


def compute_fingerprint(config: Mapping[str, Any], state_dict: Mapping[str, Any]) -> bytes:
    """16-byte model fingerprint: the first 16 bytes of SHA-256 over

    ``FINGERPRINT_DOMAIN``, then ``u64 len + canonical_json(config)``, then for every tensor in
    name order: ``u64 len + canonical_json([name, dtype, shape])`` and ``u64 len + raw bytes``
    (C-contiguous, little-endian, the dtype the weights were stored in: load_model hashes the
    checkpoint's tensors before any dtype cast, so one model has one fingerprint in every dtype).
    """
    import torch  # local: import time (container code is torch-free)

    h = hashlib.sha256(FINGERPRINT_DOMAIN)

    def put(b: bytes | memoryview) -> None:
        h.update(struct.pack("<Q", len(b)))
        h.update(b)

    put(canonical_json(config))
    for name in sorted(state_dict):
        t = state_dict[name]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict entry {name!r} is not a tensor")
        t = t.detach().to("cpu").contiguous()
        put(canonical_json([name, str(t.dtype).removeprefix("torch."), list(t.shape)]))
        put(t.reshape(-1).view(torch.uint8).numpy().data)  # the raw bytes, as a memoryview
    return h.digest()[:FINGERPRINT_BYTES]
