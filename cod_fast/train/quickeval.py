"""Quick rate-distortion check of the default model against JPEG (Pillow) at matched bpp.

``python -m cod_fast.train.quickeval IMAGE [IMAGE ...] [--weights DIR] [--levels 0,2,4]``

For each image and rate level: real bits (the bytes of both rANS streams from ``compress``) per
pixel, and the PSNR of the decoded image (RGB, 8-bit, peak 255). JPEG (Pillow, 4:2:0, quality
1..95) is run on the same image and its PSNR is interpolated linearly in bpp at the model's bpp
(each image separately); a bpp outside JPEG's range is reported as such. Prints one line per
image and level and the mean over images per level.
"""
from __future__ import annotations

import argparse
import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cod_fast.models.default import load_default_model


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / max(mse, 1e-12))


def jpeg_curve(img: np.ndarray) -> list[tuple[float, float]]:
    """(bpp, PSNR) of Pillow JPEG at qualities 1..95, sorted by bpp."""
    h, w = img.shape[:2]
    pts = []
    for q in range(1, 96):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=q)
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        pts.append((8 * len(buf.getvalue()) / (h * w), psnr_u8(img, dec)))
    return sorted(pts)


def jpeg_psnr_at(curve: list[tuple[float, float]], bpp: float) -> float | None:
    xs = [p[0] for p in curve]
    if bpp < xs[0] or bpp > xs[-1]:
        return None
    return float(np.interp(bpp, xs, [p[1] for p in curve]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m cod_fast.train.quickeval", description=__doc__.split("\n")[0])
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--weights", type=Path, default=None, help="folder with default.safetensors/.json")
    ap.add_argument("--levels", type=str, default=None, help="comma-separated rate levels (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_default_model(weights_dir=args.weights)
    levels = [float(v) for v in args.levels.split(",")] if args.levels else list(range(model.cfg.levels))
    sums: dict[float, list[tuple[float, float, float | None]]] = {lv: [] for lv in levels}
    for path in args.images:
        img = np.asarray(Image.open(path).convert("RGB"))
        x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255.0
        curve = jpeg_curve(img)
        for lv in levels:
            enc = model.compress(x, quality=lv, threads=1)
            bits = 8 * sum(len(s) for s in enc["strings"])
            bpp = bits / (img.shape[0] * img.shape[1])
            x_hat = model.decompress(enc["strings"], enc["shape"], quality=lv, image_size=enc["image_size"], threads=1)
            rec = (x_hat[0].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
            p = psnr_u8(img, rec)
            j = jpeg_psnr_at(curve, bpp)
            sums[lv].append((bpp, p, j))
            js = f"{j:.2f}" if j is not None else "n/a"
            print(f"{path.name} level {lv:g}: {bpp:.4f} bpp  PSNR {p:.2f} dB  JPEG@same bpp {js} dB")
    for lv in levels:
        rows = sums[lv]
        b = np.mean([r[0] for r in rows])
        p = np.mean([r[1] for r in rows])
        js = [r[2] for r in rows if r[2] is not None]
        jtxt = f"{np.mean(js):.2f} dB over {len(js)} images" if js else "n/a"
        print(f"mean level {lv:g}: {b:.4f} bpp  PSNR {p:.2f} dB  JPEG {jtxt}")


if __name__ == "__main__":
    main()
