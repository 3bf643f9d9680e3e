"""One codec protocol: every codec id has a class in ``cod_fast.codecs.CODECS`` that implements
``Codec``; real codecs pass ``isinstance``, their streams hold only the sections they describe, and
``describe_stream`` reads a container's codec fields without a model."""
from __future__ import annotations

import copy

import pytest
import torch
from tiny_models import TINY_PIXEL  # noqa: E402

from cod_fast.bitstream import CodecId, SectionType, read_container
from cod_fast.codecs import CODECS, Codec, codec_for, describe_stream
from cod_fast.codecs.diffc import DiffCCodec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image(h: int = 64, w: int = 64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
    return torch.stack([xx / (w - 1) * 255, yy / (h - 1) * 255, (xx + yy) / (h + w) * 255]).round().to(torch.uint8)


def test_every_codec_id_has_a_class_with_the_protocol() -> None:
    assert set(CODECS) == set(CodecId)
    for cid, cls in CODECS.items():
        for name in ("encode", "decode", "parse", "describe", "sections"):
            assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
        assert cls.sections and all(isinstance(SectionType(t), SectionType) and d for t, d in cls.sections.items())
        assert isinstance(cls.describe(read_container(_empty_stream(cid))), dict)


def _empty_stream(cid: CodecId) -> bytes:
    from cod_fast.bitstream import Container, write_container

    return write_container(Container(codec_id=int(cid), fingerprint=bytes(16), height=8, width=8, sections={}))


@pytest.fixture(scope="module")
def codecs_and_streams():
    import cod_fast

    out = []
    for codec, params in ((cod_fast.load_model("sodec-tiny"), {}),
                          (cod_fast.load_model(), {"quality": 1.0}),
                          (cod_fast.load_model(copy.deepcopy(TINY_PIXEL), random_init_seed=0), {"steps": 1})):
        out.append((codec, codec.encode(_image(), **params)))
    return out


def test_real_codecs_follow_the_protocol(codecs_and_streams) -> None:
    for codec, data in codecs_and_streams:
        assert isinstance(codec, Codec), type(codec).__name__
        c = read_container(data)
        assert CODECS[CodecId(c.codec_id)] is type(codec)
        assert set(c.sections) <= set(codec.sections)
        assert codec.parse(data)[0] == c
        assert codec_for(codec, c.codec_id) is codec
        info = describe_stream(c)
        assert info == type(codec).describe(c) and info, type(codec).__name__


def test_describe_reads_the_codec_fields(codecs_and_streams) -> None:
    (sodec, s_data), (default, d_data), (cod, c_data) = codecs_and_streams
    sp = describe_stream(read_container(s_data))["sodec_params"]
    assert sp["checkerboard"] is False and sp["z_rows"] > 0 and sp["z_cols"] > 0
    hp = describe_stream(read_container(d_data))["hyperprior_params"]
    assert hp["quality"] == 1.0 and hp["z_rows"] * 64 >= 64
    cp = describe_stream(read_container(c_data))
    assert cp["decode_params"]["steps"] == 1 and cp["indices"]["bits"] == cod.codebook_bits


def test_codec_for_applies_the_diffc_view() -> None:
    class NotCoD:
        codec_id = CodecId.DEFAULT_HYPERPRIOR

    other = NotCoD()
    assert codec_for(other, CodecId.SODEC) is other  # another kind: its own parse names the mismatch
    with pytest.raises(TypeError, match="CoD codec"):
        codec_for(other, CodecId.DIFFC)  # a DiffC stream is read through a DiffCCodec view
    assert DiffCCodec in CODECS.values()


def test_settings_and_labels_replace_class_switches() -> None:
    flags = {"steps", "cfg", "sampler", "seed", "quality", "refine", "entropy_backend"}
    for cls in set(CODECS.values()):
        assert isinstance(cls.label, str) and cls.label
        for role in (cls.encode_settings, cls.decode_settings):
            assert isinstance(role, frozenset) and role <= flags, cls.__name__
    assert CODECS[CodecId.DEFAULT_HYPERPRIOR].encode_settings == {"quality", "refine"}
    assert CODECS[CodecId.SODEC].decode_settings == {"entropy_backend"}
