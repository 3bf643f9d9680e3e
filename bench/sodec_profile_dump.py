"""Dump the benchmark's SODEC integer parameters and z for the native phase profiler.

Writes the ``FULL_SODEC`` hyperprior's integer layers (seeded random weights, as
``bench_sodec_int_params.py`` builds them) and the z of its 512x512 image to a flat binary file read
by ``csrc/sodec/tools/sodec_profile.cpp`` (built with ``-DCOD_FAST_TESTS=ON``, and with
``-DCOD_FAST_SODEC_PROFILE=ON`` for the per-section timers)::

    .venv/bin/python bench/sodec_profile_dump.py /tmp/sodec_params.bin
    build/prof/csrc/sodec/sodec_profile /tmp/sodec_params.bin 1 300

Layout (little-endian): int64 [n_layers, n_channels, n_thresholds]; per layer int64
[co, ci, k, up, lo, hi], int32 weight [co*ci*k*k], int64 bias, mult, shift [co] each; int64
thresholds; int64 z shape [4]; int32 z.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from cod_fast.models.sodec.hyperprior import SodecHyperprior
from cod_fast.models.sodec.model import FULL_SODEC


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output file")
    ap.add_argument("--size", type=int, default=512, help="image side (multiple of 64)")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = SodecHyperprior(FULL_SODEC.hyperprior).eval()
    model.update()
    params = model.int_params
    assert params is not None
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        z = torch.round(model.h_a(model.g_a(x))).to(torch.int32)
    with open(args.out, "wb") as f:
        f.write(np.array([len(params.layers), params.n_channels, params.thresholds.numel()], dtype=np.int64).tobytes())
        for layer in params.layers:
            co, ci, k, _ = layer.weight.shape
            f.write(np.array([co, ci, k, layer.up, layer.lo, layer.hi], dtype=np.int64).tobytes())
            f.write(layer.weight.numpy().astype(np.int32).tobytes())
            for t in (layer.bias, layer.mult, layer.shift):
                f.write(t.numpy().astype(np.int64).tobytes())
        f.write(params.thresholds.numpy().astype(np.int64).tobytes())
        f.write(np.array(z.shape, dtype=np.int64).tobytes())
        f.write(z.numpy().astype(np.int32).tobytes())
    print(f"wrote {args.out}: {len(params.layers)} layers, z {tuple(z.shape)}")


if __name__ == "__main__":
    main()
