"""Codecs that travel: pickling by (reference, settings, fingerprint), rebuilt and verified in the
receiving process; the in-memory rule; a spawn process pool decoding the same pixels."""
from __future__ import annotations

import copy
import multiprocessing
import pickle

import pytest
import torch
from batch_helpers import make_image

import cod_fast
from cod_fast import portable
from cod_fast.errors import ModelMismatchError
from cod_fast.references import save_reference


def _round_trip(codec):
    portable.clear_cache()  # rebuild from the reference, not from this process's cache
    return pickle.loads(pickle.dumps(codec))


@pytest.mark.parametrize("name", ["pixel_codec", "one_step_codec", "lite_codec", "sodec_codec", "default_codec"])
def test_pickle_round_trip_decodes_the_same(name, request) -> None:
    codec = request.getfixturevalue(name)
    img = make_image(40, 52)
    kw = {"steps": 2, "seed": 3} if name == "pixel_codec" else {}
    data = codec.encode(img, **kw)
    blob = pickle.dumps(codec)
    assert len(blob) < 4096  # a reference, not the weights
    back = _round_trip(codec)
    assert type(back) is type(codec) and back.fingerprint == codec.fingerprint
    assert torch.equal(back.decode(data), codec.decode(data))
    assert back.encode(img, **kw) == data


def test_diffc_pickles_with_its_settings(pixel_codec) -> None:
    from cod_fast.codecs.diffc import DiffCCodec

    diffc = DiffCCodec(pixel_codec, backend="cpp", threads=1)
    data = diffc.encode(make_image(32, 32), steps=2, seed=7)
    back = _round_trip(diffc)
    assert isinstance(back, DiffCCodec) and (back.backend, back.threads) == ("cpp", 1)
    assert back.base is not pixel_codec and back.fingerprint == pixel_codec.fingerprint
    assert torch.equal(back.decode(data), diffc.decode(data))


def test_settings_travel_and_copy_stays_shallow(one_step_codec) -> None:
    c = copy.copy(one_step_codec)
    assert c.net is one_step_codec.net  # optimize() relies on a shallow copy
    c.cuda_graphs = False
    back = _round_trip(c)
    assert back.cuda_graphs is False
    assert _round_trip(one_step_codec).cuda_graphs == "auto"
    deep = copy.deepcopy(one_step_codec)  # a fresh rebuild
    assert deep.net is not one_step_codec.net and deep.fingerprint == one_step_codec.fingerprint


def test_in_memory_weights_need_a_saved_reference(tmp_path) -> None:
    from tiny_models import TINY_ONE_STEP, official_checkpoint

    from cod_fast.loading import load_model

    codec = load_model(copy.deepcopy(TINY_ONE_STEP), official_checkpoint(TINY_ONE_STEP, 9))
    with pytest.raises(portable.NotPortableError, match="save_reference"):
        pickle.dumps(codec)
    # cod_fast.load_model with a dict checkpoint: still in memory only
    with pytest.raises(portable.NotPortableError):
        pickle.dumps(cod_fast.load_model(copy.deepcopy(TINY_ONE_STEP), official_checkpoint(TINY_ONE_STEP, 9)))
    ref = save_reference(codec, tmp_path / "m.safetensors")
    assert ref.checkpoint == str((tmp_path / "m.safetensors").resolve())
    img = make_image(32, 32)
    back = _round_trip(codec)
    assert torch.equal(back.decode(codec.encode(img)), codec.decode(codec.encode(img)))


def test_changed_checkpoint_is_refused(tmp_path) -> None:
    from tiny_models import TINY_ONE_STEP, official_checkpoint

    path = tmp_path / "m.pt"
    torch.save(official_checkpoint(TINY_ONE_STEP, 4), path)
    codec = cod_fast.load_model(copy.deepcopy(TINY_ONE_STEP), path)
    blob = pickle.dumps(codec)
    torch.save(official_checkpoint(TINY_ONE_STEP, 5), path)  # another model at the same path
    portable.clear_cache()
    with pytest.raises(ModelMismatchError, match="pickled as model"):
        pickle.loads(blob)


def test_cuda_codec_lands_on_cpu_with_receive_on(one_step_codec) -> None:
    state = pickle.dumps(one_step_codec)
    with portable.receive_on("cpu"):
        assert pickle.loads(state).device.type == "cpu"
    if not torch.cuda.is_available():
        hacked = portable._state_of(one_step_codec)
        hacked["device"] = "cuda"
        with pytest.raises(RuntimeError, match="receive_on"):
            portable._rebuild(hacked)


def _decode_in_worker(codec, data: bytes) -> bytes:
    return codec.decode(data).numpy().tobytes()


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def test_spawn_pool_decodes_identically(one_step_codec, sodec_codec) -> None:
    img = make_image(40, 52, seed=1)
    jobs = [(one_step_codec, one_step_codec.encode(img)), (sodec_codec, sodec_codec.encode(img)),
            (one_step_codec, one_step_codec.encode(make_image(32, 64, seed=2)))]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, initializer=_init_worker, initargs=(torch.get_num_threads(),)) as pool:
        remote = pool.starmap(_decode_in_worker, jobs)
    assert remote == [c.decode(d).numpy().tobytes() for c, d in jobs]


def test_latent_cod_travels_with_its_vae_folder(tmp_path) -> None:
    import tiny_models

    codec = tiny_models.latent_codec(tmp_path)  # weights from a dict: saved once as a reference
    with pytest.raises(ValueError, match="vae="):
        save_reference(codec, tmp_path / "latent.safetensors")
    save_reference(codec, tmp_path / "latent.safetensors", vae=tmp_path / "vae")
    data = codec.encode(make_image(32, 32), steps=2, seed=1)
    back = _round_trip(codec)
    assert back.spec.latent and back.fingerprint == codec.fingerprint
    assert torch.equal(back.decode(data), codec.decode(data))
