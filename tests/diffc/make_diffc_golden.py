"""(Re)generate the DiffC golden stream: ``.venv/bin/python tests/diffc/make_diffc_golden.py [--check] [--out DIR]``.

Writes ``tests/golden/diffc_pixel_tiny.codf`` (tiny seeded pixel CoD, 32x40 image padded to 32x64,
3 encoded steps, seed 5, rcc C++ backend), its reference pixels ``tests/golden/diffc_pixel_tiny.png``
(float32 decode on the CPU with one torch thread) and ``tests/golden/diffc_golden.json``: SHA-256
of the stream, of the decoded integers (every step's KL budget and chunk indices, as parsed) and
of the reference pixels. As for the other goldens (``tools/make_golden.py``), bytes and integers
are pinned exactly and pixels within ``PIXEL_TOLERANCE`` of the reference: they come from float32
maths (the rcc samples, the denoiser) whose last bits depend on the CPU kind and thread count. A
change of the stream bytes is a format change (see tests/golden/README.md).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: tiny_models
from tiny_models import GOLDEN_DIR, make_image, pixel_codec

STREAM = GOLDEN_DIR / "diffc_pixel_tiny.codf"
PNG = GOLDEN_DIR / "diffc_pixel_tiny.png"
META = GOLDEN_DIR / "diffc_golden.json"
CASE = {"height": 32, "width": 40, "steps": 3, "seed": 5, "model_seed": 11}


def golden_tool():
    """``tools/make_golden.py`` as a module (pixel tolerance, reference PNG helpers)."""
    path = Path(__file__).resolve().parents[2] / "tools" / "make_golden.py"
    spec = importlib.util.spec_from_file_location("make_golden", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def decoded_integers(codec, data: bytes) -> bytes:
    """The integers a DiffC decoder reads from ``data``: per step, the KL budget (1/16 bit) and the
    chunk indices, as int64 little-endian bytes."""
    _, _, _, records, _ = codec.parse(data)
    out = bytearray()
    for kl_q, indices in records:
        out += torch.tensor([kl_q, *indices], dtype=torch.int64).numpy().tobytes()
    return bytes(out)


def build() -> tuple[bytes, torch.Tensor, dict]:
    """(stream, decoded pixels, metadata) of the golden case, computed now."""
    from cod_fast.codecs.diffc import DiffCCodec

    torch.set_num_threads(1)
    d = DiffCCodec(pixel_codec(CASE["model_seed"]), backend="cpp")
    data = d.encode(make_image(CASE["height"], CASE["width"]), steps=CASE["steps"], seed=CASE["seed"])
    pixels = d.decode(data)
    meta = dict(CASE, stream_sha256=hashlib.sha256(data).hexdigest(),
                integers_sha256=hashlib.sha256(decoded_integers(d, data)).hexdigest(),
                pixels_sha256=hashlib.sha256(pixels.numpy().tobytes()).hexdigest())
    return data, pixels, meta


def main() -> int:
    """``--check``: compare with the committed files; ``--out DIR``: write there instead of
    tests/golden (to compare byte for byte with the committed files)."""
    data, pixels, meta = build()
    tool = golden_tool()
    if "--check" in sys.argv:
        old = json.loads(META.read_text())
        exact = ("stream_sha256", "integers_sha256", "height", "width", "steps", "seed", "model_seed")
        ok = STREAM.read_bytes() == data and all(old.get(k) == meta[k] for k in exact)
        ref = tool.reference_pixels("diffc_pixel_tiny")
        ok = ok and tool.pixels_within_tolerance(pixels, ref)
        print("golden DiffC stream:", "matches" if ok else "DIFFERS", tool.pixel_stats(pixels, ref))
        return 0 if ok else 1
    out = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else GOLDEN_DIR
    (out / STREAM.name).write_bytes(data)
    tool.write_reference_pixels("diffc_pixel_tiny", pixels, out)
    (out / META.name).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out / STREAM.name} ({len(data)} bytes), {out / PNG.name} and {out / META.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
