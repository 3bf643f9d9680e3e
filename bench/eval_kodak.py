"""Kodak rate-distortion report of the bundled default model against Pillow's JPEG and WebP.

For every image (default: the 24 Kodak PNGs in ``../shared/data/kodak``) and every rate level of
``cod_fast.load_model()`` (the ``DefaultCodec``):

* the model: ``codec.encode(image, quality=level)`` gives the container file; bpp is
  ``8 * len(file) / (H * W)`` (header, section lengths and CRCs included); ``codec.decode`` gives
  the uint8 reconstruction; PSNR (RGB, 8-bit, ``10 log10(255^2 / MSE)`` over all channels) and
  MS-SSIM come from ``cod_fast.metrics``.
* each anchor (JPEG: quality 1..95, Pillow's defaults, i.e. 4:2:0 chroma subsampling, baseline,
  no ``optimize``; WebP: quality 0..100, lossy, ``method=6``): bisection finds the largest quality
  ``q_lo`` whose file is no larger than the model's file, and ``q_hi = q_lo + 1`` (larger than
  it). PSNR and MS-SSIM are interpolated linearly in bpp between those two files at exactly the
  model's bpp. When even the lowest quality's file is larger (or the highest quality's file is
  smaller) than the model's, the anchor cannot reach that bpp: the image is "unmatched" at that
  level and left out of that anchor's means (the report gives the count).

Per level it reports the means over images; differences are means of the per-image differences
(model - anchor) over the matched images. BD-rate and BD-PSNR (Bjontegaard: a polynomial of
degree min(3, points - 1) in log-rate vs PSNR, integrated over the common interval) are computed
on the per-level mean curves (over the images matched at every level).

Nothing is cached on disk: the figures come from the weights installed at run time. Runs on one
thread, nothing in parallel (the machine is shared). Writes ``kodak_default.md`` and
``kodak_default_rd.png`` into ``--out-dir`` (default ``docs/``) and, with ``--json``, the raw
per-image figures::

    .venv/bin/python bench/eval_kodak.py [--levels 0,1,2,3,4] [--images kodim01.png ...]
        [--data DIR] [--out-dir docs] [--json FILE] [--threads 1] [--no-msssim] [--no-plot]

The plot needs matplotlib (``pip install .[bench]``); ``--no-plot`` skips it. MS-SSIM (float64,
about 1.3 s per Kodak image on one core) takes most of the run: ``--no-msssim`` leaves it out.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import PIL
import torch
from PIL import Image, features

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import cpu_name, load_averages  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "kodak"
MD_NAME = "kodak_default.md"
PNG_NAME = "kodak_default_rd.png"


# ----------------------------------------------------------------------------- anchors (Pillow)

@dataclass(frozen=True)
class PillowCodec:
    """A Pillow image format used as an anchor: ``name`` for the report, ``format`` for
    ``Image.save``, the integer quality range [q_min, q_max] (file size grows with quality), and
    extra ``save`` options."""

    name: str
    format: str
    q_min: int
    q_max: int
    options: tuple[tuple[str, Any], ...] = ()

    def encode(self, img: np.ndarray, quality: int) -> bytes:
        """uint8 HWC RGB image -> file bytes at integer ``quality``."""
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=self.format, quality=int(quality), **dict(self.options))
        return buf.getvalue()

    @staticmethod
    def decode(data: bytes) -> np.ndarray:
        """File bytes -> uint8 HWC RGB image."""
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options)
        extra = f", {opts}" if opts else ""
        return f"Pillow {self.format}, quality {self.q_min}..{self.q_max}{extra}"


#: Pillow defaults otherwise: 4:2:0 subsampling, baseline, optimize=False, libjpeg's tables.
JPEG = PillowCodec("JPEG", "JPEG", 1, 95)
#: Lossy WebP at the slowest (best) method.
WEBP = PillowCodec("WebP", "WEBP", 0, 100, (("method", 6),))
ANCHORS = (JPEG, WEBP)


def bisect_quality(size_of: Callable[[int], int], target: int, q_min: int, q_max: int) -> tuple[Optional[int], Optional[int]]:
    """Bracket ``target`` bytes by two adjacent integer qualities.

    ``size_of(q)`` is the file size at quality ``q`` (expected to grow with ``q``). Returns
    ``(q_lo, q_hi)`` with ``size_of(q_lo) <= target < size_of(q_hi)`` and ``q_hi == q_lo + 1``;
    ``(None, q_min)`` when even ``q_min`` is larger than ``target``, ``(q_max, None)`` when even
    ``q_max`` fits. The invariant ``size(lo) <= target < size(hi)`` is kept at every step, so
    the result brackets the target even where the size is not monotone in ``q``.
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


def interp_at(x: float, x0: float, y0: float, x1: float, y1: float) -> float:
    """The value at ``x`` of the line through (x0, y0) and (x1, y1); needs ``x0 != x1``."""
    if x0 == x1:
        raise ValueError("interpolation needs two distinct abscissae")
    return y0 + (x - x0) / (x1 - x0) * (y1 - y0)


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
        self._metrics: dict[int, tuple[float, Optional[float]]] = {}

    def file(self, q: int) -> bytes:
        if q not in self._files:
            self._files[q] = self.codec.encode(self.img, q)
        return self._files[q]

    def size(self, q: int) -> int:
        return len(self.file(q))

    def bpp(self, q: int) -> float:
        return 8.0 * self.size(q) / self.pixels

    def metrics(self, q: int) -> tuple[float, Optional[float]]:
        """(PSNR dB, MS-SSIM or ``None`` when disabled) of the decoded file at quality ``q``."""
        if q not in self._metrics:
            rec = torch.from_numpy(np.array(self.codec.decode(self.file(q)), dtype=np.uint8)).permute(2, 0, 1)
            self._metrics[q] = psnr_msssim(self.ref, rec, self.with_msssim)
        return self._metrics[q]

    def at_bytes(self, target: int) -> AnchorPoint:
        """Figures at a file of exactly ``target`` bytes (interpolated in bpp between the two
        bracketing qualities)."""
        q_lo, q_hi = bisect_quality(self.size, target, self.codec.q_min, self.codec.q_max)
        lo = (self.bpp(q_lo), *self.metrics(q_lo)) if q_lo is not None else (None, None, None)
        hi = (self.bpp(q_hi), *self.metrics(q_hi)) if q_hi is not None else (None, None, None)
        if q_lo is None or q_hi is None:
            return AnchorPoint(False, q_lo, q_hi, lo[0], hi[0], lo[1], hi[1], lo[2], hi[2], None, None)
        x = 8.0 * target / self.pixels
        psnr = interp_at(x, lo[0], lo[1], hi[0], hi[1])
        msssim = interp_at(x, lo[0], lo[2], hi[0], hi[2]) if self.with_msssim else None
        return AnchorPoint(True, q_lo, q_hi, lo[0], hi[0], lo[1], hi[1], lo[2], hi[2], psnr, msssim)


# ----------------------------------------------------------------------------- metrics

def psnr_msssim(ref: torch.Tensor, rec: torch.Tensor, msssim: bool = True) -> tuple[float, Optional[float]]:
    """PSNR (dB, peak 255, MSE over all channels) and MS-SSIM (``None`` unless ``msssim``) of
    two uint8 [3, H, W] tensors."""
    from cod_fast.metrics import ms_ssim, psnr

    return psnr(ref, rec), (ms_ssim(ref, rec) if msssim else None)


# ----------------------------------------------------------------------------- evaluation

@dataclass
class ImageLevel:
    """The model and the anchors on one image at one level."""

    image: str
    height: int
    width: int
    level: float
    bytes: int
    bpp: float
    psnr: float
    msssim: Optional[float]
    encode_s: float
    decode_s: float
    overhead_bytes: Optional[int] = None
    anchors: dict[str, AnchorPoint] = field(default_factory=dict)


def load_rgb(path: Path) -> np.ndarray:
    """An image file -> uint8 HWC RGB array."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def evaluate_image(codec: Any, name: str, img: np.ndarray, levels: Sequence[float],
                   anchors: Sequence[PillowCodec] = ANCHORS,
                   log: Callable[[str], None] = print, msssim: bool = True,
                   encode_kwargs: Optional[dict[str, Any]] = None) -> list[ImageLevel]:
    """Encode ``img`` (uint8 HWC RGB) with ``codec`` at each level and match every anchor to the
    model's file size. Returns one ``ImageLevel`` per level, in the order of ``levels``.
    ``msssim=False`` skips MS-SSIM (the slow metric): those fields are ``None``;
    ``encode_kwargs`` go to ``codec.encode`` (e.g. ``{"rdoq": False}``)."""
    h, w = img.shape[:2]
    curves = {a.name: AnchorCurve(a, img, msssim) for a in anchors}
    out = []
    from cod_fast.evaluate import measure  # the model's figures: the same code as `cod-fast eval`

    for lv in levels:
        pt, data, _ = measure(codec, img, name, {"quality": lv, **(encode_kwargs or {})}, msssim=msssim, level=lv)
        p, m = pt.psnr, pt.msssim
        row = ImageLevel(name, h, w, float(lv), pt.bytes, pt.bpp, p, m, pt.encode_s, pt.decode_s)
        if hasattr(codec, "parse"):  # container codecs: file size minus the section payloads
            row.overhead_bytes = len(data) - sum(len(v) for v in codec.parse(data)[0].sections.values())
        for a in anchors:
            row.anchors[a.name] = curves[a.name].at_bytes(len(data))
        out.append(row)
        parts = [f"{name} level {lv:g}: {row.bpp:.4f} bpp {p:.2f} dB ms-ssim {_f(m, '.4f')}"
                 f" (enc {row.encode_s:.2f}s dec {row.decode_s:.2f}s)"]
        for a in anchors:
            ap = row.anchors[a.name]
            parts.append(f"{a.name} {ap.psnr:.2f} dB (q {ap.q_lo}-{ap.q_hi})" if ap.matched
                         else f"{a.name} unmatched (q {ap.q_lo}-{ap.q_hi})")
        log(" | ".join(parts))
    return out


def bd_metrics(r_anchor: Sequence[float], p_anchor: Sequence[float],
               r_test: Sequence[float], p_test: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    """Bjontegaard deltas of a test curve against an anchor curve, (bpp, PSNR dB) points.

    BD-rate (percent; negative = the test needs fewer bits for the same PSNR): log-rate fitted as
    a polynomial in PSNR, averaged over the common PSNR interval. BD-PSNR (dB; positive = the
    test is better): PSNR fitted in log-rate over the common log-rate interval. Polynomial degree
    min(3, points - 1). ``None`` where fewer than 2 points or the intervals do not overlap.
    """
    ra, pa, rt, pt = (np.asarray(v, dtype=np.float64) for v in (r_anchor, p_anchor, r_test, p_test))
    n = min(len(ra), len(rt))
    if n < 2 or len(ra) != len(pa) or len(rt) != len(pt):
        return None, None
    la, lt = np.log(ra), np.log(rt)

    def avg_diff(xa: np.ndarray, ya: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> Optional[float]:
        lo, hi = max(xa.min(), xt.min()), min(xa.max(), xt.max())
        if not hi > lo:
            return None
        ia = np.polyint(np.polyfit(xa, ya, min(3, len(xa) - 1)))
        it = np.polyint(np.polyfit(xt, yt, min(3, len(xt) - 1)))
        return float(((np.polyval(it, hi) - np.polyval(it, lo)) - (np.polyval(ia, hi) - np.polyval(ia, lo))) / (hi - lo))

    d_log = avg_diff(pa, la, pt, lt)
    bd_rate = None if d_log is None else 100.0 * (math.exp(d_log) - 1.0)
    bd_psnr = avg_diff(la, pa, lt, pt)
    return bd_rate, bd_psnr


def summarize(rows: Sequence[ImageLevel], levels: Sequence[float],
              anchors: Sequence[PillowCodec] = ANCHORS) -> dict[str, Any]:
    """Per-level means and BD figures of the rows from ``evaluate_image`` (any number of images).

    Returns ``{"levels": [per-level dict], "bd": {anchor: {...}}}``: per level ``n``, ``bpp``,
    ``psnr``, ``msssim`` (model means over all images) and per anchor ``matched``, ``psnr``,
    ``msssim`` (means over the matched images), ``d_psnr``, ``d_msssim`` (mean of model - anchor
    over the matched images); per anchor ``bd_rate_pct``, ``bd_psnr_db`` over the images matched
    at every level, ``mean_d_psnr`` (mean of the per-level ``d_psnr``) and ``images``.
    """
    def mean(values: list[Optional[float]]) -> Optional[float]:  # None when empty or any is None
        return float(np.mean(values)) if values and all(v is not None for v in values) else None

    per_level = []
    for lv in levels:
        sel = [r for r in rows if r.level == float(lv)]
        entry: dict[str, Any] = {
            "level": float(lv), "n": len(sel),
            "bpp": float(np.mean([r.bpp for r in sel])) if sel else None,
            "psnr": float(np.mean([r.psnr for r in sel])) if sel else None,
            "msssim": mean([r.msssim for r in sel]),
            "encode_s": float(np.mean([r.encode_s for r in sel])) if sel else None,
            "decode_s": float(np.mean([r.decode_s for r in sel])) if sel else None,
            "anchors": {},
        }
        for a in anchors:
            m = [r for r in sel if r.anchors[a.name].matched]
            entry["anchors"][a.name] = {
                "matched": len(m),
                "psnr": float(np.mean([r.anchors[a.name].psnr for r in m])) if m else None,
                "msssim": mean([r.anchors[a.name].msssim for r in m]),
                "d_psnr": float(np.mean([r.psnr - r.anchors[a.name].psnr for r in m])) if m else None,
                "d_msssim": mean([None if r.msssim is None or r.anchors[a.name].msssim is None
                                  else r.msssim - r.anchors[a.name].msssim for r in m]),
            }
        per_level.append(entry)
    bd: dict[str, Any] = {}
    images = sorted({r.image for r in rows})
    for a in anchors:
        # images matched at every level, so that both curves average the same images
        wanted = {float(lv) for lv in levels}
        full = [im for im in images
                if all(r.anchors[a.name].matched for r in rows if r.image == im and r.level in wanted)]
        pts_m, pts_a = [], []
        for lv in levels:
            sel = [r for r in rows if r.level == float(lv) and r.image in full]
            if sel:
                pts_m.append((np.mean([r.bpp for r in sel]), np.mean([r.psnr for r in sel])))
                pts_a.append((np.mean([r.bpp for r in sel]), np.mean([r.anchors[a.name].psnr for r in sel])))
        rate, dpsnr = bd_metrics([p[0] for p in pts_a], [p[1] for p in pts_a],
                                 [p[0] for p in pts_m], [p[1] for p in pts_m]) if pts_m else (None, None)
        ds = [e["anchors"][a.name]["d_psnr"] for e in per_level if e["anchors"][a.name]["d_psnr"] is not None]
        bd[a.name] = {"bd_rate_pct": rate, "bd_psnr_db": dpsnr,
                      "mean_d_psnr": float(np.mean(ds)) if ds else None, "images": len(full)}
    return {"levels": per_level, "bd": bd}


# ----------------------------------------------------------------------------- report

def _f(v: Optional[float], fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def verdict(summary: dict[str, Any], anchor: str = "JPEG") -> str:
    """One honest sentence: does the model beat ``anchor`` in PSNR at every level, and by how much."""
    ds = [(e["level"], e["anchors"][anchor]["d_psnr"]) for e in summary["levels"]
          if e["anchors"][anchor]["d_psnr"] is not None]
    if not ds:
        return f"No level could be matched against {anchor}."
    worse = [(lv, d) for lv, d in ds if d <= 0]
    lo, hi = min(d for _, d in ds), max(d for _, d in ds)
    if not worse:
        return (f"The model beats {anchor} in PSNR at matched bpp at all {len(ds)} levels, "
                f"by {lo:+.2f} to {hi:+.2f} dB.")
    if len(worse) == len(ds):
        return (f"**The model falls short of {anchor}** in PSNR at matched bpp at every level: "
                f"it is {-hi:.2f} to {-lo:.2f} dB below it.")
    names = ", ".join(f"{lv:g}" for lv, _ in worse)
    return (f"**The model falls short of {anchor} at level(s) {names}**: PSNR differences at matched "
            f"bpp range from {lo:+.2f} to {hi:+.2f} dB.")


def markdown_report(summary: dict[str, Any], meta: dict[str, Any], png_name: Optional[str],
                    anchors: Sequence[PillowCodec] = ANCHORS) -> str:
    """The report as markdown: verdict, table, BD figures, method, command, model and machine."""
    names = [a.name for a in anchors]
    lines = [
        "# Default model on Kodak: rate-distortion against JPEG and WebP",
        "",
        f"Generated by `bench/eval_kodak.py` on {meta['date']} over {meta['n_images']} image(s) "
        f"and {len(summary['levels'])} level(s).",
        "",
    ]
    if "JPEG" in names:
        lines += ["Target (issue 7): higher PSNR than JPEG at matched bpp across the model's range.", "",
                  verdict(summary, "JPEG"), ""]
    if "WebP" in names:
        lines += [verdict(summary, "WebP"), ""]
    head = ["level", "bpp", "model PSNR", "model MS-SSIM"]
    for n in names:
        head += [f"{n} PSNR", f"{n} MS-SSIM", f"Δ PSNR vs {n}"]
    lines += ["Means over the images (PSNR in dB; Δ = model − anchor, mean of per-image differences):", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    partial = False
    for e in summary["levels"]:
        cells = [f"{e['level']:g}", _f(e["bpp"], ".4f"), _f(e["psnr"], ".2f"), _f(e["msssim"], ".4f")]
        for n in names:
            a = e["anchors"][n]
            mark = ""
            if a["matched"] < e["n"]:
                partial = True
                mark = f" ({a['matched']}/{e['n']})"
            cells += [_f(a["psnr"], ".2f") + mark, _f(a["msssim"], ".4f"), _f(a["d_psnr"], "+.2f")]
        lines.append("| " + " | ".join(cells) + " |")
    if partial:
        lines += ["", "(k/n): the anchor could reach the model's file size on only k of the n images at "
                      "that level (its smallest file was larger, or its largest smaller); its means and Δ "
                      "are over those k images."]
    lines += ["", "Bjøntegaard deltas of the model against each anchor (on the per-level mean curves):", "",
              "| anchor | BD-rate | BD-PSNR | mean Δ PSNR at matched bpp | images |", "|---|---|---|---|---|"]
    for n in names:
        b = summary["bd"][n]
        lines.append(f"| {n} | {_f(b['bd_rate_pct'], '+.1f')} % | {_f(b['bd_psnr_db'], '+.2f')} dB | "
                     f"{_f(b['mean_d_psnr'], '+.2f')} dB | {b['images']} |")
    lines += ["", "BD-rate < 0 / BD-PSNR > 0 mean the model is better. `n/a`: fewer than two levels, or "
                  "the curves' PSNR (rate) ranges do not overlap.", ""]
    if png_name:
        lines += [f"![RD curves]({png_name})", ""]
    lines += [
        "## Method",
        "",
        "- Model: `cod_fast.load_model()` (the bundled `DefaultCodec`), "
        f"`encode(image, quality=level{', rdoq=False' if meta.get('rdoq') is False else ''})`; "
        "bpp = 8 × (bytes of the container file, header and CRCs included) / (H × W); decoded with "
        "`decode`. Container overhead (file minus section payloads): "
        f"{meta['overhead_bytes']} bytes per file.",
        "- PSNR: RGB, 8-bit, 10·log10(255² / MSE) with the MSE over all pixels and channels; MS-SSIM: "
        "`cod_fast.metrics.ms_ssim` (5 scales, 11×11 Gaussian window, on RGB, data range 255). Both "
        "per image, then averaged." + (" **MS-SSIM was skipped in this run (`--no-msssim`).**"
                                       if all(e["msssim"] is None for e in summary["levels"]) else ""),
        "- Anchors: " + "; ".join(a.describe() for a in anchors) + ". JPEG keeps Pillow's defaults "
        "(4:2:0 chroma subsampling, baseline, `optimize=False`). For each image and level, bisection "
        "finds the largest quality whose file is no larger than the model's file and the next quality "
        "up; the anchor's PSNR and MS-SSIM are **linearly interpolated in bpp between those two files "
        "at exactly the model's bpp** (so all three codecs share the bpp column).",
        "- BD figures: Bjøntegaard's method with a polynomial of degree min(3, levels − 1), log-rate vs "
        "PSNR (BD-rate) and PSNR vs log-rate (BD-PSNR), on the per-level means over the images that "
        "the anchor matched at every level.",
        "",
        "## Run",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"- Date (UTC): {meta['date']}; wall time {meta['wall_s'] / 60:.1f} min "
        f"({meta['n_images']} images × {len(summary['levels'])} levels, one thread, nothing in parallel).",
        f"- Model: `cod_fast/weights/default.safetensors`, sha256 `{meta['sha256']}` "
        f"(from default.json{'' if meta['sha256_ok'] else '; **the file on disk hashes differently**'}), "
        f"training step {meta['step']}, {meta['parameters']} parameters, fingerprint `{meta['fingerprint']}`.",
        f"- Images: {meta['data']} ({', '.join(meta['images'][:3])}{', …' if len(meta['images']) > 3 else ''}).",
        f"- Machine: {meta['cpu']}, {meta['cores']} cores shared with other jobs (load average at start "
        f"{meta['load_start']}, at end {meta['load_end']}); torch {meta['torch']} with "
        f"{meta['threads']} thread(s); Pillow {meta['pillow']} (libjpeg{meta['libjpeg']}, libwebp "
        f"{meta['libwebp']}). Mean model times per image (loaded machine, indicative only): encode "
        f"{meta['encode_s']:.2f} s, decode {meta['decode_s']:.2f} s.",
    ]
    return "\n".join(lines) + "\n"


def plot_rd(summary: dict[str, Any], path: Path, title: str, anchors: Sequence[PillowCodec] = ANCHORS) -> None:
    """Two panels (bpp vs PSNR, bpp vs MS-SSIM) of the per-level means, one curve per codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = summary["levels"]
    with_msssim = all(e["msssim"] is not None for e in levels)
    fig, axes = plt.subplots(1, 2 if with_msssim else 1, figsize=(11 if with_msssim else 6, 4.5), dpi=110,
                             squeeze=False)
    axes = axes[0]
    series = [("cod_fast default", [(e["bpp"], e["psnr"], e["msssim"]) for e in levels], "o-")]
    for a, style in zip(anchors, ("s--", "^--", "d--")):
        pts = [(e["bpp"], e["anchors"][a.name]["psnr"], e["anchors"][a.name]["msssim"]) for e in levels
               if e["anchors"][a.name]["psnr"] is not None]
        series.append((f"{a.name} (at matched bpp)", pts, style))
    panels = [(axes[0], 1, "PSNR (dB, RGB)")] + ([(axes[1], 2, "MS-SSIM (RGB)")] if with_msssim else [])
    for ax, k, label in panels:
        for name, pts, style in series:
            if pts:
                ax.plot([p[0] for p in pts], [p[k] for p in pts], style, label=name)
        for e in levels:
            ax.annotate(f"{e['level']:g}", (e["bpp"], e["psnr"] if k == 1 else e["msssim"]),
                        textcoords="offset points", xytext=(4, -10), fontsize=8)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------- driver

def _resolve_images(data: Path, names: Optional[Sequence[str]]) -> list[Path]:
    if not names:
        paths = sorted(p for p in data.glob("*.png"))
        if not paths:
            raise SystemExit(f"no PNG images in {data} (set --data)")
        return paths
    out = []
    for n in names:
        p = Path(n)
        if not p.is_file():
            p = data / n
        if not p.is_file():
            raise SystemExit(f"image {n!r} not found (as a path or in {data})")
        out.append(p)
    return out


def _parse_levels(text: Optional[str], n_levels: int) -> list[float]:
    if not text:
        return [float(i) for i in range(n_levels)]
    try:
        levels = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"--levels takes comma-separated numbers, got {text!r}") from None
    bad = [v for v in levels if not (0.0 <= v <= n_levels - 1)]
    if not levels or bad:
        raise SystemExit(f"--levels must lie in [0, {n_levels - 1}], got {text!r}")
    return levels


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point (see the module docstring); returns the exit status. Torch's
    thread count is set to ``--threads`` for the run and restored afterwards."""
    previous_threads = torch.get_num_threads()
    try:
        return _run(argv)
    finally:
        torch.set_num_threads(previous_threads)


def _run(argv: Optional[Sequence[str]]) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="bench/eval_kodak.py", description=__doc__.split("\n")[0])
    ap.add_argument("--levels", default=None, help="comma-separated rate levels (default: all the model's)")
    ap.add_argument("--images", nargs="+", default=None, help="image paths or names inside --data (default: all PNGs)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"image folder (default {DEFAULT_DATA})")
    ap.add_argument("--out-dir", type=Path, default=REPO / "docs", help="where the .md and .png go (default docs/)")
    ap.add_argument("--json", type=Path, default=None, help="also write the per-image figures as JSON here")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    ap.add_argument("--no-msssim", action="store_true",
                    help="skip MS-SSIM (most of the run time; PSNR, bpp and BD figures are unaffected)")
    ap.add_argument("--no-rdoq", action="store_true",
                    help="encode with plain rounding instead of the default rate-distortion optimised symbols")
    args = ap.parse_args(argv)
    if args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    if not args.no_plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SystemExit("the RD plot needs matplotlib: pip install '.[bench]' (or pass --no-plot)") from None

    import cod_fast
    from cod_fast.models.default import WEIGHTS_DIR, WEIGHTS_FILE, default_model_info

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_start = load_averages()
    codec = cod_fast.load_model()
    info = default_model_info()
    levels = _parse_levels(args.levels, codec.levels)
    paths = _resolve_images(args.data, args.images)
    print(f"{len(paths)} image(s) x levels {levels}; model {codec!r}", flush=True)

    rows: list[ImageLevel] = []
    with torch.inference_mode():
        for i, p in enumerate(paths):
            img = load_rgb(p)
            res = evaluate_image(codec, p.name, img, levels,
                                 log=lambda s, i=i: print(f"[{i + 1}/{len(paths)}] {s}", flush=True),
                                 msssim=not args.no_msssim,
                                 encode_kwargs={"rdoq": False} if args.no_rdoq else None)
            rows.extend(res)
    summary = summarize(rows, levels)
    wall = time.perf_counter() - t_start

    digest = hashlib.sha256((Path(WEIGHTS_DIR) / WEIGHTS_FILE).read_bytes()).hexdigest()
    sha = info.get("sha256", digest)
    jpeg_ver = features.version("jpg")
    if features.check_feature("libjpeg_turbo"):
        jpeg_ver = f"-turbo {features.version('libjpeg_turbo')}, API {jpeg_ver}"
    else:
        jpeg_ver = f" {jpeg_ver}"
    webp_ver = features.version("webp")
    try:
        data_label = str(args.data.resolve().relative_to(REPO.parent))
        data_label = "../" + data_label
    except ValueError:
        data_label = str(args.data)
    script = Path(__file__).resolve()
    rel = script.relative_to(REPO) if script.is_relative_to(REPO) else script
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(shlex.quote(a) for a in [".venv/bin/python", str(rel), *argv]),
        "n_images": len(paths), "images": [p.name for p in paths], "data": data_label,
        "levels": levels, "rdoq": not args.no_rdoq, "wall_s": wall, "sha256": sha, "sha256_ok": sha == digest,
        "step": info.get("step"), "parameters": info.get("parameters"), "fingerprint": codec.fingerprint_hex,
        "overhead_bytes": "/".join(str(v) for v in sorted({r.overhead_bytes for r in rows if r.overhead_bytes is not None})) or "n/a",
        "cpu": cpu_name(), "cores": os.cpu_count(), "load_start": load_start, "load_end": load_averages(),
        "torch": torch.__version__, "threads": args.threads, "pillow": PIL.__version__,
        "libjpeg": jpeg_ver, "libwebp": webp_ver,
        "encode_s": float(np.mean([r.encode_s for r in rows])), "decode_s": float(np.mean([r.decode_s for r in rows])),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    png = None
    if not args.no_plot:
        png = PNG_NAME
        plot_rd(summary, args.out_dir / PNG_NAME,
                f"Kodak ({len(paths)} images): cod_fast default model (step {meta['step']}, "
                f"sha256 {sha[:12]})\nvs Pillow JPEG / WebP at matched bpp (means per level)")
    (args.out_dir / MD_NAME).write_text(markdown_report(summary, meta, png), encoding="utf-8")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"meta": meta, "summary": summary, "rows": [asdict(r) for r in rows]}
        args.json.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    for e in summary["levels"]:
        parts = [f"level {e['level']:g}: {e['bpp']:.4f} bpp {e['psnr']:.2f} dB {_f(e['msssim'], '.4f')}"]
        for n, a in e["anchors"].items():
            parts.append(f"{n} {_f(a['psnr'], '.2f')} dB ({a['matched']}/{e['n']}) Δ {_f(a['d_psnr'], '+.2f')}")
        print(" | ".join(parts))
    for n, b in summary["bd"].items():
        print(f"vs {n}: BD-rate {_f(b['bd_rate_pct'], '+.1f')} %  BD-PSNR {_f(b['bd_psnr_db'], '+.2f')} dB  "
              f"mean Δ PSNR {_f(b['mean_d_psnr'], '+.2f')} dB")
    print(f"wrote {args.out_dir / MD_NAME}" + (f", {args.out_dir / PNG_NAME}" if png else "")
          + (f", {args.json}" if args.json else "") + f" in {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
