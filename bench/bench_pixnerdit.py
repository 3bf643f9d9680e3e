"""Time one PixNerDiT forward (the per-step cost of pixel CoD decoding) with the reference model.

Full official pixel config ``pixel/bpp_0_0039_pix512_xl`` (0.90 B parameters), random weights,
fp32 on CPU by default, ``torch.inference_mode``, warm (one untimed call first). The condition map
is given (``cond``), as in every sampling step after the first.

    flock /tmp/cod_fast_bench.lock .venv/bin/python bench/bench_pixnerdit.py [--size 512] [--batch 1]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from cod_fast.diffusion import autocast_context
from cod_fast.models.cod import build_model, get_preset


def build_random(preset: str, device: str, seed: int) -> torch.nn.Module:
    """The preset's model with N(0, 0.02) weights and unit norm gains, built without default init."""
    cfg = get_preset(preset)
    with torch.device("meta"):
        model = build_model(cfg["class_path"], cfg["init_args"])
    model = model.to_empty(device=device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="pixel/bpp_0_0039_pix512_xl")
    ap.add_argument("--size", type=int, default=512, help="image side in pixels")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16 = autocast")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model = build_random(args.preset, args.device, seed=0)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator(device="cpu").manual_seed(1)
    grid = args.size // model.patch_size
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen).to(args.device)
    cond = torch.randn(args.batch, model.hidden_size, grid, grid, generator=gen).to(args.device)
    t = torch.full((args.batch,), 0.5, device=args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    def step() -> float:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out, _ = model(x, t, None, cond)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        assert out.shape == x.shape
        return time.perf_counter() - start

    with torch.inference_mode(), autocast_context(args.device, dtype):
        warm = step()
        times = [step() for _ in range(args.repeat)]
    print(f"PixNerDiT forward  preset={args.preset}  params={n_params / 1e6:.2f}M  "
          f"input={args.batch}x3x{args.size}x{args.size}  device={args.device}  dtype={args.dtype}")
    print(f"torch {torch.__version__}  threads={torch.get_num_threads()}  cpu={platform.processor() or platform.machine()}")
    print(f"build {build_s:.1f} s  first call {warm:.2f} s")
    print(f"warm forward: median {statistics.median(times):.2f} s  min {min(times):.2f} s  "
          f"({args.repeat} runs: {', '.join(f'{s:.2f}' for s in times)})")


if __name__ == "__main__":
    main()
