"""Regenerate sodec_golden.json from diffusers and timm (provenance of pinned data; not a test).

Needs diffusers 0.31.0 and timm OUTSIDE the project environment, e.g.
    .venv/bin/pip install --target /tmp/diffusers_pkg_sodec diffusers==0.31.0 timm==1.0.31 \
        "huggingface_hub<0.27" importlib_metadata regex --no-deps
    PYTHONPATH=/tmp/diffusers_pkg_sodec .venv/bin/python tests/models/data/make_sodec_golden.py [--out FILE]
Weights are filled by ``tests/tiny_models.py``'s ``sodec_state_dict`` (the tests' own function), so the tests can
rebuild them without diffusers/timm and compare outputs.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from timm.models.vision_transformer import VisionTransformer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: tiny_models
from tiny_models import sodec_state_dict  # noqa: E402

TINY = {
    "sample_size": 16,
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "attention_head_dim": [4, 8],
    "cross_attention_dim": 32,
    "use_linear_projection": True,
}
SD21_BASE = {
    "sample_size": 64,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
}
CASES = [  # (name, latent h, w, timestep, context length)
    ("t999_16x16", 16, 16, 999, 5),
    ("t250_9x13", 9, 13, 250, 3),
]


def shape_digest(shapes: dict[str, list[int]]) -> str:
    """sha256 of the sorted 'key:d0xd1x...' lines."""
    text = "\n".join(f"{k}:{'x'.join(map(str, shapes[k]))}" for k in sorted(shapes))
    return hashlib.sha256(text.encode()).hexdigest()


def main() -> None:
    tiny = UNet2DConditionModel(**TINY).eval()
    shapes = {k: list(v.shape) for k, v in tiny.state_dict().items()}
    tiny.load_state_dict(sodec_state_dict(shapes, seed=0), strict=True)
    cases = []
    for i, (name, h, w, t, length) in enumerate(CASES):
        g = torch.Generator().manual_seed(100 + i)
        x = torch.randn(1, 4, h, w, generator=g)
        ctx = torch.randn(1, length, 32, generator=g)
        with torch.no_grad():
            y = tiny(x, t, ctx).sample
        cases.append({"name": name, "h": h, "w": w, "timestep": t, "context_len": length,
                      "input_seed": 100 + i, "output": [float(v) for v in y.flatten()]})
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=4, num_classes=0).eval()
    vit_shapes = {k: list(v.shape) for k, v in vit.state_dict().items()}
    vit.load_state_dict(sodec_state_dict(vit_shapes, seed=1), strict=True)
    g = torch.Generator().manual_seed(200)
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1  # [-1, 1]; timm input = (image+1)/2 normalised by 0.5
    with torch.no_grad():
        tokens = vit.forward_features(image)
    with torch.device("meta"):
        full = UNet2DConditionModel(**SD21_BASE)
        vit_b16 = VisionTransformer(num_classes=0)
    full_shapes = {k: list(v.shape) for k, v in full.state_dict().items()}
    data = {
        "generator": "diffusers 0.31.0 UNet2DConditionModel, timm 1.0.31 VisionTransformer, CPU fp32, torch "
        + torch.__version__,
        "tiny_config": {k: v for k, v in dict(tiny.config).items() if not k.startswith("_")},
        "tiny_shapes": shapes,
        # eps of every GroupNorm/LayerNorm: random-weight outputs are too insensitive to pin them
        "tiny_norm_eps": {n: m.eps for n, m in tiny.named_modules()
                          if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm))},
        "weight_seed": 0,
        "cases": cases,
        "sd21_base_param_count": sum(p.numel() for p in full.parameters()),
        "sd21_base_num_tensors": len(full_shapes),
        "sd21_base_shape_sha256": shape_digest(full_shapes),
        "vit_tiny": {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 4},
        "vit_tiny_shapes": vit_shapes,
        "vit_weight_seed": 1,
        "vit_input_seed": 200,
        "vit_output": [float(v) for v in tokens.flatten()],
        "vit_b16_param_count": sum(p.numel() for p in vit_b16.parameters()),
        "vit_b16_shape_sha256": shape_digest({k: list(v.shape) for k, v in vit_b16.state_dict().items()}),
    }
    # --out FILE: write elsewhere (to compare byte for byte with the committed file)
    out = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else Path(__file__).with_name("sodec_golden.json")
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out}: {data['sd21_base_param_count']} parameters in SD 2.1-base")


if __name__ == "__main__":
    main()
