"""Regenerate the golden streams in tests/golden/ (a format change: bump the container version).

Usage: .venv/bin/python tools/make_golden.py [--check] [--only NAME ...] [--out DIR]

For each golden case: a tiny model with seeded weights (``golden_weights``:
``tests/tiny_models.py``'s ``seeded_state_dict``), a synthetic image (``golden_image``: its
``make_image``), the container bytes written to ``tests/golden/<name>.codf``, the decoded
pixels written to ``tests/golden/<name>.png`` (the reference pixels) and, in
``tests/golden/golden.json``, the SHA-256 of the stream bytes, of the entropy-decoded integers
(``decoded_integers``) and of the reference pixels (uint8 [3, H, W], C-contiguous).

What is pinned exactly and what within a tolerance: the stream bytes and the decoded integers
are the format and must match bit for bit on every machine; the pixels come out of a float32
synthesis (or sampler) whose last bits depend on the CPU's kernels (AVX2 vs AVX-512) and the
thread count, so they are compared with the reference within ``PIXEL_TOLERANCE`` (at most
2 levels anywhere, at most 1 % of the samples off, PSNR against the reference at least 60 dB).
``--check`` compares instead of writing (what tests/io/test_golden.py does). Everything runs on
the CPU in float32.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"

# The tiny configs, seeded weights and golden image are the tests' own (tests/tiny_models.py).
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))
from tiny_models import TINY_ONE_STEP, TINY_PIXEL  # noqa: E402 -- after sys.path
from tiny_models import make_image as golden_image  # noqa: E402
from tiny_models import seeded_state_dict as golden_weights  # noqa: E402

# name -> (config, weight seed, image size (H, W), encode parameters)
CASES: dict[str, tuple[dict[str, Any], int, tuple[int, int], dict[str, Any]]] = {
    "cod_pixel_tiny": (TINY_PIXEL, 11, (40, 52), {"steps": 2, "cfg": 3.0, "seed": 1, "sampler": "adam2"}),
    "cod_one_step_tiny": (TINY_ONE_STEP, 12, (33, 70), {}),
    # SODEC: the named models with fixed seeded weights (cod_fast.codecs.sodec.NAMED_MODELS); the
    # weight seed is the named model's own.
    "sodec_tiny": ({"model": "sodec", "named": "sodec-tiny"}, 6, (40, 52), {}),
    "sodec_tiny_checkerboard": ({"model": "sodec", "named": "sodec-tiny-checkerboard"}, 7, (70, 33), {}),
    # The shipped default model (cod_fast/weights): release 4 (layout 3: fixed-point entropy
    # parameters and the checkerboard context; bytes and integers are the same at every thread
    # count). New weights change the fingerprint, so this case is regenerated with them; the
    # streams of earlier shipped weights stay as RETIRED files, refused with ModelMismatchError
    # naming their release. The seed is unused.
    "default_model_r4": ({"model": "default"}, 0, (72, 100), {"quality": 2.0}),
}


def golden_codec(name: str) -> Any:
    """The codec of golden case ``name`` (CPU, float32)."""
    from cod_fast.loading import load_model

    config, seed, _, _ = CASES[name]
    if config.get("model") == "default":
        from cod_fast.codecs.default import load_default_codec

        return load_default_codec()
    if config.get("model") == "sodec":
        from cod_fast.codecs.sodec import NAMED_MODELS

        if NAMED_MODELS[config["named"]][1] != seed:
            raise ValueError(f"golden case {name}: seed {seed} is not the named model's")
        return load_model(config["named"])
    return load_model(copy.deepcopy(config), golden_weights(config, seed))


def sha256(data: bytes | torch.Tensor) -> str:
    """SHA-256 hex digest of bytes, or of a tensor's C-contiguous bytes."""
    if isinstance(data, torch.Tensor):
        data = data.contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


#: Pixel comparison with the reference: largest absolute difference (levels), largest fraction
#: of differing samples, smallest PSNR (dB, peak 255; identical pixels count as infinite).
PIXEL_TOLERANCE = {"max_abs": 2, "max_fraction": 0.01, "min_psnr_db": 60.0}


def decoded_integers(codec: Any, stream: bytes) -> bytes | None:
    """The entropy-decoded integers of ``stream`` as bytes, or None where the stream bytes are
    themselves the integers (CoD: packed VQ indices, unpacked by a fixed bit layout).

    Default model: y then z symbols (int32, C order). SODEC: y_hat (float32, but built from the
    integer entropy parameters and symbols, hence exact) then the z symbols (int32)."""
    from cod_fast.codecs.default import DefaultCodec
    from cod_fast.codecs.sodec import SodecCodec

    if isinstance(codec, DefaultCodec):
        y_sym, z_sym = codec.decode_symbols(stream)
        return y_sym.contiguous().numpy().tobytes() + z_sym.contiguous().numpy().tobytes()
    if isinstance(codec, SodecCodec):
        _, y_hat, z_sym = codec.decode_latents(stream)
        return y_hat.contiguous().numpy().tobytes() + z_sym.contiguous().numpy().tobytes()
    return None


def pixel_stats(decoded: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """``{"max_abs", "fraction", "psnr_db"}`` of two uint8 [3, H, W] images (ValueError on a
    shape mismatch)."""
    if decoded.shape != reference.shape:
        raise ValueError(f"decoded pixels {tuple(decoded.shape)} vs reference {tuple(reference.shape)}")
    diff = (decoded.to(torch.int32) - reference.to(torch.int32)).abs()
    mse = float(diff.double().pow(2).mean())
    psnr = float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)
    return {"max_abs": int(diff.max()), "fraction": float((diff > 0).double().mean()), "psnr_db": psnr}


def pixels_within_tolerance(decoded: torch.Tensor, reference: torch.Tensor) -> bool:
    """Whether ``decoded`` matches ``reference`` within ``PIXEL_TOLERANCE``."""
    st = pixel_stats(decoded, reference)
    tol = PIXEL_TOLERANCE
    return st["max_abs"] <= tol["max_abs"] and st["fraction"] <= tol["max_fraction"] \
        and st["psnr_db"] >= tol["min_psnr_db"]


def reference_pixels(name: str) -> torch.Tensor:
    """The committed reference pixels of case ``name`` (``tests/golden/<name>.png``): uint8 [3, H, W]."""
    import numpy as np
    from PIL import Image

    with Image.open(GOLDEN / f"{name}.png") as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()


def write_reference_pixels(name: str, pixels: torch.Tensor, out: Path = GOLDEN) -> None:
    """Write uint8 [3, H, W] ``pixels`` losslessly to ``<out>/<name>.png`` (``tests/golden``)."""
    from PIL import Image

    Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy(), mode="RGB").save(out / f"{name}.png")


def generate(name: str) -> tuple[bytes, torch.Tensor, dict[str, Any]]:
    """(stream bytes, decoded pixels uint8 [3, H, W], record) of one case: the record holds the
    hashes and the fingerprint."""
    codec = golden_codec(name)
    _, _, (h, w), params = CASES[name]
    stream = codec.encode(golden_image(h, w), **params)
    pixels = codec.decode(stream)
    ints = decoded_integers(codec, stream)
    return stream, pixels, {"fingerprint": codec.fingerprint_hex, "height": h, "width": w, "params": params,
                            "stream_sha256": sha256(stream), "pixels_sha256": sha256(pixels),
                            "integers_sha256": None if ints is None else sha256(ints)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files")
    ap.add_argument("--only", action="append", choices=sorted(CASES),
                    help="(re)generate or check only this case (repeatable); the others' records are kept")
    ap.add_argument("--out", type=Path, default=GOLDEN,
                    help="folder to write to (default tests/golden; another one proves the committed "
                    "files are reproduced: compare them byte for byte)")
    args = ap.parse_args(argv)
    from cod_fast.bitstream import FORMAT_VERSION

    records: dict[str, Any] = {"format_version": FORMAT_VERSION, "cases": {}}
    ok = True
    old = json.loads((GOLDEN / "golden.json").read_text()) if (GOLDEN / "golden.json").exists() else None
    if old is not None:  # the retired streams' records are kept as they are
        records["retired"] = old.get("retired", {})
    if args.only and old is not None:
        records["cases"] = {k: v for k, v in old["cases"].items() if k in CASES}
    for name in args.only or CASES:
        stream, pixels, rec = generate(name)
        records["cases"][name] = rec
        if args.check:
            path = GOLDEN / f"{name}.codf"
            pinned = None if old is None else old["cases"].get(name)
            exact = ("fingerprint", "height", "width", "params", "stream_sha256", "integers_sha256")
            same = path.exists() and path.read_bytes() == stream and pinned is not None \
                and all(pinned.get(k) == rec[k] for k in exact)
            stats = pixel_stats(pixels, reference_pixels(name)) if same else {}
            same = same and pixels_within_tolerance(pixels, reference_pixels(name))
            print(f"{name}: {'ok' if same else 'DIFFERS'} {stats}")
            ok &= same
        else:
            path = args.out / f"{name}.codf"
            path.write_bytes(stream)
            write_reference_pixels(name, pixels, args.out)
            print(f"{name}: wrote {path} ({len(stream)} bytes) and its reference pixels")
    if not args.check:
        (args.out / "golden.json").write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
