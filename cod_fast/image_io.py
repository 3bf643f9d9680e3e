"""Image input/output: any supported image -> uint8 [3, H, W], padding to a stride, saving.

Accepted inputs of ``to_uint8_chw``:

* a path (str / os.PathLike) to an image file PIL can open;
* a ``PIL.Image.Image`` (modes RGB, RGBA, L, LA, P, I;16, CMYK, YCbCr... are converted to RGB;
  alpha is dropped, i.e. composited on nothing);
* a numpy array HWC ``uint8`` with 3 channels (or HW / HW1 grey, replicated to RGB);
* a torch tensor CHW with 3 channels (or 1, replicated), ``uint8`` or floating point in [0, 1].

Padding policy for sizes that are not multiples of a model's stride: the image is padded on the
bottom and right to the next multiple by replicating the last row/column ("replicate"), the true
size is stored in the container, and the decoder crops the output back to it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from .bitstream import MAX_IMAGE_SIDE

ImageLike = Union[str, os.PathLike, "Any", np.ndarray, torch.Tensor]


def _check_hw(h: int, w: int) -> None:
    if h == 0 or w == 0:
        raise ValueError(f"image is empty ({h}x{w})")
    if h > MAX_IMAGE_SIDE or w > MAX_IMAGE_SIDE:
        raise ValueError(f"image {h}x{w} exceeds the largest side {MAX_IMAGE_SIDE}")


def _from_pil(img: Any) -> torch.Tensor:
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)
    return _from_numpy(arr)


def _from_numpy(arr: np.ndarray) -> torch.Tensor:
    if arr.dtype != np.uint8:
        raise TypeError(f"numpy images must be uint8 HWC, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"numpy images must be HWC, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[2] != 3:
        raise ValueError(f"numpy images must have 1 or 3 channels (HWC), got shape {arr.shape}")
    _check_hw(arr.shape[0], arr.shape[1])
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable memory
        arr = arr.copy()
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _from_tensor(t: torch.Tensor) -> torch.Tensor:
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3:
        raise ValueError(f"tensor images must be CHW (or 1CHW), got shape {tuple(t.shape)}")
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    if t.shape[0] != 3:
        raise ValueError(f"tensor images must have 1 or 3 channels first (CHW), got {tuple(t.shape)}")
    _check_hw(t.shape[1], t.shape[2])
    t = t.detach().to("cpu")
    if t.dtype == torch.uint8:
        return t.contiguous()
    if not t.is_floating_point():
        raise TypeError(f"tensor images must be uint8 or floating point in [0, 1], got {t.dtype}")
    t = t.float()
    if not torch.isfinite(t).all():
        raise ValueError("float image holds NaN or inf")
    lo, hi = float(t.min()), float(t.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"float images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
    return (t * 255.0).round_().to(torch.uint8).contiguous()


def to_uint8_chw(image: ImageLike) -> torch.Tensor:
    """Convert any supported image to a CPU ``torch.uint8`` tensor of shape [3, H, W].

    Raises TypeError/ValueError (never crashes) for unsupported types, dtypes, shapes, empty images,
    unreadable files and out-of-range float values.
    """
    if isinstance(image, (str, os.PathLike)):
        from PIL import Image, UnidentifiedImageError  # local: import time (Pillow only for files)

        p = Path(image)
        if not p.is_file():
            raise ValueError(f"image file {p} does not exist")
        try:
            with Image.open(p) as img:
                _check_hw(img.size[1], img.size[0])  # before decoding any pixels
                img.load()
                return _from_pil(img)
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise ValueError(f"cannot read image {p}: {exc}") from None
    if isinstance(image, torch.Tensor):
        return _from_tensor(image)
    if isinstance(image, np.ndarray):
        return _from_numpy(image)
    try:
        from PIL import Image  # local: import time (Pillow only for files)
    except ImportError:  # PIL is a dependency; this only guards odd installs
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        return _from_pil(image)
    raise TypeError(
        f"unsupported image type {type(image).__name__}: pass a path, PIL image, numpy HWC uint8 "
        "array or torch CHW tensor")


def uint8_to_unit(img: torch.Tensor) -> torch.Tensor:
    """uint8 [3, H, W] -> float32 [1, 3, H, W] in [0, 1] (the official ``to_tensor`` scaling)."""
    return img.unsqueeze(0).to(torch.float32).div_(255.0)


def pad_to_multiple(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Replicate-pad a [B, C, H, W] tensor on the bottom/right to multiples of ``stride``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % stride, (-w) % stride
    if ph == 0 and pw == 0:
        return x
    # torch's replicate pad needs a float tensor; the caller passes floats
    return torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")


def padded_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """Smallest multiples of ``stride`` that are >= (height, width)."""
    return -(-height // stride) * stride, -(-width // stride) * stride


def unit_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Model output in [-1, 1] -> uint8 with the official rounding ``clip((x+1)*127.5 + 0.5)``."""
    return torch.clamp((x.float() + 1.0) * 127.5 + 0.5, 0, 255).to(torch.uint8)


def save_image(img: torch.Tensor, path: Union[str, os.PathLike]) -> None:
    """Save uint8 [3, H, W] to ``path`` (format from the extension, PNG recommended)."""
    from PIL import Image  # local: import time (Pillow only for files)

    if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"expected uint8 [3, H, W], got {img.dtype} {tuple(img.shape)}")
    Image.fromarray(img.permute(1, 2, 0).cpu().numpy()).save(Path(path))
