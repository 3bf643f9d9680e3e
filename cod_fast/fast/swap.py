"""Swapping a model's modules for fast variants without touching its weights or state-dict keys.

A fast variant is a subclass of the reference module class that overrides ``forward`` (and may
keep non-persistent helpers such as pre-packed weights). Swapping changes the instance's class,
so parameters, buffers, attribute names and ``state_dict()`` keys stay exactly the reference's,
and the reference ``forward`` remains reachable as ``ReferenceClass.forward(self, ...)``.

``swap_modules(model, table)`` walks the module tree and rewrites every instance whose exact class
is a key of ``table``; ``replaced(model)`` lists what was swapped and why.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

from torch import nn


class FastModule:
    """Mixin of every fast variant: names the backend and says what the swap buys."""

    fast_backend: str = ""
    fast_reason: str = ""

    def fast_prepare(self) -> None:
        """Called once after the swap (e.g. to pre-pack weights); default: nothing to do."""


@dataclass(frozen=True)
class Replacement:
    """One swapped module: where it is, what it was, what it is now and what runs instead.

    ``routes``: with routing by measurement (``cod_fast.fast.routing``), each signature the module
    has met, the two measured times and the forward chosen; empty for a static swap."""

    path: str
    reference: str
    fast: str
    backend: str
    reason: str
    routes: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.path or '<root>'}: {self.reference} -> {self.fast} [{self.backend}] {self.reason}"
        return text + "".join(f"\n    {r}" for r in self.routes)


SwapTable = dict[type, type]


def shallow_model_copy(model: nn.Module) -> nn.Module:
    """A new module tree whose parameters and buffers are the SAME tensors as ``model``'s.

    Optimising the copy never changes the original's behaviour, and no weight memory is duplicated.
    """
    memo: dict[int, object] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        memo[id(t)] = t
    return copy.deepcopy(model, memo)


def swap_modules(model: nn.Module, table: SwapTable, accept: Callable[[nn.Module], bool] | None = None) -> int:
    """Swap, in place, every module whose exact class is in ``table``; returns how many.

    ``accept(module)`` may veto a swap (e.g. a configuration the fast variant does not handle).
    """
    count = 0
    for module in model.modules():
        fast_cls = table.get(type(module))
        if fast_cls is None or (accept is not None and not accept(module)):
            continue
        if not issubclass(fast_cls, type(module)):
            raise TypeError(f"{fast_cls.__name__} must subclass {type(module).__name__}")
        module.__class__ = fast_cls
        module.fast_prepare()  # type: ignore[attr-defined]
        count += 1
    return count


def reference_class(cls: type) -> type:
    """The reference block class behind a fast (or routed) class: its first non-FastModule base."""
    return next(c for c in cls.__mro__[1:] if not issubclass(c, FastModule))


def replaced(model: nn.Module) -> list[Replacement]:
    """Every swapped module of ``model`` (depth-first order), with its backend and reason."""
    out = []
    for path, module in model.named_modules():
        if isinstance(module, FastModule):
            ref = reference_class(type(module))
            fast = getattr(type(module), "_fast_cls", type(module))  # a routed module's fast class
            routes = tuple(str(r) for r in module.fast_routes()) if hasattr(module, "fast_routes") else ()
            out.append(Replacement(path, ref.__name__, fast.__name__, module.fast_backend, module.fast_reason,
                                   routes))
    return out
