"""CoD diffusion transformers (PixNerDiT, DDT, OneStepCoD) against official goldens and counts."""
from __future__ import annotations

import json

import pytest
import torch

from cod_fast.models.cod import (
    CLASS_PATHS,
    DDT,
    ONE_STEP_PRESETS,
    PRESETS,
    OneStepCoD,
    PixNerDiT,
    build_model,
    get_preset,
    resolve_class,
)
from cod_fast.models.cod.configs import default_cfg
from cod_golden_utils import (
    DATA_DIR,
    TINY_LATENT,
    TINY_ONE_STEP,
    TINY_PIXEL,
    assert_close_fp32,
    build_seeded,
    key_shapes,
    load_golden,
    seeded_images,
    seeded_inputs,
)

KEYS = json.loads((DATA_DIR / "cod_state_dict_keys.json").read_text())
COUNTS = json.loads((DATA_DIR / "cod_param_counts.json").read_text())


@pytest.mark.parametrize(
    "cls, args", [(PixNerDiT, TINY_PIXEL), (DDT, TINY_LATENT), (OneStepCoD, TINY_ONE_STEP)],
    ids=["PixNerDiT", "DDT", "OneStepCoD"],
)
def test_state_dict_keys_match_official(cls: type, args: dict) -> None:
    with torch.device("meta"):
        ours = key_shapes(cls(**args).state_dict())
    assert list(ours.items()) == list(KEYS[cls.__name__].items())


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_full_config_parameter_counts_match_official(name: str) -> None:
    preset = get_preset(name)
    with torch.device("meta"):
        model = build_model(preset["class_path"], preset["init_args"])
    assert sum(p.numel() for p in model.parameters()) == COUNTS[name]


def test_headline_parameter_count() -> None:
    assert COUNTS["pixel/bpp_0_0039_pix512_xl"] == 897_063_843  # "PixNerDiT 897.06 M"


@pytest.fixture(scope="module")
def pixel() -> PixNerDiT:
    return build_seeded(PixNerDiT, TINY_PIXEL, seed=3)


@pytest.fixture(scope="module")
def latent() -> DDT:
    return build_seeded(DDT, TINY_LATENT, seed=4)


@pytest.fixture(scope="module")
def one_step() -> OneStepCoD:
    return build_seeded(OneStepCoD, TINY_ONE_STEP, seed=5)


@pytest.fixture
def golden_threads():
    """Run with the 2 intra-op threads the goldens were produced with. The tiny configs put the
    condition decoder's GroupNorm on a 1x1 grid with 2 channels per group, which amplifies a 1-ulp
    difference in the codebook vectors (thread-dependent reduction order) by about 1e5."""
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


@pytest.mark.usefixtures("golden_threads")
def test_pixnerdit_matches_official_golden(pixel: PixNerDiT) -> None:
    gold = load_golden("PixNerDiT")
    model = pixel
    x = seeded_inputs(13, x=(2, 3, 32, 32))["x"]
    t = torch.tensor([0.3, 0.7])
    y = seeded_images(14, (2, 3, 32, 32))
    with torch.no_grad():
        out, cond = model(x, t, y, None)
        assert out.shape == (2, 3, 32, 32) and cond.shape == (2, 64, 2, 2)
        assert_close_fp32(cond, gold["cond"])
        assert_close_fp32(out, gold["out"])
        out2, cond2 = model(x, t, None, gold["cond"])  # decompress path: cond given
        assert cond2 is gold["cond"]
        assert_close_fp32(out2, gold["out"])


@pytest.mark.usefixtures("golden_threads")
def test_ddt_matches_official_golden(latent: DDT) -> None:
    gold = load_golden("DDT")
    model = latent
    x = seeded_inputs(16, x=(2, 4, 8, 8))["x"]
    t = torch.tensor([0.3, 0.7])
    y = seeded_images(17, (2, 3, 64, 64))
    with torch.no_grad():
        out, cond = model(x, t, y, None)
        assert out.shape == (2, 4, 8, 8) and cond.shape == (2, 64, 4, 4)
        assert_close_fp32(cond, gold["cond"])
        assert_close_fp32(out, gold["out"])


@pytest.mark.usefixtures("golden_threads")
def test_one_step_matches_official_golden(one_step: OneStepCoD) -> None:
    gold = load_golden("OneStepCoD")
    model = one_step
    noise = seeded_inputs(18, noise=(1, 3, 32, 32))["noise"]
    y = seeded_images(19, (1, 3, 32, 32))
    with torch.no_grad():
        out, cond = model(noise, torch.zeros(1), y, None)
        assert_close_fp32(out, gold["forward_t0"])
        bitstream = model.compress(y)
        assert bitstream == bytes(gold["bitstream"].tolist())
        assert len(bitstream) == 4  # 2x2 tokens of 8 bits
        model.noise_level = 0.0
        try:
            rec = model.inference(torch.zeros(1, 3, 32, 32), cond=model.decompress(bitstream, 32, 32, "cpu"))
        finally:
            model.noise_level = TINY_ONE_STEP["noise_level"]
        assert_close_fp32(rec, gold["inference_noise0"])


def test_one_step_cache_keeps_keys_and_values() -> None:
    model = build_seeded(OneStepCoD, TINY_ONE_STEP, seed=5)  # eval(): t=0 cache built
    assert list(model.state_dict()) == list(KEYS["OneStepCoD"])
    assert all(b.cached_modulation is not None for b in model.blocks[: model.num_cond_blocks])
    inp = seeded_inputs(20, noise=(2, 3, 32, 32), cond=(2, 64, 2, 2))
    noise, cond = inp["noise"], inp["cond"]
    t0 = torch.zeros(2)
    with torch.no_grad():
        cached, _ = model(noise, t0, None, cond)
        model.train()
        assert all(b.cached_modulation is None for b in model.blocks[: model.num_cond_blocks])
        uncached, _ = model(noise, t0, None, cond)
        assert_close_fp32(cached, uncached)  # batch-1 vs batch-2 modulation: rounding only
        model.eval()
        # new weights: the cache is rebuilt from them
        fresh = build_seeded(OneStepCoD, TINY_ONE_STEP, seed=6)
        model.load_state_dict(fresh.state_dict())
        assert_close_fp32(model(noise, t0, None, cond)[0], fresh(noise, t0, None, cond)[0])
        assert not torch.allclose(model(noise, t0, None, cond)[0], cached)


def test_one_step_v_prediction_adds_scaled_noise(one_step: OneStepCoD) -> None:
    model = one_step
    y = seeded_images(22, (1, 3, 32, 32))
    with torch.no_grad():
        cond = model.decompress(model.compress(y), 32, 32, "cpu")
        a = model.inference(torch.zeros(1, 3, 32, 32), cond, generator=torch.Generator().manual_seed(3))
        b = model.inference(torch.zeros(1, 3, 32, 32), cond, generator=torch.Generator().manual_seed(3))
        noise = torch.randn((1, 3, 32, 32), generator=torch.Generator().manual_seed(3)) * 0.5
        direct = model(noise, torch.zeros(1), None, cond)[0] + noise
    assert torch.equal(a, b)
    torch.testing.assert_close(a, direct, rtol=0, atol=1e-6)


def test_forward_rejects_bad_shapes(pixel: PixNerDiT) -> None:
    model = pixel
    with torch.no_grad():
        with pytest.raises(ValueError):
            model(torch.zeros(1, 3, 40, 32), torch.zeros(1), None, torch.zeros(1, 64, 2, 2))
        with pytest.raises(ValueError):
            model(torch.zeros(1, 3, 32, 32), torch.zeros(1), None, torch.zeros(1, 64, 3, 2))
        with pytest.raises(ValueError):
            model(torch.zeros(1, 3, 32, 32), torch.zeros(1), None, None)
    with pytest.raises(ValueError):
        OneStepCoD(pred="eps", **TINY_PIXEL)


def test_bf16_autocast_forward_runs_close_to_fp32(latent: DDT) -> None:
    model = latent
    x = seeded_inputs(16, x=(2, 4, 8, 8))["x"]
    cond = load_golden("DDT")["cond"]
    t = torch.tensor([0.3, 0.7])
    with torch.no_grad():
        ref, _ = model(x, t, None, cond)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, _ = model(x, t, None, cond)
    assert low.dtype == torch.bfloat16
    # bf16 has 8 mantissa bits; through 3 blocks of width 64 allow a few percent of the range
    torch.testing.assert_close(low.float(), ref, rtol=0, atol=0.05 * ref.abs().max().item())


def test_presets_and_class_paths() -> None:
    assert resolve_class("cod.models.pixel_dit.PixNerDiT") is PixNerDiT
    assert resolve_class("cod.models.latent_dit.DDT") is DDT
    assert CLASS_PATHS["downstream.finetuned_one_step_cod.OneStepCoD"] is OneStepCoD
    with pytest.raises(ValueError):
        resolve_class("cod.models.pixel_dit.Nope")
    with pytest.raises(ValueError):
        get_preset("pixel/unknown")
    p = PRESETS["pixel/bpp_0_0039_pix512_xl"]["init_args"]
    assert (p["patch_size"], p["hidden_size"], p["num_blocks"], p["num_cond_blocks"]) == (16, 1152, 30, 26)
    assert (p["ds"], p["codebook_bits"], p["up2x"], p["nerf_mlpratio"]) == (32, 4, True, 2)
    q = PRESETS["latent/bpp_0_00024_pix512_xl"]["init_args"]
    assert (q["patch_size"], q["num_blocks"], q["num_cond_blocks"], q["ds"]) == (2, 28, 22, 128)
    copy = get_preset("latent/bpp_0_0039_pix512_xl")
    copy["init_args"]["ds"] = 7
    assert PRESETS["latent/bpp_0_0039_pix512_xl"]["init_args"]["ds"] == 32
    assert default_cfg("pixel/bpp_0_0039_pix512_xl") == 3.0
    assert default_cfg("latent/bpp_0_0039_pix512_xl") == 1.25
    assert default_cfg("latent/bpp_0_00024_pix512_xl") == 3.0
    assert set(ONE_STEP_PRESETS) <= set(COUNTS)


def test_seeded_weights_load_strict_both_ways(pixel: PixNerDiT) -> None:
    a = pixel
    with torch.device("meta"):
        b = PixNerDiT(**TINY_PIXEL)
    b.load_state_dict(a.state_dict(), strict=True, assign=True)
    assert all(torch.equal(b.state_dict()[k], v) for k, v in a.state_dict().items())
    assert b.state_dict().keys() == a.state_dict().keys()
