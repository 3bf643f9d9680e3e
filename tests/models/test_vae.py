"""SD-VAE mirror vs. data produced by diffusers' ``AutoencoderKL`` (0.42.1, run outside the repo).

vae_diffusers_keys.json holds diffusers' key/shape list of the SD VAE config and of a tiny config;
vae_diffusers_golden.pt diffusers' outputs for the tiny config with ``tiny_models.shape_state_dict`` weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import shape_state_dict

from cod_fast.errors import ModelMismatchError
from cod_fast.models.vae import AutoencoderKL, latent_decode, latent_encode, load_diffusers_vae

DATA = Path(__file__).parent / "data"
KEYS = json.loads((DATA / "vae_diffusers_keys.json").read_text())
GOLDEN = torch.load(DATA / "vae_diffusers_golden.pt", weights_only=True)


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    scale = max(1.0, b.abs().max().item())
    err = (a - b).abs().max().item()
    assert err <= rel * scale, f"max abs error {err:.3g} > {rel * scale:.3g}"


def _write_folder(folder: Path, state: dict[str, torch.Tensor], fmt: str = "safetensors", config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"_class_name": "AutoencoderKL", "_diffusers_version": "0.42.1", **(config or KEYS["tiny_config"])}
    (folder / "config.json").write_text(json.dumps(cfg))
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    else:
        torch.save(state, folder / "diffusion_pytorch_model.bin")
    return folder


def _tiny_state() -> dict[str, torch.Tensor]:
    return shape_state_dict({k: s for k, s in KEYS["tiny_keys"]}, GOLDEN["seed"])


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(GOLDEN["input_seed"])
    x = torch.rand((2, 3, 24, 40), generator=g) * 2 - 1
    z = torch.randn((1, 4, 6, 5), generator=g)
    return x, z


def test_sd_vae_keys_and_parameter_count() -> None:
    with torch.device("meta"):
        vae = AutoencoderKL(**KEYS["sd_vae_config"])
    assert [[k, list(v.shape)] for k, v in vae.state_dict().items()] == KEYS["sd_vae_keys"]
    assert sum(p.numel() for p in vae.parameters()) == KEYS["sd_vae_param_count"] == 83_653_863
    sd = vae.state_dict()
    for key in ("encoder.down_blocks.0.resnets.0.norm1.weight", "decoder.mid_block.attentions.0.to_q.weight",
                "encoder.down_blocks.0.downsamplers.0.conv.weight", "quant_conv.weight", "post_quant_conv.weight"):
        assert key in sd


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_load_folder_matches_diffusers(tmp_path: Path, fmt: str) -> None:
    vae = load_diffusers_vae(str(_write_folder(tmp_path / fmt, _tiny_state(), fmt)))
    assert not vae.training
    x, z = _inputs()
    with torch.no_grad():
        post = vae.encode(x)
        _close(post.mean, GOLDEN["mean"])
        _close(post.std, GOLDEN["std"])
        _close(post.sample(torch.Generator().manual_seed(GOLDEN["sample_seed"])), GOLDEN["sample"])
        _close(vae.decode(z), GOLDEN["decoded"])


def test_legacy_attention_key_names(tmp_path: Path) -> None:
    state = _tiny_state()
    legacy = {}
    for k, v in state.items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            if f"attentions.0.{new}." in k:
                k = k.replace(f".{new}.", f".{old}.")
                if k.endswith("weight") and old == "key":
                    v = v[:, :, None, None]  # 1x1-conv layout of the oldest checkpoints
        legacy[k] = v
    assert "decoder.mid_block.attentions.0.proj_attn.weight" in legacy
    vae = load_diffusers_vae(str(_write_folder(tmp_path, legacy)))
    _, z = _inputs()
    with torch.no_grad():
        _close(vae.decode(z), GOLDEN["decoded"])


def test_latent_scaling_is_squared(tmp_path: Path) -> None:
    vae = load_diffusers_vae(str(_write_folder(tmp_path, _tiny_state())))
    x, z = _inputs()
    sf2 = vae.scaling_factor**2
    with torch.no_grad():
        _close(latent_encode(vae, x, sample=False), GOLDEN["mean"] * sf2)
        drawn = latent_encode(vae, x, generator=torch.Generator().manual_seed(GOLDEN["sample_seed"]))
        _close(drawn, GOLDEN["sample"] * sf2)
        _close(latent_decode(vae, z * sf2), GOLDEN["decoded"])
        low = latent_decode(vae, z * sf2, autocast_dtype=torch.bfloat16)
    assert (low.float() - GOLDEN["decoded"]).abs().mean() < 0.05


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_diffusers_vae(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError):
        load_diffusers_vae(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(KEYS["tiny_config"]))
    with pytest.raises(FileNotFoundError):
        load_diffusers_vae(str(tmp_path))
    state = _tiny_state()
    state["quant_conv.weight"] = state["quant_conv.weight"][:4]
    with pytest.raises(ModelMismatchError):
        load_diffusers_vae(str(_write_folder(tmp_path / "shape", state)))
    state = _tiny_state()
    del state["decoder.conv_out.bias"]
    with pytest.raises(ModelMismatchError):
        load_diffusers_vae(str(_write_folder(tmp_path / "missing", state)))
    cfg = {**KEYS["tiny_config"], "down_block_types": ["AttnDownEncoderBlock2D"] * 2}
    with pytest.raises(NotImplementedError):
        load_diffusers_vae(str(_write_folder(tmp_path / "blocks", _tiny_state(), config=cfg)))
    with pytest.raises(ValueError):
        AutoencoderKL(block_out_channels=(48,), norm_num_groups=32)
