"""SODEC decoder UNet: one step of the full SD 2.1-base UNet on a 64x64 latent (512x512 image).

Random weights (N(0, 0.02^2), built on the meta device then filled: no checkpoint needed), fp32,
CPU by default, ``torch.inference_mode``, conditioning of ``--tokens`` x 1024 (197 = the ViT-B/16
token count of SODEC's fidelity guidance), timestep 999, timed after warm-up runs; prints the
median and min wall time and the median process CPU time (all threads), which on a shared,
oversubscribed machine tells more than the wall time. Run it under the team's lock:

    flock /tmp/cod_fast_bench.lock .venv/bin/python bench/bench_sodec_unet.py
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from cod_fast.models.sodec import SD21_BASE_UNET, UNet2DConditionModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latent", type=int, default=64, help="latent side (image side / 8)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=197)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    dtype = getattr(torch, args.dtype)
    with torch.device("meta"):
        unet = UNet2DConditionModel(SD21_BASE_UNET)
    unet = unet.to_empty(device=args.device).eval()
    g = torch.Generator(device=args.device).manual_seed(0)
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0.0, 0.02, generator=g)
    unet = unet.to(dtype)
    n_params = sum(p.numel() for p in unet.parameters())

    x = torch.randn(args.batch, 4, args.latent, args.latent, device=args.device, dtype=dtype)
    ctx = torch.randn(args.batch, args.tokens, SD21_BASE_UNET.cross_attention_dim, device=args.device, dtype=dtype)

    def run() -> torch.Tensor:
        with torch.inference_mode():
            out = unet(x, 999, ctx)
        if out.is_cuda:
            torch.cuda.synchronize()
        return out

    for _ in range(args.warmup):
        run()
    times, cpu_times = [], []
    for _ in range(args.iters):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    print(
        f"SD 2.1-base UNet ({n_params / 1e6:.1f} M params), one step, "
        f"latent {args.batch}x4x{args.latent}x{args.latent}, "
        f"{args.tokens} tokens, {args.dtype} {args.device}, {torch.get_num_threads()} threads: "
        f"median {statistics.median(times) * 1e3:.0f} ms, min {min(times) * 1e3:.0f} ms over {args.iters} runs; "
        f"process CPU time median {statistics.median(cpu_times) * 1e3:.0f} ms"
    )


if __name__ == "__main__":
    main()
