"""DiffC across torch thread counts and rcc backends (issue 13 item 3).

The decoder reads every step's budget and chunk indices from the stream (the chunk plan follows
from the integer budget alone, ``cod_fast.rcc.chunking``; the Zipf tables of ``index_coding="zipf"``
from correctly rounded Python double maths), and regenerates the rcc samples bit for bit on every
backend: its integers and samples are the same at every thread count and backend. The encoder's
budgets (``ceil(16 * KL)``) and chunk choices follow float network outputs: byte-identical across
rcc backends at one thread count (same float inputs: ``tests/rcc``; the reference rcc encoder is
too slow to run here), and across thread counts where the network's
float maths does not change with them (as at these tiny sizes; docs/bitstream.md, "Determinism")."""
from __future__ import annotations

import itertools

import det_codecs as D
import pytest
import torch

NAMES = ("diffc-cond", "diffc-base-zipf")


@pytest.fixture(scope="module")
def codec():
    return D.build("diffc-cond")


@pytest.mark.parametrize("name", NAMES)
def test_threads_and_backends(codec, name: str) -> None:
    img = D.image(32, 64, 4)
    enc_backend = D.backends(name)[-1]  # cpp where built
    streams, traces = {}, {}
    for t in D.THREADS:
        with D.torch_threads(t), D._rcc_backend(codec, enc_backend):
            variant = "base" if "base" in name else "cond"
            streams[t], traces[t], _ = codec.encode_trace(
                img, variant=variant, index_coding="zipf" if "zipf" in name else "raw", reconstruct=False,
                **D.DIFFC_KW)
    assert len(set(streams.values())) == 1, {k: D.digest(v) for k, v in streams.items()}
    data = streams[D.THREADS[0]]
    cases = list(itertools.product(D.THREADS, D.backends(name)))
    ints = {}
    for t, b in cases:
        with D.torch_threads(t):
            ints[(t, b)] = D.decoded_integers(name, codec, data, b)
    assert len(set(ints.values())) == 1, {k: D.digest(v) for k, v in ints.items()}
    # what the decoder reads is what the encoder chose, and the samples are the encoder's, bit for bit
    with D.torch_threads(D.THREADS[0]):
        trace, _ = codec.decode_trace(data, denoise=False)
    enc = traces[D.THREADS[0]]
    assert trace.kl_q == enc.kl_q and all(torch.equal(a, b) for a, b in zip(trace.indices, enc.indices))
    assert all(torch.equal(a, b) for a, b in zip(trace.samples, enc.samples))
