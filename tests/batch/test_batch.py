"""decode_many / encode_many / StreamDataset: order, grouping, per-item errors, equality with
one-by-one decoding (the default CPU path bitwise; forward_batch / synthesis_threads within 1 level
of 255), the split of decode into thread-safe halves, DataLoader workers."""
from __future__ import annotations

import threading

import pytest
import torch
from batch_helpers import make_image

from cod_fast.batch import (
    DecodeResult,
    StreamDataset,
    decode_many,
    encode_many,
)
from cod_fast.errors import BitstreamError, ModelMismatchError

SIZES = [(40, 52), (64, 64), (40, 52), (70, 33), (64, 64), (40, 52)]


@pytest.fixture(scope="module")
def default_streams(default_codec) -> list[bytes]:
    return [default_codec.encode(make_image(h, w, seed=i), quality=1.0 + 0.5 * i) for i, (h, w) in enumerate(SIZES)]


def test_default_model_integers_identical_in_worker_threads(default_codec, default_streams) -> None:
    """The prepare stage (a worker thread) computes the same symbols and means as decode does."""
    net = default_codec.net
    out: dict[int, torch.Tensor] = {}

    def run() -> None:
        torch.set_num_threads(1)  # as decode_many's worker threads do
        for i, data in enumerate(default_streams):
            out[i] = default_codec.decode_latents(data)[0]

    t = threading.Thread(target=run)
    t.start()
    t.join()
    for i, data in enumerate(default_streams):
        c, q, z_shape, crc = default_codec.parse(data)
        strings = default_codec._strings(c)  # [y, z] (+ the non-anchors' y with the context)
        y_sym, _, means = net._decode_symbols(strings, z_shape, torch.tensor([q]), None, crc,
                                              integer=default_codec.integer, backend=default_codec.entropy_backend)
        assert torch.equal(y_sym, default_codec.decode_symbols(data)[0])
        assert torch.equal(out[i], y_sym.to(torch.float32) + means)


def test_decode_many_keeps_the_memory_budget(default_codec, default_streams) -> None:
    from cod_fast.bitstream import LimitExceededError

    got = list(decode_many(default_streams[:2], default_codec, max_memory=1))
    assert [type(r.error) for r in got] == [LimitExceededError, LimitExceededError]
    with pytest.raises(LimitExceededError):
        default_codec.decode_latents(default_streams[0], max_memory=1)


@pytest.mark.parametrize(("forward_batch", "synthesis_threads"), [(None, None), (None, 1), (None, 3), (3, 1)])
def test_decode_many_matches_one_by_one(default_codec, default_streams, forward_batch, synthesis_threads) -> None:
    single = [default_codec.decode(d) for d in default_streams]
    got = list(decode_many(default_streams, batch_size=4, forward_batch=forward_batch,
                           synthesis_threads=synthesis_threads))
    assert [r.index for r in got] == list(range(len(default_streams)))
    for r, ref in zip(got, single):
        assert r.ok and r.image.dtype == torch.uint8 and r.image.shape == ref.shape
        if forward_batch is None:  # the CPU path, whatever the side-by-side syntheses: decode's pixels
            assert torch.equal(r.image, ref)
        else:
            assert (r.image.int() - ref.int()).abs().max() <= 1  # float rounding of the synthesis
            assert (r.image == ref).float().mean() > 0.99


@pytest.fixture
def two_threads():
    """Two torch threads in this test (the package runs at one): the caller's count differs from
    decode_many's worker threads' (one), which must not change any pixel."""
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def test_decode_many_is_bitwise_decode_at_two_threads(default_codec, two_threads) -> None:
    streams = [default_codec.encode(make_image(96, 130, seed=i), quality=0.5 + i) for i in range(3)]
    single = [default_codec.decode(d) for d in streams]
    for workers in (2, 0):
        got = list(decode_many(streams, default_codec, batch_size=2, workers=workers, on_error="raise"))
        assert all(torch.equal(r.image, ref) for r, ref in zip(got, single))
    y_hat, q, size = default_codec.decode_latents(streams[0])  # decode is its two halves
    assert size == (96, 130) and torch.equal(default_codec.synthesize(y_hat, q, size), single[0])
    seen: list[int] = []  # the one-thread workers leave the count of threads started later alone
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert seen == [2]


def test_side_by_side_syntheses_use_private_copies(default_codec, default_streams, monkeypatch) -> None:
    """At one thread on 2+ CPUs, syntheses run side by side (two threads held at a barrier inside
    them), each on a private copy of the synthesis network, never on the codec's own (which may hold
    caches), and the copies are reused while the weights stay unchanged."""
    from cod_fast import batch

    net = default_codec.net
    barrier = threading.Barrier(2, timeout=20)
    real = type(net).synthesize
    seen: list[object] = []

    def inside(self, *args, **kwargs):
        seen.append(kwargs.get("g_s"))
        barrier.wait()  # two syntheses at once, else this times out
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(net), "synthesize", inside)
    got = list(decode_many(default_streams[:2], default_codec, synthesis_threads=2, on_error="raise"))
    assert len(seen) == 2 and all(g is not None and g is not net.g_s for g in seen) and seen[0] is not seen[1]
    monkeypatch.undo()
    assert all(torch.equal(r.image, default_codec.decode(d)) for r, d in zip(got, default_streams[:2]))
    replica, free = batch._take_replica(net.g_s)  # a copy given back is taken again
    assert replica in seen
    batch._give_replica(replica, free)


def test_entropy_half_runs_side_by_side_without_the_lock(default_codec, default_streams) -> None:
    """Release 2's entropy half takes no lock: two threads held at a barrier inside it, each at
    one torch thread, get the serial integers (a lock would deadlock them: the barrier times out)."""
    assert not default_codec.entropy_depends_on_threads
    serial = [default_codec.decode_latents(d)[0] for d in default_streams[:2]]
    barrier = threading.Barrier(2, timeout=20)
    net = default_codec.net
    real = net._decode_symbols
    out: dict[int, object] = {}

    def inside(*args, **kwargs):
        barrier.wait()  # both threads are in the entropy stage at once
        return real(*args, **kwargs)

    def run(i: int) -> None:
        torch.set_num_threads(1)
        try:
            out[i] = default_codec.decode_latents(default_streams[i])[0]
        except Exception as exc:  # noqa: BLE001 -- checked below
            out[i] = exc

    net._decode_symbols = inside
    try:
        ts = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        del net._decode_symbols
    assert all(torch.equal(out[i], serial[i]) for i in range(2)), out


def test_release1_streams_decode_in_the_calling_thread(default_codec, two_threads) -> None:
    """Release 1's entropy integers depend on the thread count: decode_many leaves those streams
    to ``decode`` in the calling thread (same pixels), never to its one-thread workers."""
    from tiny_models import shipped_plain_codecs

    from cod_fast.batch import _Models, _prepare

    r1 = shipped_plain_codecs()[0]
    assert r1.entropy_depends_on_threads
    streams = [r1.encode(make_image(40, 52, seed=i), quality=2.0) for i in range(2)]
    models = _Models(r1, None)
    assert _prepare(0, streams[0], models).y_hat is None  # not split
    assert _prepare(0, default_codec.encode(make_image(40, 52)), _Models(None, None)).y_hat is not None
    got = list(decode_many(streams, r1, workers=2, on_error="raise"))
    assert all(torch.equal(r.image, r1.decode(d)) for r, d in zip(got, streams))


def test_errors_are_reported_per_item_in_order(default_codec, default_streams, one_step_codec, sodec_codec,
                                               tmp_path) -> None:
    img = make_image(40, 52, seed=9)
    one, sod = one_step_codec.encode(img), sodec_codec.encode(img)
    bad = bytearray(default_streams[0])
    bad[-5] ^= 0xFF  # checksum failure
    f = tmp_path / "x.codf"
    f.write_bytes(default_streams[1])
    other = bytearray(one)
    other[8:24] = bytes(16)  # a fingerprint no model has
    inputs = [default_streams[0], bytes(bad), one, str(tmp_path / "missing.codf"), sod, f, bytes(other), 42]
    got = list(decode_many(inputs, batch_size=3, workers=2, progress=True))
    assert [r.index for r in got] == list(range(len(inputs)))
    assert [r.ok for r in got] == [True, False, True, False, True, True, False, False]
    assert isinstance(got[1].error, BitstreamError)
    assert isinstance(got[3].error, FileNotFoundError) and got[3].name.endswith("missing.codf")
    assert isinstance(got[6].error, (ModelMismatchError, BitstreamError))
    assert isinstance(got[7].error, TypeError)
    assert torch.equal(got[2].image, one_step_codec.decode(one))  # other codecs: decode itself
    assert torch.equal(got[4].image, sodec_codec.decode(sod))
    assert got[5].name == str(f)
    with pytest.raises(BitstreamError):
        list(decode_many(inputs[:3], on_error="raise"))
    with pytest.raises(ValueError, match="batch_size"):
        decode_many(inputs, batch_size=0)


def test_decode_many_with_model_and_overrides(pixel_codec) -> None:
    streams = [pixel_codec.encode(make_image(32, 32, seed=s), steps=2, seed=s) for s in range(3)]
    got = list(decode_many(streams, pixel_codec, workers=0, steps=1, device="cpu"))
    assert all(isinstance(r, DecodeResult) and r.ok for r in got)
    for r, d in zip(got, streams):
        assert torch.equal(r.image, pixel_codec.decode(d, steps=1))


def test_encode_many(default_codec, tmp_path) -> None:
    from PIL import Image

    imgs = [make_image(40, 52, seed=1), make_image(33, 20, seed=2)]
    p = tmp_path / "a.png"
    Image.fromarray(imgs[1].permute(1, 2, 0).numpy()).save(p)
    got = list(encode_many([imgs[0], str(p), "nope.png", torch.zeros(2, 5)], default_codec, quality=2.0))
    assert [r.ok for r in got] == [True, True, False, False]
    assert got[0].data == default_codec.encode(imgs[0], quality=2.0)
    assert got[1].data == default_codec.encode(imgs[1], quality=2.0) and got[1].name == str(p)


def test_stream_dataset_in_dataloader_workers(default_codec, default_streams, one_step_codec, tmp_path) -> None:
    files = []
    for i, d in enumerate(default_streams[:3] + [one_step_codec.encode(make_image(40, 52, seed=4))]):
        f = tmp_path / f"{i}.codf"
        f.write_bytes(d)
        files.append(f)
    ds = StreamDataset(tmp_path)  # models by fingerprint: the default model is named; one-step given below
    assert len(ds) == 4
    ds_one = StreamDataset([files[3]], one_step_codec)  # a codec travels to the workers by reference
    loader = torch.utils.data.DataLoader(torch.utils.data.ConcatDataset([ds, ds_one]), batch_size=None,
                                         num_workers=2, multiprocessing_context="spawn")
    got = list(loader)
    expected = [default_codec.decode(f.read_bytes()) for f in files[:3]]
    expected += [one_step_codec.decode(files[3].read_bytes())] * 2
    assert len(got) == 5  # ds[3] finds the one-step model: unpickling ds_one rebuilt it in the worker
    for a, b in zip(got, expected[:3] + expected[3:]):
        assert torch.equal(a, b)
    # alone, a stream of a model the fresh worker does not know fails with the fingerprint named
    with pytest.raises(Exception, match="fingerprint"):
        list(torch.utils.data.DataLoader(StreamDataset([files[3]]), batch_size=None, num_workers=1,
                                         multiprocessing_context="spawn"))


def test_side_by_side_syntheses_fit_the_memory_budget(default_codec, default_streams, monkeypatch) -> None:
    from cod_fast import batch, memory

    items = [batch._prepare(i, d, batch._Models(default_codec, None)) for i, d in enumerate(default_streams[:4])]
    need = max(memory.estimate(default_codec, "decode", *it.size) for it in items)
    monkeypatch.setattr(memory, "default_budget", lambda device="cpu": 2 * need + 1)
    assert batch._parallel_syntheses(items, 8) == 2  # two at once fit, three do not
    assert batch._parallel_syntheses(items, 1) == 1 and batch._parallel_syntheses(items[:1], 8) == 1
    monkeypatch.setattr(memory, "default_budget", lambda device="cpu": need // 2)
    assert batch._parallel_syntheses(items, 8) == 1  # never fewer than one (decode's own check applies)
