"""Image import rules of cod_fast.image_io (16-bit, float, EXIF orientation, alpha, every PIL mode)."""
from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from cod_fast.image_io import to_uint8_chw


def _hwc(t: torch.Tensor) -> np.ndarray:
    assert t.dtype == torch.uint8 and t.ndim == 3 and t.shape[0] == 3
    return t.permute(1, 2, 0).numpy()


def _no_warning(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args)


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path) -> None:
    ramp = np.linspace(0, 65535, 24).round().astype(np.uint16).reshape(4, 6)
    path = tmp_path / "g16.png"
    Image.fromarray(ramp).save(path)
    with Image.open(path) as im:
        assert im.mode in ("I;16", "I")  # a 16-bit file, whichever way Pillow opens it
    out = _hwc(_no_warning(to_uint8_chw, path))
    expect = np.rint(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], expect)
    assert out[0, 1, 0] < 20 and out[-1, -1, 0] == 255  # the old path gave 0, 255, 255, ...


def test_16bit_rgb_png_keeps_the_high_byte(tmp_path) -> None:
    """Pillow reads 16-bit RGB PNGs as 8-bit RGB (v >> 8): a ramp stays a ramp."""
    ramp = np.linspace(0, 65535, 8).round().astype(np.uint16)
    arr = np.stack([ramp, ramp[::-1], np.full(8, 30000, np.uint16)], -1)[None].repeat(2, 0)
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in arr)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    path = tmp_path / "rgb16.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 2, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    out = _hwc(to_uint8_chw(path)).astype(np.int64)
    expect = np.rint(arr.astype(np.float64) * 255 / 65535)
    assert np.abs(out - expect).max() <= 1


def test_float_tiff_in_unit_range_is_scaled(tmp_path) -> None:
    vals = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    path = tmp_path / "f.tif"
    Image.fromarray(vals).save(path)
    out = _hwc(to_uint8_chw(path))
    np.testing.assert_array_equal(out[:, :, 1], np.rint(vals.astype(np.float64) * 255).astype(np.uint8))
    assert out.max() == 255  # was black before


@pytest.mark.parametrize("vals", [np.array([[0.0, 2.0]], np.float32), np.array([[0.5, np.nan]], np.float32),
                                  np.array([[-0.1, 0.5]], np.float32)])
def test_float_out_of_range_is_refused(vals) -> None:
    with pytest.raises(ValueError, match="float"):
        to_uint8_chw(Image.fromarray(vals))


def test_int32_outside_16bit_is_refused() -> None:
    with pytest.raises(ValueError, match="16-bit"):
        to_uint8_chw(Image.fromarray(np.array([[0, 70000]], np.int32)))


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_is_applied(tmp_path, suffix) -> None:
    rng = np.random.default_rng(0)
    arr = np.zeros((16, 24, 3), np.uint8)
    arr[:8, :8] = (255, 0, 0)  # red block top-left
    arr[8:, 16:] = rng.integers(0, 50, (8, 8, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / ("o" + suffix)
    Image.fromarray(arr).save(path, exif=exif, **({"quality": 95} if suffix == ".jpg" else {}))
    out = _hwc(to_uint8_chw(path))
    assert out.shape == (24, 16, 3)  # stored 24 wide, shown 16 wide
    upright = np.rot90(arr, k=-1)  # orientation 6: rotate 90 degrees clockwise
    if suffix == ".png":
        np.testing.assert_array_equal(out, upright)
    else:
        assert np.abs(out.astype(int) - upright.astype(int)).mean() < 8
    assert out[:8, -8:, 0].mean() > 200  # the red block is now top-right


def test_alpha_composited_over_white_with_warning() -> None:
    rgba = np.array([[[10, 20, 30, 255], [200, 100, 0, 0], [100, 100, 100, 128]]], np.uint8)
    with pytest.warns(UserWarning, match="transparent"):
        out = _hwc(to_uint8_chw(Image.fromarray(rgba, "RGBA")))
    a = rgba[..., 3:].astype(np.int64)
    expect = (rgba[..., :3].astype(np.int64) * a + 255 * (255 - a) + 127) // 255
    np.testing.assert_array_equal(out, expect)
    assert out[0, 1].tolist() == [255, 255, 255] and out[0, 0].tolist() == [10, 20, 30]
    opaque = rgba.copy()
    opaque[..., 3] = 255
    np.testing.assert_array_equal(_hwc(_no_warning(to_uint8_chw, Image.fromarray(opaque, "RGBA"))), opaque[..., :3])


def test_palette_with_transparency(tmp_path) -> None:
    im = Image.new("P", (4, 2))
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    im.putdata([0, 1, 2, 1, 0, 1, 2, 1])
    np.testing.assert_array_equal(_hwc(_no_warning(to_uint8_chw, im))[0, :3],
                                  [[0, 0, 0], [255, 0, 0], [0, 0, 255]])
    path = tmp_path / "t.png"
    im.save(path, transparency=0)
    with pytest.warns(UserWarning, match="transparent"):
        out = _hwc(to_uint8_chw(path))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [255, 0, 0]


def test_cmyk_warns(tmp_path) -> None:
    im = Image.new("CMYK", (3, 2), (0, 255, 255, 0))
    with pytest.warns(UserWarning, match="CMYK"):
        out = _hwc(to_uint8_chw(im))
    assert out[0, 0].tolist() == [255, 0, 0]


def _sample(mode: str) -> Image.Image:
    """A 5x3 image of ``mode`` with varying content, built from an RGB(A)/grey ramp."""
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, (3, 5, 3), dtype=np.uint8))
    grey = rgb.convert("L")
    if mode.startswith("I;16"):  # built from bytes: Pillow's convert() to I;16B clips at 255
        v = np.asarray(grey).astype(np.uint16) * 257
        order = ">u2" if mode == "I;16B" else "<u2" if mode in ("I;16", "I;16L") else "=u2"
        return Image.frombytes(mode, grey.size, v.astype(order).tobytes())
    if mode == "I":
        return Image.fromarray(np.asarray(grey).astype(np.int32) * 257)
    if mode == "F":
        return Image.fromarray(np.asarray(grey).astype(np.float32) / 255)
    if mode in ("La", "LA", "PA", "RGBA", "RGBa"):
        rgba = rgb.convert("RGBA")
        return rgba.convert(mode) if mode != "La" else rgba.convert("LA").convert("La")
    if mode in ("1", "L"):
        return grey.convert(mode)
    if mode == "P":  # 15 colours: an adaptive palette holds them exactly
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    return rgb.convert(mode)


#: Every mode Pillow can open (``PIL.Image.MODES`` of Pillow 10-13); each must build and import.
PILLOW_MODES = ("1", "L", "P", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "LA", "PA", "La", "RGBa",
                "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def test_the_mode_list_covers_this_pillow() -> None:
    assert set(getattr(Image, "MODES", PILLOW_MODES)) <= set(PILLOW_MODES)


@pytest.mark.parametrize("mode", PILLOW_MODES)
def test_every_pillow_mode_imports(mode) -> None:
    im = _sample(mode)
    assert im.mode == mode
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = to_uint8_chw(im)
    assert out.shape == (3, 3, 5) and out.dtype == torch.uint8
    messages = [str(w.message) for w in caught]
    assert all("transparent" not in m for m in messages)  # every sample is fully opaque
    assert any("CMYK" in m for m in messages) == (mode == "CMYK")
    ref = np.asarray(_sample("L" if mode in ("1", "L", "LA", "La", "I", "F") or mode.startswith("I;16")
                             else "RGB").convert("RGB"), dtype=np.int64)
    got = _hwc(out).astype(np.int64)
    if mode == "1":  # dithered bilevel: only 0 and 255
        assert set(np.unique(got)) <= {0, 255}
    elif mode in ("YCbCr", "LAB", "HSV", "CMYK"):  # lossy colour conversions
        assert np.abs(got - ref).mean() < 12
    else:
        np.testing.assert_array_equal(got, ref)


def test_multiframe_takes_the_first_frame(tmp_path) -> None:
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert _hwc(to_uint8_chw(path))[0, 0].tolist() == [255, 0, 0]
