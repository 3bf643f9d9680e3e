"""bf16 decode routes against the fp32 reference on the Kodak images (issue 4's 45 dB criterion).

``python bench/bf16_fidelity.py [--levels 0,4] [--images kodim01 ...] [--data DIR]``

The only trained weights this machine has are the default model's (the official CoD checkpoints
cannot be downloaded here), so the criterion "the decoded uint8 image of a bf16 route stays
within 45 dB PSNR of the fp32 reference's" is measured on its decoder. For every image and rate
level the stream is encoded once (fp32, the codec's defaults); it is then decoded by

* the fp32 reference (``DefaultCodec.decode``),
* the model cast to bfloat16 (reference modules),
* the bfloat16 model after ``cod_fast.optimize(..., backend="cpu")`` (the swapped DiCoBlocks),

and each bf16 image is compared with the fp32 one as uint8 (PSNR over all pixels; infinite when
identical). Only the synthesis (``g_s``) is cast to bf16: the entropy model (hyper-synthesis,
z density, gains) keeps its float32 weights and runs on the CPU, so all three parse the same
symbols (casting it too would round its weights and change the table indexes, which the
stream's CHECK section then rejects). Prints one line per image
and level and, per level, the minimum and mean PSNR of each route.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "kodak"
TARGET_DB = 45.0


def psnr_u8(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB, peak 255) of two uint8 images; inf when they are equal."""
    mse = float((a.double() - b.double()).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="0,4", help="comma-separated rate levels (default 0,4)")
    ap.add_argument("--images", nargs="+", default=None, help="names inside --data (default: all PNGs)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    import cod_fast
    from cod_fast.codecs.default import DefaultCodec

    codec = cod_fast.load_model()
    routes: dict[str, DefaultCodec] = {}
    # Only the synthesis runs in bf16: the entropy model (h_a, h_s, the z density, the gains)
    # decides how the stream parses and must keep the weights the encoder used.
    net_bf16 = copy.deepcopy(codec.net).eval()
    net_bf16.g_s.to(torch.bfloat16)
    routes["bf16 reference"] = DefaultCodec(net_bf16, codec.fingerprint, threads=codec.threads,
                                            integer=codec.integer)
    routes["bf16 optimize(cpu)"] = DefaultCodec(cod_fast.optimize(net_bf16, backend="cpu"), codec.fingerprint,
                                                threads=codec.threads, integer=codec.integer)
    levels = [float(v) for v in args.levels.split(",")]
    names = args.images or sorted(p.stem for p in args.data.glob("*.png"))
    results: dict[tuple[str, float], list[float]] = {(r, lv): [] for r in routes for lv in levels}
    t0 = time.perf_counter()
    with torch.inference_mode():
        for name in names:
            img = torch.from_numpy(np.asarray(Image.open(args.data / f"{name}.png").convert("RGB")).copy())
            img = img.permute(2, 0, 1).contiguous()
            for lv in levels:
                data = codec.encode(img, quality=lv)
                ref = codec.decode(data)
                parts = []
                for route, c in routes.items():
                    p = psnr_u8(c.decode(data), ref)
                    results[(route, lv)].append(p)
                    parts.append(f"{route} {p:.2f} dB")
                print(f"{name} level {lv:g}: " + ", ".join(parts), flush=True)
    print(f"\n{len(names)} images, {time.perf_counter() - t0:.0f} s; target: >= {TARGET_DB} dB against fp32")
    ok = True
    for lv in levels:
        for route in routes:
            v = results[(route, lv)]
            finite = [x for x in v if math.isfinite(x)]
            mean = sum(finite) / len(finite) if finite else math.inf
            worst = min(v)
            ok &= worst >= TARGET_DB
            print(f"level {lv:g} {route:20s} min {worst:.2f} dB  mean {mean:.2f} dB  "
                  f"({len(v) - len(finite)} identical)")
    print("all >= 45 dB" if ok else "BELOW 45 dB on some image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
