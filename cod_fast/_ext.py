"""Access to the compiled extensions, with a one-line reason when one is missing.

``cod_fast._C`` holds the CPU native code (rANS, reverse-channel coding). ``cod_fast._C_cuda`` holds
the CUDA kernels and is imported only when a GPU is present, so the CPU extension never needs
libcudart. Missing pieces degrade to the torch reference wherever one exists.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import ExtensionUnavailableError

_cache: dict[str, tuple[ModuleType | None, str]] = {}


def _load(name: str) -> tuple[ModuleType | None, str]:
    if name not in _cache:
        try:
            _cache[name] = (importlib.import_module(f"cod_fast.{name}"), "")
        except ImportError as exc:  # not built, or built for another Python
            _cache[name] = (None, f"cod_fast.{name} could not be imported: {exc}")
    return _cache[name]


def cpu_ext() -> ModuleType | None:
    """The CPU extension module, or None when it is not built."""
    return _load("_C")[0]


def require_cpu_ext() -> ModuleType:
    """The CPU extension module; raises ExtensionUnavailableError with the reason otherwise."""
    mod, reason = _load("_C")
    if mod is None:
        raise ExtensionUnavailableError(reason)
    return mod


def cuda_ext() -> ModuleType | None:
    """The CUDA extension module, or None without a GPU or without the build."""
    import torch  # local: import time (the CLI's info path stays torch-free)

    if not torch.cuda.is_available():
        return None
    return _load("_C_cuda")[0]


def availability() -> dict[str, str]:
    """Map of component -> "ok" or the one-line reason it is unavailable."""
    out = {}
    for name in ("_C",):
        mod, reason = _load(name)
        out[name] = "ok" if mod is not None else reason
    try:
        import torch  # local: import time (the CLI's info path stays torch-free)

        if torch.cuda.is_available():
            mod, reason = _load("_C_cuda")
            out["_C_cuda"] = "ok" if mod is not None else reason
        else:
            out["_C_cuda"] = "no CUDA device"
    except ImportError as exc:
        out["_C_cuda"] = f"torch unavailable: {exc}"
    try:
        import triton  # noqa: F401  # local: optional dependency (Triton)

        out["triton"] = "ok"
    except ImportError as exc:
        out["triton"] = f"triton could not be imported: {exc}"
    return out
