"""decode_many / encode_many / StreamDataset: order, grouping, per-item errors, equality with
one-by-one decoding (integers exactly, pixels within 1 level of 255), DataLoader workers."""
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
    from cod_fast.bitstream import SectionType

    net = default_codec.net
    out: dict[int, torch.Tensor] = {}

    n = torch.get_num_threads()

    def run() -> None:
        torch.set_num_threads(n)  # as decode_many's worker threads do
        for i, data in enumerate(default_streams):
            out[i] = default_codec.decode_latents(data)[0]

    t = threading.Thread(target=run)
    t.start()
    t.join()
    for i, data in enumerate(default_streams):
        c, q, z_shape, crc = default_codec.parse(data)
        strings = [c.section(SectionType.HYPERPRIOR_Y), c.section(SectionType.HYPERPRIOR_Z)]
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


@pytest.mark.parametrize(("forward_batch", "synthesis_threads"), [(None, None), (3, 1), (1, 2)])
def test_decode_many_matches_one_by_one(default_codec, default_streams, forward_batch, synthesis_threads) -> None:
    single = [default_codec.decode(d) for d in default_streams]
    got = list(decode_many(default_streams, batch_size=4, forward_batch=forward_batch,
                           synthesis_threads=synthesis_threads))
    assert [r.index for r in got] == list(range(len(default_streams)))
    for r, ref in zip(got, single):
        assert r.ok and r.image.dtype == torch.uint8 and r.image.shape == ref.shape
        assert (r.image.int() - ref.int()).abs().max() <= 1  # float rounding of the synthesis
        assert (r.image == ref).float().mean() > 0.99


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
