"""load_model: official YAML shapes, checkpoint prefixes and nesting, safetensors, errors."""
from __future__ import annotations

import copy
import pickle

import pytest
import torch
import yaml
from tiny_models import TINY_LITE, TINY_ONE_STEP, TINY_PIXEL, official_checkpoint, seeded_state_dict

import cod_fast
from cod_fast import ModelMismatchError
from cod_fast.bitstream import compute_fingerprint
from cod_fast.loading import (
    NoDefaultModelError,
    build_net,
    load_model,
    load_weights_strict,
    parse_config,
    save_model,
    select_weights,
)


def _official_yaml(path, entry: dict, key: str = "denoiser") -> None:
    doc = {
        "seed_everything": True,
        "trainer": {"precision": "bf16-mixed", "max_steps": 10},
        "model": {
            "latent": False,
            key: copy.deepcopy(entry),
            "vae": {"class_path": "cod.models.autoencoder.PixelAE", "init_args": {"scale": 1.0}},
            "conditioner": {"class_path": "cod.models.autoencoder.PixelConditioner"},
        },
    }
    path.write_text(yaml.safe_dump(doc))


def _assert_weights(codec, sd: dict) -> None:
    own = codec.net.state_dict()
    assert set(own) == set(sd)
    for k, v in sd.items():
        assert torch.equal(own[k].float(), v.float()), k


@pytest.mark.parametrize("nest", ["state_dict", "module"])
def test_official_yaml_and_checkpoint_nesting(tmp_path, nest) -> None:
    cfg_path, ckpt = tmp_path / "cfg.yaml", tmp_path / "last.ckpt"
    _official_yaml(cfg_path, TINY_PIXEL)
    torch.save(official_checkpoint(TINY_PIXEL, 5, nest=nest), ckpt)
    codec = cod_fast.load_model(cfg_path, ckpt)
    sd = seeded_state_dict(TINY_PIXEL, 5)
    _assert_weights(codec, sd)  # ema_denoiser.* taken, the zeroed denoiser.* decoys ignored
    spec = parse_config(cfg_path)
    _, cls = build_net(spec)
    assert codec.fingerprint == compute_fingerprint(spec.fingerprint_config(cls), sd)
    assert type(codec).__name__ == "CoDCodec" and not codec.net.training


def test_one_step_cod_yaml_with_ckpt_prefix(tmp_path, one_step_codec) -> None:
    # official one-step CoD config: model.init_args + top-level ckpt_prefix
    cfg_path, ckpt = tmp_path / "bpp.yaml", tmp_path / "bpp.pt"
    cfg_path.write_text(yaml.safe_dump({"ckpt_prefix": "net.", "model": {"init_args": TINY_ONE_STEP["init_args"]}}))
    torch.save(official_checkpoint(TINY_ONE_STEP, 6, prefix="net.", nest="state_dict"), ckpt)
    codec = load_model(cfg_path, ckpt)
    _assert_weights(codec, seeded_state_dict(TINY_ONE_STEP, 6))
    assert type(codec).__name__ == "OneStepCoDCodec" and codec.codec_id == 2
    # same config and class as the seed-2 fixture, other weights: another fingerprint
    assert codec.fingerprint != one_step_codec.fingerprint


def test_cod_lite_net_yaml_with_net_prefix(tmp_path) -> None:
    cfg_path, ckpt = tmp_path / "stage2.yaml", tmp_path / "lite.pt"
    entry = copy.deepcopy(TINY_LITE)
    entry["init_args"].update(fix_encoder=True, net_ckpt_path=None, pretrain_prefix="net.")
    _official_yaml(cfg_path, entry, key="net")
    torch.save(official_checkpoint(TINY_LITE, 7, prefix="net.", nest=None), ckpt)
    codec = load_model(cfg_path, ckpt)
    _assert_weights(codec, seeded_state_dict(TINY_LITE, 7))
    assert codec.codec_id == 3


def test_safetensors_round_trip_and_dtype(tmp_path, one_step_codec) -> None:
    path = tmp_path / "m.safetensors"
    save_model(one_step_codec, path)
    again = load_model(checkpoint=path)  # config from the file's metadata
    assert again.fingerprint == one_step_codec.fingerprint
    _assert_weights(again, one_step_codec.net.state_dict())
    # one model, one fingerprint in every dtype (hashed before the cast)
    bf16 = load_model(checkpoint=path, dtype="bf16")
    assert bf16.fingerprint == one_step_codec.fingerprint
    assert next(bf16.net.parameters()).dtype == torch.bfloat16


def test_fingerprint_config_is_canonical() -> None:
    from cod_fast.models.cod import OneStepCoD

    full = parse_config(copy.deepcopy(TINY_ONE_STEP))
    partial = copy.deepcopy(TINY_ONE_STEP)
    del partial["init_args"]["noise_level"]  # left at its default, 0.0
    cfg_full = full.fingerprint_config(OneStepCoD)
    assert cfg_full["init_args"]["pred"] == "x"  # defaults are written out
    assert parse_config(partial).fingerprint_config(OneStepCoD) == cfg_full
    changed = copy.deepcopy(TINY_ONE_STEP)
    changed["init_args"]["noise_level"] = 0.5
    assert parse_config(changed).fingerprint_config(OneStepCoD) != cfg_full


def test_strict_weight_checks() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.LayerNorm(3))
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    load_weights_strict(net, sd)
    with pytest.raises(ModelMismatchError, match=r"1 missing .*0\.bias"):
        load_weights_strict(net, {k: v for k, v in sd.items() if k != "0.bias"})
    with pytest.raises(ModelMismatchError, match="1 unexpected"):
        load_weights_strict(net, {**sd, "2.weight": torch.zeros(1)})
    with pytest.raises(ModelMismatchError, match=r"another shape .*0\.weight"):
        load_weights_strict(net, {**sd, "0.weight": torch.zeros(2, 3)})
    keys = set(sd)
    ckpt = {"ema_denoiser." + k: v for k, v in sd.items()}
    assert set(select_weights(ckpt, "ema_denoiser.", keys)) == keys
    assert set(select_weights(ckpt, "", keys)) == keys  # falls back to the official prefixes
    assert set(select_weights(sd, "net.", keys)) == keys  # our un-prefixed keys
    with pytest.raises(ModelMismatchError, match="prefix"):
        select_weights({"other.weight": torch.zeros(1)}, "net.", keys)


def test_missing_weight_through_load_model(tmp_path) -> None:
    ckpt = tmp_path / "c.pt"
    sd = official_checkpoint(TINY_ONE_STEP, 1, nest=None)
    torch.save({k: v for k, v in sd.items() if not k.endswith("final_layer.linear.bias")}, ckpt)
    with pytest.raises(ModelMismatchError, match="missing"):
        load_model(copy.deepcopy(TINY_ONE_STEP), ckpt)


class _Opaque:
    pass


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_config_and_file_errors(tmp_path) -> None:
    assert type(cod_fast.load_model()).__name__ == "DefaultCodec"  # the embedded default model
    with pytest.raises(NoDefaultModelError):
        cod_fast.load_model(random_init_seed=0)  # random weights need a config
    with pytest.raises(ValueError, match="neither a config file nor a preset"):
        load_model("no-such-preset", tmp_path / "x.pt")
    with pytest.raises(ModelMismatchError, match="unknown model class_path"):
        load_model({"class_path": "cod.models.nope.Net", "init_args": {}}, random_init_seed=0)
    with pytest.raises(ValueError, match="not_an_arg"):
        load_model({"class_path": "cod.models.condition_codec.Codec",
                    "init_args": {"ch": 64, "codebook_bits": 4, "ds": 32, "up2x": True, "not_an_arg": 1}},
                   random_init_seed=0)
    with pytest.raises(ValueError, match="does not exist"):
        load_model(copy.deepcopy(TINY_ONE_STEP), tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="a checkpoint is required"):
        load_model(copy.deepcopy(TINY_ONE_STEP))
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    with pytest.raises(ValueError, match="YAML"):
        load_model(tmp_path / "bad.yaml", tmp_path / "x.pt")
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": {"x": _Opaque()}}, f)
    with pytest.raises(ValueError, match="allow_pickle"):
        load_model(copy.deepcopy(TINY_ONE_STEP), tmp_path / "evil.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 20)
    with pytest.raises(ValueError, match="safetensors"):
        load_model(checkpoint=tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="dtype"):
        load_model(copy.deepcopy(TINY_ONE_STEP), dtype="int8", random_init_seed=0)


def test_presets_resolve() -> None:
    spec = parse_config("pixel/bpp_0_0039_pix512_xl")
    assert spec.class_path == "cod.models.pixel_dit.PixNerDiT" and spec.prefix == "ema_denoiser."
    assert spec.init_args["hidden_size"] == 1152 and not spec.latent
    assert parse_config("latent/bpp_0_0039_pix512_xl").latent
    from cod_fast.loading import presets

    lite_names = [n for n, p in presets().items() if p["class_path"].startswith("finetuned_one_step_codec.")]
    assert lite_names
    for name in lite_names:  # the CoD-Lite one-step presets load official "net."-prefixed weights
        assert parse_config(name).prefix == "net."
