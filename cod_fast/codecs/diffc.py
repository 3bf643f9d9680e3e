"""DiffC codec over a CoD denoiser (pixel ``PixNerDiT`` or latent ``DDT``), CPU and GPU.

Encoding (DiffC, ``lib/diffc/encode.py``): start from shared noise at DDPM timestep 1000; at each
encoded step ``tau -> tau'`` of the schedule compute the model's ``x0_hat``, the posterior
``q(x' | x, x0) = N(c_x0 x0 + c_x x, std^2)`` and the model's ``p = N(c_x0 x0_hat + c_x x, std^2)``,
send a sample of ``N(mu, I)``, ``mu = (q_mu - p_mu) / std`` flattened, against ``N(0, I)`` with
:func:`cod_fast.rcc.encode` at the budget ``KL = 0.5 ||mu||^2 / ln 2`` bits (quantized up to 1/16
bit, and that integer is transmitted), then set ``x = sample * std + p_mu`` on both sides.
Decoding replays the steps with :func:`cod_fast.rcc.decode` (bit-identical samples) and finishes
with deterministic DDIM (probability flow) along the official denoising timesteps to ``tau = 0``.

Stream (container v1, codec id ``DIFFC``; all of it counts in the file size)::

    DIFFC_PARAMS (3)  u8 variant (0 base: unconditional, 1 cond: VQ-conditioned)
                      u8 encoding schedule id, u8 denoising schedule id (cod_fast.diffc.schedule)
                      u16 encoded steps N, u64 seed, f32 encoding guidance, f32 denoising guidance,
                      u8 index coding (0 raw, 1 zipf)
    INDICES (1)       cond variant only: the CoD VQ indices (as the CoD codec)
    DIFFC_STEPS (4)   N records, step 0 first; index coding "raw" (default):
                        LEB128 n       the step's KL budget in whole bits (rounded up; kl_q = 16 n)
                        sum(bits) bits the chunk indices, plan.bits[c] bits each, MSB first,
                                       zero-padded to a byte (the plan follows from n alone)
                      index coding "zipf":
                        LEB128 kl_q    the budget in 1/16 bit; LEB128 length; then the bytes of
                                       rcc.index_coding.encode_indices (truncated Zipf + rANS)

Why raw by default: a per-step rANS stream costs about 60 bytes of fixed overhead (its final
states and headers) against at most 2 bits per chunk saved by the Zipf model, i.e. about 0.26 bpp
more at 512x512 over 142 steps; "zipf" only pays off at thousands of bits per step. A raw record
costs its index bits plus about 3 bytes (budget + padding).

``DIFFC_STEPS`` has the highest tag, so it is the last section. Progressive decoding: a file cut
at a record boundary inside ``DIFFC_STEPS`` still decodes its complete steps (the section CRC
cannot be checked then: a complete stream is protected by the container CRCs, a cut one only by
its structure). A cut anywhere else, or inside a record, raises
:class:`~cod_fast.errors.BitstreamError`.

Deviations from the official code, all deliberate: float32 throughout (official casts ``p_mu``,
``std``, ``q_mu`` to fp16); ``x0_hat`` used directly (official converts it to eps and back);
latent targets from the VAE posterior mean (official samples it, unseeded); shared randomness from
the rcc Philox streams (starting noise = the 0-bit candidate of step ``NOISE_STEP``).
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any, Union

import torch

from .. import memory, rcc
from ..bitstream import (
    DEFAULT_MAX_PIXELS,
    HEADER_BYTES,
    SECTION_OVERHEAD,
    CodecId,
    Container,
    LimitExceededError,
    SectionType,
    TruncatedStreamError,
    check_owner,
    pack_indices_section,
    read_container_prefix,
    unpack_indices_section,
    write_container,
)
from ..diffc.denoiser import CoDFlowDenoiser, DDPMView, shared_net_lock
from ..diffc.schedule import (
    DENOISING_SCHEDULES,
    ENCODING_SCHEDULES,
    OFFICIAL_GUIDANCE,
    START_TIMESTEP,
    alpha_bar,
    step_coefficients,
)
from ..errors import BitstreamError
from ..image_io import ImageLike, pad_to_multiple, padded_size, to_uint8_chw, uint8_to_unit, unit_to_uint8
from ..models.vae import latent_decode, latent_encode
from ..portable import PortableCodec, _rebuild, _state_of
from ..rcc.chunking import KL_UNITS_PER_BIT, MAX_KL_BITS, plan_chunks
from ..rcc.index_coding import chunk_parameters, decode_indices, encode_indices

#: rcc step number of the shared starting noise (encoded steps use 0 .. N-1).
NOISE_STEP = 2**32 - 1
VARIANTS = ("base", "cond")
INDEX_CODINGS = ("raw", "zipf")
_PARAMS = struct.Struct("<BBBHQffB")
_MAX_KL_Q = MAX_KL_BITS * KL_UNITS_PER_BIT
_LN2 = math.log(2.0)


# ------------------------------------------------------------------------------------------------
# Stream pieces
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DiffCParams:
    """The DIFFC_PARAMS section (22 bytes, see the module docstring)."""

    variant: str
    schedule: int
    denoise_schedule: int
    steps: int
    seed: int
    encode_cfg: float
    denoise_cfg: float
    index_coding: str = "raw"

    def to_bytes(self) -> bytes:
        return _PARAMS.pack(VARIANTS.index(self.variant), self.schedule, self.denoise_schedule,
                            self.steps, self.seed, self.encode_cfg, self.denoise_cfg,
                            INDEX_CODINGS.index(self.index_coding))

    @classmethod
    def from_bytes(cls, payload: bytes) -> "DiffCParams":
        """Parse and validate; BitstreamError on any bad field."""
        if len(payload) != _PARAMS.size:
            raise BitstreamError(f"DIFFC_PARAMS must be {_PARAMS.size} bytes, got {len(payload)}")
        v, sched, dsched, steps, seed, ecfg, dcfg, coding = _PARAMS.unpack(payload)
        if coding >= len(INDEX_CODINGS):
            raise BitstreamError(f"unknown DiffC index coding {coding}")
        if v >= len(VARIANTS):
            raise BitstreamError(f"unknown DiffC variant {v}")
        if sched not in ENCODING_SCHEDULES or dsched not in DENOISING_SCHEDULES:
            raise BitstreamError(f"unknown DiffC schedule ids {sched}/{dsched}")
        if steps > len(ENCODING_SCHEDULES[sched]):
            raise BitstreamError(f"{steps} encoded steps exceed schedule {sched} "
                                 f"({len(ENCODING_SCHEDULES[sched])} steps)")
        for label, g in (("encoding", ecfg), ("denoising", dcfg)):
            if not 0 <= g < 1e3:  # also rejects NaN
                raise BitstreamError(f"DIFFC_PARAMS {label} guidance {g} is not sane")
        return cls(VARIANTS[v], sched, dsched, steps, seed, ecfg, dcfg, INDEX_CODINGS[coding])


def _leb128(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _read_leb128(buf: bytes, pos: int, limit: int, what: str) -> tuple[int, int]:
    """Value and next position; TruncatedStreamError at the end, BitstreamError above ``limit``."""
    v = shift = 0
    while True:
        if pos >= len(buf):
            raise TruncatedStreamError(f"DiffC step record ends inside its {what}")
        b = buf[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        if v > limit:  # bounds the loop too: at most ceil(log2(limit) / 7) + 1 bytes
            raise BitstreamError(f"DiffC step record {what} {v} exceeds {limit}")
        if not b & 0x80:
            return v, pos
        shift += 7


def pack_step(coding: str, kl_q: int, indices: torch.Tensor, dim: int) -> bytes:
    """One DIFFC_STEPS record of ``coding`` ("raw": ``kl_q`` must be a multiple of 16)."""
    plan = plan_chunks(dim, kl_q)
    idx = [int(k) for k in indices.tolist()]
    if coding == "zipf":
        coded = encode_indices(idx, *chunk_parameters([plan]))
        return _leb128(kl_q) + _leb128(len(coded)) + coded
    if kl_q % KL_UNITS_PER_BIT:
        raise ValueError(f"raw records carry whole bits; kl_q={kl_q} is not a multiple of 16")
    acc = n_bits = 0
    for k, b in zip(idx, plan.bits):
        if not 0 <= k < 1 << b:
            raise ValueError(f"index {k} does not fit a {b}-bit chunk")
        acc, n_bits = (acc << b) | k, n_bits + b
    pad = -n_bits % 8
    return _leb128(kl_q // KL_UNITS_PER_BIT) + (acc << pad).to_bytes((n_bits + pad) // 8, "big")


def unpack_steps(payload: bytes, coding: str, dim: int) -> list[tuple[int, list[int]]]:
    """Records of a (possibly cut at a record boundary) DIFFC_STEPS payload: [(kl_q, indices)].

    BitstreamError (TruncatedStreamError for a cut inside a record) on anything malformed,
    including a budget whose chunk plan does not fit ``dim`` dimensions.
    """
    out: list[tuple[int, list[int]]] = []
    pos = 0
    while pos < len(payload):
        step = len(out)
        if coding == "zipf":
            kl_q, pos = _read_leb128(payload, pos, _MAX_KL_Q, "KL budget")
            n, pos = _read_leb128(payload, pos, len(payload), "length")
        else:
            bits, pos = _read_leb128(payload, pos, MAX_KL_BITS, "KL budget")
            kl_q = bits * KL_UNITS_PER_BIT
        try:
            plan = plan_chunks(dim, kl_q)
        except ValueError as exc:
            raise BitstreamError(f"DiffC step {step}: budget of {kl_q / 16} bits does not fit "
                                 f"{dim} dimensions ({exc})") from None
        if coding == "raw":
            total = sum(plan.bits)
            n = (total + 7) // 8
        if len(payload) - pos < n:
            raise TruncatedStreamError(f"DiffC step {step} is cut: {n} index bytes announced, "
                                       f"{len(payload) - pos} present")
        chunk = bytes(payload[pos:pos + n])
        pos += n
        if coding == "zipf":
            idx = decode_indices(chunk, *chunk_parameters([plan]))
        else:
            acc = int.from_bytes(chunk, "big")
            pad = 8 * n - total
            if acc & ((1 << pad) - 1):
                raise BitstreamError(f"DiffC step {step} has non-zero padding bits")
            acc >>= pad
            idx, left = [], total
            for b in plan.bits:
                left -= b
                idx.append((acc >> left) & ((1 << b) - 1))
        out.append((kl_q, idx))
    return out


def read_prefix(data: bytes) -> tuple[Container, bool]:
    """Parse a DiffC container, also when it is cut inside its last section (DIFFC_STEPS).

    Returns (container, complete): the sections present, the last one possibly a prefix of its
    payload (only DIFFC_STEPS may be; its records are checked by :func:`unpack_steps`). The one
    truncation-tolerant reader is ``bitstream.read_container_prefix``.
    """
    return read_container_prefix(data, SectionType.DIFFC_STEPS)


# ------------------------------------------------------------------------------------------------
# Codec
# ------------------------------------------------------------------------------------------------

@dataclass
class DiffCTrace:
    """What an encode or decode went through: per-step rcc samples (float32 [dim] each), budgets
    (kl_q), chunk indices, the state after the last replayed step and its DDPM timestep."""

    samples: list[torch.Tensor] = field(default_factory=list)
    kl_q: list[int] = field(default_factory=list)
    indices: list[torch.Tensor] = field(default_factory=list)
    state: torch.Tensor | None = None
    timestep: int = START_TIMESTEP


class DiffCCodec(PortableCodec):
    """DiffC over a multi-step CoD codec (``CoDCodec`` from ``load_model``: its net, VAE, fingerprint).

    ``backend``: rcc backend ("auto", "reference", "cpp", "cuda"); ``threads``: rcc CPU threads.
    Streams carry the CoD model's fingerprint and codec id ``DIFFC``.
    """

    codec_id = CodecId.DIFFC
    label = "DiffC"
    encode_settings = decode_settings = frozenset({"cfg"})
    sections = {
        SectionType.DIFFC_PARAMS: "variant, schedules, encoded steps, seed, guidance, index coding (22 bytes)",
        SectionType.INDICES: "the CoD VQ indices (cond variant only)",
        SectionType.DIFFC_STEPS: "per-step records: KL budget and coded chunk indices (the last section)",
    }

    @staticmethod
    def describe(c: Container) -> dict[str, Any]:
        """The DIFFC_PARAMS fields of container ``c`` (no model needed)."""
        p = c.sections.get(SectionType.DIFFC_PARAMS)
        if p is None:
            return {}
        out: dict[str, Any] = {"diffc_params": vars(DiffCParams.from_bytes(p))}
        if SectionType.INDICES in c.sections:
            bits, rows, cols, _ = unpack_indices_section(c.sections[SectionType.INDICES])
            out["indices"] = {"bits": bits, "rows": rows, "cols": cols}
        return out

    def memory_estimate(self, phase: str, height: int, width: int) -> int:
        """Peak activation bytes (``cod_fast.memory``): the multi-step CoD denoiser with guidance
        plus bytes per state element for the rcc samples, ``x0_hat`` and posterior means (300 to
        decode, 40 to encode; measured); encode also runs the condition encoder."""
        hp, wp = memory.pad(height, self.stride), memory.pad(width, self.stride)
        if phase == "encode":
            return max(memory.vq_decode_bytes(self.base, hp, wp, batch=2, multi_step=True, extra_per_state=40.0),
                       memory.vq_encode_bytes(self.base, hp, wp))
        return memory.vq_decode_bytes(self.base, hp, wp, batch=2, multi_step=True, extra_per_state=300.0)

    def __reduce__(self) -> tuple:
        """Pickles as its CoD codec's reference plus the rcc settings (``cod_fast.portable``)."""
        return _rebuild_diffc, (_state_of(self.base), {"backend": self.backend, "threads": self.threads})

    def __deepcopy__(self, memo: dict) -> Any:
        new = _rebuild_diffc(_state_of(self.base), {"backend": self.backend, "threads": self.threads}, cache=False)
        memo[id(self)] = new
        return new

    def __init__(self, cod_codec: Any, backend: str = "auto", threads: int | None = None) -> None:
        for attr in ("net", "spec", "fingerprint", "stride", "device"):
            if not hasattr(cod_codec, attr):
                raise TypeError(f"cod_codec must be a CoD codec from load_model (missing {attr!r})")
        if not hasattr(cod_codec.net, "y_embedder") or getattr(cod_codec, "codec_id", None) != CodecId.COD:
            raise ValueError("DiffC needs a multi-step CoD model (PixNerDiT or DDT), not "
                             f"{type(cod_codec.net).__name__} / codec {getattr(cod_codec, 'codec_id', None)}")
        if backend not in rcc.BACKENDS:
            raise ValueError(f"backend must be one of {rcc.BACKENDS}, got {backend!r}")
        self.base = cod_codec
        self.net = cod_codec.net
        self.vae = getattr(cod_codec, "vae", None)
        self.latent = bool(cod_codec.spec.latent)
        self.fingerprint = bytes(cod_codec.fingerprint)
        self.device = cod_codec.device
        self.stride = int(cod_codec.stride)
        self.backend = backend
        self.threads = threads

    @property
    def default_schedule(self) -> int:
        """Encoding schedule id of this model family (1: CoD pixel, 2: CoD latent)."""
        return 2 if self.latent else 1

    def state_shape(self, hp: int, wp: int) -> tuple[int, int, int, int]:
        """Shape of the diffusion state of a padded hp x wp image."""
        return (1, 4, hp // 8, wp // 8) if self.latent else (1, 3, hp, wp)

    # -- shared pieces ----------------------------------------------------------------------------
    def _denoiser(self, variant: str, packed: bytes | None, hp: int, wp: int) -> DDPMView:
        """The DDPM view of the denoiser conditioned for a padded hp x wp image.

        The network caches the unconditional map on itself (``pre_calculated_uncond``, one size
        at a time); computing it and reading it back happen under the lock that the CoD codec's
        own decode holds (:func:`cod_fast.diffc.shared_net_lock`), so threads decoding other
        sizes (DiffC or CoD, on this network) cannot swap the map in between. The map tensor is
        never modified in place, so holding it after the lock is released is safe."""
        p = next(self.net.parameters())
        uncond = torch.full((1, 3, hp, wp), -1.0, device=self.device, dtype=p.dtype)
        with shared_net_lock(self.base):
            if variant == "cond":
                maps = self.net.decompress(packed, hp, wp, self.device, uncond=uncond)
            else:
                self.net.calculate_uncond(uncond)
                maps = self.net.y_embedder.pre_calculated_uncond
        return DDPMView(CoDFlowDenoiser(self.net, maps))

    def _noise(self, dim: int, seed: int) -> torch.Tensor:
        zero = torch.zeros(1, dtype=torch.int64)
        return rcc.decode(zero, dim, 0, seed, step=NOISE_STEP, backend=self.backend,
                          threads=self.threads, device=self.device)

    def _to_pixels(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        if self.latent:
            p = next(self.vae.parameters())
            x = latent_decode(self.vae, x.to(p.dtype)).float()
        return unit_to_uint8(x[0, :, :h, :w]).to("cpu").contiguous()

    def denoise(self, view: DDPMView, x: torch.Tensor, tau: int, schedule: int, guidance: float) -> torch.Tensor:
        """Deterministic DDIM (official ``denoise.py``) from ``x`` at ``tau`` to timestep 0 along
        the denoising schedule's timesteps below ``tau``. float32 state in, clean state out."""
        for tau_prev in (t for t in DENOISING_SCHEDULES[schedule] if t < tau):
            x0 = view.x0_hat(x, tau, guidance)
            a, a_prev = alpha_bar(tau), alpha_bar(tau_prev)
            eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
            x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
            tau = tau_prev
        return x

    # -- encode ------------------------------------------------------------------------------------
    @memory.allocation_guard
    def encode(self, image: ImageLike, **kwargs: Any) -> bytes:
        """Image -> container bytes. Keywords as :meth:`encode_trace` (``steps``, ``target_bpp``,
        ``seed``, ``variant``, ``schedule``, ``encode_cfg``, ``denoise_cfg``, ``index_coding``)."""
        return self.encode_trace(image, reconstruct=False, **kwargs)[0]

    def encode_trace(self, image: ImageLike, *, steps: int | None = None, target_bpp: float | None = None,
                     seed: int = 0, variant: str = "cond", schedule: int | None = None,
                     encode_cfg: float | None = None, denoise_cfg: float | None = None,
                     index_coding: str = "raw", reconstruct: bool = True,
                     max_memory: memory.MemoryLike = None) -> tuple[bytes, DiffCTrace, torch.Tensor | None]:
        """Encode; returns (bytes, trace, reconstruction uint8 [3, H, W] or None).

        ``steps``: encoded steps (default: the whole schedule); ``target_bpp``: keep the longest
        prefix of steps whose whole file is at most this many bits per pixel (both may be given:
        the smaller wins). ``index_coding``: "raw" or "zipf" (see the module docstring).
        The reconstruction is the encoder's own (what decode must return).
        """
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if index_coding not in INDEX_CODINGS:
            raise ValueError(f"index_coding must be one of {INDEX_CODINGS}, got {index_coding!r}")
        schedule = self.default_schedule if schedule is None else schedule
        if schedule not in ENCODING_SCHEDULES:
            raise ValueError(f"unknown encoding schedule {schedule}; known: {sorted(ENCODING_SCHEDULES)}")
        taus = ENCODING_SCHEDULES[schedule]
        n_max = len(taus) if steps is None else steps
        if isinstance(n_max, bool) or not isinstance(n_max, int) or not 0 <= n_max <= len(taus):
            raise ValueError(f"steps must be an int in [0, {len(taus)}], got {steps!r}")
        if target_bpp is not None and not (isinstance(target_bpp, (int, float)) and target_bpp > 0):
            raise ValueError(f"target_bpp must be a positive number, got {target_bpp!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an int in [0, 2^64), got {seed!r}")
        fam = "latent" if self.latent else "pixel"
        ecfg = float(OFFICIAL_GUIDANCE[fam][0] if encode_cfg is None else encode_cfg)
        dcfg = float(OFFICIAL_GUIDANCE[fam][1] if denoise_cfg is None else denoise_cfg)
        for g in (ecfg, dcfg):
            if not 0 <= g < 1e3:
                raise ValueError(f"guidance scales must be in [0, 1000), got {g}")

        img = to_uint8_chw(image)
        _, h, w = img.shape
        memory.check(self, "encode", h, w, max_memory)  # max_memory: see cod_fast.memory
        unit = pad_to_multiple(uint8_to_unit(img), self.stride).to(self.device)
        hp, wp = unit.shape[-2:]
        p = next(self.net.parameters())
        with torch.inference_mode():
            sections: dict[int, bytes] = {}
            packed = None
            if variant == "cond":
                packed = self.net.compress(unit.to(p.dtype))
                ts = self.base.token_stride
                sections[SectionType.INDICES] = pack_indices_section(
                    packed, self.base.codebook_bits, hp // ts, wp // ts)
            target = unit * 2 - 1
            if self.latent:
                target = latent_encode(self.vae, target.to(next(self.vae.parameters()).dtype), sample=False)
            x0 = target.to(torch.float32)
            view = self._denoiser(variant, packed, hp, wp)
            shape = x0.shape
            dim = x0.numel()
            x = self._noise(dim, seed).view(shape)
            trace = DiffCTrace(state=x)
            records: list[bytes] = []
            budget_bits = math.inf if target_bpp is None else target_bpp * h * w
            fixed = HEADER_BYTES + SECTION_OVERHEAD * (len(sections) + 2) + _PARAMS.size + sum(
                len(v) for v in sections.values())
            tau = START_TIMESTEP
            for i in range(n_max):
                tau_prev = taus[i]
                c = step_coefficients(tau, tau_prev)
                x0_hat = view.x0_hat(x, tau, ecfg)
                p_mu = c.c_x0 * x0_hat + c.c_x * x
                mu = ((c.c_x0 / c.std) * (x0 - x0_hat)).reshape(-1).contiguous()
                kl_bits = 0.5 * float(mu.double().square().sum()) / _LN2
                kl_q = rcc.quantize_kl(kl_bits)
                if index_coding == "raw":  # whole bits: the plan depends on ceil(KL) only
                    kl_q = -(-kl_q // KL_UNITS_PER_BIT) * KL_UNITS_PER_BIT
                idx, sample = rcc.encode(mu, kl_q / KL_UNITS_PER_BIT, seed, step=i,
                                         backend=self.backend, threads=self.threads)
                record = pack_step(index_coding, kl_q, idx, dim)
                if (fixed + sum(map(len, records)) + len(record)) * 8 > budget_bits:
                    break
                records.append(record)
                x = sample.to(self.device).view(shape) * c.std + p_mu
                tau = tau_prev
                trace.samples.append(sample.cpu())
                trace.kl_q.append(kl_q)
                trace.indices.append(idx.cpu())
            trace.state, trace.timestep = x, tau
            params = DiffCParams(variant, schedule, 1, len(records), seed, ecfg, dcfg, index_coding)
            sections[SectionType.DIFFC_PARAMS] = params.to_bytes()
            sections[SectionType.DIFFC_STEPS] = b"".join(records)
            data = write_container(Container(codec_id=self.codec_id, fingerprint=self.fingerprint,
                                             height=h, width=w, sections=sections))
            recon = None
            if reconstruct:
                recon = self._to_pixels(self.denoise(view, x, tau, 1, dcfg), h, w)
        return data, trace, recon

    # -- decode ------------------------------------------------------------------------------------
    def parse(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS
              ) -> tuple[Container, DiffCParams, bytes | None, list[tuple[int, list[int]]], bool]:
        """(container, params, packed VQ indices or None, step records, complete). Checks the
        model, codec id, sections and the record count; BitstreamError / ModelMismatchError."""
        c, complete = read_prefix(data)
        check_owner(c, self.fingerprint, self.codec_id, "the DiffC model")
        hp, wp = padded_size(c.height, c.width, self.stride)
        if hp * wp > max_pixels:
            raise LimitExceededError(f"image of {c.height}x{c.width} exceeds max_pixels={max_pixels}")
        params = DiffCParams.from_bytes(c.section(SectionType.DIFFC_PARAMS))
        allowed = {SectionType.DIFFC_PARAMS, SectionType.DIFFC_STEPS}
        packed = None
        if params.variant == "cond":
            allowed.add(SectionType.INDICES)
            bits, rows, cols, packed = unpack_indices_section(c.section(SectionType.INDICES))
            ts = self.base.token_stride
            if (bits, rows, cols) != (self.base.codebook_bits, hp // ts, wp // ts):
                raise BitstreamError(f"INDICES grid {rows}x{cols}@{bits} bits does not fit this "
                                     f"model at {c.height}x{c.width}")
        if set(c.sections) - allowed:
            raise BitstreamError(f"stream holds section types {sorted(set(c.sections) - allowed)} "
                                 "this DiffC stream does not define")
        dim = math.prod(self.state_shape(hp, wp))
        records = unpack_steps(c.section(SectionType.DIFFC_STEPS), params.index_coding, dim)
        # a complete stream holds every announced record; a cut one fewer (a cut after the last
        # record would be the complete stream: "cut" with all records = a corrupted section length)
        if len(records) != params.steps if complete else len(records) >= params.steps:
            raise BitstreamError(f"DIFFC_STEPS holds {len(records)} records, DIFFC_PARAMS "
                                 f"announces {params.steps}")
        return c, params, packed, records, complete

    def decode_trace(self, data: bytes, *, max_steps: int | None = None, cfg: float | None = None,
                     denoise: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS,
                     max_memory: memory.MemoryLike = None) -> tuple[DiffCTrace, torch.Tensor | None]:
        """Replay the steps (all, or the first ``max_steps``), then denoise: (trace, uint8 image
        [3, H, W] or None when ``denoise=False``). ``cfg`` overrides the denoising guidance."""
        c, params, packed, records, _ = self.parse(data, max_pixels=max_pixels)
        memory.check(self, "decode", c.height, c.width, max_memory)  # max_memory: see cod_fast.memory
        if max_steps is not None:
            if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 0:
                raise ValueError(f"max_steps must be a non-negative int, got {max_steps!r}")
            records = records[:max_steps]
        dcfg = params.denoise_cfg if cfg is None else float(cfg)
        if not 0 <= dcfg < 1e3:
            raise ValueError(f"cfg must be in [0, 1000), got {dcfg}")
        hp, wp = padded_size(c.height, c.width, self.stride)
        shape = self.state_shape(hp, wp)
        dim = math.prod(shape)
        taus = ENCODING_SCHEDULES[params.schedule]
        with torch.inference_mode():
            view = self._denoiser(params.variant, packed, hp, wp)
            x = self._noise(dim, params.seed).view(shape)
            trace = DiffCTrace()
            tau = START_TIMESTEP
            for i, (kl_q, indices) in enumerate(records):
                idx = torch.tensor(indices, dtype=torch.int64)
                sample = rcc.decode(idx, dim, kl_q / KL_UNITS_PER_BIT, params.seed, step=i,
                                    backend=self.backend, threads=self.threads, device=self.device)
                tau_prev = taus[i]
                co = step_coefficients(tau, tau_prev)
                x0_hat = view.x0_hat(x, tau, params.encode_cfg)
                x = sample.view(shape) * co.std + (co.c_x0 * x0_hat + co.c_x * x)
                tau = tau_prev
                trace.samples.append(sample.cpu())
                trace.kl_q.append(kl_q)
                trace.indices.append(idx)
            trace.state, trace.timestep = x, tau
            img = None
            if denoise:
                img = self._to_pixels(self.denoise(view, x, tau, params.denoise_schedule, dcfg),
                                      c.height, c.width)
        return trace, img

    @memory.allocation_guard
    def decode(self, data: bytes, max_steps: int | None = None, *, cfg: float | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS, max_memory: memory.MemoryLike = None) -> torch.Tensor:
        """Container bytes (or a prefix cut at a step boundary) -> ``torch.uint8`` [3, H, W] (CPU).

        ``max_steps``: replay only the first steps (progressive decoding); ``cfg``: denoising
        guidance instead of the recorded one.
        """
        return self.decode_trace(data, max_steps=max_steps, cfg=cfg, max_pixels=max_pixels,
                                 max_memory=max_memory)[1]


def bits_per_pixel(data: Union[bytes, bytearray], height: int, width: int) -> float:
    """File size in bits over the pixel count (the only bpp this codec reports)."""
    return len(data) * 8 / (height * width)


def _rebuild_diffc(base_state: dict[str, Any], options: dict[str, Any], cache: bool = True) -> DiffCCodec:
    """Unpickling entry point of ``DiffCCodec``: its CoD codec rebuilt, then wrapped."""
    return DiffCCodec(_rebuild(base_state, cache=cache), backend=options["backend"], threads=options["threads"])
