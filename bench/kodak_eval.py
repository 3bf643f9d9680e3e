"""One Kodak image through the model and every anchor (``bench/eval_kodak.py``), in this process
or in a worker of its process pool.

``evaluate_image_full`` encodes the image with the model at each level and matches each anchor
to the model's file size (``kodak_anchors.AnchorCurve``); it also sweeps each anchor over its
quality grid for the RD plot. ``run_job`` is the same for a ``Job`` (an image path), with the
codec of the process (``init_worker``): the pool's workers and the serial path run the same code,
so ``--jobs N`` gives the figures of ``--jobs 1`` (timings aside), in image order.

Kept in a module of its own (importable by name from ``bench/``) so that the spawned workers can
unpickle its functions and results whatever name the driver was loaded under.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from kodak_anchors import ANCHORS, AnchorCurve, AnchorPoint, CurveStats, PillowCodec, SweepPoint
from PIL import Image


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


@dataclass
class ImageResult:
    """Everything measured on one image: one ``ImageLevel`` per level (in the order asked), each
    anchor's sweep points and matching cost, the log lines, and the wall time (s)."""

    image: str
    rows: list[ImageLevel]
    sweeps: dict[str, list[SweepPoint]]
    stats: dict[str, CurveStats]
    log: list[str]
    wall_s: float


def load_rgb(path: Path) -> np.ndarray:
    """An image file -> uint8 HWC RGB array."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _f(v: Optional[float], fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def evaluate_image_full(codec: Any, name: str, img: np.ndarray, levels: Sequence[float],
                        anchors: Sequence[PillowCodec] = ANCHORS,
                        log: Callable[[str], None] = print, msssim: bool = True,
                        encode_kwargs: Optional[dict[str, Any]] = None, sweep: bool = True) -> ImageResult:
    """Encode ``img`` (uint8 HWC RGB) with ``codec`` at each level and match every anchor to the
    model's file size; then (``sweep``) each anchor's points over its quality grid.
    ``msssim=False`` skips MS-SSIM (the slow metric): those fields are ``None``;
    ``encode_kwargs`` go to ``codec.encode`` (e.g. ``{"rdoq": False}``). Each level's log line
    goes to ``log`` as soon as it is measured."""
    from cod_fast.evaluate import measure  # the model's figures: the same code as `cod-fast eval`

    t0 = time.perf_counter()
    h, w = img.shape[:2]
    curves = {a.name: AnchorCurve(a, img, msssim) for a in anchors}
    rows, lines = [], []
    for lv in levels:
        pt, data, _ = measure(codec, img, name, {"quality": lv, **(encode_kwargs or {})}, msssim=msssim, level=lv)
        p, m = pt.psnr, pt.msssim
        row = ImageLevel(name, h, w, float(lv), pt.bytes, pt.bpp, p, m, pt.encode_s, pt.decode_s)
        if hasattr(codec, "parse"):  # container codecs: file size minus the section payloads
            row.overhead_bytes = len(data) - sum(len(v) for v in codec.parse(data)[0].sections.values())
        for a in anchors:
            row.anchors[a.name] = curves[a.name].at_bytes(len(data))
        rows.append(row)
        parts = [f"{name} level {lv:g}: {row.bpp:.4f} bpp {p:.2f} dB ms-ssim {_f(m, '.4f')}"
                 f" (enc {row.encode_s:.2f}s dec {row.decode_s:.2f}s)"]
        for a in anchors:
            ap = row.anchors[a.name]
            parts.append(f"{a.name} {ap.psnr:.2f} dB (q {ap.q_lo}-{ap.q_hi})" if ap.matched
                         else f"{a.name} unmatched (q {ap.q_lo}-{ap.q_hi})")
        lines.append(" | ".join(parts))
        log(lines[-1])
    sweeps = {a.name: curves[a.name].sweep() for a in anchors} if sweep else {}
    stats = {a.name: curves[a.name].stats() for a in anchors}
    return ImageResult(name, rows, sweeps, stats, lines, time.perf_counter() - t0)


def evaluate_image(codec: Any, name: str, img: np.ndarray, levels: Sequence[float],
                   anchors: Sequence[PillowCodec] = ANCHORS,
                   log: Callable[[str], None] = print, msssim: bool = True,
                   encode_kwargs: Optional[dict[str, Any]] = None) -> list[ImageLevel]:
    """``evaluate_image_full`` without the sweep: one ``ImageLevel`` per level, in the order of
    ``levels``."""
    return evaluate_image_full(codec, name, img, levels, anchors, log, msssim, encode_kwargs, sweep=False).rows


# ----------------------------------------------------------------------------- jobs

@dataclass(frozen=True)
class Job:
    """One image to evaluate: what ``run_job`` needs besides the process's codec."""

    path: str
    levels: tuple[float, ...]
    anchors: tuple[PillowCodec, ...]
    msssim: bool
    rdoq: bool
    refine: int = 0  # steps of encoder-side latent refinement (``DefaultCodec.encode(refine=...)``)

    def encode_kwargs(self) -> Optional[dict[str, Any]]:
        """What ``codec.encode`` gets besides the quality: refinement (the encoder then picks its
        own rounding) and ``rdoq=False`` when asked."""
        kw: dict[str, Any] = {"refine": self.refine} if self.refine else {}
        if not self.rdoq:
            kw["rdoq"] = False
        return kw or None


_codec: Any = None


def load_codec(weights: Optional[str]) -> Any:
    """The default codec: the installed one (``cod_fast.load_model()``), or the files of the
    folder ``weights`` (``load_default_codec_from``: a candidate release, before it is installed)."""
    if weights is None:
        import cod_fast

        return cod_fast.load_model()
    from cod_fast.codecs.default import load_default_codec_from

    return load_default_codec_from(weights)


def set_codec(codec: Any) -> None:
    """Use ``codec`` for this process's ``run_job`` calls (the serial path: the driver's codec)."""
    global _codec
    _codec = codec


def init_worker(weights: Optional[str], threads: int) -> None:
    """Pool initializer: ``threads`` torch threads and this worker's own codec."""
    torch.set_num_threads(threads)
    set_codec(load_codec(weights))


def run_job(job: Job, log: Optional[Callable[[str], None]] = None) -> ImageResult:
    """Evaluate ``job`` with the process's codec (``set_codec`` / ``init_worker``). ``log`` gets
    each line as it is measured (the serial path); the lines are in the result either way."""
    if _codec is None:
        raise RuntimeError("no codec in this process: call set_codec or init_worker first")
    with torch.inference_mode():
        return evaluate_image_full(_codec, Path(job.path).name, load_rgb(Path(job.path)), job.levels, job.anchors,
                                   log=log or (lambda s: None), msssim=job.msssim,
                                   encode_kwargs=job.encode_kwargs())
