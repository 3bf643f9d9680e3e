"""Pack a training data folder into one file for a machine that gets only the repository.

``python -m cod_fast.train.bundle --data DIR --out FILE.npz [--max-mb 60] [--crop 256] [--seed 0]
[--format webp|png]``

Reads the crop bank of DIR (``python -m cod_fast.train.data``: crops.npy, val.png,
manifest.json), shuffles the crops (seeded), optionally cuts each to a ``--crop``-pixel window
(seeded position), and stores as many as fit in ``--max-mb`` megabytes (10^6 bytes), each as a
lossless image file (WebP lossless, method 4: about 26 % smaller than PNG on this data, so a
third more crops fit; or PNG), in an uncompressed ``.npz``:

- ``png``: uint8 (total bytes,), the image files one after another (the name is historical:
  WebP or PNG, whatever Pillow recognises);
- ``offsets``: int64 (N + 1,), crop i is ``png[offsets[i]:offsets[i + 1]]``;
- ``val``: uint8, the held-out image as PNG (empty when DIR has none);
- ``meta``: uint8, UTF-8 JSON: format version, crop size, seed, the source crop indexes, the
  source manifest's packages and per-image licences.

``python -m cod_fast.train --data FILE.npz`` decodes the crops into memory and trains on them as
on the folder (same sampling; the bank is the bundle's crops).
"""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, features

FORMAT = "cod_fast.train.bundle/1"


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def _webp(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="WEBP", lossless=True, quality=100, method=4)
    return buf.getvalue()


def write_bundle(
    data: Path, out: Path, max_mb: float = 60.0, crop: int | None = None, seed: int = 0, fmt: str = "webp"
) -> dict:
    """Write the bundle (see the module docstring); returns its metadata (with ``crops``, the
    number stored, and ``bytes``, the file size)."""
    bank = np.load(data / "crops.npy", mmap_mode="r")
    if bank.ndim != 4 or bank.shape[3] != 3 or bank.dtype != np.uint8:
        raise ValueError(f"{data / 'crops.npy'}: expected (N, S, S, 3) uint8, got {bank.shape} {bank.dtype}")
    size = int(bank.shape[1])
    crop = size if crop is None else int(crop)
    if crop <= 0 or crop % 64 or crop > size:
        raise ValueError(f"--crop must be a positive multiple of 64 and at most the bank's {size}")
    if max_mb <= 0:
        raise ValueError("--max-mb must be positive")
    if fmt not in ("webp", "png"):
        raise ValueError(f"--format must be webp or png, not {fmt!r}")
    if fmt == "webp" and not features.check("webp"):
        raise RuntimeError("this Pillow has no WebP support: use --format png")
    encode = _webp if fmt == "webp" else _png
    val_path = data / "val.png"
    val = _png(np.asarray(Image.open(val_path).convert("RGB"))) if val_path.exists() else b""
    manifest_path = data / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    rng = np.random.default_rng([seed, 7])
    order = rng.permutation(bank.shape[0])
    corners = rng.integers(0, size - crop + 1, (bank.shape[0], 2))
    budget = int(max_mb * 1e6) - len(val) - 64 * 1024  # room for the offsets, metadata, zip headers
    blobs: list[bytes] = []
    used: list[int] = []
    total = 0
    for i in order:
        top, left = (int(v) for v in corners[i])
        b = encode(np.ascontiguousarray(bank[i, top : top + crop, left : left + crop]))
        if total + len(b) + 8 * (len(blobs) + 2) > budget:
            break
        blobs.append(b)
        used.append(int(i))
        total += len(b)
    if not blobs:
        raise ValueError(f"--max-mb {max_mb}: not even one crop fits")
    meta = {
        "format": FORMAT,
        "crop": crop,
        "seed": seed,
        "image_format": fmt,
        "crops": len(blobs),
        "source_crops": int(bank.shape[0]),
        "source_indexes": used,
        "packages": manifest.get("packages", {}),
        "images": [{k: im.get(k) for k in ("file", "package", "licence", "tier")} for im in manifest.get("images", [])],
        "held_out": manifest.get("held_out"),
    }
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    with open(tmp, "wb") as f:
        np.savez(
            f,
            png=np.frombuffer(b"".join(blobs), dtype=np.uint8),
            offsets=offsets,
            val=np.frombuffer(val, dtype=np.uint8),
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        )
    tmp.replace(out)
    meta["bytes"] = out.stat().st_size
    return meta


def read_bundle(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The crops (N, S, S, 3) uint8 and the held-out image (H, W, 3) uint8 (None when absent)
    of a bundle file. Raises ValueError for a file that is not a bundle."""
    try:
        z = np.load(path, allow_pickle=False)
        png, offsets, val, meta_raw = z["png"], z["offsets"], z["val"], z["meta"]
    except (KeyError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a cod_fast training bundle ({e})") from None
    meta = json.loads(meta_raw.tobytes().decode())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: bundle format {meta.get('format')!r}, expected {FORMAT!r}")
    n, crop = int(meta["crops"]), int(meta["crop"])
    if offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != png.shape[0] or bool((np.diff(offsets) <= 0).any()):
        raise ValueError(f"{path}: inconsistent crop offsets")
    bank = np.empty((n, crop, crop, 3), dtype=np.uint8)
    for i in range(n):
        with Image.open(io.BytesIO(png[offsets[i] : offsets[i + 1]].tobytes())) as im:
            arr = np.asarray(im.convert("RGB"))
        if arr.shape != (crop, crop, 3):
            raise ValueError(f"{path}: crop {i} has shape {arr.shape}, expected {(crop, crop, 3)}")
        bank[i] = arr
    val_arr = None
    if val.size:
        with Image.open(io.BytesIO(val.tobytes())) as im:
            val_arr = np.asarray(im.convert("RGB")).copy()
    return bank, val_arr


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m cod_fast.train.bundle", description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="folder made by python -m cod_fast.train.data")
    ap.add_argument("--out", type=Path, required=True, help="bundle file to write (.npz)")
    ap.add_argument("--max-mb", type=float, default=60.0, help="size limit in MB (10^6 bytes)")
    ap.add_argument("--crop", type=int, default=None, help="window side per stored crop (default: the bank's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format", choices=("webp", "png"), default="webp", help="lossless format of each crop")
    args = ap.parse_args(argv)
    meta = write_bundle(args.data, args.out, args.max_mb, args.crop, args.seed, args.format)
    print(f"wrote {args.out}: {meta['crops']} of {meta['source_crops']} crops of {meta['crop']} px, {meta['bytes'] / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
