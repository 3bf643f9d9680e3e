"""Peak-memory model of every codec, and the budget that decode and encode are held to.

Before allocating anything sized by the image, each codec's ``decode`` (from the stream header)
and ``encode`` (from the image size) call :func:`check`, which estimates the call's peak memory
with :func:`estimate` and raises :class:`~cod_fast.bitstream.LimitExceededError` when it exceeds
the budget: ``max_memory=`` (bytes, or a string such as ``"4G"``), by default
:data:`DEFAULT_RAM_FRACTION` of the machine's physical RAM on the CPU, or
:data:`DEFAULT_GPU_FRACTION` of the GPU's free memory on CUDA. ``encode`` also checks the
decode estimate of the stream it is about to write and the decoder's default size limits
(``max_pixels``, the z grid), so a stream a codec writes is always one its decoder accepts by
default under the same budget.

The estimates are activation bytes (weights excluded: they are already allocated), per codec:

* default model: ``40 MiB + 104 B`` per padded pixel to decode, the smaller of ``16 MiB + 400 B``
  and ``96 MiB + 92 B`` to encode (banded transforms, ``cod_fast.models.default.lowmem``;
  measured from 256x256 to 2048x3072);
* CoD family (pixel PixNerDiT, one-step, CoD-Lite): the largest of (a) the condition decoder's
  global attention ``8 * (P / s^2)^2`` (``s`` 32 with the ``ada`` upsampler, else 16; CoD-Lite's
  windowed attention is linear), (b) the unconditional map's condition-encoder pass (multi-step
  only: ``6 * ch`` B/px plus its global attention ``8 * (P / r^2)^2`` bytes, ``r`` the encoder's
  stride), which the sampler keeps, plus (c) the denoiser: ``batch`` (2 with guidance) times
  ``4 * (100 + hx * (4 + 3 * mlp_ratio))`` B/px for PixNerDiT (NeRF head of width ``hx``),
  ``4 * (60 + 4 * hx)`` for CoD-Lite's, plus the sampler state, and for latent models the SD-VAE
  decoder (``20 * ch0`` B/px, instead of (b) + (c) when larger); all times 1.15 (allocator and oneDNN workspaces). Encode: the
  condition encoder ``6 * ch + 32`` B/px, its attention and the VQ distances;
* SODEC: ``16 MiB + 48 * vae_ch0`` B/px to decode (VAE decoder at full resolution; measured
  up to 155 MiB at 384x512 with ``vae_ch0 = 16``), ``2 MiB + 72`` B/px to encode;
* DiffC: the multi-step CoD denoiser with guidance plus 300 bytes per state element to decode
  (rcc candidate samples, ``x0_hat``, posterior means; measured), 40 to encode.

The terms were calibrated on this package's tiny models against measured resident-set peaks
(the kernel's high-water mark; ``tests/test_memory.py`` checks them within a factor of 2); the quadratic terms make forged
headers of large images fail early: an 8192x8192 CoD header asks for about 2 TB of attention.

Allocation failures that still happen inside a guarded call (:func:`allocation_guard`) become
:class:`~cod_fast.errors.AllocationError`.
"""
from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar, Union

import torch

from .bitstream import DEFAULT_MAX_PIXELS, LimitExceededError
from .errors import AllocationError, CodFastError

#: Default budget on the CPU: this fraction of the machine's physical RAM.
DEFAULT_RAM_FRACTION = 0.8
#: Default budget on CUDA: this fraction of the GPU's free memory at the time of the call.
DEFAULT_GPU_FRACTION = 0.9
#: Fixed part of every estimate (interpreter, allocator pools, small buffers).
FIXED_BYTES = 16 << 20
_SLACK = 1.15
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

MemoryLike = Union[int, float, str, None]  # noqa: UP007  (a runtime alias)
F = TypeVar("F", bound=Callable[..., Any])


def parse_bytes(value: float | str) -> int:
    """``4096``, ``"4G"``, ``"512M"``, ``"1.5GiB"``, ``"2 GB"`` -> bytes (binary units).

    ValueError for anything else, zero or negative sizes."""
    if isinstance(value, bool):
        raise TypeError(f"memory size must be a number of bytes or a string like '4G', got {value!r}")
    if isinstance(value, (int, float)):
        n = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", str(value))
        if not m:
            raise ValueError(f"cannot read memory size {value!r}: use bytes or a number with K, M, G or T")
        n = float(m[1]) * _UNITS[m[2].upper()]
    if not (n > 0 and math.isfinite(n)):
        raise ValueError(f"memory size must be positive, got {value!r}")
    return int(n)


@functools.cache  # the machine's RAM does not change: read /proc/meminfo once
def physical_ram() -> int:
    """Physical RAM of the machine in bytes (``/proc/meminfo`` MemTotal, else ``os.sysconf``)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16 << 30  # unknown machine: assume a modest one


def default_budget(device: Any = "cpu") -> int:
    """The budget when ``max_memory`` is not given: a fraction of the RAM, or of a GPU's free memory."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free * DEFAULT_GPU_FRACTION)
    return int(physical_ram() * DEFAULT_RAM_FRACTION)


def budget(max_memory: MemoryLike, device: Any = "cpu") -> int:
    """``max_memory`` in bytes, or :func:`default_budget` when it is None."""
    return default_budget(device) if max_memory is None else parse_bytes(max_memory)


# ------------------------------------------------------------------------------------------------
# estimates
# ------------------------------------------------------------------------------------------------

def _pad(n: int, stride: int) -> int:
    return -(-n // stride) * stride


def _activation_scale(codec: Any) -> float:
    dt = getattr(codec, "dtype", torch.float32)
    return 0.6 if dt in (torch.float16, torch.bfloat16) else 1.0


def _vq_parts(codec: Any) -> dict[str, Any]:
    """Geometry of a CoD-family network (condition codec, denoiser) for the estimates."""
    net = codec.net
    e = net.y_embedder
    lite = type(e).__module__.startswith("cod_fast.models.cod_lite")
    ds, up2x = int(e.ds), bool(e.up2x)
    enc_stride = ds if up2x else max(ds // 2, 1)
    dec_attn_stride = 32 if (up2x and ds in (32, 128)) else 16
    conv_in = getattr(getattr(e, "encoder", None), "conv_in", None)
    ch = int(getattr(conv_in, "out_channels", 128))
    hx = int(getattr(net, "hidden_size_x", 0) or 0)
    ratio = 2
    for blk in getattr(net, "blocks", []):
        if hasattr(blk, "mlp_ratio") and hasattr(blk, "param_generator1"):
            ratio = int(blk.mlp_ratio)
    return {"lite": lite, "enc_stride": enc_stride, "dec_attn_stride": dec_attn_stride, "ch": ch,
            "hx": hx, "ratio": ratio, "bits": int(codec.codebook_bits), "ts": int(codec.token_stride),
            "patch": int(getattr(net, "patch_size", 16)), "hidden": int(getattr(net, "hidden_size", 1152))}


def _vq_encode(codec: Any, hp: int, wp: int) -> float:
    g = _vq_parts(codec)
    p = hp * wp
    att = 0.0 if g["lite"] else 8.0 * (p / g["enc_stride"] ** 2) ** 2
    tokens = p / g["ts"] ** 2
    return _SLACK * (FIXED_BYTES + p * (6 * g["ch"] + 32) + att + tokens * (1 << g["bits"]) * 8)


def _vq_decode(codec: Any, hp: int, wp: int, batch: int, multi_step: bool, extra_per_state: float = 0.0) -> float:
    g = _vq_parts(codec)
    p = hp * wp
    latent = bool(getattr(codec.spec, "latent", False)) if hasattr(codec, "spec") else False
    uncond = 0.0
    if multi_step:
        uncond = p * 6 * g["ch"] + (0.0 if g["lite"] else 8.0 * (p / g["enc_stride"] ** 2) ** 2)
    cond = 0.0 if g["lite"] else 8.0 * (p / g["dec_attn_stride"] ** 2) ** 2
    if latent:
        net_px = 4.0 * (16 + 12 * g["hidden"] / (8 * g["patch"]) ** 2)
        state = p / 64 * 4
        conv_out = getattr(getattr(getattr(codec, "vae", None), "decoder", None), "conv_out", None)
        ch0 = int(getattr(conv_out, "in_channels", 128))  # the VAE decoder's full-resolution width
        vae_phase = p * 20 * ch0
    else:
        if g["lite"]:
            net_px = 4.0 * (60 + 4 * g["hx"])
        else:
            net_px = 4.0 * (100 + g["hx"] * (4 + 3 * g["ratio"]))
        state = p * 3
        vae_phase = 0.0
    sampler = state * 4 * (6 if multi_step else 2) + state * extra_per_state
    network = batch * p * net_px * _activation_scale(codec) + sampler
    # the multi-step sampler keeps the unconditional condition map while the network runs: the
    # two add (measured with the kernel's exact high-water mark, tests/test_memory.py)
    return _SLACK * (FIXED_BYTES + max(cond, uncond + network, vae_phase) + p * 16)


def pad(n: int, stride: int) -> int:
    """``n`` rounded up to a multiple of ``stride``."""
    return _pad(n, stride)


def vq_encode_bytes(codec: Any, hp: int, wp: int) -> int:
    """Estimated peak bytes of a CoD-family encode at padded size ``hp`` x ``wp``."""
    return int(_vq_encode(codec, hp, wp))


def vq_decode_bytes(codec: Any, hp: int, wp: int, batch: int, multi_step: bool, extra_per_state: float = 0.0) -> int:
    """Estimated peak bytes of a CoD-family decode at padded size ``hp`` x ``wp`` (``batch`` 2 with
    guidance; ``extra_per_state``: bytes per state element on top, e.g. DiffC's rcc buffers)."""
    return int(_vq_decode(codec, hp, wp, batch, multi_step, extra_per_state))


def estimate(codec: Any, phase: str, height: int, width: int) -> int:
    """Estimated peak bytes of ``codec``'s ``phase`` ("decode" or "encode") for an image of
    ``height`` x ``width`` (true size; the codec pads). Each codec class gives its own model as
    ``codec.memory_estimate(phase, height, width)`` (built from this module's terms, see the module
    docstring). TypeError for an object without one."""
    if phase not in ("decode", "encode"):
        raise ValueError(f"phase must be 'decode' or 'encode', got {phase!r}")
    fn = getattr(codec, "memory_estimate", None)
    if fn is None:
        raise TypeError(f"no memory model for {type(codec).__name__}")
    return int(fn(phase, int(height), int(width)))


def _fmt(n: float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def check(codec: Any, phase: str, height: int, width: int, max_memory: MemoryLike = None) -> int:
    """Raise LimitExceededError when the estimated peak of ``phase`` exceeds the budget (see the
    module docstring); returns the estimate. ``encode`` is held to the larger of its own estimate
    and the decode estimate of the stream it writes."""
    need = estimate(codec, phase, height, width)
    if phase == "encode":
        need = max(need, estimate(codec, "decode", height, width))
        _check_decodable(codec, height, width)
    limit = budget(max_memory, getattr(codec, "device", "cpu"))
    if need > limit:
        what = "decoding" if phase == "decode" else "encoding"
        raise LimitExceededError(
            f"{what} a {height}x{width} image with {type(codec).__name__} needs about {_fmt(need)}, "
            f"over the memory budget of {_fmt(limit)}; pass max_memory= (CLI --max-memory) to allow more")
    return need


def _check_decodable(codec: Any, height: int, width: int) -> None:
    """LimitExceededError when the codec's decoder refuses this size by default (``max_pixels``,
    or the codec's own ``check_decodable_size``, e.g. the default model's z grid): an encoder never
    writes a stream its own decoder would refuse."""
    own = getattr(codec, "check_decodable_size", None)
    if own is not None:
        own(height, width)
        return
    stride = int(getattr(codec, "stride", 1))
    if _pad(height, stride) * _pad(width, stride) > DEFAULT_MAX_PIXELS:
        raise LimitExceededError(f"a {height}x{width} image exceeds the decoders' default max_pixels="
                                 f"{DEFAULT_MAX_PIXELS}: the stream would not decode by default")


# ------------------------------------------------------------------------------------------------
# allocation failures
# ------------------------------------------------------------------------------------------------

_OOM = re.compile(r"out of memory|can't allocate|cannot allocate|not enough memory|DefaultCPUAllocator|"
                  r"std::bad_alloc|failed to allocate", re.IGNORECASE)


def is_allocation_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's (or Python's) report of a failed allocation."""
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and bool(_OOM.search(str(exc)))


def allocation_guard(fn: F) -> F:
    """Decorator: a failed allocation inside ``fn`` becomes :class:`~cod_fast.errors.AllocationError`."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CodFastError:
            raise
        except (RuntimeError, MemoryError) as exc:
            if not is_allocation_failure(exc):
                raise
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise AllocationError(f"{fn.__qualname__}: allocation failed ({msg}); lower max_memory= "
                                  "or use a smaller image") from exc

    return wrapper  # type: ignore[return-value]
