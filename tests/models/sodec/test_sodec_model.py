"""SODEC model: config round trip and bounds, module tree and keys, shapes, LoRA at load,
and the checkerboard context (float model, integer export, backend agreement)."""

import json

import pytest
import torch

from cod_fast._ext import cpu_ext
from cod_fast.codecs.sodec import load_sodec, seeded_state_dict
from cod_fast.errors import ModelMismatchError
from cod_fast.kernels.masked_conv import conv_mask
from cod_fast.models.sodec import (
    FULL_SODEC,
    SD21_BASE_UNET,
    SODEC,
    TINY_SODEC,
    HyperpriorConfig,
    SodecConfig,
    SodecHyperprior,
    UNet2DConditionModel,
)
from cod_fast.models.sodec.integer_params import (
    INT32_MAX,
    INT32_MIN,
    IntegerConv,
    IntegerEntropyParams,
    anchor_mask,
    checkerboard_taps,
    context_input,
    context_parameters,
    entropy_head,
    head_parameters,
)
from cod_fast.models.vae import AutoencoderKL

HAS_CPP = cpu_ext() is not None and hasattr(cpu_ext(), "sodec")
BACKENDS = ["reference", "triton"] + (["cpp"] if HAS_CPP else [])


@pytest.fixture(scope="module")
def tiny():
    net = SODEC(TINY_SODEC).eval()
    net.load_state_dict(seeded_state_dict(TINY_SODEC, 6))
    return net


def _img(n, h, w, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---- config ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [TINY_SODEC, FULL_SODEC], ids=["tiny", "full"])
def test_config_json_round_trip(cfg, tmp_path):
    assert SodecConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    path = tmp_path / "sodec.json"
    path.write_text(cfg.to_json())
    assert SodecConfig.from_json(path) == cfg
    assert cfg.to_dict()["model"] == "sodec"


def test_config_bounds():
    d = TINY_SODEC.to_dict()
    with pytest.raises(ValueError, match="unknown"):
        SodecConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="not a SODEC"):
        SodecConfig.from_dict({**d, "model": "cod"})
    with pytest.raises(ValueError, match="transform_channels"):
        SodecConfig.from_dict({**d, "transform_channels": 1 << 20})
    with pytest.raises(ValueError, match="timestep"):
        SodecConfig.from_dict({**d, "timestep": 1000})
    with pytest.raises(ValueError, match="projection out_dim"):
        SodecConfig.from_dict({**d, "projection": {**d["projection"], "out_dim": 16}})
    with pytest.raises(ValueError, match="n_down"):
        SodecConfig.from_dict({**d, "hyperprior": {**d["hyperprior"], "n_down": 100}})
    with pytest.raises(ValueError, match="factors of 2"):  # y finer than the VAE latent
        SodecConfig.from_dict({**d, "hyperprior": {**d["hyperprior"], "n_down": 2}})
    with pytest.raises(ValueError, match="norm_num_groups"):
        SodecConfig.from_dict({**d, "vae": {**d["vae"], "block_out_channels": [12, 16, 32, 32]}})
    with pytest.raises(TypeError):
        SodecConfig.from_dict([1, 2])


# ---- module tree, keys, shapes -----------------------------------------------------------------

def test_full_size_keys_follow_diffusers():
    with torch.device("meta"):
        net = SODEC(FULL_SODEC)
        unet = UNet2DConditionModel(SD21_BASE_UNET)
        vae = AutoencoderKL(**FULL_SODEC.vae.autoencoder_kwargs())
    keys = set(net.state_dict())
    assert {k.split(".", 1)[0] for k in keys} == {"hyperprior", "transform", "fidelity_decoder", "guidance",
                                                   "unet", "vae"}
    assert {k[len("unet."):] for k in keys if k.startswith("unet.")} == set(unet.state_dict())
    vae_keys = {k[len("vae."):] for k in keys if k.startswith("vae.")}
    assert vae_keys == {k for k in vae.state_dict() if k.startswith(("decoder.", "post_quant_conv."))}
    assert "guidance.vit.blocks.11.attn.qkv.weight" in keys and "guidance.projection.fc2.weight" in keys
    n_unet = sum(v.numel() for k, v in net.state_dict().items() if k.startswith("unet."))
    assert n_unet == 865_910_724  # SD 2.1-base


def test_tiny_shapes(tiny):
    x = _img(2, 64, 128)
    with torch.no_grad():
        y_hat, z_hat = tiny.encode(x)
        assert y_hat.shape == (2, 8, 4, 8) and z_hat.shape == (2, 4, 1, 2)
        w = tiny.hyper_features(z_hat)
        assert w.shape == (2, 16, 4, 8)
        assert tiny.transform(y_hat, w).shape == (2, 4, 8, 16)  # the f8 diffusion latent
        image, x_f = tiny.decode_latent(y_hat, z_hat, return_fidelity=True)
        assert image.shape == (2, 3, 64, 128) and x_f.shape == (2, 3, 64, 128)
        assert float(x_f.abs().max()) <= 1.0
        # forward is decode_latent, and the batch does not mix images
        assert torch.allclose(tiny(y_hat[1:], z_hat[1:]), image[1:], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError):
        tiny.encode(_img(1, 48, 64))  # not a multiple of the stride (64)
    with pytest.raises(ValueError):
        tiny.decode_latent(y_hat, z_hat[:, :, :, :1])


def test_lora_merged_at_load():
    cfg = SodecConfig.from_dict({**TINY_SODEC.to_dict(), "lora_alpha": 8.0})
    weights = seeded_state_dict(cfg, 1)
    g = torch.Generator().manual_seed(2)
    name = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    base = weights[name + ".weight"]
    a = torch.randn(4, base.shape[1], generator=g)
    b = torch.randn(base.shape[0], 4, generator=g)
    ckpt = {**weights, name + ".lora_A.weight": a, name + ".lora_B.weight": b}
    codec = load_sodec(cfg, ckpt)
    merged = codec.net.state_dict()[name + ".weight"]
    expected = (base.double() + (8.0 / 4) * (b.double() @ a.double())).float()
    assert torch.equal(merged, expected)
    plain = load_sodec(cfg, weights)
    assert plain.fingerprint != codec.fingerprint
    with pytest.raises(ValueError, match="lora_alpha"):
        load_sodec(TINY_SODEC, {**seeded_state_dict(TINY_SODEC, 1), name + ".lora_A.weight": a,
                                name + ".lora_B.weight": b})
    with pytest.raises(ModelMismatchError):
        bad = dict(weights)
        del bad["transform.conv_in.weight"]
        load_sodec(cfg, bad)


# ---- checkerboard context --------------------------------------------------------------------

CB = HyperpriorConfig(in_channels=3, n=8, m=8, hidden=8, cz=4, n_down=2, z_support=8, checkerboard=True)


@pytest.fixture(scope="module")
def cb_model():
    torch.manual_seed(0)
    m = SodecHyperprior(CB).eval()
    with torch.no_grad():  # spread z and the scales over several symbols and table rows
        m.h_a[-1].weight.mul_(40.0)
        m.h_s[-1].weight.mul_(30.0)
        m.context.weight.mul_(0.3)
    m.update()
    return m


def test_checkerboard_taps_match_masked_conv():
    for k in (1, 3, 5, 7):
        assert torch.equal(checkerboard_taps(k), conv_mask("checkerboard_A", k, k).bool())
    a = anchor_mask(3, 4)
    assert a.tolist() == [[True, False, True, False], [False, True, False, True], [True, False, True, False]]


def test_checkerboard_float_forward_uses_anchors_only(cb_model):
    x = _img(1, 32, 32)
    with torch.no_grad():
        y_hat, z_hat, scales, means = cb_model.quantized_latents(x)
        s0, m0 = cb_model.hyper_synthesis(z_hat)
        anchors = anchor_mask(8, 8)
        assert torch.equal(means[..., anchors], m0[..., anchors])  # first pass: hyperprior only
        assert not torch.equal(means[..., ~anchors], m0[..., ~anchors])
        # changing a non-anchor of y_hat does not change any parameter
        y2 = y_hat.clone()
        y2[..., ~anchors] += 5
        d1 = cb_model.context_offsets(y_hat * anchors)[1]
        d2 = cb_model.context_offsets(y2 * anchors)[1]
        assert torch.equal(d1, d2)


def test_checkerboard_integer_export_tracks_float(cb_model):
    x = _img(2, 32, 48, seed=3)
    with torch.no_grad():
        y_hat, z_hat, scales, means = cb_model.quantized_latents(x)
    params = cb_model.int_params
    head = entropy_head(params, z_hat.to(torch.int32))
    _, m1 = head_parameters(params, head)
    # the integer context on the float y_hat's anchors (on the mean grid) vs the float context
    sym = torch.round(y_hat - m1.float() / 16).to(torch.int32)
    _, m2 = context_parameters(params, head, context_input(sym, m1, 4))
    with torch.no_grad():
        _, m2_float = cb_model.context_offsets((sym + m1.float() / 16) * anchor_mask(8, 12))
        m2_float = m2_float + cb_model.hyper_synthesis(z_hat)[1]
    na = ~anchor_mask(8, 12)
    err = (m2.float() / 16 - m2_float)[..., na].abs().max()
    assert float(err) < 1 / 32 + 0.03 * float(m2_float.abs().max()) + 1e-3


def test_checkerboard_round_trip_every_backend(cb_model):
    x = _img(1, 32, 48, seed=5)
    strings = {b: cb_model.compress(x, backend=b) for b in BACKENDS}
    ref, shape = strings["reference"]
    assert len(ref) == 3
    assert all(s == ref for s, _ in strings.values())
    with torch.no_grad():
        y_float = cb_model.g_a(x)
    outs = {b: cb_model.decompress_latents(ref, shape, backend=b) for b in BACKENDS}
    for b in BACKENDS:
        assert torch.equal(outs[b][0], outs["reference"][0]) and torch.equal(outs[b][1], outs["reference"][1])
    assert float((outs["reference"][0] - y_float).abs().max()) <= 0.5 + 1 / 32 + 1e-5
    with pytest.raises(ValueError, match="3 byte strings"):
        cb_model.decompress(ref[:2], shape)


def test_checkerboard_integer_state_round_trip(cb_model):
    sd = cb_model.integer_state_dict()
    assert "int.context.weight" in sd
    dec = SodecHyperprior(CB)
    dec.load_integer_state(sd)
    assert torch.equal(dec.int_params.context.weight, cb_model.int_params.context.weight)
    plain = SodecHyperprior(HyperpriorConfig(in_channels=3, n=8, m=8, hidden=8, cz=4, n_down=2, z_support=8))
    with pytest.raises(ValueError, match="checkerboard"):
        plain.load_integer_state(sd)


def test_context_layer_validation(cb_model):
    p = cb_model.int_params
    w = p.context.weight.clone()
    w[0, 0, 2, 2] = 1  # the centre tap is not a checkerboard tap
    bad = IntegerConv(w, p.context.bias, p.context.mult, p.context.shift, 1, p.context.lo, p.context.hi)
    with pytest.raises(ValueError, match="checkerboard taps"):
        IntegerEntropyParams(p.layers, p.thresholds, p.n_channels, 8, 4, bad)
    no_ctx = IntegerEntropyParams(p.layers, p.thresholds, p.n_channels, 8, 4)
    with pytest.raises(ValueError, match="no context layer"):
        context_parameters(no_ctx, torch.zeros(1, 16, 4, 4, dtype=torch.int32), torch.zeros(1, 8, 4, 4, dtype=torch.int32))


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
def test_context_backends_agree_on_extremes(cb_model, backend):
    """Random heads and anchors, including values at the clamps and int32 limits."""
    p = cb_model.int_params
    g = torch.Generator().manual_seed(11)
    head = torch.randint(-3000, 3000, (2, 16, 6, 10), generator=g, dtype=torch.int32)
    head[0, :, 0, :] = INT32_MAX
    head[1, :, 0, :] = INT32_MIN
    sym = torch.randint(-4000, 4000, (2, 8, 6, 10), generator=g, dtype=torch.int32)
    sym[:, :, 1, :] = 1 << 30  # clamped to 32767 on the mean grid
    means = torch.randint(-100, 100, (2, 8, 6, 10), generator=g, dtype=torch.int32)
    y_ctx = context_input(sym, means, 4)
    assert int(y_ctx.abs().max()) == 32767
    ref = context_parameters(p, head, y_ctx, "reference")
    out = context_parameters(p, head, y_ctx, backend)
    assert torch.equal(ref[0], out[0]) and torch.equal(ref[1], out[1])
