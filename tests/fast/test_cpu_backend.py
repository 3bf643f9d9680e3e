"""The "cpu" route (cod_fast.fast.cpu_blocks) and the opt-in int8 route (cod_fast.fast.quant) on
tiny models: each within its documented tolerance of the reference, weights and keys shared."""
import pytest
import torch
import torch.nn.functional as F
from fast_helpers import close_fp32, randomize

import cod_fast.fast as fast
from cod_fast.fast import cpu_blocks, quant
from cod_fast.models.cod import PixNerDiT
from cod_fast.models.cod import pixel_dit as cod_pixel
from cod_fast.models.cod_lite import OneStepCoD as LiteOneStep
from cod_fast.models.cod_lite import common as lite_common
from cod_fast.models.cod_lite import pixel_cnn as lite_cnn

PIXEL_CFG = dict(in_channels=3, patch_size=16, num_groups=2, hidden_size_x=16, hidden_size=64,
                 num_blocks=3, num_cond_blocks=2, nerf_mlpratio=2, ds=32, codebook_bits=4, up2x=True)
LITE_CFG = dict(pred="x", in_channels=3, patch_size=16, hidden_size_x=16, hidden_size=64, num_blocks=4,
                num_cond_blocks=2, light=True, up2x=True, ds=16, codebook_bits=8, noise_level=0.0)
INT8_OK = quant.int8_available()


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _pixel():
    model = randomize(PixNerDiT(**PIXEL_CFG), 10)
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(1, 3, 32, 48, generator=gen)
    cond = torch.randn(1, 64, 2, 3, generator=gen)
    return model, (lambda m: m(x, torch.tensor([0.4]), None, cond)[0])


def _lite():
    model = randomize(LiteOneStep(**LITE_CFG), 12)
    model.eval()  # rebuild the t=0 cache from the randomised weights
    gen = torch.Generator().manual_seed(13)
    y = torch.zeros(1, 3, 32, 64)
    cond = torch.randn(1, 64, 2, 4, generator=gen)
    return model, (lambda m: m.inference(y, cond))


@pytest.mark.parametrize("case", [_pixel, _lite], ids=["pixnerdit", "cod_lite"])
def test_cpu_route_matches_reference_and_swaps_new_blocks(case) -> None:
    model, run = case()
    with torch.inference_mode():
        ref = run(model)
        fast_model = fast.optimize(model, "cpu")
        got = run(fast_model)
    close_fp32(got, ref)
    kinds = {r.fast for r in fast.replaced(fast_model)}
    if case is _pixel:
        assert {"CpuNerfEmbedder", "CpuFlattenDiTBlock", "CpuNerfBlock"} <= kinds
    else:
        assert {"CpuLiteNerfEmbedder", "CpuDiCoBlock", "CpuSimpleMLPAdaLN", "CpuLiteResBlock"} <= kinds
    assert list(fast_model.state_dict()) == list(model.state_dict())


def test_dico_block_token_major_any_layout() -> None:
    block = randomize(lite_cnn.DiCoBlock(32), 14)
    gen = torch.Generator().manual_seed(15)
    x = torch.randn(2, 32, 5, 7, generator=gen)
    c = torch.randn(2, 32, generator=gen)
    with torch.inference_mode():
        ref = block(x, c)
        fast_block = fast.optimize(block, "cpu")
        assert isinstance(fast_block, cpu_blocks.CpuDiCoBlock)
        got = fast_block(x, c)
        got_cl = fast_block(x.contiguous(memory_format=torch.channels_last), c)
    close_fp32(got, ref)
    torch.testing.assert_close(got_cl, got, rtol=0, atol=0)
    assert got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("cls", [cod_pixel.NerfEmbedder, lite_common.NerfEmbedder])
def test_nerf_embedder_precomputed_dct_term(cls) -> None:
    emb = randomize(cls(5, 16, max_freqs=8), 16)
    x = torch.randn(3, 64, 5, generator=torch.Generator().manual_seed(17))
    with torch.no_grad():
        ref = emb(x)
        fast_emb = fast.optimize(emb, "cpu")
        close_fp32(fast_emb(x), ref)
        # An in-place weight update (shared with the reference) invalidates the cached table.
        emb.embedder[0].weight.mul_(2.0)
        emb.embedder[0].bias.add_(1.0)
        close_fp32(fast_emb(x), emb(x))
        with pytest.raises(ValueError, match="square"):
            fast_emb(torch.randn(1, 10, 5))


def test_lite_resblock_without_shared_silu() -> None:
    block = randomize(lite_cnn.ResBlock(16), 18)
    gen = torch.Generator().manual_seed(19)
    x, y = torch.randn(4, 9, 16, generator=gen), torch.randn(4, 9, 16, generator=gen)
    with torch.inference_mode():
        close_fp32(fast.optimize(block, "cpu")(x, y), block(x, y))


@pytest.mark.skipif(not INT8_OK, reason="no x86/fbgemm quantized engine")
def test_int8_linear_error_and_repack() -> None:
    gen = torch.Generator().manual_seed(20)
    lin = torch.nn.Linear(256, 192)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(192, 256, generator=gen) * 0.05)
    x = torch.randn(2, 40, 256, generator=gen)
    q = quant.quantize_int8(fast.optimize(lin, "cpu"), min_features=16)
    assert isinstance(q, quant.Int8Linear) and list(q.state_dict()) == ["weight", "bias"]
    with torch.no_grad():
        ref, got = lin(x), q(x)
        assert got.shape == ref.shape
        # 8-bit weights and activations, K=256: ~1-2 % relative L2; bound at 4 %.
        assert 1e-4 < _rel_l2(got, ref) < 0.04
        lin.weight.mul_(-1.0)  # shared weight changed in place: the packed copy must follow
        assert _rel_l2(q(x), lin(x)) < 0.04
    # A float64 Linear takes the exact fallback (int8 only handles fp32).
    lin64 = torch.nn.Linear(256, 192).double()
    q64 = quant.quantize_int8(fast.optimize(lin64, "cpu"), min_features=16)
    with torch.no_grad():
        torch.testing.assert_close(q64(x.double()), F.linear(x.double(), lin64.weight, lin64.bias), rtol=0, atol=0)


@pytest.mark.skipif(not INT8_OK, reason="no x86/fbgemm quantized engine")
@pytest.mark.parametrize("case,min_features", [(_pixel, 16), (_lite, 64)], ids=["pixnerdit", "cod_lite"])
def test_int8_route_error_bounded(case, min_features: int) -> None:
    # cod_lite: as at full size (min_features 256 of hidden 384), only the wide Linears (the
    # per-pixel cond_embed) go int8; its 16-wide per-pixel MLPs would lose too much at 8 bits.
    model, run = case()
    with torch.inference_mode():
        ref = run(model)
        q = quant.quantize_int8(fast.optimize(model, "cpu"), min_features=min_features)
        got = run(q)
    n_int8 = sum(isinstance(m, quant.Int8Linear) for m in q.modules())
    assert n_int8 > 0
    convs = [m for m in q.modules() if isinstance(m, quant.Int8Conv1x1)]
    assert bool(convs) == (case is _lite)  # DiCoBlock 1x1 convs as int8 GEMMs
    if convs:  # called on an NCHW tensor, the swapped conv stays the exact fp32 convolution
        z = torch.randn(1, convs[0].in_channels, 3, 2)
        with torch.no_grad():
            torch.testing.assert_close(convs[0](z), torch.nn.Conv2d.forward(convs[0], z), rtol=0, atol=0)
    assert not any(isinstance(m, quant.Int8Linear) for m in model.modules())
    assert list(q.state_dict()) == list(model.state_dict())
    shared = {p.data_ptr() for p in model.parameters()}
    assert all(p.data_ptr() in shared for p in q.parameters())
    err = _rel_l2(got, ref)
    assert 0 < err < 0.1, err


def test_quantize_int8_bad_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TypeError):
        quant.quantize_int8(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        quant.quantize_int8(torch.nn.Linear(4, 4), min_features=0)
    monkeypatch.setattr(quant, "int8_available", lambda: False)
    with pytest.raises(NotImplementedError, match="x86/fbgemm"):
        quant.quantize_int8(torch.nn.Linear(4, 4))


@pytest.mark.skipif(not INT8_OK, reason="no x86/fbgemm quantized engine")
def test_quantize_int8_respects_min_features() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(300, 300), torch.nn.Linear(300, 8))
    quant.quantize_int8(model)
    assert isinstance(model[0], quant.Int8Linear) and type(model[1]) is torch.nn.Linear
