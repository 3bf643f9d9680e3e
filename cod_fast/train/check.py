"""Cheap Kodak spot check of training checkpoints against WebP at the same size.

``python -m cod_fast.train.check --ckpt default RUN/last.pt [RUN/model_5000.pt ...]
[--images kodim01.png ...] [--data DIR] [--levels 0,2,4] [--no-rdoq] [--no-half]``

For each checkpoint (``default``: the shipped weights; a weights folder; a training checkpoint
``last.pt`` (``last.pt@ema``: its moving average) or a ``model_<step>.pt``/``ema_<step>.pt``
snapshot) the model is built as ``--init-from`` reads it,
its weights rounded to float16 as ``python -m cod_fast.train.export`` ships them (``--no-half``
keeps float32), and every image is coded at each level with ``compress`` (RDOQ on, as the
codec's default; release 1's float32 entropy parameters, since a checkpoint has no fixed-point
tables yet) and decoded with ``decompress``. bpp counts the bytes of both rANS streams (the
container adds a header of a few dozen bytes); PSNR is RGB, 8-bit. WebP (Pillow, lossy,
method 6) is bisected to the same byte count and its PSNR interpolated linearly in bytes, as
``bench/eval_kodak.py`` does. Prints one line per checkpoint, image and level, then per
checkpoint and level the means and the mean PSNR difference to WebP.

Models with the checkerboard context (releases 3 and 4 and their checkpoints) are refused with
``NotImplementedError`` naming the route that measures them (export, then
``bench/eval_kodak.py --weights DIR``): they code only with fixed-point parameters, which a
checkpoint does not have until ``tools/export_default_int.py`` derives them.

Default images: four Kodak images (kodim01, 05, 15, 23) from ``--data`` (default
``shared/data/kodak`` beside the checkout or beside a folder above it); about 10 s per image and level on one thread.
"""
from __future__ import annotations

import argparse
import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cod_fast.models.default.model import DefaultCodecModel, DefaultConfig
from cod_fast.train.__main__ import init_source

DEFAULT_IMAGES = ("kodim01.png", "kodim05.png", "kodim15.png", "kodim23.png")
def _default_data() -> Path:
    """``shared/data/kodak`` next to the checkout or next to one of its parent folders."""
    repo = Path(__file__).resolve().parents[2]
    for parent in repo.parents:
        if (parent / "shared" / "data" / "kodak").is_dir():
            return parent / "shared" / "data" / "kodak"
    return repo.parent / "shared" / "data" / "kodak"


DEFAULT_DATA = _default_data()


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB, peak 255) of two uint8 arrays of one shape."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / max(mse, 1e-12))


def load_checkpoint_model(source: str, half: bool = True) -> DefaultCodecModel:
    """The model of ``source`` (as ``--init-from`` reads it), float32, eval mode; weights
    rounded through float16 when ``half``."""
    cfg, state = init_source(source)
    model = DefaultCodecModel(DefaultConfig.from_dict(cfg))
    if half:
        state = {k: v.half().float() for k, v in state.items()}
    model.load_state_dict(state)
    return model.eval()


def webp_psnr_at(img: np.ndarray, target: int) -> float | None:
    """PSNR of lossy WebP (method 6) interpolated at ``target`` bytes; None when no quality
    brackets it."""
    cache: dict[int, tuple[int, float]] = {}

    def point(q: int) -> tuple[int, float]:
        if q not in cache:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="WEBP", quality=q, method=6)
            with Image.open(io.BytesIO(buf.getvalue())) as im:
                cache[q] = (len(buf.getvalue()), psnr_u8(img, np.asarray(im.convert("RGB"))))
        return cache[q]

    lo, hi = 0, 100
    if point(lo)[0] > target or point(hi)[0] <= target:
        return None
    while hi - lo > 1:  # size(lo) <= target < size(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if point(mid)[0] <= target else (lo, mid)
    (s0, p0), (s1, p1) = point(lo), point(hi)
    return p0 + (p1 - p0) * (target - s0) / (s1 - s0)


def code_image(model: DefaultCodecModel, img: np.ndarray, level: float, rdoq: bool) -> tuple[int, float]:
    """(bytes of both streams, PSNR dB) of ``img`` (uint8 HWC RGB) at ``level``."""
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255.0
    enc = model.compress(x, quality=level, threads=1, rdoq=rdoq)
    x_hat = model.decompress(enc["strings"], enc["shape"], quality=level, image_size=enc["image_size"], threads=1)
    rec = (x_hat[0].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
    return sum(len(s) for s in enc["strings"]), psnr_u8(img, rec)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m cod_fast.train.check", description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", nargs="+", required=True, help="'default', weights folders or checkpoint files")
    ap.add_argument("--images", nargs="+", default=list(DEFAULT_IMAGES), help="paths, or names inside --data")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--levels", type=str, default="0,2,4")
    ap.add_argument("--no-rdoq", action="store_true", help="plain rounding instead of RDOQ")
    ap.add_argument("--no-half", action="store_true", help="keep float32 weights (no float16 rounding)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    levels = [float(v) for v in args.levels.split(",") if v.strip()]
    paths = [Path(p) if Path(p).exists() else args.data / p for p in args.images]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"images not found: {missing}")
    images = {p.name: np.asarray(Image.open(p).convert("RGB")) for p in paths}
    webp: dict[tuple[str, int], float | None] = {}
    summary = []
    for src in args.ckpt:
        model = load_checkpoint_model(src, half=not args.no_half)
        if model.context is not None:
            raise NotImplementedError(
                f"{src}: a model with the checkerboard context (layout 3: releases 3 and 4, the shipped default) codes only with "
                "its fixed-point parameters, which this float spot check does not build; export it "
                "(python -m cod_fast.train.export --ckpt RUN/last.pt --ema --out DIR, then "
                "python tools/export_default_int.py --weights DIR) and run python bench/eval_kodak.py --weights DIR "
                "--levels 0,2,4 --anchors webp --no-msssim --no-plot")
        rows: dict[float, list[tuple[float, float, float | None]]] = {lv: [] for lv in levels}
        for name, img in images.items():
            pixels = img.shape[0] * img.shape[1]
            for lv in levels:
                nbytes, p = code_image(model, img, lv, rdoq=not args.no_rdoq)
                if (name, nbytes) not in webp:
                    webp[(name, nbytes)] = webp_psnr_at(img, nbytes)
                w = webp[(name, nbytes)]
                rows[lv].append((8 * nbytes / pixels, p, w))
                wt = f"WebP {w:.2f} dB" if w is not None else "WebP unmatched"
                print(f"{src} {name} level {lv:g}: {8 * nbytes / pixels:.4f} bpp {p:.2f} dB | {wt}", flush=True)
        summary.append((src, rows))
    print("mean over images:")
    for src, rows in summary:
        for lv in levels:
            r = rows[lv]
            diffs = [p - w for _, p, w in r if w is not None]
            dt = f"{np.mean(diffs):+.2f} dB vs WebP ({len(diffs)} matched)" if diffs else "WebP unmatched"
            print(f"{src} level {lv:g}: {np.mean([b for b, _, _ in r]):.4f} bpp {np.mean([p for _, p, _ in r]):.2f} dB {dt}")


if __name__ == "__main__":
    main()
