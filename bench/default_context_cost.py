"""What the checkerboard context (release 3) costs and gives with the released weights and a
fresh (zero) context, against release 2 of the same weights, on Kodak (issue 19).

``python bench/default_context_cost.py --weights R2DIR [--data DIR] [--images kodim01.png ...] [--levels 0,2,4]
[--kernel 3] [--hidden 128] [--backend auto] [--repeats 2]``

Builds the release-3 model in a temporary folder (``add_checkerboard_context`` on the shipped
model, ``tools/export_default_int.py --weights`` for its integers, ``load_default_codec_from``)
and, per image and level at one torch thread: encodes with both releases (RDOQ on, the codec's
default), checks that the decoded y/z symbols and pixels are identical (a zero context must code
release 2's symbols), and reports the container bpp of each (release 3 splits y into an anchor
and a non-anchor rANS stream, plus one section header) and the best-of-``--repeats`` encode and
decode wall times. The context's integer work does not depend on its weights' values, so the
times are those of a trained context of the same shape; the bpp gain needs training.

``--trained DIR`` compares a trained release 3 instead (a weights folder; ``installed``: the
shipped ``cod_fast/weights``): other weights, so symbols differ; it reports both releases' bpp,
PSNR and times (issue 19: decode no slower than 1.5x release 2 at the same image size).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import RELEASE2_HELP, cpu_name, load_averages, release2_codecs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "kodak"


def build_release3(folder: Path, weights: Path, kernel: int, hidden: int, backend: str):
    """The release-3 codec of release 2's weights (folder ``weights``) plus a zero context, written
    into ``folder``."""
    import importlib.util

    from safetensors.torch import save_file

    from cod_fast.codecs.default import load_default_codec_from
    from cod_fast.models.default import load_default_model
    from cod_fast.models.default.model import add_checkerboard_context

    net = add_checkerboard_context(load_default_model(weights_dir=weights), kernel=kernel, hidden=hidden)
    (folder / "default.json").write_text(json.dumps({"config": net.cfg.to_dict()}))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "default.safetensors"))
    spec = importlib.util.spec_from_file_location("export_default_int", REPO / "tools" / "export_default_int.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--weights", str(folder)])
    return load_default_codec_from(folder, entropy_backend=backend)


def best_time(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv: list[str] | None = None) -> int:
    from cod_fast.image_io import to_uint8_chw
    from cod_fast.metrics import psnr

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--images", nargs="*", default=["kodim01.png", "kodim04.png", "kodim15.png", "kodim23.png"])
    ap.add_argument("--levels", default="0,2,4")
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--weights", type=Path, required=True, help=RELEASE2_HELP)
    ap.add_argument("--trained", default=None, help="a trained release-3 weights folder, or 'installed'")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    levels = [int(v) for v in args.levels.split(",")]
    load_start = load_averages()
    with tempfile.TemporaryDirectory() as tmp:
        if args.trained is None:
            r3 = build_release3(Path(tmp), args.weights, args.kernel, args.hidden, args.backend)
        else:
            from cod_fast.codecs.default import WEIGHTS_DIR, load_default_codec_from

            r3 = load_default_codec_from(WEIGHTS_DIR if args.trained == "installed" else args.trained,
                                         entropy_backend=args.backend)
        _, r2 = release2_codecs(args.weights)
        r2.entropy_backend = args.backend
        rows = []
        for name in args.images:
            img = to_uint8_chw(args.data / name)
            pixels = img.shape[1] * img.shape[2]
            for level in levels:
                row = {"image": name, "level": level}
                for tag, codec in (("r2", r2), ("r3", r3)):
                    row[f"{tag}_enc_s"], data = best_time(lambda c=codec: c.encode(img, quality=float(level)),
                                                          args.repeats)
                    row[f"{tag}_dec_s"], pix = best_time(lambda c=codec, d=data: c.decode(d), args.repeats)
                    row[f"{tag}_bpp"] = 8 * len(data) / pixels
                    row[f"{tag}_psnr"] = psnr(img, pix)
                    row[f"_{tag}"] = (data, pix, codec.decode_symbols(data))
                (_, p2, s2), (_, p3, s3) = row.pop("_r2"), row.pop("_r3")
                row["same_symbols"] = torch.equal(s2[0], s3[0]) and torch.equal(s2[1], s3[1])
                row["same_pixels"] = torch.equal(p2, p3)
                rows.append(row)
                print(json.dumps(row), flush=True)
    n = len(rows)
    summary = {k: sum(r[k] for r in rows) / n for k in rows[0] if k.endswith(("_bpp", "_psnr", "_s"))}
    summary.update({"rows": n, "same_symbols": sum(r["same_symbols"] for r in rows),
                    "same_pixels": sum(r["same_pixels"] for r in rows),
                    "bpp_delta_pct": 100 * (summary["r3_bpp"] / summary["r2_bpp"] - 1),
                    "decode_ratio": summary["r3_dec_s"] / summary["r2_dec_s"],
                    "encode_ratio": summary["r3_enc_s"] / summary["r2_enc_s"],
                    "cpu": cpu_name(), "load_start": load_start, "load_end": load_averages(),
                    "command": "python bench/default_context_cost.py " + " ".join(argv or sys.argv[1:])})
    print(json.dumps(summary, indent=1))
    if args.trained is not None:
        return 0
    return 0 if summary["same_symbols"] == n and summary["same_pixels"] == n else 1


if __name__ == "__main__":
    raise SystemExit(main())
