"""LoRA adapters on Linear and Conv2d modules, PEFT-compatible, and exact merging into base weights.

SODEC (like OSEDiff) fine-tunes the frozen SD UNet with LoRA. Two ways to use a LoRA here:

* ``inject_lora(model, target_modules, rank, alpha)`` wraps the chosen modules in
  ``LoRALinear`` / ``LoRAConv2d`` (``base_layer`` + ``lora_A`` + ``lora_B``, output
  ``base(x) + scale * B(A(x))`` with ``scale = alpha / rank``), for training or unmerged inference;
  ``load_lora(model, state_dict)`` fills them from a PEFT-style state dict and ``fold_lora`` folds
  them back into plain modules.
* ``merge_lora(model, state_dict, scale)`` folds a PEFT-style state dict straight into the base
  weights of a plain model at load time: ``W <- W + scale * B @ A`` (for convs,
  ``W[o, i, kh, kw] += scale * sum_r B[o, r] A[r, i, kh, kw]``, any kernel size), computed in
  float64 and rounded once to the weight dtype. Inference then costs nothing extra.

Key format (what peft and OSEDiff save): ``<module>.lora_A[.<adapter>].weight`` and
``<module>.lora_B[.<adapter>].weight``, optionally prefixed ``base_model.model.`` (peft) or
``unet.`` (diffusers' LoRA files). ``lora_A`` is [r, in] (Linear) or [r, in, kh, kw] (Conv2d,
same kernel/stride/padding as the base conv); ``lora_B`` is [out, r] or [out, r, 1, 1].
PEFT's scale is ``lora_alpha / r`` (its default ``lora_alpha`` is 8); it lives in the adapter
config, not in the state dict, so callers pass it. ``split_lora_state_dict`` separates an
OSEDiff-style checkpoint into LoRA pairs and the remaining (fully trained) base tensors, whose
``.base_layer.`` infix it removes.

Target selection follows PEFT: a list of names matches a module whose full name equals an entry
or ends with ``"." + entry``; a string is a regular expression that must match the full name.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from ...errors import ModelMismatchError

_PREFIXES = ("base_model.model.", "unet.")
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")


class LoRALinear(nn.Module):
    """``base_layer(x) + scale * lora_B(lora_A(x))`` for an ``nn.Linear`` base: [..., in] -> [..., out]."""

    def __init__(self, base_layer: nn.Linear, rank: int, scale: float) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.scale = float(scale)
        factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        self.lora_A = nn.Linear(base_layer.in_features, rank, bias=False, **factory)
        self.lora_B = nn.Linear(rank, base_layer.out_features, bias=False, **factory)
        # PEFT's default init: A Kaiming-uniform, B zero, so a fresh adapter is the identity.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.scale * self.lora_B(self.lora_A(x))


class LoRAConv2d(nn.Module):
    """LoRA on an ``nn.Conv2d``: A is a conv with the base kernel/stride/padding to ``rank``
    channels, B a 1x1 conv back to ``out_channels``: [B, in, H, W] -> [B, out, H', W']."""

    def __init__(self, base_layer: nn.Conv2d, rank: int, scale: float) -> None:
        super().__init__()
        if base_layer.groups != 1 or base_layer.padding_mode != "zeros":
            raise ValueError("LoRA on Conv2d supports groups=1 and zero padding only")
        self.base_layer = base_layer
        self.scale = float(scale)
        factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        self.lora_A = nn.Conv2d(
            base_layer.in_channels,
            rank,
            base_layer.kernel_size,
            stride=base_layer.stride,
            padding=base_layer.padding,
            dilation=base_layer.dilation,
            bias=False,
            **factory,
        )
        self.lora_B = nn.Conv2d(rank, base_layer.out_channels, 1, bias=False, **factory)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.scale * self.lora_B(self.lora_A(x))


@dataclass(frozen=True)
class LoRAPair:
    """The two factors of one adapted module: ``A`` [r, in(, kh, kw)], ``B`` [out, r(, 1, 1)]."""

    A: torch.Tensor
    B: torch.Tensor


def _matches(name: str, target_modules: str | Iterable[str]) -> bool:
    """PEFT's rule: regex full match for a string, else exact name or '.'-suffix match."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def inject_lora(
    model: nn.Module, target_modules: str | Iterable[str], rank: int, alpha: float
) -> list[str]:
    """Wrap every matching ``nn.Linear`` / ``nn.Conv2d`` of ``model`` in a LoRA module, in place.

    Returns the wrapped module names (sorted). Raises ``ValueError`` if nothing matches, if a
    match is of another type, or if ``rank`` < 1. The adapters start as the identity (B = 0).
    """
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"rank must be a positive int, got {rank!r}")
    if not isinstance(target_modules, str):
        target_modules = list(target_modules)
    scale = float(alpha) / rank
    # Validate every match before wrapping any, so an error leaves the model unchanged.
    found = [(n, m) for n, m in model.named_modules() if n and _matches(n, target_modules)]
    if not found:
        raise ValueError(f"no module matches target_modules={target_modules!r}")
    for name, module in found:
        if isinstance(module, (LoRALinear, LoRAConv2d)):
            raise ValueError(f"module {name!r} already has a LoRA adapter")
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            raise ValueError(f"module {name!r} matches the targets but is a {type(module).__name__}")
    for name, module in found:
        wrapper = LoRALinear if isinstance(module, nn.Linear) else LoRAConv2d
        _set_submodule(model, name, wrapper(module, rank, scale))
    return sorted(n for n, _ in found)


def split_lora_state_dict(
    state_dict: dict[str, torch.Tensor], adapter_name: str | None = None
) -> tuple[dict[str, LoRAPair], dict[str, torch.Tensor]]:
    """Split a PEFT/OSEDiff-style state dict into LoRA pairs and the other tensors.

    Returns ``(pairs, rest)``: ``pairs`` maps module names (prefixes ``base_model.model.`` /
    ``unet.`` removed) to their ``LoRAPair``; ``rest`` holds every non-LoRA tensor under its
    plain name (prefix and ``.base_layer`` infix removed). ``adapter_name`` keeps only that
    adapter's factors; without it, every adapter is kept, which is right for OSEDiff's
    checkpoints (adapters ``default_encoder``/``default_decoder``/``default_others`` on disjoint
    modules, all active) and raises ``ValueError`` if one module has factors of two adapters.
    Raises ``ValueError`` for an A without its B (or the reverse).
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    halves: dict[str, dict[str, torch.Tensor]] = {}
    adapter_of: dict[str, str | None] = {}  # module -> the adapter its factors came from
    rest: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            raise TypeError(f"state dict entries must be str -> Tensor, got {key!r}")
        plain = key
        for prefix in _PREFIXES:
            if plain.startswith(prefix):
                plain = plain[len(prefix) :]
                break
        m = _LORA_KEY.match(plain)
        if m is None:
            if ".lora_" in plain:
                raise ValueError(f"unrecognised LoRA key {key!r}")
            rest[plain.replace(".base_layer.", ".")] = tensor
            continue
        adapter, module = m.group("adapter"), m.group("module")
        if adapter_name is not None and adapter != adapter_name:
            continue
        if adapter_of.setdefault(module, adapter) != adapter:
            raise ValueError(
                f"module {module!r} has LoRA factors of several adapters "
                f"({adapter_of[module]!r}, {adapter!r}): pass adapter_name"
            )
        halves.setdefault(module, {})[m.group("ab")] = tensor
    pairs = {}
    for module, ab in halves.items():
        if set(ab) != {"A", "B"}:
            raise ValueError(f"LoRA for {module!r} has only lora_{''.join(ab)}")
        pairs[module] = LoRAPair(A=ab["A"], B=ab["B"])
    return pairs, rest


def _delta(pair: LoRAPair, weight: torch.Tensor, name: str) -> torch.Tensor:
    """``B @ A`` in float64, shaped like ``weight`` (Linear [out, in] or Conv2d [out, in, kh, kw])."""
    A, B = pair.A.to(torch.float64), pair.B.to(torch.float64)
    r = A.shape[0] if A.dim() >= 1 else -1
    if weight.dim() == 2:
        ok = A.dim() == 2 and B.dim() == 2 and A.shape[1] == weight.shape[1] and B.shape == (weight.shape[0], r)
        if ok:
            return B @ A
    elif weight.dim() == 4:
        ok = (
            A.dim() == 4
            and B.shape == (weight.shape[0], r, 1, 1)
            and A.shape[1:] == weight.shape[1:]
        )
        if ok:
            return torch.einsum("or,rikl->oikl", B[:, :, 0, 0], A)
    raise ModelMismatchError(
        expected=f"{name} weight {list(weight.shape)}",
        found=f"lora_A {list(pair.A.shape)}, lora_B {list(pair.B.shape)}",
        message=f"LoRA factors A {list(pair.A.shape)} / B {list(pair.B.shape)} do not fit "
        f"{name!r} with weight {list(weight.shape)}",
    )


def _base_of(model: nn.Module, name: str) -> nn.Linear | nn.Conv2d:
    try:
        module = model.get_submodule(name)
    except AttributeError as e:
        raise ModelMismatchError(
            expected="module in model", found=name, message=f"LoRA targets {name!r}, which the model lacks"
        ) from e
    if isinstance(module, (LoRALinear, LoRAConv2d)):
        module = module.base_layer
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        raise ModelMismatchError(
            expected="Linear or Conv2d",
            found=type(module).__name__,
            message=f"LoRA target {name!r} is a {type(module).__name__}",
        )
    return module


@torch.no_grad()
def merge_lora(
    model: nn.Module,
    lora_state_dict: dict[str, torch.Tensor] | dict[str, LoRAPair],
    scale: float,
    adapter_name: str | None = None,
) -> list[str]:
    """Fold LoRA factors into the base weights in place: ``W <- W + scale * B @ A``.

    ``lora_state_dict`` is a PEFT-style state dict (see the module docstring) holding only LoRA
    tensors, or the ``pairs`` from ``split_lora_state_dict``. ``scale`` is ``lora_alpha / r``.
    The sum is formed in float64 and rounded once to the weight's dtype. Returns the merged
    module names (sorted). Raises ``ValueError`` if the dict holds non-LoRA tensors (split them
    off with ``split_lora_state_dict`` and load them separately) or no LoRA at all, and
    ``ModelMismatchError`` if a target is missing or a shape does not fit; on error the model is
    left unchanged.
    """
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale!r}")
    if lora_state_dict and all(isinstance(v, LoRAPair) for v in lora_state_dict.values()):
        pairs: dict[str, LoRAPair] = dict(lora_state_dict)  # type: ignore[arg-type]
    else:
        pairs, rest = split_lora_state_dict(lora_state_dict, adapter_name)  # type: ignore[arg-type]
        if rest:
            raise ValueError(
                f"{len(rest)} non-LoRA tensors in the LoRA state dict (e.g. {sorted(rest)[:3]}); "
                "use split_lora_state_dict and load them separately"
            )
    if not pairs:
        raise ValueError("no LoRA tensors found")
    # Compute every update before touching the model, so a mismatch leaves it unchanged.
    updates = []
    for name in sorted(pairs):
        base = _base_of(model, name)
        delta = _delta(pairs[name], base.weight, name)
        updates.append((base, (base.weight.to(torch.float64) + scale * delta.to(base.weight.device))))
    for base, new in updates:
        base.weight.copy_(new.to(base.weight.dtype))
    return sorted(pairs)


def load_lora(
    model: nn.Module, lora_state_dict: dict[str, torch.Tensor], adapter_name: str | None = None
) -> list[str]:
    """Copy a PEFT-style state dict into the adapters created by ``inject_lora``.

    The set of adapted modules must match exactly; shapes are checked. Returns the names loaded.
    Raises ``ModelMismatchError`` on any difference, ``ValueError`` on non-LoRA tensors.
    """
    pairs, rest = split_lora_state_dict(lora_state_dict, adapter_name)
    if rest:
        raise ValueError(f"{len(rest)} non-LoRA tensors in the LoRA state dict (e.g. {sorted(rest)[:3]})")
    adapted = {n for n, m in model.named_modules() if isinstance(m, (LoRALinear, LoRAConv2d))}
    if set(pairs) != adapted:
        missing, extra = sorted(adapted - set(pairs)), sorted(set(pairs) - adapted)
        raise ModelMismatchError(
            expected=f"{len(adapted)} adapted modules",
            found=f"{len(pairs)} in the state dict",
            message=f"LoRA modules differ: missing {missing[:3]}, unexpected {extra[:3]}",
        )
    for name in sorted(pairs):
        module = model.get_submodule(name)
        for half, tensor in (("lora_A", pairs[name].A), ("lora_B", pairs[name].B)):
            target = getattr(module, half).weight
            if tuple(target.shape) != tuple(tensor.shape):
                raise ModelMismatchError(
                    expected=str(list(target.shape)),
                    found=str(list(tensor.shape)),
                    message=f"{name}.{half}: shape {list(tensor.shape)}, the adapter has {list(target.shape)}",
                )
    with torch.no_grad():
        for name in sorted(pairs):
            module = model.get_submodule(name)
            module.lora_A.weight.copy_(pairs[name].A)
            module.lora_B.weight.copy_(pairs[name].B)
    return sorted(pairs)


@torch.no_grad()
def fold_lora(model: nn.Module) -> list[str]:
    """Replace every ``LoRALinear``/``LoRAConv2d`` by its base module with the adapter merged in.

    Afterwards the model has its original module tree and state-dict keys. Returns the names.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, (LoRALinear, LoRAConv2d))]
    for name in names:
        module = model.get_submodule(name)
        pair = LoRAPair(A=module.lora_A.weight, B=module.lora_B.weight)
        base = module.base_layer
        new = base.weight.to(torch.float64) + module.scale * _delta(pair, base.weight, name)
        base.weight.copy_(new.to(base.weight.dtype))
        _set_submodule(model, name, base)
    return sorted(names)

