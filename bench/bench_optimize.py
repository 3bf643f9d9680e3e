"""Reference vs ``optimize(model, "cpu")``: A/B-alternated timings and output error, one process.

Two targets (issue 4, CPU part), random weights, fp32, ``torch.inference_mode``:

* ``lite``: CoD-Lite one-step decode at the 0.0312 bpp preset (ds 16, 8 codebook bits), 720x480,
  from VQ indices as ``one_step_decode`` does it (codebook lookup, condition decoder, one DConv
  step); error as max abs / relative L2 of the float image and PSNR of the uint8 image
  (``fp2uint8``) against the reference's uint8 image.
* ``pixnerdit``: one PixNerDiT forward at 512x512, full pixel preset (``build_random``), t=0.5,
  condition map given.

Runs alternate reference / optimized (A/B/A/B...) after one warm call of each, so that both see the
same machine load: on the shared 2-core machine the ratio is the meaningful figure. ``--int8``
adds the int8 route (``cod_fast.fast.quant``) as a third contender. Run it under the team's lock:

    flock /tmp/cod_fast_bench.lock .venv/bin/python bench/bench_optimize.py [--quick] [--only lite]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import alternate, machine_line, report, run_selected  # noqa: E402

import cod_fast.fast as fast  # noqa: E402
from cod_fast.fast.quant import quantize_int8  # noqa: E402
from cod_fast.models.cod_lite import build as build_lite  # noqa: E402
from cod_fast.models.cod_lite.inference import fp2uint8, one_step_decode  # noqa: E402


def _randomize_lite(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights N(0, 1/fan_in) (the official init zeroes output layers, which would make the test
    trivial), unit norm gains, zero biases; then eval() to rebuild the t=0 adaLN cache."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    return net.eval()


def _psnr_u8(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def bench_lite(args: argparse.Namespace) -> None:
    height, width = (240, 368) if args.quick else (480, 720)
    net = _randomize_lite(build_lite("cod_lite/bpp_0_0312"), seed=0)
    codec = net.y_embedder
    h, w = codec.calculate_indices_size(height, width)
    indices = torch.randint(0, codec.bottleneck.n_e, (h * w,), generator=torch.Generator().manual_seed(1))
    models = {"reference": net, "cpu": fast.optimize(net, "cpu")}
    if args.int8:
        models["cpu+int8"] = quantize_int8(fast.optimize(net, "cpu"))
    runs = {name: (lambda m=m: one_step_decode(m, indices, height, width)) for name, m in models.items()}
    times, outs = alternate(runs, args.repeat)

    def psnr(a: torch.Tensor, b: torch.Tensor) -> str:
        return f"uint8 PSNR {_psnr_u8(fp2uint8(a), fp2uint8(b)):.1f} dB"

    report(f"CoD-Lite one-step decode 0.0312 bpp {width}x{height} ({h * w} indices)", times, outs, psnr)


def bench_pixnerdit(args: argparse.Namespace) -> None:
    from bench_pixnerdit import build_random

    size = 256 if args.quick else 512
    model = build_random("pixel/bpp_0_0039_pix512_xl", "cpu", seed=0)
    gen = torch.Generator().manual_seed(1)
    grid = size // model.patch_size
    x = torch.randn(1, 3, size, size, generator=gen)
    cond = torch.randn(1, model.hidden_size, grid, grid, generator=gen)
    t = torch.full((1,), 0.5)
    models = {"reference": model, "cpu": fast.optimize(model, "cpu")}
    if args.int8:
        models["cpu+int8"] = quantize_int8(fast.optimize(model, "cpu"))

    def runner(m: torch.nn.Module) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.inference_mode():
                return m(x, t, None, cond)[0]
        return run

    times, outs = alternate({name: runner(m) for name, m in models.items()}, args.repeat)
    report(f"PixNerDiT forward {size}x{size} (pixel/bpp_0_0039_pix512_xl, random weights)", times, outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--only", choices=["lite", "pixnerdit"], default=None)
    ap.add_argument("--repeat", type=int, default=3, help="A/B rounds (median over them)")
    ap.add_argument("--int8", action="store_true", help="also time the int8 route")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line())
    run_selected(args, {"lite": bench_lite, "pixnerdit": bench_pixnerdit})


if __name__ == "__main__":
    main()
