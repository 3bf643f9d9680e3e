"""Whole decodes on a GPU, as users run them: ``codec.decode(bytes)`` per route, batch 1.

Rows (issues 15 and 16): one-step CoD-Lite (0.0312 bpp) at 720x480 and 1920x1080, one-step CoD
(PixNerDiT XL) at 512x512, SODEC (full config) at 512x512, pixel CoD 25-step adam2 with CFG at
512x512, and the CUDA reverse-channel coder's throughput. Routes per decoder:

- ``ref_eager_fp32``: the plain-PyTorch reference, fp32 weights, no graph (the anchor);
- ``ref_graph_fp32``: the same through the codec's CUDA graph;
- ``fast_graph_bf16w``: bf16 weights (``load_model(dtype=torch.bfloat16)``), ``optimize(auto)``,
  CUDA graph -- the fast path.

Random weights N(0, 1/fan_in) (no official checkpoints here); medians of ``--iters`` timed calls
after warm-up, ``torch.cuda.synchronize()`` around each; each route's uint8 PSNR against the fp32
reference decode. Every section is independent: an error is recorded and the next runs.

    python bench/bench_gpu_decode.py OUTDIR [--iters 50] [--only cod_lite,sodec]

writes OUTDIR/gpu_decode.json (and prints one line per row).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def environment() -> dict[str, Any]:
    """GPU, driver, torch, Triton, CUDA versions (for every row written)."""
    env: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError as exc:
        env["triton"] = f"unavailable: {exc}"
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        try:
            import subprocess

            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            env["driver"] = f"unknown: {exc}"
    env["date"] = time.strftime("%Y-%m-%d")
    return env


def timed(fn: Callable[[], Any], iters: int, warmup: int = 3) -> dict[str, float]:
    """Median and min wall time (ms) of ``fn`` with a device sync around each call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": round(statistics.median(times), 3), "min_ms": round(min(times), 3), "n": iters}


def psnr_u8(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double().cpu() - b.double().cpu()) ** 2).mean())
    return math.inf if mse == 0 else round(10 * math.log10(255.0**2 / mse), 2)


def randomize(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights N(0, 1/fan_in), norm gains 1, biases 0 (the official inits zero some outputs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(net.named_parameters()):
            if p.dim() >= 2:
                p.copy_((torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5).to(p.device, p.dtype))
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    if hasattr(net, "cache_t0") and not net.training:
        net.cache_t0()  # one-step nets cache their t=0 modulation from the weights
    return net


def test_image(h: int, w: int) -> torch.Tensor:
    """A smooth uint8 [3, h, w] test image (gradients and a little noise)."""
    gen = torch.Generator().manual_seed(2)
    y = torch.linspace(0, 1, h)[:, None].expand(h, w)
    x = torch.linspace(0, 1, w)[None, :].expand(h, w)
    base = torch.stack([x * y, 0.5 + 0.4 * torch.sin(6 * x), 1 - y]) * 255
    return (base + 8 * torch.randn(3, h, w, generator=gen)).clamp(0, 255).to(torch.uint8)


def _codec(preset: str, dtype: torch.dtype):
    import cod_fast

    codec = cod_fast.load_model(preset, random_init_seed=0, device="cuda", dtype=dtype)
    randomize(codec.net)
    return codec


def one_step_rows(preset: str, h: int, w: int, iters: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The three routes of a one-step codec (CoD-Lite or one-step CoD) at h x w."""
    import cod_fast

    out: dict[str, Any] = {"preset": preset, "size": f"{w}x{h}"}
    ref = _codec(preset, torch.float32)
    data = ref.encode(test_image(h, w), **(extra or {}))
    out["stream_bytes"] = len(data)
    ref.cuda_graphs = False
    with torch.inference_mode():
        anchor = ref.decode(data)
        out["ref_eager_fp32"] = timed(lambda: ref.decode(data), iters)
        ref.cuda_graphs = "auto"
        out["ref_graph_fp32"] = timed(lambda: ref.decode(data), iters)
        out["ref_graph_fp32"]["psnr_vs_ref_fp32"] = psnr_u8(ref.decode(data), anchor)
        fast = cod_fast.optimize(_codec(preset, torch.bfloat16), "auto")  # the same seeded weights, in bf16
        fast.cuda_graphs = "auto"
        out["fast_graph_bf16w"] = timed(lambda: fast.decode(data), iters)
        out["fast_graph_bf16w"]["psnr_vs_ref_fp32"] = psnr_u8(fast.decode(data), anchor)
        out["replaced"] = len(cod_fast.fast.replaced(fast.net))
    return out


def sodec_rows(iters: int) -> dict[str, Any]:
    """SODEC full config at 512x512: whole decode with the Triton entropy backend, eager."""
    from cod_fast.codecs.sodec import SodecCodec
    from cod_fast.models.sodec import FULL_SODEC, SODEC

    torch.manual_seed(0)
    net = randomize(SODEC(FULL_SODEC)).eval().cuda()
    codec = SodecCodec(net, fingerprint=bytes(16), device="cuda")
    data = codec.encode(test_image(512, 512), entropy_backend="triton")
    out: dict[str, Any] = {"size": "512x512", "stream_bytes": len(data)}
    with torch.inference_mode():
        out["ref_eager_fp32_triton_entropy"] = timed(lambda: codec.decode(data, entropy_backend="triton"), iters)
    return out


def pixel25_rows(iters: int) -> dict[str, Any]:
    """Pixel CoD (PixNerDiT XL) 25-step adam2 with CFG at 512x512, bf16 autocast, CUDA graph."""
    import cod_fast

    out: dict[str, Any] = {"size": "512x512"}
    ref = _codec("pixel/bpp_0_0039_pix512_xl", torch.float32)
    data = ref.encode(test_image(512, 512))
    with torch.inference_mode():
        ref.cuda_graphs = "auto"
        anchor = ref.decode(data)
        out["ref_graph_fp32"] = timed(lambda: ref.decode(data), iters, warmup=1)
        out["ref_graph_bf16_autocast"] = timed(lambda: ref.decode(data, dtype="bfloat16"), iters, warmup=1)
        fast = cod_fast.optimize(ref, "auto")
        fast.cuda_graphs = "auto"
        out["fast_graph_bf16_autocast"] = timed(lambda: fast.decode(data, dtype="bfloat16"), iters, warmup=1)
        out["fast_graph_bf16_autocast"]["psnr_vs_ref_fp32"] = psnr_u8(fast.decode(data, dtype="bfloat16"), anchor)
    return out


def rcc_rows(iters: int) -> dict[str, Any]:
    """CUDA reverse-channel encode/decode throughput: candidate-dims per second."""
    from cod_fast import rcc

    out: dict[str, Any] = {}
    for dim, kl in ((16384, 164.0), (786432, 185.0)):
        g = torch.randn(dim, generator=torch.Generator().manual_seed(dim))
        mu = (g / g.norm() * math.sqrt(2 * math.log(2) * kl)).float().cuda()
        plan = rcc.make_plan(dim, kl)
        work = sum((1 << b) * d for b, d in zip(plan.bits, plan.dims))
        idx, _ = rcc.encode(mu, kl, 7, 3, backend="cuda")
        enc = timed(lambda: rcc.encode(mu, kl, 7, 3, backend="cuda"), iters)
        dec = timed(lambda: rcc.decode(idx, dim, kl, 7, 3, backend="cuda"), iters)
        out[f"dim{dim}_kl{int(kl)}"] = {"chunks": plan.n_chunks, "candidate_dims": work, "encode": enc,
                                         "G_candidate_dims_per_s": round(work / enc["median_ms"] / 1e6, 1),
                                         "decode": dec}
    return out


SECTIONS: dict[str, Callable[[int], dict[str, Any]]] = {
    "cod_lite_720x480": lambda it: one_step_rows("cod_lite/bpp_0_0312", 480, 720, it),
    "cod_lite_1920x1080": lambda it: one_step_rows("cod_lite/bpp_0_0312", 1080, 1920, it),
    "one_step_cod_512": lambda it: one_step_rows("one_step/bpp_0_0039", 512, 512, it),
    "sodec_512": sodec_rows,
    "rcc_cuda": rcc_rows,
    "pixel25_512": lambda it: pixel25_rows(max(3, it // 10)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--only", default="", help="comma-separated section names")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu_decode needs a CUDA GPU")
    args.outdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"env": environment()}
    names = [n for n in SECTIONS if not args.only or n in args.only.split(",")]
    for name in names:
        t0 = time.perf_counter()
        try:
            results[name] = SECTIONS[name](args.iters)
        except Exception as exc:  # a failing route is a result: record it and go on
            results[name] = {"error": repr(exc)[:500], "trace": traceback.format_exc()[-2500:]}
        results[name]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(name, json.dumps(results[name])[:1200], flush=True)
        (args.outdir / "gpu_decode.json").write_text(json.dumps(results, indent=1))
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
