"""Export a training checkpoint as the shipped default model.

``python -m cod_fast.train.export --ckpt OUT/last.pt --out cod_fast/weights`` writes
``default.safetensors`` (every tensor of the state dict as float16, about half the size of
float32; the loader converts back to float32) and ``default.json`` (the ``DefaultConfig``, the
training step and arguments, and the sha256 of the safetensors file). ``--ema`` exports the
checkpoint's moving average of the weights (``python -m cod_fast.train --ema``) instead;
``--release N`` records ``"release": N`` in ``default.json`` (the number ``DefaultCodec.release``
reports for weights that are shipped; trained folders without it report their stream layout).
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch

from cod_fast.checkpoints import save_safetensors


def export(ckpt_path: Path, out_dir: Path, extra: dict | None = None, average: bool = False) -> dict:
    """Write default.safetensors + default.json from a checkpoint (its moving average when
    ``average``); returns the JSON metadata."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if average and "ema" not in ckpt:
        raise ValueError(f"{ckpt_path} holds no moving average (train with --ema)")
    weights = ckpt["ema" if average else "model"]
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in weights.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / "default.safetensors"
    save_safetensors(state, weights, metadata={"format": "pt", "model": "cod_fast.default"})
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    meta = {
        "model": "cod_fast.default",
        "config": ckpt["config"],
        "dtype": "float16",
        "step": int(ckpt["step"]),
        "train_args": ckpt.get("args", {}),
        "weights": "moving average" if average else "last step",
        "sha256": digest,
        "parameters": int(sum(v.numel() for v in state.values())),
    }
    if extra:
        meta.update(extra)
    (out_dir / "default.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m cod_fast.train.export", description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ema", action="store_true", help="export the moving average of the weights")
    ap.add_argument(
        "--release", type=int, default=None,
        help="record this release number in default.json (shipped weights only; DefaultCodec.release)",
    )
    args = ap.parse_args(argv)
    if args.release is not None and args.release < 1:
        ap.error("--release must be a positive release number")
    meta = export(args.ckpt, args.out, extra=None if args.release is None else {"release": args.release},
                  average=args.ema)
    size = (args.out / "default.safetensors").stat().st_size
    print(f"wrote {args.out}/default.safetensors ({size / 1e6:.2f} MB, {meta['parameters']} parameters, step {meta['step']})")


if __name__ == "__main__":
    main()
