"""Probe: does this CPU return the same float32 bits for the same PixNerDiT sampling loop twice?

On the 16-core Intel host of the H200 the captured (CapturableSampling) and eager PixNerDiT loops
differed in the last bits although they issue the same operations; on the 2-core AMD development
machines they are bit-identical. This prints, for one tiny seeded PixNerDiT and DDT, the largest
difference between: eager vs eager (run-to-run), eager vs the capturable loop, and a bmm/matmul of
the same data at two memory offsets (alignment sensitivity of the BLAS). Run it under different
environments (MKL_CBWR=AUTO,STRICT; ATEN_CPU_CAPABILITY=avx2; thread counts) to find the condition:

    python tools/gpu_diag_bitwise.py            # prints one JSON line
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from tiny_models import LATENT_NET_ARGS as TINY_LATENT  # noqa: E402
from tiny_models import PIXEL_NET_ARGS as TINY_PIXEL  # noqa: E402
from tiny_models import build_seeded  # noqa: E402

from cod_fast.diffusion import create_sampler  # noqa: E402
from cod_fast.diffusion.sampling import CapturableSampling  # noqa: E402
from cod_fast.models.cod import DDT, PixNerDiT  # noqa: E402


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def _loops(cls: type, args: dict, shape: tuple[int, ...], grid: int) -> dict[str, float]:
    net = build_seeded(cls, args, seed=7)
    gen = torch.Generator().manual_seed(3)
    cond = torch.randn(2, args["hidden_size"], grid, grid, generator=gen)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    sampler = create_sampler("adam2", 5, 3.0)
    with torch.inference_mode():
        e1 = sampler(net, noise, codec_cond=cond)
        e2 = sampler(net, noise, codec_cond=cond)
        p1 = CapturableSampling(sampler, 1, "cpu", torch.float32)(net, noise, cond)
    return {"eager_vs_eager": _maxdiff(e1, e2), "eager_vs_capturable": _maxdiff(e1, p1)}


def _alignment() -> dict[str, float]:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(64, 256, 64, generator=gen)
    b = torch.randn(64, 64, 48, generator=gen)
    big = torch.empty(a.numel() + 16)
    shifted = big[1:1 + a.numel()].view_as(a)  # 4-byte offset: another alignment
    shifted.copy_(a)
    x = torch.randn(300, 1152, generator=gen)
    w = torch.randn(1152, 1152, generator=gen)
    xbig = torch.empty(x.numel() + 16)
    xs = xbig[3:3 + x.numel()].view_as(x)
    xs.copy_(x)
    return {"bmm_offset": _maxdiff(torch.bmm(a, b), torch.bmm(shifted, b)),
            "mm_offset": _maxdiff(x @ w, xs @ w)}


def main() -> None:
    torch.set_num_threads(int(os.environ.get("DIAG_THREADS", "1")))
    out = {
        "env": {k: os.environ.get(k) for k in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "DIAG_THREADS")},
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "pixnerdit": _loops(PixNerDiT, TINY_PIXEL, (1, 3, 32, 32), 2),
        "ddt": _loops(DDT, TINY_LATENT, (1, 4, 8, 8), 4),
        "blas": _alignment(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
