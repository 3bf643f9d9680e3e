"""Training data for the default model: openly licensed Debian wallpaper and photograph packages.

``python -m cod_fast.train.data --cache DIR [--seed S] [--no-photos]`` (DIR defaults to
``~/.cache/cod_fast/wallpapers``):

1. ``apt-get download`` each package of ``PACKAGES`` (and of ``PHOTO_PACKAGES``) into DIR/debs
   and unpack it with ``dpkg-deb -x`` into DIR/raw/<package> (skipped when already there);
2. lists the raster images (one file per wallpaper: the largest rendition; from the second tier,
   ``PHOTO_PACKAGES``, only the files its patterns name: photographs), reads each file's
   licence from the package's ``copyright`` file (DEP-5 stanzas; a plain GNU GPL/LGPL notice
   for packages without them);
3. cuts a reproducible bank of square crops: each image is downscaled to a few random sizes
   (shorter side between ``MIN_SIDE`` and ``MAX_SIDE`` pixels, as training codecs on
   high-resolution photographs usually do), then random crops of ``CROP`` pixels that are not
   flat (pixel std >= ``MIN_STD``) are kept. Writes DIR/crops.npy (N, CROP, CROP, 3) uint8,
   DIR/val.png (the held-out image, centre 512x512 at shorter side 768) and DIR/manifest.json
   (images, packages, licences, crop counts, seed).

The first tier's crops come first in the bank and are the same as without the second tier
(``--no-photos`` builds the first tier alone). Everything after the download is a function of
the seed and the package versions recorded in the manifest. The held-out image (``HELD_OUT``) never enters the crop bank. Kodak and
scikit-image's sample images are never used for training.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

#: Debian packages of wallpapers used for training (licences: see each package's copyright).
PACKAGES: tuple[str, ...] = (
    "lomiri-wallpapers-16.04",
    "lomiri-wallpapers-20.04",
    "mate-backgrounds",
    "plasma-workspace-wallpapers",
    "ukui-wallpapers",
)
#: Second tier: photographs (the first tier holds many renders and abstract art). Package ->
#: glob patterns, relative to the unpacked package root, of the photographs it ships. These are
#: smaller than the wallpapers (KPhotoAlbum's demo album is 800 x 533-600 pixels, Kodak-like).
PHOTO_PACKAGES: dict[str, tuple[str, ...]] = {
    "kphotoalbum": ("usr/share/kphotoalbum/demo/*.jpg",),
    "lxqt-themes": tuple(
        "usr/share/lxqt/wallpapers/" + n
        for n in (
            "Butterfly-Kenneth-Wimer.jpg", "Valendas.png", "after-the-rain.jpg", "appleflower.png",
            "beam.png", "butterfly.png", "cloud.png", "drop.png", "flowers.png", "fog.jpg",
            "this-is-not-windows.jpg",
        )
    ),
    "sddm-theme-maldives": ("usr/share/sddm/themes/maldives/background.jpg",),
}
#: Shorter side a second-tier photograph needs.
PHOTO_MIN_SIDE = 400
#: File name (basename) of the photograph kept out of training for validation.
HELD_OUT = "picosdeeuropa_by_Aitzol_Berasategi.jpg"
CROP = 256
MIN_SIDE = 512
MAX_SIDE = 1536
SCALES_PER_IMAGE = 3
CROPS_PER_SCALE = 12
MIN_STD = 4.0
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
MIN_IMAGE_SIDE = 1000

DEFAULT_CACHE = Path(os.path.expanduser("~/.cache/cod_fast/wallpapers"))


@dataclass(frozen=True)
class SourceImage:
    path: Path
    package: str
    version: str
    licence: str

    def relpath(self, cache: Path) -> str:
        return str(self.path.relative_to(cache / "raw"))


def fetch(cache: Path, packages: tuple[str, ...] | list[str] = PACKAGES) -> dict[str, str]:
    """Download and unpack ``packages`` under ``cache``; returns {package: version}."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError("fetching the wallpapers needs apt-get and dpkg-deb (a Debian-based system)")
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    versions: dict[str, str] = {}
    for pkg in packages:
        found = sorted(debs.glob(f"{pkg}_*.deb"))
        if not found:
            subprocess.run(["apt-get", "download", pkg], cwd=debs, check=True)
            found = sorted(debs.glob(f"{pkg}_*.deb"))
            if not found:
                raise RuntimeError(f"apt-get download {pkg} produced no .deb (run apt-get update first?)")
        deb = found[-1]
        version = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
        ).stdout.strip()
        versions[pkg] = version
        target = cache / "raw" / pkg
        if not target.exists():
            tmp = cache / "raw" / (pkg + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
            tmp.rename(target)
    return versions


def _copyright_stanzas(text: str) -> list[tuple[list[str], str]]:
    """(file patterns, licence short name) for each ``Files:`` stanza of a DEP-5 copyright file."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:\s*(.+?)(?=^\S|\Z)", block, flags=re.M | re.S)
        lic = re.search(r"^License:\s*(\S+)", block, flags=re.M)
        if files and lic:
            stanzas.append((files.group(1).split(), lic.group(1)))
    return stanzas


def plain_licence(text: str) -> str | None:
    """Licence short name from a copyright file without DEP-5 stanzas: a GNU GPL or LGPL
    notice ("version N" and, for the "+" forms, "or (at your option) any later version");
    None when no such notice is found."""
    flat = " ".join(text.split())
    for name, short in (("GNU Lesser General Public License", "LGPL"), ("GNU Library General Public License", "LGPL"),
                        ("GNU General Public License", "GPL")):
        if name in flat:
            m = re.search(re.escape(name) + r"[^.]{0,80}?version (\d(?:\.\d)?)", flat)
            if m is None:
                continue
            later = "any later version" in flat
            return f"{short}-{m.group(1)}{'+' if later else ''}"
    return None


def package_licences(root: Path, pkg: str) -> tuple[list[tuple[list[str], str]], str | None]:
    """(DEP-5 stanzas, plain-notice licence) of an unpacked package's copyright file."""
    text = (root / "usr" / "share" / "doc" / pkg / "copyright").read_text(encoding="utf-8", errors="replace")
    stanzas = _copyright_stanzas(text)
    return stanzas, (None if stanzas else plain_licence(text))


def licence_of(path: Path, stanzas: list[tuple[list[str], str]]) -> str | None:
    """Licence of an installed file by DEP-5 rules (last matching stanza wins).

    Patterns are written against the source tree, so they are matched on the file name only
    (``debian/*`` stanzas are skipped: they cover packaging files).
    """
    found = None
    for patterns, lic in stanzas:
        for p in patterns:
            if p.startswith("debian/"):
                continue
            if fnmatch.fnmatch(path.name, os.path.basename(p)):
                found = lic
    return found


def list_images(cache: Path, versions: dict[str, str]) -> list[SourceImage]:
    """One ``SourceImage`` per wallpaper in the unpacked packages, sorted by path."""
    out: list[SourceImage] = []
    for pkg, version in sorted(versions.items()):
        root = cache / "raw" / pkg
        copyright_file = root / "usr" / "share" / "doc" / pkg / "copyright"
        stanzas = _copyright_stanzas(copyright_file.read_text(encoding="utf-8", errors="replace"))
        groups: dict[str, list[Path]] = {}
        for p in sorted(root.rglob("*")):
            # Plasma bundles list each size as a symlink to one file: keep real files only.
            if p.is_symlink() or not p.is_file() or p.suffix.lower() not in IMAGE_EXTS:
                continue
            if "screenshot" in p.name or "images_dark" in p.parts:
                continue
            if "contents" in p.parts:
                # Plasma wallpaper bundle: <name>/contents/images/<WxH>.<ext>, one per size.
                key = p.parts[p.parts.index("contents") - 1]
            else:
                key = re.sub(r"_\d+x\d+$", "", p.stem)
            groups.setdefault(key, []).append(p)
        for key in sorted(groups):
            best = max(groups[key], key=lambda q: (_pixels(q), str(q)))
            with Image.open(best) as im:
                if min(im.size) < MIN_IMAGE_SIDE:
                    continue
            lic = licence_of(best, stanzas)
            if lic is None:
                continue
            out.append(SourceImage(best, pkg, version, lic))
    return sorted(out, key=lambda s: str(s.path))


def list_photos(cache: Path, versions: dict[str, str], packages: dict[str, tuple[str, ...]] = PHOTO_PACKAGES) -> list[SourceImage]:
    """The second tier: the files ``packages`` name (shorter side >= ``PHOTO_MIN_SIDE``) with
    their licences, sorted by path. A named pattern that matches nothing is an error (the
    package changed)."""
    out: list[SourceImage] = []
    for pkg in sorted(packages):
        root = cache / "raw" / pkg
        stanzas, plain = package_licences(root, pkg)
        for pattern in packages[pkg]:
            found = sorted(p for p in root.glob(pattern) if p.is_file() and not p.is_symlink())
            if not found:
                raise RuntimeError(f"{pkg} {versions.get(pkg)}: no file matches {pattern}")
            for p in found:
                with Image.open(p) as im:
                    if min(im.size) < PHOTO_MIN_SIDE:
                        continue
                lic = licence_of(p, stanzas) if stanzas else plain
                if lic is None:
                    continue
                out.append(SourceImage(p, pkg, versions[pkg], lic))
    return sorted(out, key=lambda s: str(s.path))


def _pixels(p: Path) -> int:
    with Image.open(p) as im:
        return im.size[0] * im.size[1]


def _load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return Image.alpha_composite(bg, im).convert("RGB")
        return im.convert("RGB")


def _resize_short(im: Image.Image, side: int) -> Image.Image:
    w, h = im.size
    s = side / min(w, h)
    if s >= 1.0:
        return im
    return im.resize((max(CROP, round(w * s)), max(CROP, round(h * s))), Image.Resampling.LANCZOS, reducing_gap=3.0)


def cut_crops(images: list[SourceImage], seed: int, first_index: int = 0) -> tuple[np.ndarray, list[int]]:
    """The crop bank (N, CROP, CROP, 3) uint8 and the number of crops per image.

    Image ``i`` draws from a generator seeded by (seed, first_index + i). Images whose shorter
    side is below ``MIN_SIDE`` (second-tier photographs) are cut at their own size.
    """
    crops: list[np.ndarray] = []
    counts: list[int] = []
    for idx, src in enumerate(images, start=first_index):
        rng = np.random.default_rng([seed, idx])
        full = _load_rgb(src.path)
        short = min(full.size)
        n = 0
        for _ in range(SCALES_PER_IMAGE):
            side = int(rng.integers(min(MIN_SIDE, short), min(MAX_SIDE, short) + 1))
            arr = np.asarray(_resize_short(full, side))
            h, w = arr.shape[:2]
            kept = 0
            for _attempt in range(4 * CROPS_PER_SCALE):
                if kept == CROPS_PER_SCALE:
                    break
                top = int(rng.integers(0, h - CROP + 1))
                left = int(rng.integers(0, w - CROP + 1))
                c = arr[top : top + CROP, left : left + CROP]
                if float(c.std()) < MIN_STD:
                    continue
                crops.append(np.ascontiguousarray(c))
                kept += 1
            n += kept
        counts.append(n)
    return np.stack(crops), counts


def validation_image(path: Path) -> Image.Image:
    """Held-out image: downscaled to shorter side 768, centre 512x512 crop."""
    im = _resize_short(_load_rgb(path), 768)
    w, h = im.size
    left, top = (w - 512) // 2, (h - 512) // 2
    return im.crop((left, top, left + 512, top + 512))


def prepare(cache: Path = DEFAULT_CACHE, seed: int = 0, photos: bool = True) -> dict:
    """Run the whole preparation (see the module docstring); returns the manifest."""
    cache = Path(cache)
    versions = fetch(cache)
    images = list_images(cache, versions)
    held = [s for s in images if s.path.name == HELD_OUT]
    train = [s for s in images if s.path.name != HELD_OUT]
    if not held:
        raise RuntimeError(f"held-out image {HELD_OUT} not found in the packages")
    tiers = [1] * len(train)
    bank, counts = cut_crops(train, seed)
    if photos:
        photo_versions = fetch(cache, sorted(PHOTO_PACKAGES))
        extra = list_photos(cache, photo_versions)
        bank2, counts2 = cut_crops(extra, seed, first_index=len(train))
        bank = np.concatenate([bank, bank2])
        versions = {**versions, **photo_versions}
        train, counts, tiers = train + extra, counts + counts2, tiers + [2] * len(extra)
    np.save(cache / "crops.npy", bank)
    validation_image(held[0].path).save(cache / "val.png")
    manifest = {
        "seed": seed,
        "crop": CROP,
        "crops": int(bank.shape[0]),
        "packages": versions,
        "held_out": held[0].relpath(cache),
        "images": [
            {"file": s.relpath(cache), "package": s.package, "licence": s.licence, "crops": n, "tier": t}
            for s, n, t in zip(train, counts, tiers)
        ],
    }
    (cache / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m cod_fast.train.data", description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache folder (outside the repo)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-photos", action="store_true", help="first tier (PACKAGES) only, as release 1-2 were trained")
    args = ap.parse_args(argv)
    m = prepare(args.cache, args.seed, photos=not args.no_photos)
    lic: dict[str, int] = {}
    for im in m["images"]:
        lic[im["licence"]] = lic.get(im["licence"], 0) + 1
    photos = sum(1 for im in m["images"] if im["tier"] == 2)
    print(f"{len(m['images'])} images ({photos} photographs of the second tier), {m['crops']} crops of {m['crop']}px in {args.cache}; licences {lic}")


if __name__ == "__main__":
    main()
