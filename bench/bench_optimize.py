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
import platform
import statistics
import sys
import time
from typing import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cod_fast.fast as fast  # noqa: E402
from cod_fast.fast.quant import quantize_int8  # noqa: E402
from cod_fast.models.cod_lite import build as build_lite  # noqa: E402
from cod_fast.models.cod_lite.inference import fp2uint8, one_step_decode  # noqa: E402


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def _errors(got: torch.Tensor, ref: torch.Tensor) -> str:
    d = (got.double() - ref.double())
    rel = float(d.norm() / ref.double().norm().clamp_min(1e-30))
    return f"max|d| {float(d.abs().max()):.3g}  relL2 {rel:.3g}"


def _psnr_u8(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _ab(runs: dict[str, Callable[[], torch.Tensor]], repeat: int) -> tuple[dict[str, list[float]], dict[str, torch.Tensor]]:
    """One warm call of each contender, then ``repeat`` rounds calling each once, in turn."""
    outs = {name: fn() for name, fn in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times, outs


def _report(title: str, times: dict[str, list[float]], outs: dict[str, torch.Tensor],
            extra: Callable[[torch.Tensor, torch.Tensor], str] | None = None) -> None:
    ref_t = statistics.median(times["reference"])
    print(title)
    for name, ts in times.items():
        med = statistics.median(ts)
        line = (f"  {name:<10} median {med:7.3f} s  (runs {', '.join(f'{t:.3f}' for t in ts)})  "
                f"speedup {ref_t / med:5.2f}x")
        if name != "reference":
            line += "  " + _errors(outs[name], outs["reference"])
            if extra is not None:
                line += "  " + extra(outs[name], outs["reference"])
        print(line)


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
    times, outs = _ab(runs, args.repeat)

    def psnr(a: torch.Tensor, b: torch.Tensor) -> str:
        return f"uint8 PSNR {_psnr_u8(fp2uint8(a), fp2uint8(b)):.1f} dB"

    _report(f"CoD-Lite one-step decode 0.0312 bpp {width}x{height} ({h * w} indices)", times, outs, psnr)


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

    times, outs = _ab({name: runner(m) for name, m in models.items()}, args.repeat)
    _report(f"PixNerDiT forward {size}x{size} (pixel/bpp_0_0039_pix512_xl, random weights)", times, outs)


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
    print(f"torch {torch.__version__}  threads={torch.get_num_threads()}  cpu={_cpu_name()}  "
          f"load={os.getloadavg()[0]:.1f}")
    if args.only in (None, "lite"):
        bench_lite(args)
    if args.only in (None, "pixnerdit"):
        bench_pixnerdit(args)
    print(f"load at end={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
