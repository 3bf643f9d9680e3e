"""SODEC decode time split into its four stages, reference model against ``optimize()``d, one process.

Stages of one decode (``SodecCodec.decode`` without the uint8 conversion), timed separately:

  (a) entropy   container parse, rANS decoding of z and of y (``CdfTables.decode``), y_hat from the
                symbols and means (``dequantize_y``)
  (b) hyper     integer entropy parameters of z (table indexes and mean codes, ``entropy_backend``),
                float hyper synthesis w, transformation module (y_hat, w) -> latent, fidelity
                decoder y_hat -> x_f, fidelity guidance (ViT + projection) -> UNet tokens
  (c) unet      one UNet step at t = 999 and the x0 conversion (``one_step_denoise``)
  (d) vae       SD-VAE decoder of x0 / scaling_factor

The model is a ``SodecConfig`` with random seeded weights (``load_sodec(random_init_seed=...)``):
the sizes of ``bench_config()`` (printed), a "small" UNet whose one step takes seconds on a 2-core
CPU, and either the real SD-VAE f8 decoder (``--vae full``) or one of half its width (``--vae
small``, the default). The stream is the codec's own encoding of a seeded smooth test image.

Protocol: both models decode once untimed (warm-up), then ``--repeats`` rounds each decode once
with the reference and once with the optimized model, alternating which goes first (ABBA), each
stage timed with ``perf_counter`` (wall) and ``process_time`` (CPU time of all threads). The table
gives per-stage medians, the speedup of the medians, and the max abs difference of each stage's
output between the two models (each model fed by its own previous stage; (a) compares the integer
symbols exactly). Run it under the team's lock:

    flock /tmp/cod_fast_bench.lock .venv/bin/python bench/bench_sodec_decode.py --size 512 --repeats 5 --backend cpu
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from typing import Callable

import torch
from torch import nn

from cod_fast.codecs.sodec import SodecCodec, entropy_parameters, load_sodec
from cod_fast.fast import optimize, replaced
from cod_fast.models.sodec import ProjectionConfig, UNetConfig, ViTConfig
from cod_fast.models.sodec.hyperprior import HyperpriorConfig
from cod_fast.models.sodec.integer_params import dequantize_y
from cod_fast.models.sodec.model import SD_VAE, SODEC, SodecConfig, VAEConfig
from cod_fast.models.sodec.one_step import one_step_denoise

STAGES = ("entropy", "hyper", "unet", "vae")

#: Half the width of the SD-VAE decoder at every level (1/4 of its conv FLOPs).
SMALL_VAE = VAEConfig(block_out_channels=(64, 128, 256, 256), layers_per_block=2, norm_num_groups=32)


def bench_config(vae: str) -> SodecConfig:
    """The benchmark's SODEC sizes: y 192 x 1/16, z 128 x 1/64; UNet (128, 256, 256, 256) with 64-wide
    heads (SD 2.1-base is (320, 640, 1280, 1280)), 512-wide cross-attention; ViT-S/16-like guidance
    (224 px, width 384, depth 6, 197 tokens); transform 128 wide, fidelity decoder 64 wide."""
    unet = UNetConfig(block_out_channels=(128, 256, 256, 256), attention_head_dim=(2, 4, 4, 4),
                      cross_attention_dim=512)
    vit = ViTConfig(image_size=224, patch_size=16, width=384, depth=6, num_heads=6)
    return SodecConfig(
        hyperprior=HyperpriorConfig(in_channels=3, n=128, m=192, hidden=128, cz=128, n_down=4),
        unet=unet, vit=vit, projection=ProjectionConfig(in_dim=384, out_dim=512, hidden_dim=512),
        vae=SD_VAE if vae == "full" else SMALL_VAE,
        transform_channels=128, transform_blocks=2, fidelity_channels=64)


def test_image(size: int, seed: int) -> torch.Tensor:
    """A smooth seeded uint8 [3, size, size] image (bilinear upsampling of 16 x 16 noise)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 16, 16, generator=g)
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (img[0] * 255).round().to(torch.uint8)


class Timer:
    """Adds the wall and process CPU time of ``with timer(stage):`` blocks to per-stage totals."""

    def __init__(self) -> None:
        self.wall = dict.fromkeys(STAGES, 0.0)
        self.cpu = dict.fromkeys(STAGES, 0.0)
        self._stage = ""

    def __call__(self, stage: str) -> "Timer":
        self._stage = stage
        return self

    def __enter__(self) -> None:
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def __exit__(self, *exc: object) -> None:
        self.wall[self._stage] += time.perf_counter() - self._t0
        self.cpu[self._stage] += time.process_time() - self._c0


def optimized_codec(codec: SodecCodec, backend: str) -> SodecCodec:
    """A codec whose SODEC networks are ``optimize(part, backend)`` of ``codec``'s, weights shared.

    ``optimize(codec)`` would deep-copy the whole model, and the hyperprior's rANS tables (native
    ``cod_fast._C`` objects) cannot be copied; the hyperprior has nothing to swap anyway (its
    entropy parameters are the integer path), so it is shared and every other part is optimized.
    """
    net = codec.net
    fast = SODEC.__new__(SODEC)
    nn.Module.__init__(fast)
    fast.cfg, fast.schedule = net.cfg, net.schedule
    fast.hyperprior = net.hyperprior
    for name in ("transform", "fidelity_decoder", "guidance", "unet", "vae"):
        setattr(fast, name, optimize(getattr(net, name), backend))
    out = copy.copy(codec)
    out.net = fast.eval()
    return out


def decode_split(codec: SodecCodec, data: bytes, entropy_backend: str, timer: Timer) -> dict[str, torch.Tensor]:
    """One decode of ``data`` stage by stage; returns each stage's output (symbols, latent, z0, image)."""
    net = codec.net
    hp = net.hyperprior
    params = hp.int_params
    with timer("entropy"):
        _, strings, (zh, zw) = codec.parse(data)
        cz = net.cfg.hyperprior.cz
        z_idx = torch.arange(cz, dtype=torch.int32).view(1, cz, 1, 1).expand(1, cz, zh, zw).contiguous()
        z_sym = hp.z_tables.decode(strings[0], z_idx)
    with timer("hyper"):
        indexes, means = entropy_parameters(hp, z_sym, entropy_backend)
    with timer("entropy"):
        y_sym = hp.y_tables.decode(strings[1], indexes)
        y_hat = dequantize_y(y_sym, means, params.mean_frac_bits)
    with timer("hyper"):
        w = net.hyper_features(z_sym.to(torch.float32))
        latent = net.transform(y_hat, w)
        cond = net.guidance(net.fidelity_decoder(y_hat))
    with timer("unet"):
        z0 = one_step_denoise(net.unet, latent, cond, t=net.cfg.timestep, schedule=net.schedule)
    with timer("vae"):
        image = net.vae.decode(z0 / net.vae.scaling_factor)
    return {"entropy": y_sym, "hyper": latent, "unet": z0, "vae": image, "cond": cond, "y_hat": y_hat,
            "z_sym": z_sym}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="square image side (multiple of 64)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (each decodes with both models)")
    ap.add_argument("--backend", default="cpu", choices=["cpu", "triton", "reference"],
                    help="optimize() backend of the contender")
    ap.add_argument("--vae", default="small", choices=["small", "full"], help="SD-VAE decoder width")
    ap.add_argument("--entropy-backend", default="cpp", choices=["reference", "cpp", "triton"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.size <= 0 or args.size % 64:
        ap.error("--size must be a positive multiple of 64")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    cfg = bench_config(args.vae)
    t0 = time.perf_counter()
    ref = load_sodec(config=cfg, random_init_seed=args.seed)
    fast = optimized_codec(ref, args.backend)
    data = ref.encode(test_image(args.size, args.seed))
    build_s = time.perf_counter() - t0
    net = ref.net
    counts = {name: sum(p.numel() for p in getattr(net, name).parameters()) / 1e6
              for name in ("hyperprior", "transform", "fidelity_decoder", "guidance", "unet", "vae")}
    print(f"SODEC decode split, {args.size}x{args.size}, fp32 CPU, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, load average {os.getloadavg()[0]:.2f} at start")
    print(f"config: UNet {list(cfg.unet.block_out_channels)} heads {list(cfg.unet.attention_head_dim)} "
          f"ctx {cfg.unet.cross_attention_dim}; VAE decoder {list(cfg.vae.block_out_channels)} ({args.vae}); "
          f"ViT {cfg.vit.width}x{cfg.vit.depth} @ {cfg.vit.image_size}; y {cfg.hyperprior.m} ch, "
          f"z {cfg.hyperprior.cz} ch; entropy backend {args.entropy_backend}")
    print("parameters (M): " + ", ".join(f"{k} {v:.1f}" for k, v in counts.items()))
    print(f"stream {len(data)} bytes ({8 * len(data) / args.size ** 2:.4f} bpp); built and encoded in {build_s:.1f} s")
    print(f"optimize({args.backend!r}) swapped {len(replaced(fast.net))} modules: "
          f"{sorted({r.fast for r in replaced(fast.net)})}")

    contenders: dict[str, SodecCodec] = {"reference": ref, f"optimized ({args.backend})": fast}
    timings: dict[str, list[Timer]] = {name: [] for name in contenders}
    outputs: dict[str, dict[str, torch.Tensor]] = {}
    with torch.inference_mode():
        for name, codec in contenders.items():  # warm-up, and the outputs compared below
            outputs[name] = decode_split(codec, data, args.entropy_backend, Timer())
        # The split pipeline is the codec's decode: check it once against decode_latent.
        for name, codec in contenders.items():
            out = outputs[name]
            if not torch.equal(codec.net.decode_latent(out["y_hat"], out["z_sym"].float()), out["vae"]):
                raise RuntimeError(f"{name}: the stage split does not reproduce SODEC.decode_latent")
        names = list(contenders)
        for r in range(args.repeats):
            for name in (names if r % 2 == 0 else names[::-1]):
                timer = Timer()
                decode_split(contenders[name], data, args.entropy_backend, timer)
                timings[name].append(timer)

    a, b = outputs[names[0]], outputs[names[1]]
    diffs = {"entropy": "exact" if torch.equal(a["entropy"], b["entropy"]) else "DIFFER",
             "hyper": f"{float((a['hyper'] - b['hyper']).abs().max()):.1e} "
                      f"(tokens {float((a['cond'] - b['cond']).abs().max()):.1e})"}
    for stage in ("unet", "vae"):
        d = float((a[stage] - b[stage]).abs().max())
        diffs[stage] = f"{d:.1e} of {float(a[stage].abs().max()):.2g}"

    def med(name: str, kind: str, stage: str | None) -> float:
        vals = [sum(getattr(t, kind).values()) if stage is None else getattr(t, kind)[stage]
                for t in timings[name]]
        return statistics.median(vals)

    print(f"\nmedian of {args.repeats} rounds, seconds (wall | process CPU time); "
          f"load average {os.getloadavg()[0]:.2f} at end")
    header = f"| stage | {names[0]} wall | {names[1]} wall | speedup | {names[0]} CPU | {names[1]} CPU | speedup | max abs diff |"
    print(header)
    print("|" + "---|" * 8)
    rows: list[tuple[str, str | None]] = [(s, s) for s in STAGES] + [("total", None)]
    for label, stage in rows:
        cells = []
        for kind in ("wall", "cpu"):
            r0, r1 = med(names[0], kind, stage), med(names[1], kind, stage)
            cells += [f"{r0:.3f}", f"{r1:.3f}", f"{r0 / r1:.2f}x" if r1 > 0 else "-"]
        diff = diffs.get(stage, "") if stage is not None else diffs["vae"]
        print(f"| {label} | " + " | ".join(cells) + f" | {diff} |")
    per_round: Callable[[str], str] = lambda n: ", ".join(f"{sum(t.wall.values()):.2f}" for t in timings[n])
    for name in names:
        print(f"{name}: total wall per round {per_round(name)}")


if __name__ == "__main__":
    main()
