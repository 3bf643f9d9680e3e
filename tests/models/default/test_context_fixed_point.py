"""Release 3 of the default model: the checkerboard context in fixed point (``integer_params``,
"Checkerboard context"). A fresh (zero) context codes release 2's symbols; a non-zero one
round-trips, agrees with the float model, and gives identical integers on every backend and
thread count; the container (``HYPERPRIOR_Y_NONANCHOR``, fingerprint with ``"release": 3``)."""
from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import pytest
import torch
from tiny_models import run_triton_check, small_default_net

from cod_fast.int_params.reference import anchor_mask
from cod_fast.models.default.integer_params import (
    DefaultIntegerParams,
    IntegerEntropyModel,
    checkerboard_merge,
    checkerboard_split,
    context_input,
    export_integer_params,
    quantize_y,
)
from cod_fast.models.default.model import add_checkerboard_context, pad_to_stride

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The shipped hyper synthesis layout (768 channels, 1x1 head), narrow (tiny_models.small_default_net).
SMALL = small_default_net().cfg
Q = 1.3


def _image() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    base = torch.linspace(0, 1, 130).view(1, 1, 1, 130).expand(1, 3, 100, 130)
    return (base + 0.2 * torch.rand(1, 3, 100, 130, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def nets():
    """(model without context, the same with a zero context, with a non-zero context, calibration
    z, calibration y_unit)."""
    net = small_default_net()
    with torch.no_grad():
        y_unit = net.g_a(pad_to_stride(_image()))
        _, z, _ = net._analyse(y_unit, torch.zeros(1))
    zero = add_checkerboard_context(net, kernel=5, hidden=8, seed=1).eval()
    live = add_checkerboard_context(net, kernel=5, hidden=8, seed=1).eval()
    with torch.no_grad():
        for p in live.context.conv2.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)) * 0.05)
    return net, zero, live, torch.round(z), y_unit


@pytest.fixture(scope="module")
def live_int(nets):
    _, _, live, z, y_unit = nets
    return IntegerEntropyModel(export_integer_params(live, z, y_calib=y_unit))


def test_zero_context_codes_release_2_symbols(nets) -> None:
    net, zero, _, z, y_unit = nets
    p2 = export_integer_params(net, z)
    p3 = export_integer_params(zero, z, y_calib=y_unit)
    sd2, sd3 = p2.state_dict(), p3.state_dict()
    assert set(sd3) - set(sd2) and all(k.startswith("context.") for k in set(sd3) - set(sd2))
    assert all(torch.equal(sd2[k], sd3[k]) for k in sd2)  # release 2's integers are untouched
    r3 = DefaultIntegerParams.from_state_dict(sd3).state_dict()
    assert set(r3) == set(sd3) and all(torch.equal(r3[k], sd3[k]) for k in sd3)
    i2, i3 = IntegerEntropyModel(p2), IntegerEntropyModel(p3)
    for rdoq in (False, True):
        o2 = net.compress(_image(), Q, rdoq=rdoq, integer=i2)
        o3 = zero.compress(_image(), Q, rdoq=rdoq, integer=i3)
        assert len(o3["strings"]) == 3 and o2["index_crc"] == o3["index_crc"][0]
        y2, z2 = net.decode_symbols(o2["strings"], o2["shape"], Q, index_crc=o2["index_crc"], integer=i2)
        y3, z3 = zero.decode_symbols(o3["strings"], o3["shape"], Q, index_crc=o3["index_crc"], integer=i3)
        assert torch.equal(y2, y3) and torch.equal(z2, z3)
    with pytest.raises(ValueError, match="context"):
        zero.compress(_image(), Q, integer=i2)  # a context model refuses release 2's parameters
    with pytest.raises(ValueError, match="context"):
        net.compress(_image(), Q, integer=i3)


def test_live_context_round_trip_and_float_agreement(nets, live_int) -> None:
    _, _, live, _, _ = nets
    out = live.compress(_image(), Q, integer=live_int)
    y_sym, z_sym, means = live._decode_symbols(out["strings"], out["shape"], torch.tensor([Q]), None,
                                               out["index_crc"], live_int)
    # the decoder's symbols are the encoder's: y quantized around the decoded means
    with torch.no_grad():
        y, z, gain = live._analyse(live.g_a(pad_to_stride(_image())), torch.tensor([Q]))
    m_q = torch.round(means.double() * 256).to(torch.int32)
    assert torch.equal(quantize_y(y, m_q, 8), y_sym)
    assert torch.equal(z_sym, torch.round(z).to(torch.int32))
    # and the integer parameters follow the float model's two passes
    with torch.no_grad():
        _, fm = live._y_params(y, torch.round(z), gain)
        _, fm0 = live.h_s(torch.round(z), gain)
    anchors = anchor_mask(y.shape[2], y.shape[3])
    err = (means - fm).abs()[..., ~anchors]
    assert float(err.median()) < 1e-2 and float(err.quantile(0.99)) < 0.1
    # the context moved the non-anchor means
    assert float((means - fm0).abs()[..., ~anchors].median()) > 10 * float(err.median())
    x_hat = live.decompress(out["strings"], out["shape"], Q, image_size=(100, 130), index_crc=out["index_crc"],
                            integer=live_int)
    assert x_hat.shape == (1, 3, 100, 130)


def test_live_context_backends_and_threads_identical(nets, live_int) -> None:
    _, _, live, _, _ = nets
    streams, ints = {}, {}
    n = torch.get_num_threads()
    try:
        for backend in ("reference", "cpp"):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                o = live.compress(_image(), Q, integer=live_int, backend=backend)
                streams[backend, threads] = (o["strings"], o["index_crc"])
                ints[backend, threads] = live.decode_symbols(o["strings"], o["shape"], Q, index_crc=o["index_crc"],
                                                             integer=live_int, backend=backend)
    finally:
        torch.set_num_threads(n)
    first = next(iter(streams.values()))
    assert all(s == first for s in streams.values())
    y0, z0 = next(iter(ints.values()))
    assert all(torch.equal(y, y0) and torch.equal(z, z0) for y, z in ints.values())


def test_context_layout_is_validated(live_int) -> None:
    p = live_int.params
    c0, c1 = p.context
    w = c0.weight.clone()
    w[0, 0, 2, 2] = 1  # the centre tap: a non-anchor would read itself
    with pytest.raises(ValueError, match="checkerboard"):
        dataclasses.replace(p, context=(dataclasses.replace(c0, weight=w), c1))
    with pytest.raises(TypeError):
        dataclasses.replace(p, context_lut=None)
    sym = torch.ones(1, p.n_channels, 4, 2, dtype=torch.int32)  # the anchors, packed
    u = context_input(p, sym, torch.zeros_like(sym), Q)
    a = anchor_mask(4, 4)
    assert u.shape == (1, p.n_channels, 4, 4)
    assert bool((u[..., ~a] == 0).all()) and bool((u[..., a] > 0).all())


def test_checkerboard_split_lists_each_set_in_raster_order() -> None:
    x = torch.arange(2 * 3 * 6 * 8).view(2, 3, 6, 8)
    a, n = checkerboard_split(x)
    mask = anchor_mask(6, 8).expand(x.shape)
    assert a.shape == n.shape == (2, 3, 6, 4)
    assert torch.equal(a.reshape(-1), x[mask]) and torch.equal(n.reshape(-1), x[~mask])
    assert torch.equal(checkerboard_merge(a, n), x)
    with pytest.raises(ValueError, match="even"):
        checkerboard_split(x[:, :, :5])


_TRITON_CHECK = """
import os
os.environ.setdefault("TRITON_INTERPRET", "0" if os.environ.get("COD_FAST_TEST_CUDA") else "1")
import torch
from cod_fast.models.default.integer_params import context_input, export_integer_params, head_codes, hyper_features
from cod_fast.models.default.model import DefaultCodecModel, DefaultConfig, add_checkerboard_context
torch.manual_seed(0)
# 8 latent channels (no DCT base) with the shipped layout's 1x1 head: small enough for the interpreter
cfg = DefaultConfig(enc=(8, 8, 8), latent=8, hyper=8, hyper_latent=4, dec=(8, 8, 8, 8), dec_blocks=(1, 1, 1, 1),
                    lambdas=(0.005, 0.01, 0.02), dct_base=False, unit_hyper=True)
net = add_checkerboard_context(DefaultCodecModel(cfg), kernel=3, hidden=4).eval()
net.h_s.conv3 = torch.nn.Conv2d(12, 16, 1)
with torch.no_grad():
    for p in [*net.h_s.parameters(), *net.context.parameters()]:
        p.copy_(torch.randn_like(p) * 0.3)
p = export_integer_params(net, torch.randint(-6, 7, (2, 4, 3, 3)).float(), y_calib=torch.randn(1, 8, 4, 4) * 4)
z = torch.randint(-9, 10, (1, 4, 1, 1), dtype=torch.int32)  # one z position: the interpreter is slow
sym = torch.randint(-5, 6, (1, 8, 4, 2), dtype=torch.int32)  # the anchors' symbols, packed
f = hyper_features(p, z)  # pass one on Triton: test_fixed_point.py
i1, m1 = head_codes(p, f, 1.5, part="anchors")
ctx = context_input(p, sym, m1, 1.5)
a, b = (head_codes(p, f, 1.5, be, ctx, part="non_anchors") for be in ("reference", "triton"))
assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], m1)
print("identical")
"""


def test_triton_backend_identical() -> None:
    """Pass two (head + context) on Triton (the interpreter here, in a subprocess) equals the
    reference."""
    pytest.importorskip("triton")
    run_triton_check(_TRITON_CHECK)


def test_container_release_3(nets, live_int, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    import cod_fast
    from cod_fast.bitstream import SectionType, read_container, replace_container, write_container
    from cod_fast.codecs.default import load_default_codec_from
    from cod_fast.errors import BitstreamError, EntropyParameterMismatchError

    _, _, live, _, _ = nets
    (tmp_path / "default.json").write_text(json.dumps({"config": live.cfg.to_dict()}))
    save_file({k: v.contiguous() for k, v in live.state_dict().items()}, str(tmp_path / "default.safetensors"))
    save_file(live_int.params.state_dict(), str(tmp_path / "default_int.safetensors"))
    codec = load_default_codec_from(tmp_path, entropy_backend="reference")
    assert codec.release == 3
    img = (_image()[0] * 255).round().to(torch.uint8)
    data = codec.encode(img, quality=Q, rdoq=False)
    c = read_container(data)
    assert SectionType.HYPERPRIOR_Y_NONANCHOR in c.sections
    out = cod_fast.decode(data)  # found by fingerprint
    assert out.shape == (3, 100, 130) and torch.equal(out, codec.decode(data))
    import pickle

    copy = pickle.loads(pickle.dumps(codec))  # rebuilt from the folder (cod_fast.portable)
    assert copy.release == 3 and copy.fingerprint == codec.fingerprint and torch.equal(copy.decode(data), out)
    # a release number in default.json names the weights; the layout (what parses) and the
    # fingerprint (what the stream names) stay those of the tensors
    (tmp_path / "default.json").write_text(json.dumps({"config": live.cfg.to_dict(), "release": 9}))
    numbered = load_default_codec_from(tmp_path, entropy_backend="reference")
    assert (numbered.release, numbered.layout, numbered.fingerprint) == (9, 3, codec.fingerprint)
    assert repr(numbered).startswith("DefaultCodec(release=9, ") and torch.equal(numbered.decode(data), out)
    ys, _ = codec.decode_symbols(data)
    want, _ = live.decode_symbols([c.sections[5], c.sections[6], c.sections[10]], (2, 3), Q, integer=live_int)
    assert torch.equal(ys, want)
    crc, crc_anchors = struct.unpack("<II", c.sections[SectionType.HYPERPRIOR_CHECK])  # all, the anchors'
    for bad, which in (((crc ^ 1, crc_anchors), "the y table"), ((crc, crc_anchors ^ 1), "the anchors' y table")):
        with pytest.raises(EntropyParameterMismatchError, match=f"release 3.*{which}"):
            codec.decode(replace_container(data, sections={SectionType.HYPERPRIOR_CHECK: struct.pack("<II", *bad)}))
    with pytest.raises(BitstreamError, match="8 bytes"):  # release 2's 4-byte section
        codec.decode(replace_container(data, sections={SectionType.HYPERPRIOR_CHECK: struct.pack("<I", crc)}))
    for tag in (SectionType.HYPERPRIOR_Y, SectionType.HYPERPRIOR_Y_NONANCHOR):  # damaged y streams
        for payload in (c.sections[tag][: len(c.sections[tag]) // 2], b"", bytes(range(256))):
            with pytest.raises(BitstreamError):
                codec.decode(replace_container(data, sections={tag: payload}))
    sections = dict(c.sections)
    del sections[SectionType.HYPERPRIOR_Y_NONANCHOR]
    with pytest.raises(BitstreamError, match="HYPERPRIOR_Y_NONANCHOR"):
        codec.decode(write_container(dataclasses.replace(c, sections=sections)))
    # release 2's fingerprint of the same float weights without the context is another model
    from cod_fast.codecs.default import default_fingerprint
    assert default_fingerprint(live.cfg.to_dict(), {}, {"meta": torch.zeros(1)}) != codec.fingerprint


def test_codec_refuses_mismatched_parts(nets, live_int, tmp_path: Path) -> None:
    from cod_fast.codecs.default import DefaultCodec, load_default_codec_from

    net, _, live, z, _ = nets
    with pytest.raises(ValueError, match="checkerboard"):
        DefaultCodec(net, bytes(16), integer=live_int)  # integers with a context, model without
    with pytest.raises(ValueError, match="checkerboard"):
        DefaultCodec(live, bytes(16), integer=IntegerEntropyModel(export_integer_params(net, z)))
    (tmp_path / "default.json").write_text(json.dumps({"config": live.cfg.to_dict()}))
    with pytest.raises(FileNotFoundError):
        load_default_codec_from(tmp_path)
