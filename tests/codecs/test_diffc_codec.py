"""DiffC codec over a tiny CoD: bit-identical step replay, chunk plans, round trips, progressive
decoding, stream checks."""
from __future__ import annotations

import math

import pytest
import torch
from tiny_models import latent_codec, make_image

from cod_fast.bitstream import HEADER_BYTES, SECTION_OVERHEAD, CodecId, SectionType, read_container
from cod_fast.codecs.diffc import DiffCCodec, DiffCParams, bits_per_pixel, pack_step, unpack_steps
from cod_fast.errors import BitstreamError, ModelMismatchError
from cod_fast.rcc import KL_UNITS_PER_BIT, plan_chunks


def _records(data: bytes, dim: int = 3 * 32 * 32) -> list[tuple[int, list[int]]]:
    c = read_container(data)
    coding = DiffCParams.from_bytes(c.sections[SectionType.DIFFC_PARAMS]).index_coding
    return unpack_steps(c.sections[SectionType.DIFFC_STEPS], coding, dim)


def _record_ends(data: bytes, dim: int = 3 * 32 * 32) -> list[int]:
    """Byte offsets in ``data`` where each DIFFC_STEPS record ends (the last one = len(data))."""
    c = read_container(data)
    coding = DiffCParams.from_bytes(c.sections[SectionType.DIFFC_PARAMS]).index_coding
    pos = len(data) - len(c.sections[SectionType.DIFFC_STEPS])
    ends = []
    for kl_q, idx in _records(data, dim):
        pos += len(pack_step(coding, kl_q, torch.tensor(idx), dim))
        ends.append(pos)
    return ends


def test_stream_layout(encoded) -> None:
    data, trace, _ = encoded
    c = read_container(data)
    assert c.codec_id == CodecId.DIFFC and (c.height, c.width) == (32, 32)
    assert set(c.sections) == {SectionType.INDICES, SectionType.DIFFC_PARAMS, SectionType.DIFFC_STEPS}
    p = DiffCParams.from_bytes(c.sections[SectionType.DIFFC_PARAMS])
    assert (p.variant, p.schedule, p.denoise_schedule, p.steps, p.seed) == ("cond", 1, 1, 4, 7)
    assert (p.encode_cfg, p.denoise_cfg, p.index_coding) == (1.0, 3.0, "raw")  # official pixel "cond"
    recs = _records(data)
    assert [k for k, _ in recs] == trace.kl_q and all(k % 16 == 0 for k in trace.kl_q)
    assert [i for _, i in recs] == [t.tolist() for t in trace.indices]
    # raw records: LEB128 budget in bits + the index bits, byte-padded
    size = sum((1 if k < 128 * 16 else 2) + (sum(plan_chunks(3072, k).bits) + 7) // 8
               for k, _ in recs)
    assert size == len(c.sections[SectionType.DIFFC_STEPS])
    assert _record_ends(data)[-1] == len(data)
    assert bits_per_pixel(data, 32, 32) == len(data) * 8 / 1024


@pytest.mark.parametrize("backend", ["cpp", "reference"])
def test_decoder_samples_equal_encoder_samples(diffc_pixel, cod_pixel, encoded, backend) -> None:
    data, enc, _ = encoded
    dec, img = DiffCCodec(cod_pixel, backend=backend).decode_trace(data, denoise=False)
    assert img is None and dec.kl_q == enc.kl_q and dec.timestep == 897  # 4th pixel-schedule step
    for a, b, ia, ib in zip(enc.samples, dec.samples, enc.indices, dec.indices):
        assert a.dtype == b.dtype == torch.float32
        assert torch.equal(a, b) and torch.equal(ia, ib)
    assert torch.equal(enc.state, dec.state)


def test_reference_backend_encodes_the_same_bytes(cod_pixel, encoded) -> None:
    data, _, _ = encoded
    two = DiffCCodec(cod_pixel, backend="reference").encode(make_image(), steps=2, seed=7)
    again = DiffCCodec(cod_pixel, backend="cpp").encode(make_image(), steps=2, seed=7)
    assert two == again  # same input -> same bytes, across rcc backends
    steps = read_container(data).sections[SectionType.DIFFC_STEPS]
    # the 2-step stream's records are the first two of the 4-step stream's (prefix property)
    assert steps.startswith(read_container(two).sections[SectionType.DIFFC_STEPS])


def test_chunk_sizes_follow_the_transmitted_kl(encoded) -> None:
    data, trace, _ = encoded
    dim = 3 * 32 * 32
    for kl_q, idx, sample in zip(trace.kl_q, trace.indices, trace.samples):
        n = -(-kl_q // KL_UNITS_PER_BIT)
        chunks = max(1, -(-n // 14))
        plan = plan_chunks(dim, kl_q)
        assert plan.n_chunks == chunks == idx.numel() and sum(plan.dims) == dim == sample.numel()
        assert sum(plan.bits) == (n + 2 * chunks if n else 0)
        assert all(0 <= int(k) < 2**b for k, b in zip(idx, plan.bits))
    assert all(k > 0 for k in trace.kl_q)


def test_round_trip_equals_encoder_reconstruction(diffc_pixel, encoded) -> None:
    data, _, recon = encoded
    out = diffc_pixel.decode(data)
    assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)
    assert torch.equal(out, recon)


def test_truncated_at_step_boundary_decodes_complete_steps(diffc_pixel, encoded) -> None:
    data, enc, _ = encoded
    ends = _record_ends(data)
    for k in (0, 2):
        cut = data[:ends[k - 1]] if k else data[:len(data) - len(read_container(data).sections[SectionType.DIFFC_STEPS])]
        dec, _ = diffc_pixel.decode_trace(cut, denoise=False)
        assert len(dec.samples) == k and dec.kl_q == enc.kl_q[:k]
        assert all(torch.equal(a, b) for a, b in zip(dec.samples, enc.samples))
        full_prefix, _ = diffc_pixel.decode_trace(data, max_steps=k, denoise=False)
        assert torch.equal(dec.state, full_prefix.state)


def test_corrupted_and_truncated_streams_raise(diffc_pixel, cod_pixel, encoded) -> None:
    data, _, _ = encoded
    ends = _record_ends(data)
    for pos in range(0, len(data)):  # every single-byte corruption is caught
        bad = bytearray(data)
        bad[pos] ^= 0x41
        with pytest.raises(BitstreamError):
            diffc_pixel.parse(bytes(bad))
    steps_start = len(data) - len(read_container(data).sections[SectionType.DIFFC_STEPS])
    boundaries = {steps_start, *ends}
    for n in range(0, len(data)):  # every cut except at a record boundary is an error
        if n in boundaries:
            continue
        with pytest.raises(BitstreamError):
            diffc_pixel.parse(data[:n])
    with pytest.raises(BitstreamError):
        diffc_pixel.parse(data + b"\x00")
    with pytest.raises(ModelMismatchError):
        cod_pixel.decode(data)  # the CoD codec refuses a DiffC stream
    assert HEADER_BYTES + SECTION_OVERHEAD < steps_start


def test_target_bpp_keeps_the_longest_prefix_that_fits(diffc_pixel, encoded) -> None:
    data, _, _ = encoded
    ends = _record_ends(data)
    target = (ends[2] + 3) * 8 / 1024  # room for 3 steps and a few bytes, not 4
    short = diffc_pixel.encode(make_image(), steps=4, seed=7, target_bpp=target)
    assert bits_per_pixel(short, 32, 32) <= target
    trace, _ = diffc_pixel.decode_trace(short, denoise=False)
    assert len(trace.samples) == 3
    with pytest.raises(ValueError):
        diffc_pixel.encode(make_image(), steps=143)
    with pytest.raises(ValueError):
        diffc_pixel.encode(make_image(), variant="other")


def test_zipf_index_coding_round_trips(diffc_pixel, encoded) -> None:
    data, enc, _ = diffc_pixel.encode_trace(make_image(), steps=2, seed=7, index_coding="zipf",
                                            reconstruct=False)
    assert DiffCParams.from_bytes(read_container(data).sections[SectionType.DIFFC_PARAMS]).index_coding == "zipf"
    dec, _ = diffc_pixel.decode_trace(data, denoise=False)
    assert dec.kl_q == enc.kl_q and all(torch.equal(a, b) for a, b in zip(enc.samples, dec.samples))
    assert torch.equal(enc.state, dec.state)
    ends = _record_ends(data)
    assert diffc_pixel.decode_trace(data[:ends[0]], denoise=False)[0].kl_q == enc.kl_q[:1]
    with pytest.raises(BitstreamError):
        diffc_pixel.parse(data[:ends[0] + 1])


def test_base_variant_sends_no_indices(diffc_pixel) -> None:
    data, enc, _ = diffc_pixel.encode_trace(make_image(), steps=2, seed=3, variant="base",
                                            encode_cfg=1.0, reconstruct=False)
    assert SectionType.INDICES not in read_container(data).sections
    dec, _ = diffc_pixel.decode_trace(data, denoise=False)
    assert all(torch.equal(a, b) for a, b in zip(enc.samples, dec.samples))
    assert torch.equal(enc.state, dec.state)


def test_latent_cod(tmp_path) -> None:
    d = DiffCCodec(latent_codec(tmp_path), backend="cpp")
    data, enc, _ = d.encode_trace(make_image(), steps=3, seed=1, reconstruct=False)
    assert enc.state.shape == (1, 4, 4, 4) and d.default_schedule == 2
    assert DiffCParams.from_bytes(read_container(data).sections[SectionType.DIFFC_PARAMS]).denoise_cfg == 1.25
    dec, _ = d.decode_trace(data, denoise=False)
    assert dec.kl_q == enc.kl_q and all(torch.equal(a, b) for a, b in zip(enc.samples, dec.samples))
    assert torch.equal(enc.state, dec.state) and math.isfinite(float(dec.state.abs().max()))


def test_top_level_decode_finds_the_diffc_view(cod_pixel, diffc_pixel, encoded) -> None:
    import cod_fast

    data, _, recon = encoded
    assert torch.equal(cod_fast.decode(data, model=cod_pixel), recon)
    assert torch.equal(cod_fast.decode(data, model=diffc_pixel), recon)


def test_cpu_codec_decodes_on_the_cpu_on_a_gpu_machine(cod_pixel, encoded, monkeypatch) -> None:
    """On the H200, "auto" picked the CUDA coder for a CPU codec because a GPU existed, and DiffC
    could not decode on any GPU machine. A stand-in CUDA extension that fails when used shows the
    choice now follows the codec's device."""
    import types

    import cod_fast
    from cod_fast import _ext

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"the CUDA coder ({name}) was used for a CPU codec")

    monkeypatch.setattr(_ext, "cuda_ext", lambda: types.SimpleNamespace(rcc=Untouchable()))
    data, _, recon = encoded
    assert torch.equal(cod_fast.decode(data, model=DiffCCodec(cod_pixel)), recon)
