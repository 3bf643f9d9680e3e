"""What the default model's latent refinement (``encode(refine=N)``) costs and buys, against the
plain encoder (RDOQ, ``refine=0``) in the same run.

``python bench/default_refine_cost.py [--images kodim05.png kodim23.png] [--levels 0,2,4]
[--demo-level 3] [--refine 20] [--threads 2] [--data DIR]``

For every image and level, each encoder runs in a fresh process (so peak RSS is its own): the
codec is loaded and warmed up on a 64x64 crop, then one timed encode of the whole image, its peak
RSS rise above the warmed-up level (``ru_maxrss``), one timed decode, bpp of the container file and
PSNR (RGB, 8-bit). The bundled demo photo (``cod-fast demo``'s) is measured at ``--demo-level``
too. Prints one line per measurement and a markdown table.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "kodak"


def child(path: str, level: float, refine: int, threads: int) -> dict:
    """One encoder's figures for one image and level (run in its own process)."""
    import numpy as np
    import torch
    from PIL import Image

    import cod_fast
    from cod_fast.metrics import psnr

    torch.set_num_threads(threads)
    codec = cod_fast.load_model()
    img = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).contiguous()
    codec.decode(codec.encode(img[:, :64, :64].contiguous(), quality=level, refine=min(refine, 1)))  # warm-up
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    data = codec.encode(img, quality=level, refine=refine)
    t1 = time.perf_counter()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rec = codec.decode(data)
    t2 = time.perf_counter()
    h, w = img.shape[1:]
    return {"image": Path(path).name, "level": level, "refine": refine, "bpp": 8 * len(data) / (h * w),
            "psnr": psnr(img, rec), "encode_s": t1 - t0, "decode_s": t2 - t1,
            "encode_rss_rise_mb": (rss1 - rss0) / 1024.0}


def run(path: Path, level: float, refine: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(path), str(level), str(refine), str(threads)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--images", nargs="*", default=["kodim05.png", "kodim23.png"])
    ap.add_argument("--levels", default="0,2,4")
    ap.add_argument("--demo-level", type=float, default=3.0)
    ap.add_argument("--refine", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs=4, metavar=("PATH", "LEVEL", "REFINE", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        p, lv, rf, th = args.child
        print(json.dumps(child(p, float(lv), int(rf), int(th))))
        return 0
    from cod_fast.cli import DEMO_IMAGE

    jobs = [(args.data / n, float(lv)) for n in args.images for lv in args.levels.split(",")]
    jobs.append((DEMO_IMAGE, args.demo_level))
    print(f"refine {args.refine} against the plain encoder, {args.threads} torch threads, a fresh process each")
    print("| image | level | plain: bpp / PSNR / encode / RSS rise / decode | "
          f"refine {args.refine}: bpp / PSNR / encode / RSS rise / decode | bytes, PSNR change |")
    print("|---|---|---|---|---|")
    for path, lv in jobs:
        a, b = run(path, lv, 0, args.threads), run(path, lv, args.refine, args.threads)

        def cells(r: dict) -> str:
            return (f"{r['bpp']:.4f} / {r['psnr']:.2f} dB / {r['encode_s']:.2f} s / {r['encode_rss_rise_mb']:.0f} MB"
                    f" / {r['decode_s']:.2f} s")

        print(f"| {a['image']} | {lv:g} | {cells(a)} | {cells(b)} | "
              f"{100 * (b['bpp'] / a['bpp'] - 1):+.1f} %, {b['psnr'] - a['psnr']:+.2f} dB |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
