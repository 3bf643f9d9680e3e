"""SODEC fidelity guidance: the ViT against timm 1.0.31 (pinned in sodec_golden.json) and the projection."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from tiny_models import sodec_state_dict

from cod_fast.models.sodec import (
    TINY_UNET,
    TINY_VIT,
    VIT_B16,
    FidelityGuidance,
    FidelityProjection,
    FidelityViT,
    ProjectionConfig,
    UNet2DConditionModel,
    ViTConfig,
)

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "data" / "sodec_golden.json").read_text())


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: see tests/conftest.py


def test_tiny_vit_matches_timm() -> None:
    assert GOLDEN["vit_tiny"] == {"img_size": TINY_VIT.image_size, "patch_size": TINY_VIT.patch_size,
                                  "embed_dim": TINY_VIT.width, "depth": TINY_VIT.depth,
                                  "num_heads": TINY_VIT.num_heads}
    vit = FidelityViT(TINY_VIT).eval()
    assert {k: list(v.shape) for k, v in vit.state_dict().items()} == GOLDEN["vit_tiny_shapes"]
    vit.load_state_dict(sodec_state_dict(GOLDEN["vit_tiny_shapes"], GOLDEN["vit_weight_seed"]), strict=True)
    g = torch.Generator().manual_seed(GOLDEN["vit_input_seed"])
    image = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    with torch.inference_mode():
        tokens = vit(image)
    expected = torch.tensor(GOLDEN["vit_output"]).view(1, 1 + TINY_VIT.num_patches, TINY_VIT.width)
    torch.testing.assert_close(tokens, expected, atol=2e-5, rtol=1e-5)


def test_vit_b16_structure_matches_timm_on_meta() -> None:
    with torch.device("meta"):
        vit = FidelityViT(VIT_B16)
    # timm builds its LayerNorms with eps 1e-6 (outputs on random weights barely depend on it)
    assert {m.eps for m in vit.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-6}
    shapes = {k: list(v.shape) for k, v in vit.state_dict().items()}
    assert sum(p.numel() for p in vit.parameters()) == GOLDEN["vit_b16_param_count"] == 85_798_656
    text = "\n".join(f"{k}:{'x'.join(map(str, shapes[k]))}" for k in sorted(shapes))
    assert hashlib.sha256(text.encode()).hexdigest() == GOLDEN["vit_b16_shape_sha256"]


def test_preprocess_resizes_and_normalises() -> None:
    vit = FidelityViT(ViTConfig(image_size=16, patch_size=8, width=16, depth=1, num_heads=2,
                                mean=(0.25, 0.5, 0.75), std=(0.5, 0.25, 0.125)))
    x = torch.full((2, 3, 40, 24), 0.5)  # [-1, 1] value 0.5 -> 0.75 in [0, 1]
    p = vit.preprocess(x)
    assert p.shape == (2, 3, 16, 16)
    expected = torch.tensor([(0.75 - 0.25) / 0.5, (0.75 - 0.5) / 0.25, (0.75 - 0.75) / 0.125])
    torch.testing.assert_close(p[0, :, 5, 7], expected, atol=1e-6, rtol=0)
    assert vit(x).shape == (2, 5, 16)
    with pytest.raises(ValueError, match="images"):
        vit(torch.zeros(2, 1, 16, 16))
    with pytest.raises(TypeError, match="float"):
        vit(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))


def test_guidance_feeds_the_unet_and_only_projection_trains() -> None:
    torch.manual_seed(0)
    guidance = FidelityGuidance(TINY_VIT, ProjectionConfig(in_dim=TINY_VIT.width, out_dim=32, hidden_dim=64))
    guidance.train()
    assert not guidance.vit.training and guidance.projection.training
    x_f = torch.rand(2, 3, 48, 48) * 2 - 1
    tokens = guidance(x_f)
    assert tokens.shape == (2, 1 + TINY_VIT.num_patches, TINY_UNET.cross_attention_dim)
    unet = UNet2DConditionModel(TINY_UNET).requires_grad_(False)
    unet(torch.randn(2, 4, 8, 8), 999, tokens).square().mean().backward()
    assert all(p.grad is None for p in guidance.vit.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in guidance.projection.parameters())


def test_projection_variants_and_errors() -> None:
    single = FidelityProjection(ProjectionConfig(in_dim=8, out_dim=12, hidden_dim=0))
    assert single.fc2 is None and single(torch.zeros(1, 3, 8)).shape == (1, 3, 12)
    with pytest.raises(ValueError, match="tokens"):
        single(torch.zeros(1, 3, 9))
    with pytest.raises(ValueError, match="in_dim"):
        FidelityGuidance(TINY_VIT, ProjectionConfig(in_dim=47, out_dim=32))
    with pytest.raises(ValueError, match="patch_size"):
        ViTConfig(image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="num_heads"):
        ViTConfig(width=50, num_heads=4)
