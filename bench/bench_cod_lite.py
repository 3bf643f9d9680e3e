"""CoD-Lite one-step decode time: VQ indices -> condition decoder -> one DConv step -> image.

Configuration 0.0312 bpp (ds 16, 8 codebook bits) at 720x480 (45x30 = 1350 indices; 720 and 480
are multiples of 16, so no padding is needed, as in the official script). Random weights, fp32,
CPU by default, ``torch.inference_mode``, timed after warm-up runs. Run it under the team's lock:

    flock /tmp/cod_fast_bench.lock .venv/bin/python bench/bench_cod_lite.py
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from cod_fast.models.cod_lite import build, one_step_decode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cod_lite/bpp_0_0312")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=720)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (as the official script on CUDA)")
    args = ap.parse_args()

    torch.manual_seed(0)
    net = build(args.preset).to(args.device).eval()
    codec = net.y_embedder
    h, w = codec.calculate_indices_size(args.height, args.width)
    indices = torch.randint(0, codec.bottleneck.n_e, (h * w,))
    dtype = torch.bfloat16 if args.bf16 else None

    def run() -> torch.Tensor:
        out = one_step_decode(net, indices, args.height, args.width, autocast_dtype=dtype)
        if out.is_cuda:
            torch.cuda.synchronize()
        return out

    for _ in range(args.warmup):
        run()
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    print(
        f"{args.preset} {args.width}x{args.height} {args.device} {'bf16' if args.bf16 else 'fp32'} "
        f"threads={torch.get_num_threads()}: median {statistics.median(times) * 1e3:.1f} ms, "
        f"min {min(times) * 1e3:.1f} ms over {args.iters} runs"
    )


if __name__ == "__main__":
    main()
