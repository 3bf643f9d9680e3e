"""Derive release 2 of the default model's fixed-point entropy model from the shipped float
weights and write ``cod_fast/weights/default_int.safetensors``.

Usage: .venv/bin/python tools/export_default_int.py [--check] [--weights DIR]

``--weights DIR``: export the default-model files in DIR (``default.json`` +
``default.safetensors``, e.g. a trained model with ``"context": "checkerboard"``) into
DIR/default_int.safetensors instead of the shipped ones. A model with the checkerboard context
gives release 3's integers; its context grids are calibrated on the gain-free y of the same images.

Deterministic: float64 on the CPU (``cod_fast.models.default.integer_params.export_integer_params``)
from the float weights and a fixed calibration set -- the z of the bundled demo photo
(``cod_fast/data``) and of the golden image (``tools/make_golden.py``), at one torch thread --
which only picks the power-of-two grids of the activations. One exception: z's CDF comes from the
float32 factorized density, whose vector kernels round differently on AMD and Intel CPUs (a few
entries by up to 22/65536 between the two). The committed integers are the model (they are hashed
into release 2's fingerprint); ``--check`` re-derives them, compares instead of writing, and names
what differs. A change of the float weights needs a new export (and a new release).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def calibration_z(net: torch.nn.Module) -> torch.Tensor:
    """Rounded z [N, Nz, h, w] float of the calibration images (demo photo, golden image, and
    their horizontal flips), padded to a common grid with zeros."""
    return calibration(net)[0]


def calibration(net: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(rounded z [N, Nz, h, w], gain-free y [N, M, 4h, 4w]) of the calibration images (demo
    photo, golden image, and their horizontal flips), each padded to a common grid with zeros."""
    from cod_fast.cli import DEMO_IMAGE
    from cod_fast.image_io import to_uint8_chw, uint8_to_unit
    from cod_fast.models.default.model import pad_to_stride

    sys.path.insert(0, str(ROOT / "tools"))
    from make_golden import golden_image

    zs, ys = [], []
    for img in (to_uint8_chw(DEMO_IMAGE), golden_image(72, 100)):
        for flip in (False, True):
            x = uint8_to_unit(img.flip(-1) if flip else img)
            x = x.unsqueeze(0) if x.dim() == 3 else x
            with torch.no_grad():
                y_unit = net.g_a(pad_to_stride(x))
                _, z, _ = net._analyse(y_unit, torch.zeros(1))
            zs.append(torch.round(z))
            ys.append(y_unit)

    def stack(ts: list[torch.Tensor]) -> torch.Tensor:
        h = max(t.shape[2] for t in ts)
        w = max(t.shape[3] for t in ts)
        return torch.cat([torch.nn.functional.pad(t, (0, w - t.shape[3], 0, h - t.shape[2])) for t in ts])

    return stack(zs), stack(ys)


def export(weights_dir: Path | None = None) -> dict[str, torch.Tensor]:
    from cod_fast.models.default import load_default_model
    from cod_fast.models.default.integer_params import export_integer_params

    torch.set_num_threads(1)
    net = load_default_model(weights_dir=weights_dir)
    z, y_unit = calibration(net)
    return export_integer_params(net, z, y_calib=y_unit if net.context is not None else None).state_dict()


def main(argv: list[str] | None = None) -> int:
    from safetensors.torch import load_file

    from cod_fast.checkpoints import save_safetensors
    from cod_fast.models.default import INT_WEIGHTS_FILE, WEIGHTS_DIR

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed file instead of writing")
    ap.add_argument("--weights", type=Path, default=None, help="folder of the default-model files to export")
    args = ap.parse_args(argv)
    sd = {k: v.contiguous() for k, v in export(args.weights).items()}
    path = (args.weights or WEIGHTS_DIR) / INT_WEIGHTS_FILE
    if args.check:
        old = load_file(str(path))
        if set(old) != set(sd):
            print(f"DIFFERENT keys: {sorted(set(old) ^ set(sd))}")
            return 1
        diff = [k for k in sd if not torch.equal(old[k], sd[k])]
        for k in diff:  # z's CDF may differ by a few /65536 on another CPU kind (see the docstring)
            d = (old[k].long() - sd[k].long()).abs() if old[k].shape == sd[k].shape else None
            print(f"DIFFERENT {k}: " + ("shape" if d is None else f"{int((d != 0).sum())} entries, max {int(d.max())}"))
        print("identical" if not diff else "DIFFERENT")
        return 0 if not diff else 1
    layout = "3" if "context.meta" in sd else "2"  # the stream layout (DefaultCodec.layout)
    save_safetensors(sd, path, metadata={"model": "cod_fast.default", "release": layout})
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
