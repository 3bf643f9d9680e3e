"""Training-step time of the default model, float32 against bfloat16 autocast (``--bf16``).

``python bench/bench_train_step.py [--data DIR|BUNDLE] [--steps 12] [--threads 1] [--device cpu]``

Builds the model from the shipped weights (as ``python -m cod_fast.train --init-from default``),
then times whole training steps (batch sampling, forward, loss, backward, clipping, Adam) of the
trainer's own functions, alternating float32 and bf16 steps so both see the same machine load;
each mode has its own model and optimizer. Prints the median and min step time per mode and the
loss of the first step of each (the same batch and weights), and the cosine similarity and
relative norm of the two gradients of that step: how faithfully a bf16 step follows the float32
one.
Without ``--data``, random smooth windows stand in for the crop bank.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from cod_fast.train import __main__ as trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=192)
    ap.add_argument("--device", type=str, default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if a.data is not None:
        bank, _ = trainer.load_data(a.data)
    else:
        rng = np.random.default_rng(0)
        small = rng.integers(0, 256, (16, 32, 32, 3)).astype(np.float32)
        bank = np.repeat(np.repeat(small, 8, axis=1), 8, axis=2).astype(np.uint8)
    args = trainer.parse_args(["--data", ".", "--out", ".", "--batch", str(a.batch), "--crop", str(a.crop)])
    base, state = trainer.init_source("default")
    runs = {}
    for mode in ("fp32", "bf16"):
        cfg = trainer.make_config(args, base)
        model = trainer.DefaultCodecModel(cfg)
        trainer.load_init(model, state)
        model = model.to(device=device, memory_format=torch.channels_last).train()
        if mode == "bf16":
            trainer.keep_float32(model, device.type)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        runs[mode] = (model, opt, [], [])

    grads: dict[str, torch.Tensor] = {}

    def step(mode: str, i: int) -> None:
        model, opt, times, losses = runs[mode]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        torch.manual_seed(i)
        x, q = trainer.sample_batch(bank, i, args, model.cfg.levels)
        x, q = x.to(device), q.to(device)
        model.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=mode == "bf16"):
            r = trainer.rd_loss(model, x, q)
        r["loss"].backward()
        if i == 0:
            grads[mode] = torch.cat([p.grad.flatten().double() for p in model.parameters() if p.grad is not None])
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
        opt.step()
        loss = float(r["loss"].detach())
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        losses.append(loss)

    for i in range(a.steps + 1):  # step 0 of each mode is a warm-up, not timed
        for mode in (("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")):
            step(mode, i)
    print(f"device {device}, threads {a.threads}, batch {a.batch} x {a.crop} px, {a.steps} timed steps per mode")
    for mode, (_, _, times, losses) in runs.items():
        t = times[1:]
        print(f"{mode}: median {statistics.median(t) * 1e3:.0f} ms/step, min {min(t) * 1e3:.0f} ms, first loss {losses[0]:.5f}")
    f, b = (statistics.median(runs[m][2][1:]) for m in ("fp32", "bf16"))
    print(f"bf16 speed-up (median): {f / b:.2f}x")
    g32, g16 = grads["fp32"], grads["bf16"]
    cos = float(torch.dot(g32, g16) / (g32.norm() * g16.norm()))
    print(f"first-step gradients, bf16 vs fp32: cosine {cos:.5f}, norm ratio {float(g16.norm() / g32.norm()):.4f}, "
          f"relative difference {float((g16 - g32).norm() / g32.norm()):.4f}")


if __name__ == "__main__":
    main()
