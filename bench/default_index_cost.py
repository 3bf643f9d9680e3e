"""What the fixed-point hyper path's table indexes cost against the float model's, for the
installed default model (a context model: release 3 and later), on Kodak.

``python bench/default_index_cost.py [--data DIR] [--levels 0,2,4] [--images kodim01.png ...]``

Release 1's float path is gone with the context (no codec codes y from float parameters), so
this is an estimate, not real bytes: per image and level, one torch thread, the image is encoded
(RDOQ on), and the anchors' y symbols (checkerboard pass one, coded with the hyper path's
parameters alone) are costed as ideal code lengths under zero-mean Gaussians of the table
scales, each symbol's probability floored at 2**-16 like the 16-bit CDFs
(as ``tests/models/default/test_fixed_point.py`` does): once with the integer path's
indexes (what the stream uses) and once with ``GaussianConditionalTables.build_indexes`` of the
float32 hyper synthesis' scales. Also reported: the share of anchors whose float scale sits at
the 0.11 bound (float index 0; the integer path gives them index 1, see
``test_shipped_integer_path_follows_the_float_model``) and the share of the other anchors whose
index moved (by one table).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cod_fast.codecs.default import load_default_codec
from cod_fast.entropy import GaussianConditionalTables
from cod_fast.int_params.reference import anchor_mask
from cod_fast.models.default.entropy_models import gaussian_likelihood
from cod_fast.models.default.integer_params import entropy_parameters

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "kodak"


def anchor_bits(y: torch.Tensor, idx: torch.Tensor, anchors: torch.Tensor, table: torch.Tensor) -> float:
    """Ideal bits of the anchor symbols ``y[anchors]`` under the tables ``idx[anchors]``."""
    sigma = table.double()[idx[anchors].long()]
    pr = gaussian_likelihood(y[anchors].double(), torch.zeros((), dtype=torch.float64), sigma)
    return float(-torch.log2(pr.clamp_min(2.0**-16)).sum())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--levels", default="0,2,4")
    ap.add_argument("--images", nargs="*", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    codec = load_default_codec()
    params = codec.integer.params
    tables = GaussianConditionalTables()
    table = tables.scale_table
    levels = [float(v) for v in args.levels.split(",")]
    files = [args.data / n for n in args.images] if args.images else sorted(args.data.glob("*.png"))
    totals = {q: [0.0, 0.0, 0, 0, 0, 0] for q in levels}  # bits int, bits float, floor, moved, counted, all
    print(f"release {codec.release} ({codec.fingerprint.hex()}), {len(files)} images, levels {levels}")
    for f in files:
        img = torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1).contiguous()
        row = []
        for q in levels:
            y, z = codec.decode_symbols(codec.encode(img, quality=q))
            idx, _ = entropy_parameters(params, z, q)
            with torch.no_grad():
                fidx = tables.build_indexes(codec.net._hyper_params_cpu(z.float(), torch.tensor([q]))[0])
            a = anchor_mask(y.shape[-2], y.shape[-1]).expand_as(y)
            b_int, b_float = anchor_bits(y, idx, a, table), anchor_bits(y, fidx, a, table)
            floor = fidx[a] == 0
            moved = (idx[a] != fidx[a]) & ~floor
            t = totals[q]
            t[0] += b_int
            t[1] += b_float
            t[2] += int(floor.sum())
            t[3] += int(moved.sum())
            t[4] += int((~floor).sum())
            t[5] += int(floor.numel())
            row.append(f"L{q:g} {100 * (b_int / b_float - 1):+.3f} %")
        print(f.name, "  ".join(row), flush=True)
    print("\n| level | anchor bits, integer / float indexes | at the scale bound | other indexes moved |")
    print("|---|---|---|---|")
    for q, t in totals.items():
        print(f"| {q:g} | {100 * (t[0] / t[1] - 1):+.3f} % | {100 * t[2] / t[5]:.1f} % | {100 * t[3] / t[4]:.2f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
