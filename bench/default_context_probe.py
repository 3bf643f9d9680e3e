"""What a checkerboard context buys the released default model when only the context is trained
(issue 19): a lower bound on the gain of joint training.

``python bench/default_context_probe.py --weights R2DIR --data /work/train/data/crops.npy [--steps 300]
[--batch 4] [--crop 256] [--lr 1e-3] [--kernel 3] [--hidden 128] [--seed 0]
[--kodak DIR] [--images kodim01.png ...] [--levels 0,2,4] [--save DIR]``

Freezes the released model (release 2's float weights), adds a fresh context
(``add_checkerboard_context``) and trains the context alone on the rate of y (the training
proxy: uniform noise for the rate, straight-through rounding for the anchors the context reads;
rate levels drawn uniformly in [0, levels - 1]) on random crops of a ``python -m
cod_fast.train.data`` crop bank (never Kodak). Then it exports release 3
(``tools/export_default_int.py --weights``) and codes Kodak images with it and with release 2:
real container bytes, PSNR (RGB, 8-bit), at one torch thread. Seeded; the printed JSON has the
training log and the per-image rows.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import RELEASE2_HELP, cpu_name, load_averages, release2_codecs

REPO = Path(__file__).resolve().parents[1]


def train_context(net: torch.nn.Module, crops: np.ndarray, args: argparse.Namespace) -> list[dict]:
    """Adam on ``net.context`` alone, minimising the bits per pixel of y (rate_forward, train mode)."""
    from cod_fast.models.default.model import bits_of

    for p in net.parameters():
        p.requires_grad_(False)
    params = list(net.context.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=args.lr)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    net.train()
    log, t0 = [], time.time()
    side = crops.shape[1]
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, crops.shape[0], args.batch)
        oy, ox = rng.integers(0, side - args.crop + 1, 2)
        x = torch.from_numpy(np.ascontiguousarray(crops[idx, oy:oy + args.crop, ox:ox + args.crop]))
        x = x.permute(0, 3, 1, 2).float() / 255.0
        q = torch.from_numpy(rng.uniform(0, net.cfg.levels - 1, args.batch)).float()
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        out = net.rate_forward(x, q)
        bpp = bits_of(out["likelihoods_y"]).mean() / (args.crop * args.crop)
        opt.zero_grad(set_to_none=True)
        bpp.backward()
        opt.step()
        if step % 25 == 0 or step == 1:
            log.append({"step": step, "bpp_y": round(float(bpp.detach()), 5), "s": round(time.time() - t0, 1)})
            print(json.dumps(log[-1]), flush=True)
    return log


def main(argv: list[str] | None = None) -> int:
    from safetensors.torch import save_file

    from cod_fast.codecs.default import load_default_codec_from
    from cod_fast.image_io import to_uint8_chw
    from cod_fast.metrics import psnr
    from cod_fast.models.default import load_default_model
    from cod_fast.models.default.model import add_checkerboard_context

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="crops.npy of python -m cod_fast.train.data")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kodak", type=Path, default=REPO.parent / "shared" / "data" / "kodak")
    ap.add_argument("--images", nargs="*", default=["kodim01.png", "kodim04.png", "kodim15.png", "kodim23.png"])
    ap.add_argument("--levels", default="0,2,4")
    ap.add_argument("--save", type=Path, default=None, help="keep the release-3 files here")
    ap.add_argument("--weights", type=Path, required=True, help=RELEASE2_HELP)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load_start = load_averages()
    crops = np.load(args.data, mmap_mode="r")
    net = add_checkerboard_context(load_default_model(weights_dir=args.weights), kernel=args.kernel, hidden=args.hidden, seed=args.seed)
    log = train_context(net, crops, args)
    net.eval()
    folder = args.save or Path(tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "default.json").write_text(json.dumps({"config": net.cfg.to_dict()}))
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(folder / "default.safetensors"))
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_default_int", REPO / "tools" / "export_default_int.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--weights", str(folder)])
    r3, (_, r2) = load_default_codec_from(folder), release2_codecs(args.weights)
    rows = []
    for name in args.images:
        img = to_uint8_chw(args.kodak / name)
        px = img.shape[1] * img.shape[2]
        for level in (int(v) for v in args.levels.split(",")):
            row = {"image": name, "level": level}
            for tag, codec in (("r2", r2), ("r3", r3)):
                data = codec.encode(img, quality=float(level))
                row[f"{tag}_bpp"] = round(8 * len(data) / px, 5)
                row[f"{tag}_psnr"] = round(psnr(img, codec.decode(data)), 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for level in sorted({r["level"] for r in rows}):
        rs = [r for r in rows if r["level"] == level]
        b2, b3 = (sum(r[f"{t}_bpp"] for r in rs) / len(rs) for t in ("r2", "r3"))
        p2, p3 = (sum(r[f"{t}_psnr"] for r in rs) / len(rs) for t in ("r2", "r3"))
        summary[level] = {"r2_bpp": round(b2, 5), "r3_bpp": round(b3, 5), "bpp_delta_pct": round(100 * (b3 / b2 - 1), 2),
                          "r2_psnr": round(p2, 3), "r3_psnr": round(p3, 3)}
    print(json.dumps({"summary": summary, "train_log_last": log[-1], "cpu": cpu_name(), "load_start": load_start,
                      "load_end": load_averages(), "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
