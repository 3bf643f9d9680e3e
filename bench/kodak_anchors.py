"""Pillow image formats used as anchors by ``bench/eval_kodak.py``, and how one is matched to a
target file size.

Anchors (``ANCHOR_KEYS``; ``resolve_anchors`` builds the available ones and says why any other
is skipped, never raising for a missing plugin):

* ``jpeg``: Pillow JPEG, quality 1..95, Pillow's defaults (4:2:0, baseline, no ``optimize``);
* ``webp``: Pillow WebP, quality 0..100, lossy, ``method=6``;
* ``avif``: Pillow's own AVIF (``features.check("avif")``), else the ``pillow_avif`` plugin;
  quality 0..100, ``speed=4``, 4:2:0, one encoder thread;
* ``jxl``: JPEG XL from ``pillow-jxl-plugin`` (``import pillow_jxl``), quality 0..99 (lossy;
  100 is lossless), ``effort=7``, one encoder thread;
* ``heic``: HEIC (HEVC in HEIF) from ``pillow-heif`` (``pillow_heif.register_heif_opener()``),
  quality 0..100 (lossy; -1 would be lossless), 4:2:0.

Each is checked before use (``self_check``): a small image encodes at both ends of the quality
range, decodes through ``Image.open`` to the same shape, and the highest quality is still lossy.

Matching (``AnchorCurve.at_bytes``): the two files that bracket the target size, and the anchor's
PSNR / MS-SSIM interpolated linearly in bpp between them at exactly the target's bpp.

* Codecs whose size grows with quality, closely enough (``monotone=True``): the qualities of the
  sweep grid are encoded, bisection over the grid finds the cell that brackets the target, and
  an interpolation search (in log size) inside the cell the two adjacent qualities ``q_lo``,
  ``q_lo + 1`` with ``size(q_lo) <= target < size(q_lo + 1)`` (an invariant of the search, so it
  holds even at a local decrease; where the size is monotone, the bracket of plain bisection). Full scans of every quality (Pillow 13.0, 2026-12) found: JPEG, 1 decrease in
  24 images x 94 steps (2 bytes); WebP, 5 in 24 x 100 (at most 162 bytes, 0.4 %: a target in such
  a dip has two brackets a few qualities apart, whose PSNRs differ by hundredths of a dB); HEIC,
  none in 8 images x 100; AVIF (speed 4), none in 2 images x 100. Each run counts the decreases
  among the qualities it encoded (``AnchorCurve.stats``) and the report prints the count.
* JPEG XL (``monotone=False``): its size is not monotone in quality (66 decreases in 24 images x
  99 steps: on every image the file of quality 19 is 2-17 % smaller than 18's and 0.3-3.0 dB
  better -- qualities <= 18 form a dominated branch -- and there are small dips near 25-35), so
  bisection could land on either of several crossings, some on the dominated branch. Every quality is encoded (a full scan),
  the files are reduced to their Pareto frontier (sorted by size; a file is dropped when a file no
  larger has at least its PSNR), and the bracket is the largest frontier file <= target and the
  next one up: the best PSNR the encoder offers for the budget, whichever quality gives it.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import io
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import PIL
import torch
from PIL import Image, features

ANCHOR_KEYS = ("jpeg", "webp", "avif", "jxl", "heic")

_loaded_plugins: set[str] = set()


def load_plugin(name: str) -> None:
    """Import (and register with Pillow) the plugin module ``name`` once per process; "" is
    Pillow itself. Raises ImportError when it is not installed."""
    if not name or name in _loaded_plugins:
        return
    mod = importlib.import_module(name)
    if name == "pillow_heif":
        mod.register_heif_opener()
    _loaded_plugins.add(name)


@dataclass(frozen=True)
class PillowCodec:
    """A Pillow image format used as an anchor: ``name`` for the report, ``format`` for
    ``Image.save``, the integer quality range [q_min, q_max], extra ``save`` options, the plugin
    module that provides the format ("" for Pillow's own), whether the file size grows with quality
    (``monotone``: bisection; else a full scan, see the module docstring) and the qualities of the
    sweep that draws its RD curve (``grid()``)."""

    name: str
    format: str
    q_min: int
    q_max: int
    options: tuple[tuple[str, Any], ...] = ()
    plugin: str = ""
    monotone: bool = True
    sweep: tuple[int, ...] = ()

    def encode(self, img: np.ndarray, quality: int) -> bytes:
        """uint8 HWC RGB image -> file bytes at integer ``quality``."""
        load_plugin(self.plugin)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=self.format, quality=int(quality), **dict(self.options))
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        """File bytes -> uint8 HWC RGB image (``Image.open``, so the format is sniffed)."""
        load_plugin(self.plugin)
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))

    def grid(self) -> list[int]:
        """The sweep qualities, sorted, always with both ends of the range (default: every 10)."""
        qs = set(self.sweep or range(-(-self.q_min // 10) * 10, self.q_max + 1, 10)) | {self.q_min, self.q_max}
        return sorted(q for q in qs if self.q_min <= q <= self.q_max)

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options)
        extra = f", {opts}" if opts else ""
        src = f" ({self.plugin})" if self.plugin else ""
        return f"{self.name}: Pillow {self.format}{src}, quality {self.q_min}..{self.q_max}{extra}"


#: Pillow defaults otherwise: 4:2:0 subsampling, baseline, optimize=False, libjpeg's tables.
JPEG = PillowCodec("JPEG", "JPEG", 1, 95)
#: Lossy WebP at the slowest (best) method.
WEBP = PillowCodec("WebP", "WEBP", 0, 100, (("method", 6),))
#: Pillow's own AVIF (libavif); ``make_anchor("avif")`` falls back to pillow_avif.
AVIF = PillowCodec("AVIF", "AVIF", 0, 100, (("speed", 4), ("max_threads", 1)))
#: pillow-jxl-plugin; size not monotone in quality (full scan).
JXL = PillowCodec("JPEG XL", "JXL", 0, 99, (("effort", 7), ("num_threads", 1)), plugin="pillow_jxl",
                  monotone=False)
#: pillow-heif (libheif + x265); Kodak's useful range lies in the low qualities: a denser sweep.
HEIC = PillowCodec("HEIC", "HEIF", 0, 100, plugin="pillow_heif",
                   sweep=(0, 5, 10, 15, 20, 25, 30, 35, 40, 50, 60, 80, 100))
#: The two anchors that need no plugin (the defaults of ``evaluate_image``).
ANCHORS = (JPEG, WEBP)

_TEST_IMAGE_SEED = 7


def _test_image() -> np.ndarray:
    """A small deterministic uint8 HWC test image (a gradient plus noise), 40 x 56."""
    rng = np.random.default_rng(_TEST_IMAGE_SEED)
    y, x = np.mgrid[0:40, 0:56]
    base = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.float64)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def self_check(codec: PillowCodec) -> str:
    """"" when ``codec`` works: a small image encodes at ``q_min`` and ``q_max``, decodes through
    ``Image.open`` to the same shape, the ``q_min`` file is no larger than the ``q_max`` one and
    the ``q_max`` decode differs from the original (lossy). Else the reason it does not."""
    img = _test_image()
    try:
        lo, hi = codec.encode(img, codec.q_min), codec.encode(img, codec.q_max)
        rec_lo, rec_hi = codec.decode(lo), codec.decode(hi)
    except Exception as exc:  # a broken plugin is reported and skipped, not raised
        return f"self-check failed: {type(exc).__name__}: {exc}"
    if rec_lo.shape != img.shape or rec_hi.shape != img.shape:
        return f"self-check failed: decoded shape {rec_hi.shape}, expected {img.shape}"
    if len(lo) > len(hi):
        return f"self-check failed: quality {codec.q_min} gave {len(lo)} bytes, more than {codec.q_max}'s {len(hi)}"
    if np.array_equal(rec_hi, img):
        return f"self-check failed: quality {codec.q_max} is lossless"
    return ""


def _plugin_missing(module: str, package: str) -> str:
    return f"not installed: `{module}` cannot be imported (pip install {package})"


def make_anchor(key: str) -> tuple[Optional[PillowCodec], str]:
    """The anchor of ``key`` (one of ``ANCHOR_KEYS``) and "", or ``None`` and why it is skipped
    (plugin missing, or the self-check failed). ValueError for an unknown key."""
    codec: Optional[PillowCodec]
    if key == "jpeg":
        codec = JPEG
    elif key == "webp":
        codec = WEBP if features.check("webp") else None
        if codec is None:
            return None, "Pillow was built without WebP"
    elif key == "avif":
        if features.check("avif"):
            codec = AVIF
        else:
            try:
                load_plugin("pillow_avif")
            except ImportError:
                return None, ("not available: Pillow was built without AVIF and `pillow_avif` cannot be "
                              "imported (pip install pillow-avif-plugin)")
            codec = PillowCodec(AVIF.name, AVIF.format, AVIF.q_min, AVIF.q_max, AVIF.options, plugin="pillow_avif")
    elif key == "jxl":
        codec = JXL
    elif key == "heic":
        codec = HEIC
    else:
        raise ValueError(f"unknown anchor {key!r}; choose from {', '.join(ANCHOR_KEYS)}")
    if codec.plugin:
        try:
            load_plugin(codec.plugin)
        except ImportError:
            return None, _plugin_missing(codec.plugin, {"pillow_jxl": "pillow-jxl-plugin",
                                                        "pillow_heif": "pillow-heif"}.get(codec.plugin, codec.plugin))
    reason = self_check(codec)
    return (None, reason) if reason else (codec, "")


def resolve_anchors(keys: Sequence[str] = ANCHOR_KEYS) -> tuple[list[PillowCodec], list[tuple[str, str]]]:
    """The available anchors among ``keys`` (in that order) and the skipped ones as (key, reason)."""
    found, skipped = [], []
    for k in keys:
        codec, reason = make_anchor(k)
        if codec is None:
            skipped.append((k, reason))
        else:
            found.append(codec)
    return found, skipped


def anchor_versions() -> dict[str, str]:
    """Library versions behind the anchors (those importable), for the report's header."""
    out = {"pillow": PIL.__version__}
    jpeg = features.version("jpg") or "?"
    if features.check_feature("libjpeg_turbo"):
        jpeg = f"libjpeg-turbo {features.version('libjpeg_turbo')} (API {jpeg})"
    else:
        jpeg = f"libjpeg {jpeg}"
    out["jpeg"] = jpeg
    out["webp"] = f"libwebp {features.version('webp')}" if features.check("webp") else "n/a"
    if features.check("avif"):
        out["avif"] = f"libavif {features.version('avif')} (Pillow)"
    else:
        try:
            out["avif"] = f"pillow-avif-plugin {importlib.metadata.version('pillow-avif-plugin')}"
        except importlib.metadata.PackageNotFoundError:
            out["avif"] = "n/a"
    try:
        out["jxl"] = f"pillow-jxl-plugin {importlib.metadata.version('pillow-jxl-plugin')}"
    except importlib.metadata.PackageNotFoundError:
        out["jxl"] = "n/a"
    try:
        import pillow_heif

        info = pillow_heif.libheif_info()
        enc = info.get("HEIF") or "?"
        out["heic"] = f"pillow-heif {pillow_heif.__version__}, libheif {info.get('libheif')}, {enc}"
    except ImportError:
        out["heic"] = "n/a"
    return out


# ----------------------------------------------------------------------------- matching

def bisect_quality(size_of: Callable[[int], int], target: int, q_min: int, q_max: int) -> tuple[Optional[int], Optional[int]]:
    """Bracket ``target`` bytes by two adjacent integer qualities.

    ``size_of(q)`` is the file size at quality ``q`` (expected to grow with ``q``). Returns
    ``(q_lo, q_hi)`` with ``size_of(q_lo) <= target < size_of(q_hi)`` and ``q_hi == q_lo + 1``;
    ``(None, q_min)`` when even ``q_min`` is larger than ``target``, ``(q_max, None)`` when even
    ``q_max`` fits. The invariant ``size(lo) <= target < size(hi)`` is kept at every step, so
    the result brackets the target even where the size is not monotone in ``q`` (but then it is
    one of several such brackets: see ``frontier_bracket``).
    """
    if q_min > q_max:
        raise ValueError(f"empty quality range {q_min}..{q_max}")
    if size_of(q_min) > target:
        return None, q_min
    if size_of(q_max) <= target:
        return q_max, None
    lo, hi = q_min, q_max  # size(lo) <= target < size(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if size_of(mid) <= target:
            lo = mid
        else:
            hi = mid
    return lo, hi


def interpolation_search(size_of: Callable[[int], int], target: int, lo: int, hi: int) -> tuple[int, int]:
    """Narrow a bracket ``size(lo) <= target < size(hi)`` to adjacent qualities, probing where
    the line through the ends (in log size) says the target lies, then on the other side of the
    target's quality first (so a good guess ends in two probes). Keeps the invariant at every step
    (like ``bisect_quality``, whose result it gives where the size is monotone); each probe lies
    strictly inside the bracket, so it ends. Returns ``(q_lo, q_lo + 1)``."""
    s_lo, s_hi = size_of(lo), size_of(hi)
    if not s_lo <= target < s_hi:
        raise ValueError(f"not a bracket: size({lo})={s_lo}, size({hi})={s_hi}, target {target}")
    while hi - lo > 1:
        frac = (math.log(target + 1) - math.log(s_lo + 1)) / (math.log(s_hi + 1) - math.log(s_lo + 1))
        mid = min(max(lo + int(frac * (hi - lo)), lo + 1), hi - 1)
        s_mid = size_of(mid)
        if s_mid <= target:
            lo, s_lo = mid, s_mid
            nxt = mid + 1  # the guess rounded down: the bracket may be (mid, mid + 1)
        else:
            hi, s_hi = mid, s_mid
            nxt = mid - 1
        if lo < nxt < hi:
            s_nxt = size_of(nxt)
            if s_nxt <= target:
                lo, s_lo = nxt, s_nxt
            else:
                hi, s_hi = nxt, s_nxt
    return lo, hi


def grid_bisect(size_of: Callable[[int], int], target: int, grid: Sequence[int]) -> tuple[Optional[int], Optional[int]]:
    """``bisect_quality`` seeded by a sorted quality grid (which holds both ends of the range):
    bisection over the grid's indices finds the cell whose ends bracket ``target``, then
    ``interpolation_search`` inside that cell. Same result as ``bisect_quality`` over the whole
    range where the size is monotone; fewer new encodes once the grid is encoded (on Kodak about
    2 per level instead of 3.5)."""
    if not grid:
        raise ValueError("empty quality grid")
    i_lo, i_hi = bisect_quality(lambda i: size_of(grid[i]), target, 0, len(grid) - 1)
    if i_lo is None:
        return None, grid[0]
    if i_hi is None:
        return grid[-1], None
    return interpolation_search(size_of, target, grid[i_lo], grid[i_hi])


def pareto_frontier(points: Sequence[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    """The (quality, bytes, PSNR) points no other point beats: sorted by bytes (then PSNR
    descending, then quality), a point is kept when its PSNR is above every smaller one's.
    Along the result, bytes and PSNR both grow strictly."""
    out: list[tuple[int, int, float]] = []
    for q, size, p in sorted(points, key=lambda t: (t[1], -t[2], t[0])):
        if not out or p > out[-1][2]:  # a file of the same size comes after the best one of it
            out.append((q, size, p))
    return out


def frontier_bracket(points: Sequence[tuple[int, int, float]], target: int) -> tuple[Optional[int], Optional[int]]:
    """Bracket ``target`` bytes on the Pareto frontier of (quality, bytes, PSNR) ``points``:
    ``(q_lo, q_hi)`` with q_lo the frontier's largest file <= target and q_hi the next frontier
    file (larger than target; not necessarily quality q_lo + 1). ``(None, q)`` when the smallest
    file is larger than target, ``(q, None)`` when the frontier's largest fits."""
    front = pareto_frontier(points)
    if not front:
        raise ValueError("no points")
    if front[0][1] > target:
        return None, front[0][0]
    k = max(i for i, pt in enumerate(front) if pt[1] <= target)
    return front[k][0], (front[k + 1][0] if k + 1 < len(front) else None)


def interp_at(x: float, x0: float, y0: float, x1: float, y1: float) -> float:
    """The value at ``x`` of the line through (x0, y0) and (x1, y1); needs ``x0 != x1``."""
    if x0 == x1:
        raise ValueError("interpolation needs two distinct abscissae")
    return y0 + (x - x0) / (x1 - x0) * (y1 - y0)


def psnr_msssim(ref: torch.Tensor, rec: torch.Tensor, msssim: bool = True) -> tuple[float, Optional[float]]:
    """PSNR (dB, peak 255, MSE over all channels) and MS-SSIM (``None`` unless ``msssim``) of
    two uint8 [3, H, W] tensors."""
    from cod_fast.metrics import ms_ssim, psnr

    return psnr(ref, rec), (ms_ssim(ref, rec) if msssim else None)


@dataclass
class AnchorPoint:
    """One anchor at one image and level: the bracketing qualities and their files, and the
    figures interpolated at the model's bpp (``None`` when unmatched)."""

    matched: bool
    q_lo: Optional[int]
    q_hi: Optional[int]
    bpp_lo: Optional[float]
    bpp_hi: Optional[float]
    psnr_lo: Optional[float]
    psnr_hi: Optional[float]
    msssim_lo: Optional[float]
    msssim_hi: Optional[float]
    psnr: Optional[float]
    msssim: Optional[float]


@dataclass
class SweepPoint:
    """One anchor's file at one sweep quality on one image (PSNR only: MS-SSIM, ~1.3 s per Kodak
    file, would cost more than the rest of the sweep; the MS-SSIM panel uses the matched points)."""

    q: int
    bytes: int
    bpp: float
    psnr: float


@dataclass
class CurveStats:
    """What matching one anchor on one image cost: distinct qualities encoded, their encode time
    (s), and how often the size fell from one encoded quality to the next higher one."""

    encoded: int
    encode_s: float
    inversions: int
    inversion_qs: list[int] = field(default_factory=list)


class AnchorCurve:
    """One anchor on one image: file sizes and decoded metrics per quality, computed on demand
    and kept for the other levels of the same image (nothing leaves the process)."""

    def __init__(self, codec: PillowCodec, img: np.ndarray, msssim: bool = True) -> None:
        self.codec = codec
        self.with_msssim = msssim
        self.img = img
        self.ref = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)
        self.pixels = img.shape[0] * img.shape[1]
        self._files: dict[int, bytes] = {}
        self._psnr: dict[int, float] = {}
        self._msssim: dict[int, Optional[float]] = {}
        self._encode_s = 0.0

    def file(self, q: int) -> bytes:
        if q not in self._files:
            t0 = time.perf_counter()
            self._files[q] = self.codec.encode(self.img, q)
            self._encode_s += time.perf_counter() - t0
        return self._files[q]

    def size(self, q: int) -> int:
        return len(self.file(q))

    def bpp(self, q: int) -> float:
        return 8.0 * self.size(q) / self.pixels

    def _decoded(self, q: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.codec.decode(self.file(q)), dtype=np.uint8)).permute(2, 0, 1)

    def psnr(self, q: int) -> float:
        """PSNR (dB) of the decoded file at quality ``q``."""
        if q not in self._psnr:
            self._psnr[q] = psnr_msssim(self.ref, self._decoded(q), False)[0]
        return self._psnr[q]

    def msssim(self, q: int) -> Optional[float]:
        """MS-SSIM of the decoded file at quality ``q`` (``None`` when disabled)."""
        if q not in self._msssim:
            self._msssim[q] = psnr_msssim(self.ref, self._decoded(q), True)[1] if self.with_msssim else None
        return self._msssim[q]

    def metrics(self, q: int) -> tuple[float, Optional[float]]:
        """(PSNR dB, MS-SSIM or ``None`` when disabled) of the decoded file at quality ``q``."""
        return self.psnr(q), self.msssim(q)

    def bracket(self, target: int) -> tuple[Optional[int], Optional[int]]:
        """The two qualities whose files bracket ``target`` bytes (see the module docstring)."""
        c = self.codec
        if c.monotone:
            return grid_bisect(self.size, target, c.grid())
        qs = range(c.q_min, c.q_max + 1)
        return frontier_bracket([(q, self.size(q), self.psnr(q)) for q in qs], target)

    def at_bytes(self, target: int) -> AnchorPoint:
        """Figures at a file of exactly ``target`` bytes (interpolated in bpp between the two
        bracketing files)."""
        q_lo, q_hi = self.bracket(target)
        if q_lo is None or q_hi is None:
            q = q_lo if q_lo is not None else q_hi
            assert q is not None
            b, (p, m) = self.bpp(q), self.metrics(q)
            if q_lo is None:
                return AnchorPoint(False, None, q_hi, None, b, None, p, None, m, None, None)
            return AnchorPoint(False, q_lo, None, b, None, p, None, m, None, None, None)
        (p_lo, m_lo), (p_hi, m_hi) = self.metrics(q_lo), self.metrics(q_hi)
        b_lo, b_hi, x = self.bpp(q_lo), self.bpp(q_hi), 8.0 * target / self.pixels
        psnr = interp_at(x, b_lo, p_lo, b_hi, p_hi)
        msssim = interp_at(x, b_lo, m_lo, b_hi, m_hi) if m_lo is not None and m_hi is not None else None
        return AnchorPoint(True, q_lo, q_hi, b_lo, b_hi, p_lo, p_hi, m_lo, m_hi, psnr, msssim)

    def sweep(self) -> list[SweepPoint]:
        """The anchor's own RD points at every quality of its grid (for the plot and the JSON)."""
        return [SweepPoint(q, self.size(q), self.bpp(q), self.psnr(q)) for q in self.codec.grid()]

    def stats(self) -> CurveStats:
        """Encodes so far and the size decreases among the encoded qualities (in quality order)."""
        qs = sorted(self._files)
        inv = [b for a, b in zip(qs, qs[1:]) if len(self._files[b]) < len(self._files[a])]
        return CurveStats(len(qs), self._encode_s, len(inv), inv)
