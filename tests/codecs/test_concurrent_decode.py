"""Concurrent decode on one codec object (issue 14 item 6): every codec may be shared by threads.

Each codec holds a lock around the parts of a decode that touch per-call state of its network
(the default model's lazily built tables, the CoD networks' per-call attributes, DiffC's
unconditional-map cache: ``tests/codecs/test_diffc_threads.py``). Here 4 threads decode streams of two
sizes, interleaved, on one object, and every result must equal the sequential decode bit for bit.
"""
from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from tiny_models import TINY_LITE, TINY_ONE_STEP, TINY_PIXEL  # noqa: E402

import cod_fast

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZES = [(64, 64), (32, 96)]


def _image(h: int, w: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
    base = torch.stack([xx / (w - 1), yy / (h - 1), (xx + yy) / (h + w)]) * 200
    return (base + torch.rand(3, h, w, generator=gen) * 50).round().clamp(0, 255).to(torch.uint8)


def _codec(name: str):
    if name == "default":
        return cod_fast.load_model(), {"quality": 2.0}
    if name == "sodec-tiny":
        return cod_fast.load_model("sodec-tiny"), {}
    config, params = {"pixel": (TINY_PIXEL, {"steps": 2}), "one_step": (TINY_ONE_STEP, {}),
                      "lite": (TINY_LITE, {})}[name]
    return cod_fast.load_model(copy.deepcopy(config), random_init_seed=1), params


@pytest.mark.parametrize("name", ["default", "sodec-tiny", "pixel", "one_step", "lite"])
def test_four_threads_decode_one_codec_like_one(name: str) -> None:
    codec, params = _codec(name)
    streams = [codec.encode(_image(h, w, i), **params) for i, (h, w) in enumerate(SIZES)]
    want = [codec.decode(s) for s in streams]
    start = threading.Barrier(4)

    def work(i: int) -> list[bool]:
        start.wait()
        return [torch.equal(codec.decode(streams[(i + k) % 2]), want[(i + k) % 2]) for k in range(3)]

    with ThreadPoolExecutor(4) as pool:
        results = [ok for part in pool.map(work, range(4)) for ok in part]
    assert all(results), f"{name}: {results.count(False)} of {len(results)} concurrent decodes differ"
