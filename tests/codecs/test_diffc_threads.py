"""DiffC's unconditional-map cache under threads (issue 14 item 7): the map lives on the shared
network (``pre_calculated_uncond``, one size at a time); 8 threads at alternating sizes must each
get the map of their own size, and concurrent decodes must equal sequential ones."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import tiny_models
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZES = [(32, 32), (64, 32)]


@pytest.fixture(scope="module")
def diffc():
    from cod_fast.codecs.diffc import DiffCCodec

    return DiffCCodec(tiny_models.pixel_codec(), backend="cpp")


def _widen_race(diffc, monkeypatch) -> None:
    """Yield the GIL right after the map is stored, so an unlocked reader would see another size."""
    emb = diffc.net.y_embedder
    original = type(emb).calculate_uncond

    def slow(self, uncond):
        original(self, uncond)
        time.sleep(0.002)

    monkeypatch.setattr(type(emb), "calculate_uncond", slow)


@pytest.mark.parametrize("variant", ["base", "cond"])
def test_eight_threads_alternating_sizes(diffc, monkeypatch, variant) -> None:
    packed = {}
    for hp, wp in SIZES:
        img = torch.zeros(3, hp, wp, dtype=torch.uint8)
        with torch.inference_mode():
            packed[(hp, wp)] = diffc.net.compress((img.float() / 255).unsqueeze(0))
    with torch.inference_mode():
        ref = {s: diffc._denoiser(variant, packed[s], *s).denoiser.cond_maps.clone() for s in SIZES}
    _widen_race(diffc, monkeypatch)
    start = threading.Barrier(8)

    def work(i: int) -> list[bool]:
        start.wait()
        ok = []
        for k in range(6):
            s = SIZES[(i + k) % 2]
            with torch.inference_mode():
                maps = diffc._denoiser(variant, packed[s], *s).denoiser.cond_maps
            ok.append(tuple(maps.shape) == tuple(ref[s].shape) and torch.equal(maps, ref[s]))
        return ok

    with ThreadPoolExecutor(8) as pool:
        results = [r for rs in pool.map(work, range(8)) for r in rs]
    assert all(results), f"{results.count(False)} of {len(results)} maps were of another size or value"


def test_concurrent_decodes_equal_sequential(diffc) -> None:
    streams = []
    for i, (hp, wp) in enumerate(SIZES):
        img = torch.randint(0, 256, (3, hp, wp), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
        streams.append(diffc.encode(img, steps=2, seed=3, variant="base"))
    expected = [diffc.decode(s) for s in streams]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: diffc.decode(streams[i % 2]), range(4)))
    for i, img in enumerate(got):
        assert torch.equal(img, expected[i % 2])
