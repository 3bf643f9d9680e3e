"""Kodak rate-distortion report of the default model against Pillow's JPEG and WebP and, where
their plugins are installed, AVIF, JPEG XL and HEIC.

For every image (default: the 24 Kodak PNGs in ``shared/data/kodak`` beside the checkout or a
folder above it) and every rate level of the default codec (``cod_fast.load_model()``, or
``--weights DIR``: the files of a candidate release, loaded with
``cod_fast.codecs.default.load_default_codec_from`` before it is installed):

* the model: ``codec.encode(image, quality=level)`` gives the container file; bpp is
  ``8 * len(file) / (H * W)`` (header, section lengths and CRCs included); ``codec.decode`` gives
  the uint8 reconstruction; PSNR (RGB, 8-bit, ``10 log10(255^2 / MSE)`` over all channels) and
  MS-SSIM come from ``cod_fast.metrics``.
* each anchor (``--anchors``, default all available; ``bench/kodak_anchors.py`` has their
  settings and why a plugin-less one is skipped): the two anchor files that bracket the model's
  file size are found (bisection over quality where the size grows with quality -- JPEG, WebP,
  AVIF, HEIC; a scan of every quality and the Pareto frontier where it does not -- JPEG XL), and
  PSNR and MS-SSIM are interpolated linearly in bpp between them at exactly the model's bpp. When
  even the smallest file is larger (or the largest smaller) than the model's, the anchor cannot
  reach that bpp: the image is "unmatched" at that level and left out of that anchor's means (the
  report gives the count). Each anchor is also swept over a grid of qualities: its own RD curve
  in the plot.

Per level it reports the means over images; differences are means of the per-image differences
(model - anchor) over the matched images. BD-rate and BD-PSNR (Bjontegaard: a polynomial of
degree min(3, points - 1) in log-rate vs PSNR, integrated over the common interval) are computed
on the per-level mean curves (over the images matched at every level). A per-image table follows.

Nothing is cached on disk. ``--jobs N`` spreads the images over N worker processes (spawned,
each with its own codec and ``--threads`` torch threads); the figures are those of ``--jobs 1``
(timings aside) and come in image order. Writes ``kodak_default.md`` (keeping any tail section
another tool appended, see ``kodak_report.TAIL_MARKERS``) and ``kodak_default_rd.png`` into
``--out-dir`` (default ``docs/``) and, with ``--json``, the raw per-image figures and sweeps::

    .venv/bin/python bench/eval_kodak.py [--levels 0,1,2,3,4] [--images kodim01.png ...]
        [--data DIR] [--out-dir docs] [--json FILE] [--threads 1] [--jobs 1]
        [--anchors jpeg,webp,avif,jxl,heic] [--weights DIR] [--no-msssim] [--no-plot] [--no-rdoq]
        [--refine STEPS]

The plot needs matplotlib, the optional anchors pillow-heif and pillow-jxl-plugin (``pip install
.[bench]``) and Pillow built with libavif (or pillow-avif-plugin); ``--no-plot`` skips the plot.
MS-SSIM (float64, about 1.3 s per Kodak file on one core, for every model file and bracketing
anchor file; the sweeps are PSNR only) takes most of the run: ``--no-msssim`` leaves it out. AVIF at
speed 4 (about 1-3 s per Kodak encode) and the JPEG XL scan (100 encodes per image) come next.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import multiprocessing
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import cpu_name, load_averages  # noqa: E402
from kodak_anchors import (  # noqa: E402,F401  (re-exported: the tests and other scripts use them here)
    ANCHOR_KEYS,
    ANCHORS,
    AVIF,
    HEIC,
    JPEG,
    JXL,
    WEBP,
    AnchorCurve,
    AnchorPoint,
    PillowCodec,
    SweepPoint,
    anchor_versions,
    bisect_quality,
    frontier_bracket,
    grid_bisect,
    interp_at,
    interpolation_search,
    make_anchor,
    pareto_frontier,
    psnr_msssim,
    resolve_anchors,
)
from kodak_eval import (  # noqa: E402,F401
    ImageLevel,
    ImageResult,
    Job,
    evaluate_image,
    evaluate_image_full,
    init_worker,
    load_codec,
    load_rgb,
    run_job,
    set_codec,
)
from kodak_report import (  # noqa: E402,F401
    TAIL_MARKERS,
    _f,
    bd_metrics,
    markdown_report,
    plot_rd,
    preserved_tail,
    summarize,
    verdict,
    write_markdown,
)

REPO = Path(__file__).resolve().parents[1]


def plot_title(meta: dict[str, Any], anchors: Sequence[Any]) -> str:
    """The RD plot's title from the run's ``meta`` (images, step, weights hash, encoder settings)."""
    refine = f", encode refine={meta['refine']}" if meta.get("refine") else ""
    return (f"Kodak ({meta['n_images']} images): cod_fast default model (step {meta['step']}, "
            f"sha256 {meta['sha256'][:12]}{refine})\nvs {' / '.join(a.name for a in anchors) or 'no anchor'} "
            "(anchors: quality sweeps; means per level / per quality)")


def _default_data() -> Path:
    """``shared/data/kodak`` next to the checkout or next to one of its parent folders (a git
    worktree under another folder finds the main checkout's)."""
    for parent in REPO.parents:
        if (parent / "shared" / "data" / "kodak").is_dir():
            return parent / "shared" / "data" / "kodak"
    return REPO.parent / "shared" / "data" / "kodak"


DEFAULT_DATA = _default_data()
MD_NAME = "kodak_default.md"
PNG_NAME = "kodak_default_rd.png"


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


def _parse_anchors(text: Optional[str]) -> list[str]:
    """``--anchors`` (comma-separated keys of ``ANCHOR_KEYS``) -> keys, in the order given."""
    if text is None:
        return list(ANCHOR_KEYS)
    keys = [k.strip().lower() for k in text.split(",") if k.strip()]
    bad = [k for k in keys if k not in ANCHOR_KEYS]
    if bad or len(set(keys)) != len(keys):
        raise SystemExit(f"--anchors takes distinct names among {','.join(ANCHOR_KEYS)}, got {text!r}")
    return keys


def run_jobs(jobs: Sequence[Job], workers: int, weights: Optional[str], threads: int, codec: Any) -> Iterator[ImageResult]:
    """The results of ``jobs``, in their order: in this process with ``codec`` (``workers == 1``,
    log lines printed as measured), or in ``workers`` spawned processes, each loading its own codec
    (the lines of an image printed when it is done)."""
    n = len(jobs)
    if workers <= 1:
        set_codec(codec)
        for i, job in enumerate(jobs):
            prefix = f"[{i + 1}/{n}] "
            yield run_job(job, log=lambda s: print(prefix + s, flush=True))
        return
    ctx = multiprocessing.get_context("spawn")  # fork would copy the torch and native thread pools' state
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker,
                             initargs=(weights, threads)) as pool:
        for i, res in enumerate(pool.map(run_job, jobs)):
            for s in res.log:
                print(f"[{i + 1}/{n}] {s}", flush=True)
            yield res


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
    ap = argparse.ArgumentParser(prog="bench/eval_kodak.py", description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--levels", default=None, help="comma-separated rate levels (default: all the model's)")
    ap.add_argument("--images", nargs="+", default=None, help="image paths or names inside --data (default: all PNGs)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"image folder (default {DEFAULT_DATA})")
    ap.add_argument("--out-dir", type=Path, default=REPO / "docs", help="where the .md and .png go (default docs/)")
    ap.add_argument("--json", type=Path, default=None, help="also write the per-image figures as JSON here")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="worker processes over the images (default 1: this process); same figures, image order")
    ap.add_argument("--anchors", default=None,
                    help=f"comma-separated anchors among {','.join(ANCHOR_KEYS)} (default: all; those whose "
                         "plugin is missing are skipped with a line in the report)")
    ap.add_argument("--weights", type=Path, default=None,
                    help="folder with default.json, default.safetensors and default_int.safetensors: evaluate "
                         "those weights instead of the installed ones")
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    ap.add_argument("--no-msssim", action="store_true",
                    help="skip MS-SSIM (most of the run time; PSNR, bpp and BD figures are unaffected)")
    ap.add_argument("--no-rdoq", action="store_true",
                    help="encode with plain rounding instead of the default rate-distortion optimised symbols")
    ap.add_argument("--refine", type=int, default=0, metavar="STEPS",
                    help="steps of encoder-side latent refinement (encode(..., refine=STEPS); default 0: none; "
                         "about 0.7 s per step per Kodak image on two cores)")
    args = ap.parse_args(argv)
    if args.refine < 0:
        raise SystemExit("--refine must be >= 0")
    if args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    if args.jobs < 1:
        raise SystemExit("--jobs must be >= 1")
    if args.weights is not None and not args.weights.is_dir():
        raise SystemExit(f"--weights {args.weights}: not a folder")
    if not args.no_plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SystemExit("the RD plot needs matplotlib: pip install '.[bench]' (or pass --no-plot)") from None
    anchor_keys = _parse_anchors(args.anchors)

    from cod_fast.models.default import WEIGHTS_DIR, WEIGHTS_FILE, default_model_info

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_start = load_averages()
    anchors, skipped = resolve_anchors(anchor_keys)
    for key, reason in skipped:
        print(f"anchor {key} skipped: {reason}", flush=True)
    weights = str(args.weights.resolve()) if args.weights is not None else None
    codec = load_codec(weights)
    weights_dir = Path(weights) if weights is not None else Path(WEIGHTS_DIR)
    info = default_model_info(weights_dir)
    levels = _parse_levels(args.levels, codec.levels)
    paths = _resolve_images(args.data, args.images)
    workers = min(args.jobs, len(paths))
    print(f"{len(paths)} image(s) x levels {levels}; model {codec!r}; anchors "
          f"{', '.join(a.name for a in anchors) or 'none'}; {workers} process(es)", flush=True)

    jobs = [Job(str(p), tuple(levels), tuple(anchors), not args.no_msssim, not args.no_rdoq, args.refine) for p in paths]
    results = list(run_jobs(jobs, workers, weights, args.threads, codec))
    rows = [r for res in results for r in res.rows]
    summary = summarize(rows, levels, anchors, [res.sweeps for res in results])
    wall = time.perf_counter() - t_start

    weights_file = weights_dir / WEIGHTS_FILE
    digest = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    sha = info.get("sha256", digest)
    try:
        data_label = str(args.data.resolve().relative_to(REPO.parent))
        data_label = "../" + data_label
    except ValueError:
        data_label = str(args.data)
    script = Path(__file__).resolve()
    rel = script.relative_to(REPO) if script.is_relative_to(REPO) else script
    anchor_stats = {}
    for a in anchors:
        st = [res.stats[a.name] for res in results]
        anchor_stats[a.name] = {"images": len(st), "encoded_per_image": float(np.mean([s.encoded for s in st])),
                                "encode_s_per_image": float(np.mean([s.encode_s for s in st])),
                                "inversions": sum(s.inversions for s in st)}
    weights_label = (str(weights_file.relative_to(REPO)) if weights_file.resolve().is_relative_to(REPO)
                     else str(weights_file))
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(shlex.quote(a) for a in [".venv/bin/python", str(rel), *argv]),
        "n_images": len(paths), "images": [p.name for p in paths], "data": data_label,
        "levels": levels, "rdoq": not args.no_rdoq, "refine": args.refine, "wall_s": wall, "sha256": sha, "sha256_ok": sha == digest,
        "weights": weights, "weights_file": weights_label,
        "step": info.get("step"), "parameters": info.get("parameters"), "fingerprint": codec.fingerprint_hex,
        "overhead_bytes": "/".join(str(v) for v in sorted({r.overhead_bytes for r in rows if r.overhead_bytes is not None})) or "n/a",
        "cpu": cpu_name(), "cores": os.cpu_count(), "load_start": load_start, "load_end": load_averages(),
        "torch": torch.__version__, "threads": args.threads, "jobs": workers,
        "versions": anchor_versions(), "anchors": [a.name for a in anchors], "skipped": skipped,
        "anchor_stats": anchor_stats,
        "encode_s": float(np.mean([r.encode_s for r in rows])), "decode_s": float(np.mean([r.decode_s for r in rows])),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    png = None
    if not args.no_plot:
        png = PNG_NAME
        plot_rd(summary, args.out_dir / PNG_NAME, plot_title(meta, anchors), anchors)
    write_markdown(args.out_dir / MD_NAME, markdown_report(summary, meta, png, anchors, rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"meta": meta, "summary": summary, "rows": [asdict(r) for r in rows],
                   "sweeps": {res.image: {k: [asdict(p) for p in v] for k, v in res.sweeps.items()} for res in results},
                   "anchor_stats": {res.image: {k: asdict(v) for k, v in res.stats.items()} for res in results},
                   "image_wall_s": {res.image: res.wall_s for res in results}}
        args.json.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    for e in summary["levels"]:
        parts = [f"level {e['level']:g}: {e['bpp']:.4f} bpp {e['psnr']:.2f} dB {_f(e['msssim'], '.4f')}"]
        for n, a in e["anchors"].items():
            parts.append(f"{n} {_f(a['psnr'], '.2f')} dB ({a['matched']}/{e['n']}) Δ {_f(a['d_psnr'], '+.2f')}")
        print(" | ".join(parts))
    for n, b in summary["bd"].items():
        print(f"vs {n}: BD-rate {_f(b['bd_rate_pct'], '+.1f')} %  BD-PSNR {_f(b['bd_psnr_db'], '+.2f')} dB  "
              f"mean Δ PSNR {_f(b['mean_d_psnr'], '+.2f')} dB  ({b['images']} images)")
    print(f"wrote {args.out_dir / MD_NAME}" + (f", {args.out_dir / PNG_NAME}" if png else "")
          + (f", {args.json}" if args.json else "") + f" in {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
