"""The pinned DiffC stream decodes to the pinned pixels, and encoding reproduces its bytes."""
from __future__ import annotations

import hashlib
import json

import torch
from diffc_models import GOLDEN_DIR, make_image

from cod_fast.codecs.diffc import DiffCCodec


def test_golden_stream(cod_pixel) -> None:
    meta = json.loads((GOLDEN_DIR / "diffc_golden.json").read_text())
    data = (GOLDEN_DIR / "diffc_pixel_tiny.codf").read_bytes()
    assert hashlib.sha256(data).hexdigest() == meta["stream_sha256"]
    assert meta["model_seed"] == 11  # the session fixture's model
    d = DiffCCodec(cod_pixel, backend="cpp")
    out = d.decode(data)
    assert out.shape == (3, meta["height"], meta["width"]) and out.dtype == torch.uint8
    assert hashlib.sha256(out.numpy().tobytes()).hexdigest() == meta["pixels_sha256"]
    again = d.encode(make_image(meta["height"], meta["width"]), steps=meta["steps"], seed=meta["seed"])
    assert again == data
