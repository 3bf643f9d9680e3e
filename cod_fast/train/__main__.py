"""Train the default model: ``python -m cod_fast.train --data DIR|BUNDLE --out DIR [options]``.

The data is the folder ``python -m cod_fast.train.data`` prepares (crops.npy, val.png) or a
bundle file written from it by ``python -m cod_fast.train.bundle`` (pre-cropped images in one
<= 60 MB file, for a machine that gets only the repository checkout).
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

``--init-from default|PATH`` starts a fresh run from existing weights instead (the shipped
model, an exported weights folder, or a training checkpoint; the config comes from there, with
``--config``/``--lambda`` applied on top, and parameters the source lacks keep their fresh
initialisation); calibration is skipped and the optimizers start fresh.

``--device cuda`` trains on a GPU; ``--bf16`` runs the forward pass under bfloat16 autocast (on
any device; the fixed block transforms, the last layers of h_a and h_s and the z density stay
float32, so y, the means, the scales and the likelihoods keep float32 precision).

``--ema D`` keeps an exponential moving average of the weights (decay min(D, (1 + n) / (10 + n))
after n updates, updated after every optimizer step, float32, in last.pt so that ``--resume``
stays exact): the held-out image is then also evaluated with it ("eval-ema" lines) and
``--snapshot-every`` writes OUT/ema_<step>.pt beside model_<step>.pt (the same format: export,
--init-from and ``python -m cod_fast.train.check`` read either). A mid-schedule checkpoint's
averaged weights are usually the better release candidate.

SIGTERM/SIGINT end the run cleanly after the current step, with a checkpoint; SIGSTOP/SIGCONT
(pausing the process) need nothing. ``--pid-file`` records the process id. ``--time-limit S``
stops the same way once this invocation has trained S seconds (for a machine lent for minutes;
``--resume`` continues).

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
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cod_fast.models.default.model import DefaultCodecModel, DefaultConfig, bits_of


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m cod_fast.train", description="Train the default cod_fast model.")
    ap.add_argument(
        "--data", type=Path, required=True,
        help="folder made by python -m cod_fast.train.data, or a bundle file from python -m cod_fast.train.bundle",
    )
    ap.add_argument("--out", type=Path, required=True, help="folder for checkpoints and the log")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--lambda", dest="lambdas", type=str, default=None,
        help="comma-separated rate-distortion weights, one per rate level, lowest rate first "
        "(default: the config's, or with --init-from the source's)",
    )
    ap.add_argument(
        "--init-from", type=str, default=None,
        help="start a fresh run from weights: 'default' (the shipped model), an exported weights folder "
        "(default.safetensors + default.json) or a training checkpoint (.pt; FILE@ema: its moving average); "
        "ignored by --resume",
    )
    ap.add_argument(
        "--init-skip-mismatch", action="store_true",
        help="with --init-from: entries of another shape or unknown to the model are skipped (not an error)",
    )
    ap.add_argument("--device", type=str, default="cpu", help="cpu, cuda, cuda:N")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    ap.add_argument("--pid-file", type=Path, default=None, help="write the process id here")
    ap.add_argument(
        "--time-limit", type=float, default=None,
        help="seconds of this invocation's training loop after which it checkpoints and stops (a leased GPU)",
    )
    ap.add_argument("--ema", type=float, default=0.0, help="decay of a moving average of the weights (0: none)")
    ap.add_argument(
        "--snapshot-every", type=int, default=0,
        help="also keep the weights alone as OUT/model_<step>.pt every this many steps (0: never)",
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
    if args.snapshot_every < 0:
        ap.error("--snapshot-every must be >= 0")
    if not (0.0 <= args.ema < 1.0):
        ap.error("--ema must be in [0, 1)")
    return args


def make_config(args: argparse.Namespace, base: dict[str, Any] | None = None) -> DefaultConfig:
    """The run's config: ``base`` (the --init-from source's config, or the defaults) with the
    ``--config`` fields and ``--lambda`` applied on top."""
    fields = dict(base or {})
    fields.update(json.loads(args.config) if args.config else {})
    if args.lambdas is not None:
        lambdas = tuple(float(v) for v in args.lambdas.split(",") if v.strip())
        if not lambdas or any(not (v > 0) for v in lambdas):
            raise ValueError("--lambda needs positive numbers")
        fields["lambdas"] = list(lambdas)
    return DefaultConfig.from_dict(fields)


def init_source(source: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config dict, float32 state dict) of ``--init-from``: 'default', a weights folder or a
    training checkpoint file; ``FILE@ema`` takes the checkpoint's moving average (``--ema``)."""
    from cod_fast.models.default import CONFIG_FILE, WEIGHTS_DIR, WEIGHTS_FILE  # local: import time

    average = source.endswith("@ema")
    if average:
        source = source[: -len("@ema")]
    path = WEIGHTS_DIR if source == "default" else Path(source)
    if path.is_dir() and not average:
        from safetensors.torch import load_file  # local: import time

        meta = json.loads((path / CONFIG_FILE).read_text())
        state = load_file(str(path / WEIGHTS_FILE))
        return meta["config"], {k: v.to(torch.float32) for k, v in state.items()}
    if path.is_file():
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
            raise ValueError(f"--init-from {path}: not a training checkpoint (needs 'model' and 'config')")
        if average and "ema" not in ckpt:
            raise ValueError(f"--init-from {path}@ema: the checkpoint holds no moving average (--ema)")
        return ckpt["config"], {k: v.to(torch.float32) for k, v in ckpt["ema" if average else "model"].items()}
    raise FileNotFoundError(f"--init-from {source}: no such weights folder or checkpoint")


def load_init(model: DefaultCodecModel, state: dict[str, torch.Tensor], skip_mismatch: bool = False) -> list[str]:
    """Copy ``state`` into ``model``; returns the names of the model's entries not copied (they
    keep their initialisation): those the state lacks and, with ``skip_mismatch``, those the
    state holds with another shape or the model lacks. Without it a state entry the model
    lacks, or of another shape, is an error."""
    own = model.state_dict()
    unexpected = sorted(k for k in state if k not in own)
    wrong = sorted(k for k in state if k in own and state[k].shape != own[k].shape)
    if (unexpected or wrong) and not skip_mismatch:
        raise ValueError(
            f"--init-from weights do not fit the model: unexpected {unexpected[:5]}, wrong shape {wrong[:5]} "
            "(--init-skip-mismatch keeps the model's own initialisation for those)"
        )
    usable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    missing, _ = model.load_state_dict(usable, strict=False)
    return sorted(missing)


def load_data(path: Path) -> tuple[np.ndarray, torch.Tensor | None]:
    """The crop bank (N, S, S, 3) uint8 and the held-out image (1, 3, H, W) float in [0, 1]
    (H, W cut to multiples of 64; None when absent) from a data folder or a bundle file."""
    if path.is_file():
        from cod_fast.train.bundle import read_bundle  # local: import time

        bank, val_arr = read_bundle(path)
    else:
        bank = np.load(path / "crops.npy", mmap_mode="r")
        val_path = path / "val.png"
        val_arr = np.asarray(Image.open(val_path).convert("RGB")) if val_path.exists() else None
    val = None
    if val_arr is not None:
        val = torch.from_numpy(val_arr.copy()).permute(2, 0, 1)[None].float().div(255.0)
        val = val[:, :, : val.shape[2] // 64 * 64, : val.shape[3] // 64 * 64]
    return bank, val


#: Modules that stay float32 under ``--bf16``: the fixed block transforms (y and x_hat's linear
#: part), the layers that produce z and the scales/means, and the z density.
FLOAT32_MODULES = ("g_a.base", "g_s.base", "h_a.conv3", "h_s.conv3", "density_z")


def keep_float32(model: DefaultCodecModel, device_type: str, names: tuple[str, ...] = FLOAT32_MODULES) -> None:
    """Make the named submodules (those that exist) run in float32 with autocast off: their
    floating inputs are cast to float32. Changes the instances' ``forward`` only (the state
    dict is unchanged)."""
    for name in names:
        try:
            mod = model.get_submodule(name)
        except AttributeError:
            continue
        if mod is None:
            continue
        mod.forward = _float32_forward(mod.forward, device_type)


def _float32_forward(inner: Callable[..., Any], device_type: str) -> Callable[..., Any]:
    def forward(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type=device_type, enabled=False):
            cast = [a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
            return inner(*cast, **kwargs)

    return forward


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
    bpp = (bits_of(out["likelihoods_y"].float()) + bits_of(out["likelihoods_z"].float())) / pixels
    return {"loss": bpp.mean(), "bpp": bpp.detach(), "mse": torch.full_like(bpp, float("nan"))}


def rd_loss(model: DefaultCodecModel, x: torch.Tensor, q: torch.Tensor) -> dict[str, torch.Tensor]:
    out = model(x, q)
    pixels = x.shape[2] * x.shape[3]
    bpp = (bits_of(out["likelihoods_y"].float()) + bits_of(out["likelihoods_z"].float())) / pixels
    mse = (out["x_hat"].float() - x).pow(2).flatten(1).mean(1)
    lam = torch.tensor(model.cfg.lambdas, dtype=torch.float32, device=q.device)[q.long()]
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
    ema: "WeightAverage | None" = None,
) -> None:
    tmp = path.with_suffix(".tmp")
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "optimizer_entropy": opt_entropy.state_dict(),
        "step": step,
        "config": model.cfg.to_dict(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    if ema is not None:
        state["ema"] = ema.state_cpu()
        state["ema_updates"] = ema.updates
    torch.save(state, tmp)
    os.replace(tmp, path)


def save_snapshot(path: Path, weights: dict[str, torch.Tensor], cfg: DefaultConfig, step: int) -> None:
    """Weights alone ({"model", "config", "step"}: what export and --init-from read)."""
    tmp = path.with_suffix(".tmp")
    torch.save({"model": {k: v.detach().cpu() for k, v in weights.items()}, "config": cfg.to_dict(), "step": step}, tmp)
    os.replace(tmp, path)


class WeightAverage:
    """Exponential moving average of a model's state (float entries averaged, others copied)."""

    def __init__(self, model: DefaultCodecModel, decay: float, state: dict[str, torch.Tensor] | None = None,
                 updates: int = 0) -> None:
        self.decay = decay
        self.updates = updates
        own = model.state_dict()
        src = own if state is None else state
        self.avg = {k: src[k].detach().to(device=v.device, dtype=v.dtype).clone() for k, v in own.items()}
        self._float = [(self.avg[k], v) for k, v in own.items() if v.is_floating_point()]
        self._other = [(self.avg[k], v) for k, v in own.items() if not v.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        torch._foreach_lerp_([a for a, _ in self._float], [v for _, v in self._float], 1.0 - d)
        for a, v in self._other:
            a.copy_(v)

    def state_cpu(self) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.avg.items()}

    def model(self, cfg: DefaultConfig, device: torch.device) -> DefaultCodecModel:
        """A fresh model holding the average (for evaluation)."""
        m = DefaultCodecModel(cfg).to(device)
        m.load_state_dict(self.avg)
        return m


class _StopFlag:
    """Set by SIGTERM/SIGINT: the loop checkpoints after the current step and returns."""

    def __init__(self) -> None:
        self.set = False
        self.reason = ""
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.set, self.reason = True, signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device available")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.pid_file is not None:
        args.pid_file.write_text(f"{os.getpid()}\n")
    bank, val = load_data(args.data)
    if bank.ndim != 4 or bank.shape[3] != 3 or bank.shape[1] < max(args.crop, args.entropy_crop if args.entropy_steps else 0):
        raise ValueError(f"crop bank of {args.data} has shape {bank.shape}; expected (N, S, S, 3), S >= {args.crop}")

    ckpt_path = args.out / "last.pt"
    step = 0
    torch.manual_seed(args.seed)
    init_note = ""
    if args.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        cfg = DefaultConfig.from_dict(ckpt["config"])
        model = DefaultCodecModel(cfg)
        model.load_state_dict(ckpt["model"])
        step = int(ckpt["step"])
    elif args.init_from is not None:
        base, state = init_source(args.init_from)
        cfg = make_config(args, base)
        model = DefaultCodecModel(cfg)
        missing = load_init(model, state, args.init_skip_mismatch)
        ckpt = None
        init_note = f" init-from {args.init_from} (fresh parameters: {len(missing)})"
    else:
        cfg = make_config(args)
        model = DefaultCodecModel(cfg)
        ckpt = None
        # Calibration batch: 16 windows from a generator keyed apart from every training step.
        calib_args = argparse.Namespace(**{**vars(args), "batch": 16})
        model.calibrate_scales(sample_batch(bank, -1, calib_args, cfg.levels)[0])
    model = model.to(device=device, memory_format=torch.channels_last)
    model.train()
    if args.bf16:
        keep_float32(model, device.type)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    opt_entropy = torch.optim.Adam(model.entropy_parameters(), lr=args.entropy_lr)
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        if "optimizer_entropy" in ckpt:
            opt_entropy.load_state_dict(ckpt["optimizer_entropy"])
    entropy_args = argparse.Namespace(**{**vars(args), "batch": args.entropy_batch, "crop": args.entropy_crop})
    if val is not None:
        val = val.to(device)
    ema = None
    if args.ema > 0:
        if ckpt is not None and "ema" in ckpt:
            ema = WeightAverage(model, args.ema, ckpt["ema"], int(ckpt.get("ema_updates", 0)))
        else:  # a fresh run, or a run resumed without an average so far: start from the weights
            ema = WeightAverage(model, args.ema)
            init_note += f" ema starts at step {step}"

    log = open(args.out / "train.log", "a", buffering=1)
    log.write(
        f"# start step {step} params {model.num_parameters()} device {device}{' bf16' if args.bf16 else ''}"
        f" bank {tuple(bank.shape)}{init_note} args {json.dumps({k: str(v) for k, v in vars(args).items()})}\n"
    )
    last_ckpt = time.monotonic()
    t0 = time.monotonic()
    acc = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0, "n": 0}
    total = args.entropy_steps + args.steps
    end = total if args.stop_after is None else min(total, args.stop_after)
    if val is not None and step == 0 and args.init_from is not None and not args.resume:
        evals = evaluate(model, val)
        log.write(f"eval {step} " + " ".join(f"q{lv}: {b:.4f}bpp {p:.2f}dB" for lv, b, p in evals) + " (init)\n")
    with _StopFlag() as stop:
        while step < end and not stop.set:
            warm = step < args.entropy_steps
            torch.manual_seed(args.seed * 1_000_003 + step)
            if warm:
                x, q = sample_batch(bank, step, entropy_args, cfg.levels)
                lr, optimizer, params = entropy_learning_rate(step, args), opt_entropy, model.entropy_parameters()
                loss_fn = rate_loss
            else:
                x, q = sample_batch(bank, step, args, cfg.levels)
                lr, optimizer, params = learning_rate(step, args), opt, list(model.parameters())
                loss_fn = rd_loss
            x, q = x.to(device, non_blocking=True), q.to(device, non_blocking=True)
            for g in optimizer.param_groups:
                g["lr"] = lr
            model.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.bf16):
                r = loss_fn(model, x, q)
            r["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            if ema is not None:
                ema.update()
            step += 1
            acc["loss"] += float(r["loss"].detach())
            acc["bpp"] += float(r["bpp"].mean())
            acc["psnr"] += float((10 * torch.log10(1.0 / r["mse"].clamp_min(1e-12))).mean())
            acc["n"] += 1
            if args.time_limit is not None and time.monotonic() - t0 >= args.time_limit:
                stop.set, stop.reason = True, "time limit"
            last = step == end or stop.set
            if step % args.log_every == 0 or last:
                n = acc["n"]
                log.write(
                    f"{'warm' if warm else 'step'} {step} loss {acc['loss'] / n:.4f} bpp {acc['bpp'] / n:.4f} "
                    f"psnr {acc['psnr'] / n:.2f} lr {lr:.2e} elapsed {time.monotonic() - t0:.0f}s\n"
                )
                acc = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0, "n": 0}
            if val is not None and (step % args.eval_every == 0 or step == end):
                evals = evaluate(model, val)
                log.write(f"eval {step} " + " ".join(f"q{lv}: {b:.4f}bpp {p:.2f}dB" for lv, b, p in evals) + "\n")
                if ema is not None:
                    evals = evaluate(ema.model(cfg, device), val)
                    log.write(f"eval-ema {step} " + " ".join(f"q{lv}: {b:.4f}bpp {p:.2f}dB" for lv, b, p in evals) + "\n")
            if args.snapshot_every and step % args.snapshot_every == 0:
                save_snapshot(args.out / f"model_{step}.pt", model.state_dict(), cfg, step)
                if ema is not None:
                    save_snapshot(args.out / f"ema_{step}.pt", ema.avg, cfg, step)
            if time.monotonic() - last_ckpt > args.ckpt_every or last:
                save_checkpoint(ckpt_path, model, opt, opt_entropy, step, args, ema)
                last_ckpt = time.monotonic()
    if not ckpt_path.exists():  # e.g. --stop-after 0: keep the calibrated starting point
        save_checkpoint(ckpt_path, model, opt, opt_entropy, step, args, ema)
    log.write(f"# {f'stopped ({stop.reason}) at' if stop.set else 'done'} step {step}\n")
    log.close()


if __name__ == "__main__":
    main()
