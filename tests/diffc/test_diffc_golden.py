"""The pinned DiffC stream: bytes and decoded integers (every step's KL budget and chunk indices)
exactly, decoded pixels within the golden tolerance of the committed reference pixels (float32
maths whose last bits depend on the CPU kind and thread count; ``tools/make_golden.py``), and
encoding reproduces the bytes."""
from __future__ import annotations

import hashlib
import json

import torch
from make_diffc_golden import decoded_integers, golden_tool
from tiny_models import GOLDEN_DIR, make_image

from cod_fast.codecs.diffc import DiffCCodec


def test_golden_stream(cod_pixel) -> None:
    tool = golden_tool()
    meta = json.loads((GOLDEN_DIR / "diffc_golden.json").read_text())
    data = (GOLDEN_DIR / "diffc_pixel_tiny.codf").read_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["stream_sha256"]
    assert meta["model_seed"] == 11  # the session fixture's model
    d = DiffCCodec(cod_pixel, backend="cpp")
    assert hashlib.sha256(decoded_integers(d, data)).hexdigest() == meta["integers_sha256"]
    reference = tool.reference_pixels("diffc_pixel_tiny")
    assert tool.sha256(reference) == meta["pixels_sha256"]  # the committed reference is the recorded one
    assert tuple(reference.shape) == (3, meta["height"], meta["width"])
    n = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = d.decode(data)
            assert out.dtype == torch.uint8
            assert tool.pixels_within_tolerance(out, reference), tool.pixel_stats(out, reference)
    finally:
        torch.set_num_threads(n)
    again = d.encode(make_image(meta["height"], meta["width"]), steps=meta["steps"], seed=meta["seed"])
    assert again == data
