"""Rate-distortion evaluation of a model on a folder of images (``cod-fast eval DIR``).

For every image and every rate point: ``codec.encode`` gives the container file (bpp = 8 x file
bytes / (H x W), header and CRCs included), ``codec.decode`` the uint8 reconstruction; PSNR (RGB,
8-bit, ``10 log10(255^2 / MSE)`` over all channels) and MS-SSIM come from ``cod_fast.metrics``;
encode and decode wall times are recorded. Rate points: the bundled default model's rate levels
(``quality``, default every level 0 .. levels-1); the other codecs have one rate, so one point.

Output: a JSON file in CompressAI's results layout, ``{"name", "description", "results": {"bpp",
"psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time"}}`` (per-point means over the images:
``python -m compressai.utils.plot --results FILE`` reads it), plus ``"levels"``, ``"per_image"``
(``{image: {"bpp": [...], "psnr-rgb": [...], ...}}``, the same layout per image) and ``"meta"``;
an RD plot (PSNR against bpp) with ``--plot`` when matplotlib is installed.

The figures of ``docs/kodak_default.md`` (model columns) come from the same measurement:
``bench/eval_kodak.py`` calls :func:`measure` for the model and adds the Pillow anchors (JPEG, WebP, AVIF, JPEG XL, HEIC).

This module imports no torch at import time (the CLI builds its parser from it).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["EvalResult", "Point", "add_parser", "evaluate", "measure", "rate_points"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


@dataclass
class Point:
    """One image at one rate point. ``msssim`` is None when it was not computed."""

    image: str
    height: int
    width: int
    level: float | None
    bytes: int
    bpp: float
    psnr: float
    msssim: float | None
    encode_s: float
    decode_s: float


def rate_points(codec: Any, levels: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """Encode keyword sets of the rate points: ``[{"quality": l}, ...]`` for the default model
    (``levels``, default all of its levels); ``[{}]`` for one-rate codecs (ValueError with levels)."""
    if "quality" in getattr(codec, "encode_settings", ()):  # a variable-rate codec (the default model)
        lv = list(range(codec.levels)) if levels is None else [float(v) for v in levels]
        for v in lv:
            if not (math.isfinite(v) and 0 <= v <= codec.levels - 1):
                raise ValueError(f"level {v} outside [0, {codec.levels - 1}] for the default model")
        return [{"quality": float(v)} for v in lv]
    if levels is not None:
        raise ValueError(f"{type(codec).__name__} has one rate: --levels is for the bundled default model")
    return [{}]


def measure(codec: Any, image: Any, name: str, params: dict[str, Any], msssim: bool = True,
            level: float | None = None) -> tuple[Point, bytes, Any]:
    """Encode + decode ``image`` (anything ``encode`` takes) with ``params``; returns (Point, the
    container bytes, the uint8 [3, H, W] reconstruction). RuntimeError when the decoder returns
    another shape or dtype."""
    import torch  # local: import time (the CLI imports this module for its parser)

    from .image_io import to_uint8_chw  # local: import time (the CLI imports this module for its parser)
    from .metrics import ms_ssim, psnr  # local: import time (the CLI imports this module for its parser)

    ref = to_uint8_chw(image)
    _, h, w = ref.shape
    given = ref if isinstance(image, (str, os.PathLike)) else image  # file reading is not encode time
    t0 = time.perf_counter()
    data = codec.encode(given, **params)
    t1 = time.perf_counter()
    rec = codec.decode(data)
    t2 = time.perf_counter()
    if rec.dtype != torch.uint8 or tuple(rec.shape) != (3, h, w):
        raise RuntimeError(f"codec decoded {tuple(rec.shape)} {rec.dtype}, expected uint8 (3, {h}, {w})")
    p = Point(name, h, w, level, len(data), 8.0 * len(data) / (h * w), psnr(ref, rec),
              ms_ssim(ref, rec) if msssim else None, t1 - t0, t2 - t1)
    return p, data, rec


_KEYS = (("bpp", "bpp"), ("psnr-rgb", "psnr"), ("ms-ssim-rgb", "msssim"), ("encoding_time", "encode_s"),
         ("decoding_time", "decode_s"))


def _curves(points: Sequence[Point], n_levels: int) -> dict[str, list[float]]:
    """CompressAI ``results`` of ``points`` (grouped per rate point, in order; means over images)."""
    out: dict[str, list[float]] = {}
    for key, attr in _KEYS:
        values = []
        for i in range(n_levels):
            vals = [getattr(p, attr) for p in points[i::n_levels]]
            if any(v is None for v in vals):
                break
            values.append(float(statistics.fmean(vals)))
        else:
            out[key] = values
    return out


@dataclass
class EvalResult:
    """Points of ``evaluate`` (image-major: for each image, every rate point in order)."""

    name: str
    description: str
    levels: list[float | None]
    points: list[Point]
    meta: dict[str, Any]

    def results(self) -> dict[str, list[float]]:
        """Per rate point means over the images, CompressAI keys (``bpp``, ``psnr-rgb``, ...)."""
        return _curves(self.points, len(self.levels))

    def per_image(self) -> dict[str, dict[str, list[float]]]:
        """``{image: {"bpp": [...], "psnr-rgb": [...], ...}}`` (one value per rate point)."""
        n = len(self.levels)
        return {self.points[i].image: _curves(self.points[i:i + n], n) for i in range(0, len(self.points), n)}

    def to_json(self) -> dict[str, Any]:
        """CompressAI's layout plus ``levels``, ``per_image``, ``points`` and ``meta``."""
        return {"name": self.name, "description": self.description, "results": self.results(),
                "levels": self.levels, "per_image": self.per_image(), "points": [asdict(p) for p in self.points],
                "meta": self.meta}

    def summary(self) -> str:
        """A table: one line per rate point with the means."""
        r = self.results()
        lines = [f"{'level':>6} {'bpp':>8} {'PSNR dB':>8} {'MS-SSIM':>8} {'enc s':>7} {'dec s':>7}"]
        for i, lv in enumerate(self.levels):
            ms = f"{r['ms-ssim-rgb'][i]:8.4f}" if "ms-ssim-rgb" in r else f"{'-':>8}"
            lines.append(f"{('-' if lv is None else f'{lv:g}'):>6} {r['bpp'][i]:8.4f} {r['psnr-rgb'][i]:8.2f} {ms} "
                         f"{r['encoding_time'][i]:7.3f} {r['decoding_time'][i]:7.3f}")
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike) -> None:
        """RD plot (mean PSNR against mean bpp, and each image faintly) to ``path``; ImportError
        without matplotlib."""
        import matplotlib  # local: optional dependency (matplotlib)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # local: optional dependency (matplotlib)

        fig, ax = plt.subplots(figsize=(6, 4.5))
        for curves in self.per_image().values():
            ax.plot(curves["bpp"], curves["psnr-rgb"], color="0.8", linewidth=0.7)
        r = self.results()
        ax.plot(r["bpp"], r["psnr-rgb"], "o-", label=f"{self.name} (mean of {len(self.per_image())} images)")
        ax.set_xlabel("bpp")
        ax.set_ylabel("PSNR-RGB (dB)")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(str(path), dpi=120)
        plt.close(fig)


def image_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files of ``inputs`` (files as given, folders' images sorted by name)."""
    out: list[Path] = []
    for i in inputs:
        p = Path(i)
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist")
    if not out:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, inputs))}")
    return out


def evaluate(inputs: Sequence[str | os.PathLike] | str | os.PathLike, model: Any = None, *,
             levels: Sequence[float] | None = None, msssim: bool = True, threads: int | None = None,
             name: str | None = None, log: Callable[[str], None] | None = None, refine: int = 0) -> EvalResult:
    """Evaluate ``model`` (a codec or what ``cod_fast.encode`` takes; None: the bundled default
    model) on image files / folders ``inputs`` at each rate point (``rate_points``).

    ``refine``: steps of the default model's encoder-side latent refinement
    (``DefaultCodec.encode(refine=...)``; 0: none); ValueError for a codec that does not take it.

    ``threads``: torch threads for the run (restored after; the published figures use 1);
    ``log``: called with one line per image and point. Returns an :class:`EvalResult`.
    """
    import torch  # local: import time (the CLI imports this module for its parser)

    from . import __version__  # local: import time (the CLI imports this module for its parser)
    from .api import resolve_model  # local: import time (the CLI imports this module for its parser)
    from .references import load_model  # local: import time (the CLI imports this module for its parser)

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files = image_files(inputs)
    codec = resolve_model(model) if model is not None else load_model()
    points_params = rate_points(codec, levels)
    if refine:
        if "refine" not in getattr(codec, "encode_settings", ()):
            raise ValueError(f"{type(codec).__name__} has no latent refinement: --refine is for the default model")
        points_params = [{**pp, "refine": int(refine)} for pp in points_params]
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    t_start = time.perf_counter()
    points: list[Point] = []
    try:
        for f in files:
            for params in points_params:
                p, _, _ = measure(codec, f, f.name, params, msssim=msssim, level=params.get("quality"))
                points.append(p)
                if log is not None:
                    ms = "-" if p.msssim is None else f"{p.msssim:.4f}"
                    lv = "" if p.level is None else f" level {p.level:g}"
                    log(f"{p.image}{lv}: {p.bpp:.4f} bpp {p.psnr:.2f} dB ms-ssim {ms} "
                        f"(enc {p.encode_s:.2f}s dec {p.decode_s:.2f}s)")
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(saved)
    meta = {"fingerprint": codec.fingerprint.hex(), "codec": type(codec).__name__, "images": len(files),
            "threads": used_threads, "torch": torch.__version__, "cod_fast": __version__,
            "wall_s": time.perf_counter() - t_start, "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "load_average": " ".join(f"{v:.2f}" for v in os.getloadavg())}
    label = name or ("cod_fast-default" if "quality" in getattr(codec, "encode_settings", ()) else f"cod_fast-{type(codec).__name__}")
    desc = (f"cod_fast {__version__} {type(codec).__name__} {codec.fingerprint.hex()}: bpp of the container file, "
            "PSNR/MS-SSIM on RGB 8-bit, wall times per image")
    return EvalResult(label, desc, [pp.get("quality") for pp in points_params], points, meta)


# ----------------------------------------------------------------------------------------------
# CLI (``cod-fast eval``): the parser is built without importing torch
# ----------------------------------------------------------------------------------------------

def add_parser(sub: Any, model_args: Callable[[argparse.ArgumentParser, bool], None]) -> None:
    """Register ``eval`` on the CLI's subparsers (``model_args`` adds --model/--checkpoint/...)."""
    e = sub.add_parser("eval", help="rate-distortion evaluation on a folder of images (CompressAI JSON, RD plot)")
    e.add_argument("inputs", nargs="+", type=Path, help="image files or folders")
    model_args(e, False)
    e.add_argument("--levels", help="comma-separated rate levels of the default model (default: all)")
    e.add_argument("--qualities", dest="levels", help="alias of --levels")
    e.add_argument("--json", type=Path, help="write the results (CompressAI layout + per image) here")
    e.add_argument("--plot", type=Path, help="write an RD plot (PNG) here (needs matplotlib)")
    e.add_argument("--no-msssim", action="store_true", help="skip MS-SSIM (the slow metric)")
    e.add_argument("--threads", type=int, help="torch threads (docs/kodak_default.md uses 1)")
    e.add_argument("--name", help="curve name in the JSON / plot")
    e.add_argument("--refine", type=int, default=0,
                   help="default model: steps of encoder-side latent refinement (default 0: none)")
    e.add_argument("-q", "--quiet", action="store_true", help="no per-image lines")


def run_cli(args: argparse.Namespace, codec: Any) -> int:
    """Run ``cod-fast eval`` with a loaded codec; prints per-image lines (stderr) and the table."""
    levels = None
    if args.levels:
        try:
            levels = [float(v) for v in str(args.levels).split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--levels must be comma-separated numbers, got {args.levels!r}") from None
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    res = evaluate(args.inputs, codec, levels=levels, msssim=not args.no_msssim, threads=args.threads,
                   name=args.name, log=log, refine=args.refine)
    print(res.summary())
    print(f"{res.meta['images']} image(s), {len(res.levels)} point(s), {res.meta['wall_s']:.1f} s, "
          f"{res.meta['threads']} thread(s), fingerprint {res.meta['fingerprint']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res.to_json(), indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        try:
            res.plot(args.plot)
            print(f"wrote {args.plot}")
        except ImportError:
            print("cod-fast: --plot needs matplotlib (pip install matplotlib); no plot written", file=sys.stderr)
    return 0
