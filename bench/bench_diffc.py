"""Time one full DiffC encoded step at 512x512: denoiser forward vs channel simulation.

For CoD latent (DDT, state 4x64x64 = 16,384 dims) and CoD pixel (PixNerDiT, 3x512x512 = 786,432
dims): full official configs with random weights (``bench_pixnerdit.build_random``), fp32, CPU,
``torch.inference_mode``. One step ``tau = 510 -> 498`` of the official schedule as the codec runs
it (:mod:`cod_fast.codecs.diffc`): ``x0_hat`` through the DDPM view of the flow model (guidance 1.0,
as the official encoding), ``mu`` and its KL, ``rcc.encode`` (backend ``cpp``), the raw step
record, the state update; then the decoder's ``rcc.decode`` of the same indices.

Per-step KL: a random model's ``mu`` is not representative, so ``mu`` is rescaled to the budget of
0.1 bpp at 512x512 (26,214 bits) spread evenly over the official schedule: latent 164 bits/step
(160 steps), pixel 185 bits/step (142 steps) -- the figures of the RCC section of BENCHMARKS.md.

    flock /tmp/cod_fast_bench.lock .venv/bin/python bench/bench_diffc.py [--which latent pixel]
"""
from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_pixnerdit import build_random  # noqa: E402

from cod_fast import rcc  # noqa: E402
from cod_fast.codecs.diffc import pack_step  # noqa: E402
from cod_fast.diffc import CoDFlowDenoiser, DDPMView, step_coefficients  # noqa: E402

CASES = {  # name: (preset, state shape at 512x512, KL bits per step)
    "latent": ("latent/bpp_0_0039_pix512_xl", (1, 4, 64, 64), 164.0),
    "pixel": ("pixel/bpp_0_0039_pix512_xl", (1, 3, 512, 512), 185.0),
}
TAU, TAU_PREV = 510, 498


def bench_case(name: str, threads: int) -> dict[str, float]:
    """Seconds of each part of one encoded step (and the decoder's channel simulation)."""
    preset, shape, kl_target = CASES[name]
    t0 = time.perf_counter()
    net = build_random(preset, "cpu", seed=0)
    build_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(1)
    grid = shape[-1] // net.patch_size
    cond = torch.randn(1, net.hidden_size, grid, grid, generator=gen)
    view = DDPMView(CoDFlowDenoiser(net, cond))
    x = torch.randn(shape, generator=gen)
    x0 = torch.rand(shape, generator=gen) * 2 - 1
    dim = x.numel()
    out: dict[str, float] = {"build_s": build_s, "dim": dim, "kl_bits": kl_target}
    with torch.inference_mode():
        t0 = time.perf_counter()
        x0_hat = view.x0_hat(x, TAU, 1.0)
        out["forward_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        c = step_coefficients(TAU, TAU_PREV)
        p_mu = c.c_x0 * x0_hat + c.c_x * x
        mu = ((c.c_x0 / c.std) * (x0 - x0_hat)).reshape(-1).contiguous()
        kl_model = 0.5 * float(mu.double().square().sum()) / math.log(2)
        mu = mu * math.sqrt(kl_target / kl_model)  # rescaled to the stated budget
        kl_q = -(-rcc.quantize_kl(0.5 * float(mu.double().square().sum()) / math.log(2)) // 16) * 16
        out["kl_model_bits"] = kl_model
        out["mu_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        idx, sample = rcc.encode(mu, kl_q / 16, 3, step=0, backend="cpp", threads=threads)
        out["rcc_encode_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        record = pack_step("raw", kl_q, idx, dim)
        x = sample.view(shape) * c.std + p_mu
        out["record_update_s"] = time.perf_counter() - t0
        out["record_bytes"] = len(record)
        out["chunks"] = idx.numel()

        t0 = time.perf_counter()
        again = rcc.decode(idx, dim, kl_q / 16, 3, step=0, backend="cpp", threads=threads)
        out["rcc_decode_s"] = time.perf_counter() - t0
        assert torch.equal(again, sample)
    out["step_s"] = out["forward_s"] + out["mu_s"] + out["rcc_encode_s"] + out["record_update_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--which", nargs="+", choices=sorted(CASES), default=["latent", "pixel"])
    ap.add_argument("--threads", type=int, default=2, help="torch and rcc threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} threads, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for name in args.which:
        r = bench_case(name, args.threads)
        print(f"{name}: dims {r['dim']:,}  KL {r['kl_bits']:.0f} bits ({r['chunks']} chunks; random "
              f"model's own KL {r['kl_model_bits']:.3g})  build {r['build_s']:.1f} s")
        print(f"  forward {r['forward_s']:.2f} s | mu+KL {r['mu_s'] * 1e3:.1f} ms | rcc encode "
              f"{r['rcc_encode_s']:.2f} s | record+update {r['record_update_s'] * 1e3:.1f} ms "
              f"({r['record_bytes']} B) | step {r['step_s']:.2f} s | decoder rcc decode "
              f"{r['rcc_decode_s'] * 1e3:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
