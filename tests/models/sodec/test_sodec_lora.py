"""LoRA on the SODEC UNet: injection, PEFT key formats, exact merge vs the unmerged forward."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cod_fast.errors import ModelMismatchError
from cod_fast.models.sodec import TINY_UNET, UNet2DConditionModel
from cod_fast.models.sodec.lora import (
    LoRAConv2d,
    LoRALinear,
    fold_lora,
    inject_lora,
    load_lora,
    merge_lora,
    split_lora_state_dict,
)

# OSEDiff's UNet targets (attention/FFN linears, ResNet and resample convs).
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
           "conv1", "conv2", "conv_shortcut", "conv"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: see tests/conftest.py


def _randomize_lora(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Give every adapter random A and B; return them as a PEFT-style state dict (adapter 'default')."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (LoRALinear, LoRAConv2d)):
                m.lora_A.weight.copy_(torch.randn(m.lora_A.weight.shape, generator=g) * 0.2)
                m.lora_B.weight.copy_(torch.randn(m.lora_B.weight.shape, generator=g) * 0.2)
                sd[f"base_model.model.{name}.lora_A.default.weight"] = m.lora_A.weight.clone()
                sd[f"base_model.model.{name}.lora_B.default.weight"] = m.lora_B.weight.clone()
    return sd


@pytest.fixture(scope="module")
def base() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(TINY_UNET).eval()


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 3, 32, generator=g)


def test_inject_matches_peft_targets_and_starts_as_identity(base, inputs) -> None:
    model = copy.deepcopy(base)
    names = inject_lora(model, TARGETS, rank=4, alpha=8)
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q" in names
    assert "down_blocks.0.downsamplers.0.conv" in names  # "conv" matches by '.'-suffix
    assert "conv_in" not in names and "conv_out" not in names  # ...but not by substring
    assert "up_blocks.1.resnets.0.conv_shortcut" in names
    keys = model.state_dict().keys()
    assert "down_blocks.0.resnets.0.conv1.base_layer.weight" in keys
    assert "down_blocks.0.resnets.0.conv1.lora_A.weight" in keys
    with torch.inference_mode():
        x, ctx = inputs
        torch.testing.assert_close(model(x, 999, ctx), base(x, 999, ctx), atol=0, rtol=0)


def test_merge_equals_unmerged_forward(base, inputs) -> None:
    adapted = copy.deepcopy(base)
    inject_lora(adapted, TARGETS, rank=4, alpha=8)
    sd = _randomize_lora(adapted, seed=1)
    merged = copy.deepcopy(base)
    names = merge_lora(merged, sd, scale=8 / 4)
    assert len(names) == len(sd) // 2
    x, ctx = inputs
    with torch.inference_mode():
        y_lora = adapted(x, 999, ctx)
        y_merged = merged(x, 999, ctx)
        y_base = base(x, 999, ctx)
    assert (y_lora - y_base).abs().max() > 1e-2  # the adapters do change the output
    torch.testing.assert_close(y_merged, y_lora, atol=5e-5, rtol=1e-4)


def test_merge_is_exact_per_layer_kind() -> None:
    g = torch.Generator().manual_seed(5)
    model = nn.ModuleDict({
        "lin": nn.Linear(6, 5),
        "c1": nn.Conv2d(3, 4, 1),
        "c3": nn.Conv2d(3, 4, 3, padding=1),
        "down": nn.Conv2d(4, 4, 3, stride=2, padding=1),
    })
    shapes = {"lin": ((2, 6), (5, 2)), "c1": ((2, 3, 1, 1), (4, 2, 1, 1)),
              "c3": ((2, 3, 3, 3), (4, 2, 1, 1)), "down": ((2, 4, 3, 3), (4, 2, 1, 1))}
    sd = {}
    for name, (sa, sb) in shapes.items():
        sd[f"{name}.lora_A.weight"] = torch.randn(sa, generator=g)
        sd[f"{name}.lora_B.weight"] = torch.randn(sb, generator=g)
    before = {k: m.weight.detach().clone() for k, m in model.items()}
    merge_lora(model, sd, scale=0.75)
    for name, m in model.items():
        A, B = sd[f"{name}.lora_A.weight"].double(), sd[f"{name}.lora_B.weight"].double()
        if A.dim() == 2:
            delta = B @ A
        else:  # [out, r] x [r, in*kh*kw]
            delta = (B.flatten(1) @ A.flatten(1)).view(before[name].shape)
        expected = (before[name].double() + 0.75 * delta).float()
        assert torch.equal(m.weight, expected), name
    # and the merged conv equals base conv + scale * B(A(x)) including stride 2
    x = torch.randn(2, 4, 7, 9, generator=g)
    ref = nn.Conv2d(4, 4, 3, stride=2, padding=1)
    with torch.no_grad():
        ref.weight.copy_(before["down"])
        ref.bias.copy_(model["down"].bias)
        wrapped = LoRAConv2d(ref, rank=2, scale=0.75)
        wrapped.lora_A.weight.copy_(sd["down.lora_A.weight"])
        wrapped.lora_B.weight.copy_(sd["down.lora_B.weight"])
        torch.testing.assert_close(model["down"](x), wrapped(x), atol=1e-5, rtol=1e-5)


def test_load_and_fold_round_trip(base, inputs) -> None:
    src = copy.deepcopy(base)
    inject_lora(src, TARGETS, rank=2, alpha=2)
    sd = _randomize_lora(src, seed=2)
    dst = copy.deepcopy(base)
    inject_lora(dst, TARGETS, rank=2, alpha=2)
    # diffusers-style keys with the 'unet.' prefix and no adapter name load the same way
    plain = {k.replace("base_model.model.", "unet.").replace(".default.", "."): v for k, v in sd.items()}
    assert load_lora(dst, plain) == sorted({k.split(".lora_")[0][len("unet."):] for k in plain})
    x, ctx = inputs
    with torch.inference_mode():
        y = dst(x, 999, ctx)
        torch.testing.assert_close(y, src(x, 999, ctx), atol=0, rtol=0)
    fold_lora(dst)
    assert dst.state_dict().keys() == base.state_dict().keys()
    with torch.inference_mode():
        torch.testing.assert_close(dst(x, 999, ctx), y, atol=5e-5, rtol=1e-4)


def test_split_osediff_style_checkpoint() -> None:
    a, b = torch.ones(2, 3), torch.ones(4, 2)
    sd = {
        "conv_in.weight": torch.zeros(1),
        "down_blocks.0.x.to_q.base_layer.weight": torch.zeros(2),
        "down_blocks.0.x.to_q.lora_A.default_encoder.weight": a,
        "down_blocks.0.x.to_q.lora_B.default_encoder.weight": b,
        "up_blocks.0.x.to_q.lora_A.default_decoder.weight": a,
        "up_blocks.0.x.to_q.lora_B.default_decoder.weight": b,
    }
    pairs, rest = split_lora_state_dict(sd)  # disjoint adapters, all active: keep both
    assert sorted(pairs) == ["down_blocks.0.x.to_q", "up_blocks.0.x.to_q"]
    assert set(rest) == {"conv_in.weight", "down_blocks.0.x.to_q.weight"}
    pairs, _ = split_lora_state_dict(sd, adapter_name="default_encoder")
    assert list(pairs) == ["down_blocks.0.x.to_q"] and pairs["down_blocks.0.x.to_q"].B is b
    clash = {**sd, "down_blocks.0.x.to_q.lora_A.other.weight": a}
    with pytest.raises(ValueError, match="several adapters"):
        split_lora_state_dict(clash)


def test_merge_errors_leave_model_unchanged(base) -> None:
    model = copy.deepcopy(base)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    good_a = torch.zeros(2, 32)
    good_b = torch.ones(32, 2)
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    with pytest.raises(ModelMismatchError, match="do not fit"):
        merge_lora(model, {f"{name}.lora_A.weight": good_a, f"{name}.lora_B.weight": good_b,
                           "conv_in.lora_A.weight": torch.zeros(2, 4, 1, 1),  # conv_in is 3x3
                           "conv_in.lora_B.weight": torch.zeros(32, 2, 1, 1)}, scale=1.0)
    with pytest.raises(ModelMismatchError, match="lacks"):
        merge_lora(model, {"nope.lora_A.weight": good_a, "nope.lora_B.weight": good_b}, scale=1.0)
    with pytest.raises(ValueError, match="only lora_A"):
        merge_lora(model, {f"{name}.lora_A.weight": good_a}, scale=1.0)
    with pytest.raises(ValueError, match="non-LoRA"):
        merge_lora(model, {f"{name}.lora_A.weight": good_a, f"{name}.lora_B.weight": good_b,
                           "conv_in.weight": torch.zeros(1)}, scale=1.0)
    with pytest.raises(ValueError, match="no LoRA"):
        merge_lora(model, {}, scale=1.0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_inject_errors(base) -> None:
    model = copy.deepcopy(base)
    with pytest.raises(ValueError, match="no module matches"):
        inject_lora(model, ["does_not_exist"], rank=2, alpha=2)
    with pytest.raises(ValueError, match="rank"):
        inject_lora(model, ["to_q"], rank=0, alpha=2)
    with pytest.raises(ValueError, match="GroupNorm"):
        inject_lora(model, r".*\.norm1", rank=2, alpha=2)  # regex: full match on the name
    names = inject_lora(model, r"down_blocks\.0\..*\.to_(q|k)", rank=2, alpha=2)
    assert len(names) == 4
    with pytest.raises(ValueError, match="already has"):
        inject_lora(model, ["to_q"], rank=2, alpha=2)
