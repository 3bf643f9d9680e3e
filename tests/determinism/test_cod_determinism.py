"""CoD pixel, one-step CoD and CoD-Lite across torch thread counts (issue 13 item 3).

The decoder reads the VQ indices from the stream, so the integers it decodes are the stream's at
every thread count; the encoder chooses them with the float condition encoder's nearest-codebook
search, so its bytes are equal across thread counts only where no token is a near tie (see
``test_vq_margins.py`` and docs/bitstream.md, "Determinism"). Decoded pixels come from float
synthesis: equal within the golden tolerance."""
from __future__ import annotations

import sys
from pathlib import Path

import det_codecs as D
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from make_golden import pixels_within_tolerance  # noqa: E402

NAMES = ("cod-pixel", "cod-one-step", "cod-lite")


@pytest.fixture(scope="module")
def codecs():
    return {n: D.build(n) for n in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_threads(codecs, name: str) -> None:
    codec, img = codecs[name], D.image(40, 64, 3)
    streams = D.for_each_thread_count(lambda t: D.encode(name, codec, img))
    # the encoder wrote what its condition encoder chose at that thread count ...
    for t, data in streams.items():
        with D.torch_threads(t), torch.inference_mode():
            from cod_fast.image_io import pad_to_multiple, uint8_to_unit

            packed = codec.net.compress(pad_to_multiple(uint8_to_unit(img), codec.stride))
        assert D.decoded_integers(name, codec, data) == bytes(packed)
    # ... at these tiny sizes no token is a near tie, so every thread count wrote the same bytes
    assert len(set(streams.values())) == 1, {t: D.digest(s) for t, s in streams.items()}
    # every decoder thread count reads the same indices from a given stream and decodes close pixels
    data = streams[D.THREADS[-1]]
    ints = D.for_each_thread_count(lambda t: D.decoded_integers(name, codec, data))
    assert len(set(ints.values())) == 1
    pixels = D.for_each_thread_count(lambda t: codec.decode(data))
    for t in D.THREADS[1:]:
        assert pixels_within_tolerance(pixels[t], pixels[D.THREADS[0]])
