"""Tiny seeded CoD models (pixel PixNerDiT, latent DDT + SD-VAE) for the DiffC tests and golden file."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"

TINY_PIXEL: dict[str, Any] = {
    "class_path": "cod.models.pixel_dit.PixNerDiT",
    "init_args": dict(in_channels=3, patch_size=16, num_groups=2, hidden_size=64, hidden_size_x=8,
                      num_blocks=2, num_cond_blocks=1, nerf_mlpratio=1, ds=32, codebook_bits=4,
                      up2x=True),
}
TINY_DDT: dict[str, Any] = {
    "class_path": "cod.models.latent_dit.DDT",
    "init_args": dict(in_channels=4, patch_size=2, num_groups=2, hidden_size=64, num_blocks=2,
                      num_cond_blocks=1, ds=32, codebook_bits=4, up2x=True),
}
TINY_VAE = dict(block_out_channels=[32, 32, 32, 32], layers_per_block=1, latent_channels=4,
                norm_num_groups=32, down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, scaling_factor=0.18215)


def seeded_weights(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """Weights drawn in sorted key order from one CPU generator: codebook N(0, 1), norm gains
    1 + N(0, 0.05), everything else N(0, 0.05) (non-zero output layers, unlike the official init)."""
    from cod_fast.loading import build_net, parse_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net, _ = build_net(parse_config(copy.deepcopy(config)))
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in sorted(net.state_dict().items()):
        if not t.dtype.is_floating_point:
            out[name] = torch.zeros_like(t)
            continue
        r = torch.randn(t.shape, generator=g, dtype=torch.float32)
        if "embedding" in name:
            out[name] = r
        elif "norm" in name and name.endswith("weight"):
            out[name] = 1 + 0.05 * r
        else:
            out[name] = 0.05 * r
    return out


def pixel_codec(seed: int = 11):
    """The tiny pixel CoD codec (float32, CPU) with seeded weights."""
    from cod_fast.loading import load_model

    return load_model(copy.deepcopy(TINY_PIXEL), {"ema_denoiser." + k: v
                                                  for k, v in seeded_weights(TINY_PIXEL, seed).items()})


def latent_codec(folder: Path, seed: int = 12):
    """The tiny latent CoD codec with a tiny seeded SD-VAE written under ``folder``."""
    from safetensors.torch import save_file

    from cod_fast.loading import load_model
    from cod_fast.models.vae import AutoencoderKL

    vae_dir = folder / "vae"
    vae_dir.mkdir(parents=True, exist_ok=True)
    (vae_dir / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", **TINY_VAE}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**TINY_VAE)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()},
              str(vae_dir / "diffusion_pytorch_model.safetensors"))
    cfg = {"model": {"latent": True, "denoiser": TINY_DDT,
                     "vae": {"class_path": "cod.models.autoencoder.LatentAE",
                             "init_args": {"weight_path": "stabilityai/sd-vae-ft-ema"}}}}
    ckpt = {"ema_denoiser." + k: v for k, v in seeded_weights(TINY_DDT, seed).items()}
    return load_model(cfg, ckpt, vae=vae_dir)


def make_image(height: int = 32, width: int = 32) -> torch.Tensor:
    """Deterministic uint8 [3, H, W]: gradients plus a checkerboard."""
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    r = xx * 255 // max(width - 1, 1)
    g = yy * 255 // max(height - 1, 1)
    b = ((xx // 4 + yy // 4) % 2) * 200 + 20
    return torch.stack([r, g, b]).to(torch.uint8)
