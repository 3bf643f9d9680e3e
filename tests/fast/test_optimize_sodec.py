"""optimize() on SODEC's decoder networks (SD UNet, SD-VAE): the "cpu" route (channels-last
activations, in-place glue, cached t=999 timestep embedding) and the "triton" route (fused
GroupNorm+SiLU, through the interpreter on CPU) give the reference's outputs on tiny configs."""
import os

import pytest
import torch
from torch import nn

if not torch.cuda.is_available():  # the Triton backend is exercised through the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fast_helpers import backend_device, close_fp32, exact_fp32, randomize  # noqa: E402

import cod_fast.fast as fast  # noqa: E402
from cod_fast.fast import cpu_blocks  # noqa: E402
from cod_fast.models.sodec import TINY_UNET, UNet2DConditionModel, UNetConfig  # noqa: E402
from cod_fast.models.sodec import unet as sodec_unet  # noqa: E402
from cod_fast.models.vae import AutoencoderKL  # noqa: E402

TRITON_OK = torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"
TRITON = pytest.param("triton", marks=pytest.mark.skipif(not TRITON_OK, reason="needs CUDA or TRITON_INTERPRET=1"))

# SD 1.x layout (1x1-conv projections), three levels, two layers in the middle level.
CONV_PROJ_UNET = UNetConfig(
    block_out_channels=(32, 64, 64), layers_per_block=(1, 2, 1), attention_head_dim=(2, 4, 4),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=24, use_linear_projection=False, norm_num_groups=4)

CPU_KINDS = {"CpuSodecUNet", "CpuTimestepEmbedding", "CpuUNetResnetBlock2D", "CpuTransformer2DModel",
             "CpuBasicTransformerBlock", "CpuGEGLU", "CpuUNetUpsample2D"}
TRITON_KINDS = {"TritonTimestepEmbedding", "TritonUNetResnetBlock2D", "TritonGroupNorm"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: see tests/conftest.py


def _tiny_vae(act_fn: str = "silu") -> AutoencoderKL:
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=4, act_fn=act_fn)
    return randomize(vae, 7)


def _check_swap(model: nn.Module, fast_model: nn.Module, backend: str, kinds: set[str]) -> None:
    assert list(fast_model.state_dict()) == list(model.state_dict())
    shared = {p.data_ptr() for p in model.parameters()}
    assert all(p.data_ptr() in shared for p in fast_model.parameters())
    assert fast.replaced(model) == []  # the input model is left as it was
    report = fast.replaced(fast_model)
    assert kinds <= {r.fast for r in report}
    assert all(r.backend == backend for r in report)


# The interpreter runs each Triton program in Python (tens of ms each, one per group and batch
# row): the Triton cases use 4-8 groups and small grids.
UNET_CASES = [
    pytest.param("cpu", TINY_UNET, (2, 4, 16, 16), id="cpu-linear_proj_b2"),
    pytest.param("cpu", CONV_PROJ_UNET, (1, 4, 10, 14), id="cpu-conv_proj_odd_size"),
    pytest.param(*TRITON.values, CONV_PROJ_UNET, (1, 4, 6, 10), marks=TRITON.marks, id="triton-conv_proj_odd_size"),
]


@pytest.mark.parametrize("backend, cfg, shape", UNET_CASES)
def test_unet_matches_reference(backend: str, cfg: UNetConfig, shape: tuple) -> None:
    device = backend_device(backend)  # Triton on the GPU when there is one
    unet = randomize(UNet2DConditionModel(cfg), 1).to(device)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(shape, generator=gen).to(device)
    ctx = torch.randn(shape[0], 5, cfg.cross_attention_dim, generator=gen).to(device)
    with torch.inference_mode(), exact_fp32():
        ref = unet(x, 999, ctx)
        fast_unet = fast.optimize(unet, backend)
        got = fast_unet(x, 999, ctx)
        if backend == "cpu":  # the cached timestep embedding gives the same result
            torch.testing.assert_close(fast_unet(x, 999, ctx), got, rtol=0, atol=0)
    close_fp32(got, ref)
    assert got.shape == ref.shape
    if backend == "cpu":  # channels-last inside, the reference's NCHW layout outside
        assert got.is_contiguous()
    _check_swap(unet, fast_unet, backend, CPU_KINDS if backend == "cpu" else TRITON_KINDS)


@pytest.mark.parametrize("backend", ["cpu", TRITON])
def test_vae_decode_and_encode_match_reference(backend: str) -> None:
    device = backend_device(backend)
    vae = _tiny_vae().to(device)
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(1, 4, 3, 5, generator=gen).to(device)
    img = (torch.rand(1, 3, 6, 10, generator=gen) * 2 - 1).to(device)
    with torch.inference_mode(), exact_fp32():
        ref_dec, ref_enc = vae.decode(z), vae.encode(img).mean
        fast_vae = fast.optimize(vae, backend)
        got_dec, got_enc = fast_vae.decode(z), fast_vae.encode(img).mean
    close_fp32(got_dec, ref_dec)
    close_fp32(got_enc, ref_enc)
    if backend == "cpu":  # channels-last inside, the reference's NCHW layout outside
        assert got_dec.is_contiguous() and got_enc.is_contiguous()
    kinds = ({"CpuVaeDecoder", "CpuVaeEncoder", "CpuVaeResnetBlock2D", "CpuVaeAttention", "CpuVaeUpsample2D"}
             if backend == "cpu"
             else {"TritonVaeResnetBlock2D", "TritonGroupNorm"})
    _check_swap(vae, fast_vae, backend, kinds)


@pytest.mark.parametrize("backend, act_fn", [("cpu", "relu"), ("cpu", "gelu"), pytest.param(
    *TRITON.values, "gelu", marks=TRITON.marks)])
def test_vae_other_activations(backend: str, act_fn: str) -> None:
    """The in-place (ReLU) and allocating (GELU) activation paths; Triton keeps the reference's
    ResNet blocks (its kernel fuses SiLU only) and still swaps the other GroupNorms."""
    device = backend_device(backend)
    vae = _tiny_vae(act_fn).to(device)
    z = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(4)).to(device)
    with torch.inference_mode(), exact_fp32():
        ref = vae.decode(z)
        got = fast.optimize(vae, backend).decode(z)
    close_fp32(got, ref)


def test_timestep_cache_follows_timestep_and_weights() -> None:
    unet = randomize(UNet2DConditionModel(TINY_UNET), 5)
    fast_unet = fast.optimize(unet, "cpu")
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    ctx = torch.randn(1, 3, TINY_UNET.cross_attention_dim, generator=gen)
    emb = fast_unet.time_embedding
    with torch.no_grad():
        close_fp32(fast_unet(x, 999, ctx), unet(x, 999, ctx))
        cached = emb._fast_cache[2]
        close_fp32(fast_unet(x, 999, ctx), unet(x, 999, ctx))
        assert emb._fast_cache[2] is cached  # reused, not recomputed
        close_fp32(fast_unet(x, 500, ctx), unet(x, 500, ctx))  # another t: recomputed
        assert emb._fast_cache[2] is not cached
        unet.time_embedding.linear_2.weight.mul_(1.5)  # shared weight changed in place
        close_fp32(fast_unet(x, 500, ctx), unet(x, 500, ctx))
        close_fp32(fast_unet(torch.cat([x, x]), 500, torch.cat([ctx, ctx])),
                    unet(torch.cat([x, x]), 500, torch.cat([ctx, ctx])))  # another batch size
    with torch.enable_grad():  # outputs that carry a graph are never cached
        out = fast_unet(x, 999, ctx)
    assert out.requires_grad and emb._fast_cache is None


def test_fast_unet_rejects_bad_input_like_the_reference() -> None:
    fast_unet = fast.optimize(UNet2DConditionModel(TINY_UNET).eval(), "cpu")
    ctx = torch.zeros(1, 3, TINY_UNET.cross_attention_dim)
    with torch.inference_mode():
        with pytest.raises(ValueError, match="sample must be"):
            fast_unet(torch.zeros(4, 8, 8), 999, ctx)
        with pytest.raises(ValueError, match="sample must be"):
            fast_unet(torch.zeros(1, 3, 8, 8), 999, ctx)
        with pytest.raises(ValueError, match="encoder_hidden_states"):
            fast_unet(torch.zeros(1, 4, 8, 8), 999, torch.zeros(1, 3, 7))
        with pytest.raises(TypeError):
            fast_unet(torch.zeros(1, 4, 8, 8), "999", ctx)


@pytest.mark.parametrize("shape", [(2, 6, 5, 7), (1, 3, 1, 1), (1, 8, 4, 4)])
def test_subpixel_upsample_conv_matches_upsample_then_conv(shape: tuple) -> None:
    gen = torch.Generator().manual_seed(8)
    conv = nn.Conv2d(shape[1], 5, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        conv.bias.copy_(torch.randn(5, generator=gen))
    x = torch.randn(shape, generator=gen)
    with torch.inference_mode():
        ref = conv(torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))
        got = cpu_blocks._upsample2x_conv3x3(x, conv)
    # The folded taps sum up to 4 weights before the product: reductions of 9 * C terms either way.
    close_fp32(got, ref)


def test_unet_upsampler_falls_back_for_other_sizes_and_convs() -> None:
    up = randomize(sodec_unet.Upsample2D(4), 9)
    fast_up = fast.optimize(up, "cpu")
    assert isinstance(fast_up, cpu_blocks.CpuUNetUpsample2D)
    x = torch.randn(1, 4, 3, 5, generator=torch.Generator().manual_seed(10))
    with torch.inference_mode():
        close_fp32(fast_up(x, (5, 9)), up(x, (5, 9)))  # not an exact 2x: the reference path
        close_fp32(fast_up(x, (6, 10)), up(x))  # an explicit size that is exactly 2x
        fast_up.conv.padding_mode = "reflect"  # a conv the sub-pixel form does not cover
        up.conv.padding_mode = "reflect"
        close_fp32(fast_up(x), up(x))


def test_optimize_a_sodec_codec_end_to_end() -> None:
    """optimize() takes the whole SodecCodec (its model holds native rANS tables, which the
    module-tree copy shares instead of copying): the encoder writes the same bytes and the
    decoded image stays within one uint8 step of the reference's."""
    import copy

    import cod_fast
    from cod_fast.entropy import GaussianConditionalTables

    tables = GaussianConditionalTables()
    assert copy.deepcopy(tables) is tables
    codec = cod_fast.load_model("sodec-tiny")
    fast = cod_fast.optimize(codec, backend="cpu")
    assert fast is not codec and fast.net is not codec.net
    assert any(r.backend == "cpu" for r in cod_fast.fast.replaced(fast.net))
    g = torch.Generator().manual_seed(3)
    img = (torch.rand(3, 40, 52, generator=g) * 255).to(torch.uint8)
    data = codec.encode(img)
    assert fast.encode(img) == data
    diff = (codec.decode(data).int() - fast.decode(data).int()).abs().max()
    assert int(diff) <= 1
