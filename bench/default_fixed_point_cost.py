"""Rate cost of the default model's fixed-point entropy parameters (release 2) against the float
path (release 1), and the cross-thread decode check, on Kodak (issue 13).

``python bench/default_fixed_point_cost.py --weights R2DIR [--data DIR] [--levels 0,1,2,3,4] [--cross 0,2,4]
[--images kodim01.png ...] [--json docs/kodak_default_fixed_point.json] [--md docs/kodak_default.md]``

Same float weights, two releases (``bench_common.release2_codecs(--weights)``: cod_fast 0.2.0 ships
release 3, so the release-2 files come from a folder):
release 1 codes y with the float32 hyper synthesis' table indexes and means, release 2 with the
fixed-point ones. For every image and level, at one torch thread: each release encodes (RDOQ on,
the codec's default) and decodes; bpp is the whole container file; PSNR (RGB, 8-bit) of each
decode against the original. At the ``--cross`` levels it also encodes at two threads and checks:
release 2 -- the decoded integers (y and z symbols) of the 1-thread stream decoded at 2 threads
and of the 2-thread stream decoded at 1 thread equal the same-thread ones (and whether the two
streams' bytes are equal); release 1 -- whether decoding at the other thread count is refused
(``EntropyParameterMismatchError``), i.e. the defect release 2 removes. With ``--md`` the table
replaces the section between the markers of ``docs/kodak_default.md`` (appended when absent).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import RELEASE2_HELP, cpu_name, load_averages, release2_codecs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "kodak"
BEGIN = "<!-- fixed-point cost: begin (bench/default_fixed_point_cost.py) -->"
END = "<!-- fixed-point cost: end -->"


def _ints(codec, data: bytes, threads: int) -> bytes | None:
    """Decoded y + z symbols as bytes at ``threads`` torch threads, None when refused."""
    from cod_fast.errors import EntropyParameterMismatchError

    torch.set_num_threads(threads)
    try:
        y, z = codec.decode_symbols(data)
    except EntropyParameterMismatchError:
        return None
    finally:
        torch.set_num_threads(1)
    return y.numpy().tobytes() + z.numpy().tobytes()


def run_image(path: Path, levels: list[int], cross: set[int], c1, c2) -> list[dict]:
    from cod_fast.image_io import to_uint8_chw
    from cod_fast.metrics import psnr

    img = to_uint8_chw(path)
    pixels = img.shape[1] * img.shape[2]
    rows = []
    for level in levels:
        torch.set_num_threads(1)
        row: dict = {"image": path.name, "level": level}
        for tag, codec in (("float", c1), ("fixed", c2)):
            data = codec.encode(img, quality=float(level))
            row[f"{tag}_bpp"] = 8 * len(data) / pixels
            row[f"{tag}_psnr"] = psnr(img, codec.decode(data))
            row[f"_{tag}_stream"] = data
        if level in cross:
            s1 = row["_fixed_stream"]
            ref1 = _ints(c2, s1, 1)
            torch.set_num_threads(2)
            s2 = c2.encode(img, quality=float(level))
            torch.set_num_threads(1)
            row["fixed_same_bytes_1v2_threads"] = s2 == s1
            ok = _ints(c2, s1, 2) == ref1 and ref1 is not None
            if s2 != s1:
                ref2 = _ints(c2, s2, 2)
                ok = ok and ref2 is not None and _ints(c2, s2, 1) == ref2
            row["fixed_cross_thread_ok"] = ok
            f1 = row["_float_stream"]
            torch.set_num_threads(2)
            f2 = c1.encode(img, quality=float(level))
            torch.set_num_threads(1)
            row["float_refused_1to2"] = _ints(c1, f1, 2) is None  # written at 1, decoded at 2
            row["float_refused_2to1"] = _ints(c1, f2, 1) is None  # written at 2, decoded at 1
        for k in [k for k in row if k.startswith("_")]:
            del row[k]
        rows.append(row)
    return rows


def summarize(rows: list[dict], levels: list[int]) -> list[dict]:
    out = []
    for level in levels:
        rs = [r for r in rows if r["level"] == level]
        n = len(rs)
        fb = sum(r["float_bpp"] for r in rs) / n
        xb = sum(r["fixed_bpp"] for r in rs) / n
        s = {
            "level": level, "images": n, "float_bpp": fb, "fixed_bpp": xb,
            "bpp_delta_pct": 100.0 * (xb / fb - 1.0),
            "bpp_delta_pct_max_image": max(100.0 * (r["fixed_bpp"] / r["float_bpp"] - 1.0) for r in rs),
            "float_psnr": sum(r["float_psnr"] for r in rs) / n,
            "fixed_psnr": sum(r["fixed_psnr"] for r in rs) / n,
            "psnr_delta_db": sum(r["fixed_psnr"] - r["float_psnr"] for r in rs) / n,
            "psnr_delta_db_max_abs_image": max(abs(r["fixed_psnr"] - r["float_psnr"]) for r in rs),
        }
        cr = [r for r in rs if "fixed_cross_thread_ok" in r]
        if cr:
            s["cross_images"] = len(cr)
            s["fixed_cross_thread_ok"] = sum(r["fixed_cross_thread_ok"] for r in cr)
            s["fixed_same_bytes_1v2_threads"] = sum(r["fixed_same_bytes_1v2_threads"] for r in cr)
            s["float_refused_1to2"] = sum(r["float_refused_1to2"] for r in cr)
            s["float_refused_2to1"] = sum(r["float_refused_2to1"] for r in cr)
        out.append(s)
    return out


def markdown(summary: list[dict], meta: dict) -> str:
    lines = [BEGIN, "", "## History: fixed-point entropy parameters (release 2) against the float path (release 1)", "",
             (f"Generated by `{meta['command']}` on {meta['date']} ({meta['cpu']}, load averages at the start "
             f"{meta['load_start']}, at the end {meta['load_end']}; one torch thread; {meta['seconds']:.0f} s). "
             "Same float weights; release 1 codes y with the float32 hyper synthesis' table indexes and "
             "means, release 2 with the fixed-point ones (`cod_fast/models/default/integer_params.py`). "
             "bpp: whole container file; PSNR: RGB 8-bit; Δ = fixed − float, means over the images. "
             "Goals: Δ bpp within +0.5 %, Δ PSNR within 0.02 dB. A record of the step from release 1 to "
             "release 2 (cod_fast 0.1.0's weights, both retired; `--weights R2DIR`), not of the "
             "installed model that the comparison above measures."), "",
             ("| level | float bpp | fixed bpp | Δ bpp | worst image Δ bpp | float PSNR | fixed PSNR | Δ PSNR (dB) "
             "| worst image abs Δ PSNR |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['level']} | {s['float_bpp']:.4f} | {s['fixed_bpp']:.4f} | {s['bpp_delta_pct']:+.3f} % "
                     f"| {s['bpp_delta_pct_max_image']:+.3f} % | {s['float_psnr']:.3f} | {s['fixed_psnr']:.3f} "
                     f"| {s['psnr_delta_db']:+.4f} | {s['psnr_delta_db_max_abs_image']:.4f} |")
    cross = [s for s in summary if "cross_images" in s]
    if cross:
        lines += ["", ("Across thread counts (encode at 1 and at 2 torch threads, decode each stream at the other "
                  "count):"), "",
                  ("| level | images | release 2: integers identical | release 2: same bytes at 1 and 2 threads "
                  "| release 1: refused, written at 1 / read at 2 | release 1: refused, written at 2 / read at 1 |"),
                  "|---|---|---|---|---|---|"]
        for s in cross:
            lines.append(f"| {s['level']} | {s['cross_images']} | {s['fixed_cross_thread_ok']} "
                         f"| {s['fixed_same_bytes_1v2_threads']} | {s['float_refused_1to2']} "
                         f"| {s['float_refused_2to1']} |")
    lines += ["", END, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--weights", type=Path, default=None, help=RELEASE2_HELP)
    ap.add_argument("--levels", default="0,1,2,3,4")
    ap.add_argument("--cross", default="0,2,4", help="levels with the cross-thread check")
    ap.add_argument("--images", nargs="*", default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--from-json", type=Path, default=None,
                    help="re-render --md from a JSON this script wrote, without measuring")
    args = ap.parse_args(argv)
    if args.from_json is not None:
        rec = json.loads(args.from_json.read_text())
        if args.md:
            _write_md(args.md, markdown(rec["summary"], rec["meta"]))
        return 0
    if args.weights is None:
        ap.error(f"--weights is required to measure: {RELEASE2_HELP}")
    torch.set_num_threads(1)
    levels = [int(v) for v in args.levels.split(",") if v != ""]
    cross = {int(v) for v in args.cross.split(",") if v != ""}
    paths = [args.data / n for n in args.images] if args.images else sorted(args.data.glob("*.png"))
    if not paths:
        raise SystemExit(f"no images in {args.data}")
    c1, c2 = release2_codecs(args.weights)
    load_start = load_averages()
    t0 = time.time()
    rows = []
    for p in paths:
        rows += run_image(p, levels, cross, c1, c2)
        print(p.name, json.dumps(rows[-1]), flush=True)
    summary = summarize(rows, levels)
    meta = {"command": "python bench/default_fixed_point_cost.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu_name(), "load_start": load_start, "load_end": load_averages(),
            "seconds": time.time() - t0, "release1": c1.fingerprint_hex, "release2": c2.fingerprint_hex}
    for s in summary:
        print(json.dumps(s))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1) + "\n")
    if args.md:
        _write_md(args.md, markdown(summary, meta))
    return 0


def _write_md(path: Path, section: str) -> None:
    """Replace the marked section of ``path`` (append it when absent)."""
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
