"""Rate cost of SODEC's integer entropy-parameter path against the float path (issue 6).

``python bench/sodec_rate_cost.py [--steps 800] [--checkerboard] [--data DIR] [--kodak DIR]``

Trains a small SODEC hyperprior (n = m = 64, hidden 64, cz 32, four stride-2 stages) with the
fidelity decoder as its synthesis, briefly, on the default model's training crops (the
wallpaper bank of ``python -m cod_fast.train.data``; never on Kodak), loss
bpp + 0.01 * 255^2 * MSE, Adam 1e-3, batch 8 x 128 px, seed 0. Then, on all 24 Kodak images:

* integer path: ``SodecHyperprior.compress`` (the fixed-point entropy parameters, exported with
  ``update()`` calibrated on training z), the bytes of both streams;
* float path: the same z stream, the float hyper-synthesis, CompressAI's scale rule
  (``build_indexes``) and ``round(y - mean)`` with the float means (the checkerboard pass with
  the float context offsets) -- what a float-only codec would write;

and prints the total bpp of each, the relative cost of the integer path and the PSNR of the
fidelity decoder's image from each path's y_hat. One thread.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--checkerboard", action="store_true")
    ap.add_argument("--data", type=Path, default=Path.home() / ".cache" / "cod_fast" / "wallpapers")
    ap.add_argument("--kodak", type=Path, default=REPO.parent / "shared" / "data" / "kodak")
    args = ap.parse_args(argv)

    from cod_fast.entropy import GaussianConditionalTables
    from cod_fast.models.sodec.hyperprior import HyperpriorConfig, SodecHyperprior
    from cod_fast.models.sodec.integer_params import anchor_mask
    from cod_fast.models.sodec.model import TINY_SODEC, FidelityDecoder, SodecConfig

    torch.set_num_threads(1)
    torch.manual_seed(0)
    hcfg = HyperpriorConfig(in_channels=3, n=64, m=64, hidden=64, cz=32, n_down=4, checkerboard=args.checkerboard)
    base = TINY_SODEC.to_dict()
    cfg = SodecConfig.from_dict({**base, "hyperprior": {**base["hyperprior"], **hcfg.__dict__}, "fidelity_channels": 64})
    hp, fd = SodecHyperprior(hcfg), FidelityDecoder(cfg)
    bank = np.load(args.data / "crops.npy", mmap_mode="r")  # (N, 256, 256, 3) uint8
    test = [torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1).float() / 255
            for f in sorted(args.kodak.glob("*.png"))]
    opt = torch.optim.Adam(list(hp.parameters()) + list(fd.parameters()), lr=1e-3)
    rng = np.random.default_rng(1)
    lam = 0.01
    t0 = time.time()
    for step in range(args.steps):
        idx = rng.integers(0, bank.shape[0], 8)
        tops, lefts = rng.integers(0, bank.shape[1] - 128 + 1, (2, 8))
        x = torch.stack([torch.from_numpy(np.array(bank[i, t:t + 128, l:l + 128])) for i, t, l in zip(idx, tops, lefts)])
        x = x.permute(0, 3, 1, 2).float() / 255
        y_hat, ly, lz = hp(x * 2 - 1)
        x_f = (fd(y_hat) + 1) / 2
        bpp = (-torch.log2(ly).sum() - torch.log2(lz).sum()) / (x.shape[0] * x.shape[2] * x.shape[3])
        mse = F.mse_loss(x_f, x)
        loss = bpp + lam * 255**2 * mse
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 200 == 0 or step == args.steps - 1:
            print(f"step {step} bpp {bpp.item():.3f} psnr {-10 * math.log10(mse.item()):.2f} ({time.time() - t0:.0f}s)", flush=True)
    hp.eval()
    fd.eval()
    with torch.no_grad():  # calibrate the integer export on z of training crops
        calib = torch.from_numpy(np.array(bank[:32])).permute(0, 3, 1, 2).float() / 255
        hp.update(torch.round(hp.h_a(hp.g_a(calib * 2 - 1))))
    tables = GaussianConditionalTables()
    tot = {"int": 0, "float": 0, "px": 0, "psnr_int": [], "psnr_float": []}
    with torch.no_grad():
        for img in test:
            x = img[None] * 2 - 1
            strings, shape = hp.compress(x)
            y_hat_int, z_sym = hp.decompress_latents(strings, shape)
            n_int = sum(len(s) for s in strings)
            y = hp.g_a(x)
            scales, means = hp.hyper_synthesis(z_sym.float())
            if args.checkerboard:
                anchors = anchor_mask(y.shape[2], y.shape[3])
                ds, dm = hp.context_offsets((torch.round(y - means) + means) * anchors)
                scales = torch.where(anchors, scales, scales + ds)
                means = torch.where(anchors, means, means + dm)
            sym = torch.round(y - means).to(torch.int32)
            n_float = len(strings[0]) + len(tables.encode(sym, tables.build_indexes(scales)))
            for key, yh in (("psnr_int", y_hat_int), ("psnr_float", sym + means)):
                rec = ((fd(yh) + 1) / 2).clamp(0, 1)
                tot[key].append(-10 * math.log10(F.mse_loss(torch.round(rec * 255) / 255, img[None]).item()))
            tot["int"] += n_int
            tot["float"] += n_float
            tot["px"] += img.shape[1] * img.shape[2]
    bi, bf = 8 * tot["int"] / tot["px"], 8 * tot["float"] / tot["px"]
    print(f"checkerboard={args.checkerboard} steps={args.steps} Kodak {len(test)} images: integer {bi:.4f} bpp, "
          f"float {bf:.4f} bpp, cost {100 * (bi / bf - 1):+.2f} %; PSNR (fidelity decoder) integer "
          f"{np.mean(tot['psnr_int']):.2f} dB, float {np.mean(tot['psnr_float']):.2f} dB; {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
