"""torch.compile (inductor, CPU) against the reference and ``optimize(model, "cpu")``, one process.

Two targets (issue 4, CUDA-graph/compile part), random weights, fp32:

* ``lite``: CoD-Lite one-step decode body at the 0.0312 bpp preset (ds 16, 8 codebook bits):
  codebook lookup -> condition decoder -> one DConv step at t=0 (noise level 0), 720x480 by default.
* ``pixnerdit``: one PixNerDiT forward (pixel preset ``pixel/bpp_0_0039_pix512_xl``, t=0.5,
  condition map given) at a reduced image size (256x256 by default), optionally with fewer DiT
  blocks (``--pix-blocks``) to bound the compile time.

Contenders: ``reference`` (the mirrored modules), ``cpu`` (``cod_fast.optimize(model, "cpu")``),
both under ``torch.inference_mode``; ``compile`` (``torch.compile`` of the reference call, inductor
defaults, under ``torch.no_grad``: inductor fails under inference_mode, see ``_contenders``) and
``compile+freeze`` (the same with inductor's ``freezing`` option: weights folded as constants,
mkldnn-packed convolutions and linears). Reported: compile time (the first call, tracing + code generation + C++ build, with a
fresh inductor cache unless ``--warm-cache``), steady-state median over A/B-alternated rounds
(every contender once per round, so all see the same load), speedup against the reference and the
max abs difference of the output. A contender that fails to compile is reported with its exact
error and skipped. Run it under the team's lock:

    flock /tmp/cod_fast_bench.lock .venv/bin/python bench/bench_compile.py [--only lite] [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from typing import Callable

if "--warm-cache" not in sys.argv:  # cold compile times: inductor reads the variable at import
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="cod_fast_inductor_")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import alternate, machine_line, report, run_selected  # noqa: E402
from bench_optimize import _randomize_lite  # noqa: E402

import cod_fast.fast as fast  # noqa: E402
from cod_fast.models.cod_lite import build as build_lite  # noqa: E402

Fn = Callable[[], torch.Tensor]


def _compiled(fn: Fn, freeze: bool) -> tuple[Fn | None, str]:
    """Compile ``fn`` (no arguments) with inductor and run it once: (compiled fn or None, note)."""
    # Per-compile options, no global config: each torch.compile gets its own backend, so dynamo keeps
    # separate cache entries for the two variants even though their functions share a code object.
    compiled = torch.compile(fn, backend="inductor", options={"freezing": freeze})
    t0 = time.perf_counter()
    try:
        compiled()
    except Exception as exc:  # report the exact failure, keep benchmarking the others
        lines = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()
        return None, f"FAILED after {time.perf_counter() - t0:.1f} s: {' | '.join(lines[:6])}"
    return compiled, f"compile (first call) {time.perf_counter() - t0:.1f} s"


def _contenders(model: torch.nn.Module, make: Callable[[torch.nn.Module, Callable], Fn],
                skip_freeze: bool) -> dict[str, Fn]:
    """reference and cpu run under inference_mode; the compiled ones under no_grad, because inductor
    fails under inference_mode here ("Cannot set version_counter for inference tensor" on the cached
    adaLN buffer's chunk; pytorch/pytorch#180823) and leaves the process unable to run eager code
    afterwards."""
    runs = {"reference": make(model, torch.inference_mode),
            "cpu": make(fast.optimize(model, "cpu"), torch.inference_mode)}
    # Fill the models' lazy caches (positional tables) first: a compile that sees them empty guards
    # on that and recompiles once at its next call.
    runs["reference"]()
    variants = [("compile", False)] + ([] if skip_freeze else [("compile+freeze", True)])
    for name, freeze in variants:
        fn, note = _compiled(make(model, torch.no_grad), freeze)
        print(f"  {name}: {note}", flush=True)
        if fn is not None:
            runs[name] = fn
    return runs


def bench_lite(args: argparse.Namespace) -> None:
    height, width = (240, 368) if args.quick else (args.lite_height, args.lite_width)
    net = _randomize_lite(build_lite("cod_lite/bpp_0_0312"), seed=0)
    codec = net.y_embedder
    h, w = codec.calculate_indices_size(height, width)
    indices = torch.randint(0, codec.bottleneck.n_e, (h * w,), generator=torch.Generator().manual_seed(1))
    print(f"CoD-Lite one-step decode 0.0312 bpp {width}x{height} ({h * w} indices)", flush=True)

    def make(m: torch.nn.Module, mode: Callable) -> Fn:
        def run() -> torch.Tensor:
            with mode():
                cond = m.y_embedder.decoder(m.y_embedder.bottleneck.get_codebook_entry(indices, (h, w)))
                y = torch.zeros((1, 3, height, width))
                return m.inference(y, cond=cond)
        return run

    times, outs = alternate(_contenders(net, make, args.no_freeze), args.repeat)
    report(f"CoD-Lite one-step decode 0.0312 bpp {width}x{height}", times, outs)


def bench_pixnerdit(args: argparse.Namespace) -> None:
    from bench_pixnerdit import build_random

    from cod_fast.models.cod import build_model, get_preset

    size = 128 if args.quick else args.pix_size
    preset = "pixel/bpp_0_0039_pix512_xl"
    if args.pix_blocks:
        cfg = get_preset(preset)
        n_nerf = cfg["init_args"]["num_blocks"] - cfg["init_args"]["num_cond_blocks"]
        init = dict(cfg["init_args"], num_blocks=args.pix_blocks, num_cond_blocks=args.pix_blocks - n_nerf)
        with torch.device("meta"):
            model = build_model(cfg["class_path"], init)
        model = model.to_empty(device="cpu")
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(torch.ones_like(p) if p.ndim == 1 and name.endswith("weight")
                        else torch.randn(p.shape, generator=gen) * 0.02)
        model.eval()
        label = f"{preset} with {args.pix_blocks} blocks ({init['num_cond_blocks']} DiT + NeRF)"
    else:
        model = build_random(preset, "cpu", seed=0)
        label = preset
    gen = torch.Generator().manual_seed(1)
    grid = size // model.patch_size
    x = torch.randn(1, 3, size, size, generator=gen)
    cond = torch.randn(1, model.hidden_size, grid, grid, generator=gen)
    t = torch.full((1,), 0.5)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"PixNerDiT forward {size}x{size} ({label}, {n_params:.1f} M params)", flush=True)

    def make(m: torch.nn.Module, mode: Callable) -> Fn:
        def run() -> torch.Tensor:
            with mode():
                return m(x, t, None, cond)[0]
        return run

    times, outs = alternate(_contenders(model, make, args.no_freeze), args.repeat)
    report(f"PixNerDiT forward {size}x{size} ({label})", times, outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["lite", "pixnerdit"], default=None)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--repeat", type=int, default=3, help="A/B rounds (median over them)")
    ap.add_argument("--lite-height", type=int, default=480)
    ap.add_argument("--lite-width", type=int, default=720)
    ap.add_argument("--pix-size", type=int, default=256, help="PixNerDiT image side (multiple of 16)")
    ap.add_argument("--pix-blocks", type=int, default=0,
                    help="total PixNerDiT blocks incl. the 4 NeRF blocks (0: the preset's 30)")
    ap.add_argument("--no-freeze", action="store_true", help="skip the compile+freeze contender")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--warm-cache", action="store_true", help="keep inductor's on-disk cache (faster compiles)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{machine_line()}  inductor cache={os.environ.get('TORCHINDUCTOR_CACHE_DIR', 'default')}", flush=True)
    run_selected(args, {"lite": bench_lite, "pixnerdit": bench_pixnerdit})


if __name__ == "__main__":
    main()
