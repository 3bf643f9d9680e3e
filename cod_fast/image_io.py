"""Image input/output: any supported image -> uint8 [3, H, W], padding to a stride, saving.

Accepted inputs of ``to_uint8_chw``:

* a path (str / os.PathLike) to an image file PIL can open (the first frame of animations and
  multi-page files);
* a ``PIL.Image.Image`` of any mode Pillow has (see "Conversion rules");
* a numpy array HWC ``uint8`` with 3 channels (or HW / HW1 grey, replicated to RGB);
* a torch tensor CHW with 3 channels (or 1, replicated), ``uint8`` or floating point in [0, 1].

Conversion rules (files and PIL images; the codecs are 8-bit RGB):

* EXIF orientation (tag 274) is applied first: an image tagged "rotate 90" is encoded upright.
* 8-bit modes: ``1`` (0/1 -> 0/255), ``L`` (grey, replicated), ``P`` (palette looked up),
  ``RGB``, ``RGBX`` (padding byte ignored), ``YCbCr``, ``LAB``, ``HSV`` (Pillow's conversion).
* 16-bit: ``I;16``/``I;16B``/``I;16L``/``I;16N`` and ``I`` (32-bit int, which is how Pillow
  opens 16-bit grey files) are read as 0..65535 and scaled, ``round(v * 255 / 65535)``; an ``I``
  image with values outside 0..65535 is refused (ValueError). 16-bit RGB PNGs are reduced to 8
  bits by Pillow (the high byte, ``v >> 8``).
* Float ``F``: values in [0, 1] are scaled, ``round(v * 255)``; NaN, inf or values outside
  [0, 1] are refused (ValueError), as for float tensors.
* Alpha (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La``, ``P`` with a transparent
  colour): composited over a white background, ``round(c * a + 255 * (1 - a))`` with ``a`` in
  [0, 1]; a ``UserWarning`` says so when any pixel is not fully opaque (a fully opaque alpha is
  dropped silently: nothing is lost).
* ``CMYK``: Pillow's plain conversion (no ICC profile), with a ``UserWarning`` (the black
  channel cannot be kept). Embedded ICC profiles are never applied (pixels are taken as sRGB).
* 16-bit and float images lose precision (8 bits per channel are kept): no warning, that is
  what an 8-bit codec does.

Padding policy for sizes that are not multiples of a model's stride: the image is padded on the
bottom and right to the next multiple by replicating the last row/column ("replicate"), the true
size is stored in the container, and the decoder crops the output back to it.
"""
from __future__ import annotations

import io
import os
import warnings
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


#: Background that transparent pixels are composited over (white, see the module docstring).
ALPHA_BACKGROUND = 255
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _scale16(arr: np.ndarray) -> np.ndarray:
    """uint16-range integers -> uint8, ``round(v * 255 / 65535)`` in exact integer arithmetic."""
    a = arr.astype(np.int64)
    if a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
        raise ValueError(f"16-bit image values in [{int(a.min())}, {int(a.max())}] outside 0..65535")
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def _scale_float(arr: np.ndarray) -> np.ndarray:
    """Float in [0, 1] -> uint8, ``round(v * 255)``; ValueError for NaN/inf or values outside."""
    a = arr.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError("float image holds NaN or inf")
    if a.size:
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"float images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
    return np.rint(a * 255.0).astype(np.uint8)


def _composite(arr: np.ndarray) -> np.ndarray:
    """uint8 HW(1|3)+alpha -> uint8 HWC without alpha, composited over ``ALPHA_BACKGROUND``.

    Warns when any pixel is not fully opaque (the transparency is lost)."""
    color, alpha = arr[:, :, :-1], arr[:, :, -1:]
    if alpha.size == 0 or int(alpha.min()) == 255:
        return np.ascontiguousarray(color)
    warnings.warn("image has transparent pixels: alpha is composited over a white background "
                  "(the codecs store RGB only)", UserWarning, stacklevel=4)
    c, a = color.astype(np.int64), alpha.astype(np.int64)
    # round((c * a + 255 * (255 - a)) / 255) exactly
    return ((c * a + ALPHA_BACKGROUND * (255 - a) + 127) // 255).astype(np.uint8)


def _pil_to_array(img: Any) -> np.ndarray:
    """A PIL image (any mode, EXIF orientation already applied) -> uint8 HWC with 1 or 3 channels,
    by the rules of the module docstring."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _scale16(np.asarray(img))
    if mode == "F":
        return _scale_float(np.asarray(img))
    if mode == "P":
        has_alpha = "transparency" in img.info or (img.palette is not None and img.palette.mode == "RGBA")
        img = img.convert("RGBA" if has_alpha else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    elif mode == "La":  # premultiplied grey + alpha: Pillow converts it to LA only
        img = img.convert("LA")
    elif mode == "RGBa":
        img = img.convert("RGBA")
    elif mode == "1":
        img = img.convert("L")
    elif mode == "CMYK":
        warnings.warn("CMYK image converted to RGB without a colour profile (Pillow's plain "
                      "conversion): colours are approximate", UserWarning, stacklevel=4)
        img = img.convert("RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        try:
            img = img.convert("RGB")
        except (ValueError, OSError) as exc:
            raise ValueError(f"cannot convert a {mode} image to RGB: {exc}") from None
    arr = np.asarray(img, dtype=np.uint8)
    if img.mode in ("LA", "RGBA"):
        arr = _composite(arr)
    return arr


def _from_pil(img: Any) -> torch.Tensor:
    from PIL import ImageOps  # local: import time (Pillow, only for images with EXIF orientation)

    _check_hw(img.size[1], img.size[0])
    try:
        img = ImageOps.exif_transpose(img)
    except (ValueError, OSError, TypeError, KeyError, SyntaxError) as exc:  # a broken EXIF block
        warnings.warn(f"ignoring an unreadable EXIF orientation ({exc})", UserWarning, stacklevel=3)
    return _from_numpy(_pil_to_array(img))


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


def encode_image(img: torch.Tensor, format: str = "PNG") -> bytes:
    """uint8 [3, H, W] -> the bytes of an image file in ``format`` (a PIL format name)."""
    from PIL import Image  # local: import time (Pillow)

    if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"expected uint8 [3, H, W], got {img.dtype} {tuple(img.shape)}")
    buf = io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).cpu().numpy()).save(buf, format=format)
    return buf.getvalue()


def save_image(img: torch.Tensor, path: str | os.PathLike) -> None:
    """Save uint8 [3, H, W] to ``path`` (format from the extension, PNG recommended)."""
    from PIL import Image  # local: import time (Pillow only for files)

    if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"expected uint8 [3, H, W], got {img.dtype} {tuple(img.shape)}")
    Image.fromarray(img.permute(1, 2, 0).cpu().numpy()).save(Path(path))
