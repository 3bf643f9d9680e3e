"""Train the default model: ``python -m cod_fast.train --data DIR --out DIR [options]``.

The data folder is the one ``python -m cod_fast.train.data`` prepares (crops.npy, val.png).
Each step draws ``--batch`` random ``--crop``-pixel windows (with random horizontal flips) from
the crop bank and one rate level per window, all from a generator seeded by (seed, step); the
torch generator is also reseeded from (seed, step) before the forward pass. So a run is a
function of its arguments and seed, and ``--resume`` continues a run exactly where its last
checkpoint left it (single-threaded runs are bitwise reproducible; more threads may reorder
float sums).

A fresh run first calibrates the entropy model's initial scales on 16 windows (drawn with the
reserved step -1, see ``DefaultCodecModel.calibrate_scales``), then runs ``--entropy-steps``
steps of entropy warm-up: only h_a, h_s and the z density train, on the rate alone (bits of y
and z, ``DefaultCodecModel.rate_forward``), with their own Adam (``--entropy-lr``, cosine to
5 %) on ``--entropy-batch`` windows of ``--entropy-crop`` pixels. The analysis is fixed during
the warm-up (its nonlinear branch starts silent, so y is the block transform), which makes these
steps several times cheaper than joint ones, and an entropy model fitted to y is what the joint
phase needs first: an untrained hyperprior codes y worse than one global scale per channel.
Step numbers count both phases: the joint phase runs steps ``E .. E + --steps - 1``.

Loss per window: lambda_q * 255^2 * MSE + bpp (rate from the likelihoods of y and z), averaged
over the batch. Adam, linear warm-up then cosine decay to 5% of ``--lr`` at ``--steps``,
gradient norm clipped at 1. Writes OUT/last.pt every ``--ckpt-every`` seconds and at the end,
and appends one line per ``--log-every`` steps to OUT/train.log (and evaluations of the held-out
image at the lowest, middle and highest rate level to the same file).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cod_fast.models.default.model import DefaultCodecModel, DefaultConfig, bits_of


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m cod_fast.train", description="Train the default cod_fast model.")
    ap.add_argument("--data", type=Path, required=True, help="folder made by python -m cod_fast.train.data")
    ap.add_argument("--out", type=Path, required=True, help="folder for checkpoints and the log")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--lambda", dest="lambdas", type=str, default=",".join(str(v) for v in DefaultConfig().lambdas),
        help="comma-separated rate-distortion weights, one per rate level, lowest rate first",
    )
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    ap.add_argument(
        "--stop-after", type=int, default=None,
        help="stop (and checkpoint) after this step; the learning-rate schedule still follows --steps",
    )
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=192, help="training window side (multiple of 64)")
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ckpt-every", type=float, default=300.0, help="seconds between checkpoints")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--config", type=str, default=None, help="JSON of DefaultConfig fields to override")
    ap.add_argument("--entropy-steps", type=int, default=0, help="rate-only warm-up steps of the entropy model")
    ap.add_argument("--entropy-lr", type=float, default=1e-3)
    ap.add_argument("--entropy-batch", type=int, default=8)
    ap.add_argument("--entropy-crop", type=int, default=256)
    args = ap.parse_args(argv)
    if args.crop % 64 or args.crop <= 0 or args.entropy_crop % 64 or args.entropy_crop <= 0:
        ap.error("--crop and --entropy-crop must be positive multiples of 64")
    if args.entropy_steps < 0 or args.entropy_batch <= 0:
        ap.error("--entropy-steps must be >= 0 and --entropy-batch positive")
    if args.steps <= 0 or args.batch <= 0:
        ap.error("--steps and --batch must be positive")
    return args


def make_config(args: argparse.Namespace) -> DefaultConfig:
    fields = json.loads(args.config) if args.config else {}
    lambdas = tuple(float(v) for v in args.lambdas.split(",") if v.strip())
    if not lambdas or any(not (v > 0) for v in lambdas):
        raise ValueError("--lambda needs positive numbers")
    fields["lambdas"] = list(lambdas)
    return DefaultConfig.from_dict(fields)


def learning_rate(step: int, args: argparse.Namespace) -> float:
    """Joint-phase learning rate at global step ``step`` (warm-up, then cosine to 5 %)."""
    step -= args.entropy_steps
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * t)))


def entropy_learning_rate(step: int, args: argparse.Namespace) -> float:
    """Warm-up-phase learning rate at step ``step`` < ``--entropy-steps`` (cosine to 5 %)."""
    t = step / max(1, args.entropy_steps)
    return args.entropy_lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * t)))


def sample_batch(bank: np.ndarray, step: int, args: argparse.Namespace, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows (B, 3, crop, crop) float32 in [0, 1] (channels-last) and levels (B,) float32."""
    rng = np.random.default_rng([args.seed, step + 1])  # step -1: the calibration batch
    n, size = bank.shape[0], bank.shape[1]
    idx = rng.integers(0, n, args.batch)
    tops = rng.integers(0, size - args.crop + 1, args.batch)
    lefts = rng.integers(0, size - args.crop + 1, args.batch)
    flips = rng.integers(0, 2, args.batch)
    q = rng.integers(0, levels, args.batch)
    out = np.empty((args.batch, args.crop, args.crop, 3), dtype=np.uint8)
    for b in range(args.batch):
        w = bank[idx[b], tops[b] : tops[b] + args.crop, lefts[b] : lefts[b] + args.crop]
        out[b] = w[:, ::-1] if flips[b] else w
    x = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last), torch.from_numpy(q).float()


def rate_loss(model: DefaultCodecModel, x: torch.Tensor, q: torch.Tensor) -> dict[str, torch.Tensor]:
    """Entropy warm-up loss: mean bpp of y and z (no distortion term; the analysis is fixed)."""
    out = model.rate_forward(x, q)
    pixels = x.shape[2] * x.shape[3]
    bpp = (bits_of(out["likelihoods_y"]) + bits_of(out["likelihoods_z"])) / pixels
    return {"loss": bpp.mean(), "bpp": bpp.detach(), "mse": torch.full_like(bpp, float("nan"))}


def rd_loss(model: DefaultCodecModel, x: torch.Tensor, q: torch.Tensor) -> dict[str, torch.Tensor]:
    out = model(x, q)
    pixels = x.shape[2] * x.shape[3]
    bpp = (bits_of(out["likelihoods_y"]) + bits_of(out["likelihoods_z"])) / pixels
    mse = (out["x_hat"] - x).pow(2).flatten(1).mean(1)
    lam = torch.tensor(model.cfg.lambdas, dtype=torch.float32)[q.long()]
    loss = (lam * 255.0**2 * mse + bpp).mean()
    return {"loss": loss, "bpp": bpp.detach(), "mse": mse.detach()}


@torch.no_grad()
def evaluate(model: DefaultCodecModel, image: torch.Tensor) -> list[tuple[int, float, float]]:
    """(level, estimated bpp, PSNR dB) of ``image`` (1, 3, H, W) at the lowest/middle/highest level."""
    model.eval()
    res = []
    try:
        for level in sorted({0, model.cfg.levels // 2, model.cfg.levels - 1}):
            out = model(image, float(level))
            bpp = float((bits_of(out["likelihoods_y"]) + bits_of(out["likelihoods_z"])) / (image.shape[2] * image.shape[3]))
            mse = float(F.mse_loss(out["x_hat"].clamp(0, 1), image))
            res.append((level, bpp, 10 * math.log10(1.0 / max(mse, 1e-12))))
    finally:
        model.train()
    return res


def save_checkpoint(
    path: Path,
    model: DefaultCodecModel,
    opt: torch.optim.Optimizer,
    opt_entropy: torch.optim.Optimizer,
    step: int,
    args: argparse.Namespace,
) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "optimizer_entropy": opt_entropy.state_dict(),
            "step": step,
            "config": model.cfg.to_dict(),
            "args": {k: str(v) for k, v in vars(args).items()},
        },
        tmp,
    )
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    bank = np.load(args.data / "crops.npy", mmap_mode="r")
    if bank.ndim != 4 or bank.shape[3] != 3 or bank.shape[1] < args.crop:
        raise ValueError(f"crop bank {args.data / 'crops.npy'} has shape {bank.shape}; expected (N, S, S, 3), S >= {args.crop}")
    val_path = args.data / "val.png"
    val = None
    if val_path.exists():
        arr = np.asarray(Image.open(val_path).convert("RGB"))
        val = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float().div(255.0)
        val = val[:, :, : val.shape[2] // 64 * 64, : val.shape[3] // 64 * 64]

    ckpt_path = args.out / "last.pt"
    step = 0
    torch.manual_seed(args.seed)
    if args.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        cfg = DefaultConfig.from_dict(ckpt["config"])
        model = DefaultCodecModel(cfg)
        model.load_state_dict(ckpt["model"])
        step = int(ckpt["step"])
    else:
        cfg = make_config(args)
        model = DefaultCodecModel(cfg)
        ckpt = None
        # Calibration batch: 16 windows from a generator keyed apart from every training step.
        calib_args = argparse.Namespace(**{**vars(args), "batch": 16})
        model.calibrate_scales(sample_batch(bank, -1, calib_args, cfg.levels)[0])
    model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    opt_entropy = torch.optim.Adam(model.entropy_parameters(), lr=args.entropy_lr)
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        if "optimizer_entropy" in ckpt:
            opt_entropy.load_state_dict(ckpt["optimizer_entropy"])
    entropy_args = argparse.Namespace(**{**vars(args), "batch": args.entropy_batch, "crop": args.entropy_crop})

    log = open(args.out / "train.log", "a", buffering=1)
    log.write(f"# start step {step} params {model.num_parameters()} args {json.dumps({k: str(v) for k, v in vars(args).items()})}\n")
    last_ckpt = time.monotonic()
    t0 = time.monotonic()
    acc = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0, "n": 0}
    total = args.entropy_steps + args.steps
    end = total if args.stop_after is None else min(total, args.stop_after)
    while step < end:
        warm = step < args.entropy_steps
        torch.manual_seed(args.seed * 1_000_003 + step)
        if warm:
            x, q = sample_batch(bank, step, entropy_args, cfg.levels)
            lr, optimizer, params = entropy_learning_rate(step, args), opt_entropy, model.entropy_parameters()
            r = rate_loss(model, x, q)
        else:
            x, q = sample_batch(bank, step, args, cfg.levels)
            lr, optimizer, params = learning_rate(step, args), opt, list(model.parameters())
            r = rd_loss(model, x, q)
        for g in optimizer.param_groups:
            g["lr"] = lr
        model.zero_grad(set_to_none=True)
        r["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        acc["loss"] += float(r["loss"].detach())
        acc["bpp"] += float(r["bpp"].mean())
        acc["psnr"] += float((10 * torch.log10(1.0 / r["mse"].clamp_min(1e-12))).mean())
        acc["n"] += 1
        if step % args.log_every == 0 or step == end:
            n = acc["n"]
            log.write(
                f"{'warm' if warm else 'step'} {step} loss {acc['loss'] / n:.4f} bpp {acc['bpp'] / n:.4f} "
                f"psnr {acc['psnr'] / n:.2f} lr {lr:.2e} elapsed {time.monotonic() - t0:.0f}s\n"
            )
            acc = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0, "n": 0}
        if val is not None and (step % args.eval_every == 0 or step == end):
            evals = evaluate(model, val)
            log.write(f"eval {step} " + " ".join(f"q{l}: {b:.4f}bpp {p:.2f}dB" for l, b, p in evals) + "\n")
        if time.monotonic() - last_ckpt > args.ckpt_every or step == end:
            save_checkpoint(ckpt_path, model, opt, opt_entropy, step, args)
            last_ckpt = time.monotonic()
    if not ckpt_path.exists():  # e.g. --stop-after 0: keep the calibrated starting point
        save_checkpoint(ckpt_path, model, opt, opt_entropy, step, args)
    log.write(f"# done step {step}\n")
    log.close()


if __name__ == "__main__":
    main()
