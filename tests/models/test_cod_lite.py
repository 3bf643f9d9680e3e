"""CoD-Lite mirror vs. data produced by the OFFICIAL GenCodec CoD_Lite modules.

tests/models/data/cod_lite_official_keys.json and cod_lite_official_golden.pt were written by a
script run outside the repo that imported the official modules, loaded the seeded weights of
``tiny_models.shape_state_dict`` into them and recorded key lists, parameter counts and outputs.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from tiny_models import shape_state_dict

import cod_fast.models.cod_lite as cl
from cod_fast.models.cod_lite.inference import condition_from_indices

DATA = Path(__file__).parent / "data"
KEYS = json.loads((DATA / "cod_lite_official_keys.json").read_text())
GOLDEN = torch.load(DATA / "cod_lite_official_golden.pt", weights_only=True)
TINY = KEYS["tiny"]


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> None:
    """fp32 agreement relative to the output's scale (outputs here come through ~30 layers)."""
    scale = max(1.0, b.abs().max().item())
    err = (a - b).abs().max().item()
    assert err <= rel * scale, f"max abs error {err:.3g} > {rel * scale:.3g}"


@functools.cache
def _weights(name: str, seed: int) -> dict[str, torch.Tensor]:
    return shape_state_dict({k: s for k, s in TINY[name]["keys"]}, seed)


def _tiny_model(name: str, seed: int, private: bool = False) -> cl.FinetunedOneStepCoD:
    """Tiny official config with seeded weights (built on meta, weights assigned: no init cost).

    The weights are shared with the cache unless ``private`` (needed when a test writes into them).
    """
    with torch.device("meta"):
        model = cl.FinetunedOneStepCoD(**TINY[name]["init_args"])
    weights = _weights(name, seed)
    if private:
        weights = {k: v.clone() for k, v in weights.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    return model


@pytest.mark.parametrize("name", sorted(TINY))
def test_state_dict_keys_and_shapes_match_official(name: str) -> None:
    with torch.device("meta"):
        model = cl.FinetunedOneStepCoD(**TINY[name]["init_args"])
    ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert ours == TINY[name]["keys"]
    model.eval()  # the t=0 cache must not change the keys (it does officially)
    assert [k for k, _ in model.state_dict().items()] == [k for k, _ in TINY[name]["keys"]]


@pytest.mark.parametrize("bpp", sorted(cl.BPP_LADDER))
def test_parameter_counts_of_full_configs(bpp: str) -> None:
    with torch.device("meta"):
        model = cl.build(f"cod_lite/bpp_{bpp}")
    codec = model.y_embedder
    total = sum(p.numel() for p in model.parameters())
    enc = sum(p.numel() for p in codec.encoder.parameters()) + codec.bottleneck.embedding.weight.numel()
    ada = sum(p.numel() for b in model.blocks for p in b.adaLN_modulation.parameters())
    pinned = KEYS["param_counts_full"][bpp]
    assert total == pinned["total"]
    assert enc == pinned["encoder_and_codebook"]
    assert total - enc - ada == pinned["decoder_without_t0_adaLN"]


def test_readme_sizes_at_0_0312() -> None:
    # "28M encoder + 52M decoder": the decoder once the t=0 adaLN layers are folded away.
    pinned = KEYS["param_counts_full"]["0_0312"]
    assert round(pinned["encoder_and_codebook"] / 1e6) == 28
    assert round(pinned["decoder_without_t0_adaLN"] / 1e6) == 52


@pytest.mark.parametrize("name", ["ds4_bits8", "ds16_bits8", "ds32_bits4"])
def test_outputs_match_official(name: str) -> None:
    gold = GOLDEN[name]
    model = _tiny_model(name, gold["seed"])
    g = torch.Generator().manual_seed(gold["input_seed"])
    image = torch.rand((1, 3, 32, 32), generator=g)
    x_noisy = torch.randn((1, 3, 32, 32), generator=g)
    with torch.no_grad():
        model.train()  # multi-step DConv forward, condition through the codec (global attention)
        v, _ = model(x_noisy, torch.tensor([gold["t"]]), image, cond=None)
        _close(v, gold["v_train"])
        model.eval()
    indices = cl.one_step_encode(model, image)
    assert torch.equal(indices, gold["indices"])
    decoded = cl.one_step_decode(model, gold["indices"], 32, 32)
    _close(decoded, gold["decoded"])


def test_window_attention_matches_official() -> None:
    gold = GOLDEN["window_attn"]
    block = cl.WindowAttnBlock(64, patch_size=gold["patch_size"])
    block.load_state_dict(shape_state_dict({k: list(v.shape) for k, v in block.state_dict().items()}, gold["seed"]))
    block.eval()
    g = torch.Generator().manual_seed(gold["seed"])
    x_windowed = torch.randn((2, 64, 6, 9), generator=g)  # 6x9 > 4x4 windows: replicate padding
    x_global = torch.randn((1, 64, 4, 3), generator=g)  # fits one window: global attention
    with torch.no_grad():
        _close(block(x_windowed), gold["y_windowed"])
        _close(block(x_global), gold["y_global"])


def test_t0_cache_batches_and_refreshes() -> None:
    model = _tiny_model("ds16_bits8", seed=16, private=True).eval()
    assert all(b.cached_modulation is not None for b in model.blocks)
    g = torch.Generator().manual_seed(0)
    idx = [torch.randint(0, 256, (4,), generator=g) for _ in range(2)]
    with torch.no_grad():
        conds = torch.cat([condition_from_indices(model, i, 32, 32) for i in idx])
        batch = model.inference(torch.zeros(2, 3, 32, 32), cond=conds)  # official: batch 1 only
        single = [model.inference(torch.zeros(1, 3, 32, 32), cond=conds[i : i + 1]) for i in range(2)]
    _close(batch, torch.cat(single))
    # The cached path equals the uncached one.
    model.train()
    assert all(b.cached_modulation is None for b in model.blocks)
    with torch.no_grad():
        uncached = model.inference(torch.zeros(2, 3, 32, 32), cond=conds)
    _close(uncached, batch, rel=1e-5)
    # New weights loaded in eval mode rebuild the cache.
    model.eval()
    other = _tiny_model("ds16_bits8", seed=99).eval()
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        a = model.inference(torch.zeros(2, 3, 32, 32), cond=conds)
        b = other.inference(torch.zeros(2, 3, 32, 32), cond=conds)
    assert torch.equal(a, b)


def test_noise_level_uses_generator() -> None:
    model = _tiny_model("ds16_bits8", seed=16).eval()
    idx = torch.arange(4)
    zero = cl.one_step_decode(model, idx, 32, 32)
    model.noise_level = 0.5
    a = cl.one_step_decode(model, idx, 32, 32, generator=torch.Generator().manual_seed(1))
    b = cl.one_step_decode(model, idx, 32, 32, generator=torch.Generator().manual_seed(1))
    c = cl.one_step_decode(model, idx, 32, 32, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, zero)


def test_bf16_autocast_runs_close_to_fp32() -> None:
    model = _tiny_model("ds16_bits8", seed=16).eval()
    idx = torch.arange(4)
    ref = cl.one_step_decode(model, idx, 32, 32)
    low = cl.one_step_decode(model, idx, 32, 32, autocast_dtype=torch.bfloat16)
    assert low.shape == ref.shape
    # bf16 keeps 8 bits of mantissa; errors compound over ~30 layers of random weights.
    assert (low.float() - ref).abs().mean().item() < 0.05 * ref.abs().mean().item() + 0.02


def test_image_size_rules() -> None:
    with torch.device("meta"):
        m16 = cl.build("cod_lite/bpp_0_0312")
        m32 = cl.build("cod_lite/bpp_0_0039")
    cl.check_image_size(m16, 480, 720)  # the README's 720x480 at 0.0312 bpp: 30x45 tokens
    with pytest.raises(ValueError, match="multiples of 32"):
        cl.check_image_size(m32, 480, 720)  # officially a tensor size mismatch
    with pytest.raises(ValueError):
        cl.check_image_size(m16, 0, 16)


def test_decode_rejects_bad_input() -> None:
    model = _tiny_model("ds16_bits8", seed=16)
    with pytest.raises(ValueError, match="eval mode"):
        cl.one_step_decode(model, torch.arange(4), 32, 32)
    model.eval()
    with pytest.raises(ValueError, match="expected 4 indices"):
        cl.one_step_decode(model, torch.arange(5), 32, 32)
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        cl.one_step_decode(model, torch.tensor([0, 1, 2, 256]), 32, 32)
    with pytest.raises(TypeError):
        cl.one_step_decode(model, torch.zeros(4), 32, 32)
    with pytest.raises(ValueError):
        cl.one_step_decode(model, torch.arange(4), 24, 32)
    with pytest.raises(ValueError, match="patch size"):
        model(torch.zeros(1, 3, 24, 32), torch.zeros(1), None, cond=torch.zeros(1, 64, 1, 2))


def test_presets_and_class_paths() -> None:
    for name, (ds, bits) in cl.BPP_LADDER.items():
        assert abs(bits / ds**2 - float(name.replace("_", "."))) < 1e-4
        preset = cl.PRESETS[f"cod_lite/bpp_{name}"]
        assert preset["class_path"] in cl.CLASS_PATHS
        assert preset["init_args"]["ds"] == ds and preset["init_args"]["codebook_bits"] == bits
    assert cl.BPP_LADDER["0_0312"] == (16, 8)
    assert cl.CLASS_PATHS["cod.models.pixel_cnn.DConv"] is cl.DConv
    with pytest.raises(ValueError):
        cl.build("cod_lite/bpp_9")


def test_fp2uint8_matches_official_rounding() -> None:
    x = torch.tensor([-2.0, -1.0, -0.996, 0.0, 0.5, 1.0, 3.0])
    # official: clamp((x + 1) * 127.5 + 0.5, 0, 255) then truncation by .to(uint8)
    assert cl.fp2uint8(x).tolist() == [0, 0, 1, 128, 191, 255, 255]
