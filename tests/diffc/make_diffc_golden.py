"""(Re)generate the DiffC golden stream: ``.venv/bin/python tests/diffc/make_diffc_golden.py [--check]``.

Writes ``tests/golden/diffc_pixel_tiny.codf`` (tiny seeded pixel CoD, 32x40 image padded to 32x64,
3 encoded steps, seed 5, rcc C++ backend) and ``tests/golden/diffc_golden.json`` (SHA-256 of the
stream and of the decoded uint8 pixels, float32 on the CPU with one torch thread). A change of the
stream bytes is a format change (see tests/golden/README.md).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from diffc_models import GOLDEN_DIR, make_image, pixel_codec  # noqa: E402

STREAM = GOLDEN_DIR / "diffc_pixel_tiny.codf"
META = GOLDEN_DIR / "diffc_golden.json"
CASE = dict(height=32, width=40, steps=3, seed=5, model_seed=11)


def build() -> tuple[bytes, torch.Tensor, dict]:
    """(stream, decoded pixels, metadata) of the golden case, computed now."""
    from cod_fast.codecs.diffc import DiffCCodec

    torch.set_num_threads(1)
    d = DiffCCodec(pixel_codec(CASE["model_seed"]), backend="cpp")
    data = d.encode(make_image(CASE["height"], CASE["width"]), steps=CASE["steps"], seed=CASE["seed"])
    pixels = d.decode(data)
    meta = dict(CASE, stream_sha256=hashlib.sha256(data).hexdigest(),
                pixels_sha256=hashlib.sha256(pixels.numpy().tobytes()).hexdigest())
    return data, pixels, meta


def main() -> int:
    data, _, meta = build()
    if "--check" in sys.argv:
        ok = STREAM.read_bytes() == data and json.loads(META.read_text()) == meta
        print("golden DiffC stream:", "matches" if ok else "DIFFERS")
        return 0 if ok else 1
    STREAM.write_bytes(data)
    META.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(f"wrote {STREAM} ({len(data)} bytes) and {META}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
