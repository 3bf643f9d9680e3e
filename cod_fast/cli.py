"""``cod-fast`` command line: compress / decompress / info over files and folders, selfcheck,
and ``demo`` (a round trip of a bundled image through the bundled default model).

Exit codes: 0 success, 2 usage error (argparse), 1 bad input or a failed check (one-line error
on stderr; ``--debug`` shows the traceback instead).
"""
from __future__ import annotations

import argparse
import json
import struct
import sys
import traceback
from pathlib import Path
from typing import Any, Iterable, Sequence

from ._version import __version__

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
STREAM_SUFFIX = ".codf"  # our container
OFFICIAL_SUFFIX = ".cod"  # GenCodec's files


class UsageError(Exception):
    """Bad combination of arguments (exit code 2)."""


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cod-fast", description="Diffusion image codecs (CoD, CoD-Lite), fast.")
    p.add_argument("--version", action="version", version=f"cod-fast {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("selfcheck", help="check the native parts and print what is available")

    def model_args(sp: argparse.ArgumentParser, required: bool) -> None:
        sp.add_argument("--model", required=required,
                        help="preset name, official YAML config, SODEC JSON config, named model "
                             "(sodec-tiny), or our .safetensors model (default: the bundled default model)")
        sp.add_argument("--checkpoint", help="weights (official .pt/.ckpt or .safetensors) for a YAML/preset --model")
        sp.add_argument("--vae", help="SD-VAE diffusers folder (latent models)")
        sp.add_argument("--device", default="cpu")
        sp.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
        sp.add_argument("--allow-pickle", action="store_true",
                        help="read a trusted pickled checkpoint without weights_only")

    def params(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--steps", type=int, help="sampler steps (multi-step models)")
        sp.add_argument("--cfg", type=float, help="classifier-free guidance scale")
        sp.add_argument("--sampler", choices=["adam2", "euler"], help="sampler (multi-step models)")
        sp.add_argument("--seed", type=int, help="seed of the starting noise")
        sp.add_argument("--entropy-backend", choices=["reference", "triton", "cpp"],
                        help="SODEC: backend of the integer entropy parameters (same bytes on every one)")

    c = sub.add_parser("compress", help="images (files or folders) -> .codf streams")
    c.add_argument("inputs", nargs="+", type=Path)
    c.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    c.add_argument("--official", nargs="?", const="auto", choices=["auto", "cod", "cod_lite"],
                   help="write official .cod files instead of .codf, in the given writer's layout "
                        "(auto: the layout of the model family's official writer)")
    model_args(c, required=False)
    params(c)
    c.add_argument("--quality", type=float,
                   help="rate level of the default model, 0..4 (default 3; higher = more bits)")

    d = sub.add_parser("decompress", help=".codf (or official .cod) files or folders -> PNG images")
    d.add_argument("inputs", nargs="+", type=Path)
    d.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    d.add_argument("--layout", choices=["cod", "cod_lite"],
                   help="layout of official .cod inputs, i.e. which official writer made them "
                        "(default: the model family's)")
    model_args(d, required=False)
    params(d)

    m = sub.add_parser("demo", help="compress and decompress a bundled image with the default model, "
                                    "write the result and print bpp, PSNR, MS-SSIM and times")
    m.add_argument("--image", type=Path, help="image to use instead of the bundled one")
    m.add_argument("--out", type=Path, default=Path("cod_fast_demo"), help="output folder (default ./cod_fast_demo)")
    m.add_argument("--quality", type=float, default=3.0, help="rate level 0..4 (default 3)")
    m.add_argument("--device", default="cpu")

    from .evaluate import add_parser as add_eval_parser  # local: a light module (no torch import)

    add_eval_parser(sub, model_args)
    i = sub.add_parser("info", help="print the header of .codf or official .cod files")
    i.add_argument("inputs", nargs="+", type=Path)
    i.add_argument("--layout", choices=["cod", "cod_lite"], default="cod",
                   help="layout of official .cod inputs")
    return p


def _expand(inputs: Iterable[Path], suffixes: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            files += sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in suffixes)
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"{path} does not exist")
    if not files:
        raise ValueError(f"no input files (looked for {', '.join(suffixes)})")
    return files


def _read_stream(f: Path) -> bytes:
    """A stream file's bytes, refusing files larger than any valid container or .cod file."""
    from .bitstream import MAX_CONTAINER_BYTES
    from .errors import BitstreamError

    size = f.stat().st_size
    if size > MAX_CONTAINER_BYTES:
        raise BitstreamError(f"{f} is {size} bytes, larger than any valid stream")
    return f.read_bytes()


def _progress(files: list[Path], desc: str) -> Iterable[Path]:
    from tqdm import tqdm

    return tqdm(files, desc=desc, unit="img", disable=len(files) < 2, file=sys.stderr)


def _load(args: argparse.Namespace) -> Any:
    from .loading import load_model

    model = args.model
    if model is None and args.checkpoint is None:  # the bundled default model
        if args.vae is not None or args.dtype not in ("float32", "fp32"):
            raise UsageError("the default model runs in float32 and takes no --vae; pass --model for others")
        return load_model(device=args.device)
    if model is not None and Path(model).suffix == ".safetensors" and args.checkpoint is None:
        return load_model(checkpoint=model, device=args.device, dtype=args.dtype, vae=args.vae,
                          allow_pickle=args.allow_pickle)
    from .codecs.sodec import NAMED_MODELS

    if model in NAMED_MODELS and args.checkpoint is None:  # named SODEC models: seeded weights
        return load_model(model, device=args.device, dtype=args.dtype)
    if model is not None and Path(model).suffix in (".pt", ".pth", ".ckpt", ".bin"):
        raise UsageError("--model takes a preset, YAML or .safetensors; give official weights with --checkpoint")
    if args.checkpoint is None:
        raise UsageError("--checkpoint is required with a YAML or preset --model")
    return load_model(model, args.checkpoint, device=args.device, dtype=args.dtype, vae=args.vae,
                      allow_pickle=args.allow_pickle)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("steps", "cfg", "sampler", "seed", "entropy_backend")
            if getattr(args, k) is not None}


def _encode_params(args: argparse.Namespace, codec: Any) -> dict[str, Any]:
    """Encoder settings for ``codec``: ``quality`` for the default model, sampler settings otherwise."""
    from .codecs.default import DefaultCodec

    if isinstance(codec, DefaultCodec):
        if _params(args):
            raise UsageError("--steps/--cfg/--sampler/--seed are for diffusion models, not the default model")
        return {} if args.quality is None else {"quality": args.quality}
    if args.quality is not None:
        raise UsageError("--quality is for the default model; diffusion models have a fixed rate")
    from .codecs.sodec import SodecCodec

    if isinstance(codec, SodecCodec) and set(_params(args)) - {"entropy_backend"}:
        raise UsageError("--steps/--cfg/--sampler/--seed are for multi-step models, not SODEC")
    return _params(args)


def _cmd_compress(args: argparse.Namespace) -> int:
    files = _expand(args.inputs, IMAGE_SUFFIXES)
    codec = _load(args)
    enc_params = _encode_params(args, codec)
    if args.official and not hasattr(codec, "encode_cod"):
        raise UsageError("--official writes GenCodec .cod files: it needs a CoD --model")
    args.output.mkdir(parents=True, exist_ok=True)
    for f in _progress(files, "compress"):
        if args.official:
            data = codec.encode_cod(f, layout=None if args.official == "auto" else args.official)
            (args.output / (f.name + OFFICIAL_SUFFIX)).write_bytes(data)
        else:
            data = codec.encode(f, **enc_params)
            (args.output / (f.name + STREAM_SUFFIX)).write_bytes(data)
    return 0


def _out_name(f: Path) -> str:
    stem = f.name[: -len(f.suffix)] if f.suffix.lower() in (STREAM_SUFFIX, OFFICIAL_SUFFIX) else f.name
    return stem if Path(stem).suffix.lower() == ".png" else stem + ".png"


def _cmd_decompress(args: argparse.Namespace) -> int:
    from . import api
    from .bitstream import MAGIC
    from .image_io import save_image

    files = _expand(args.inputs, (STREAM_SUFFIX, OFFICIAL_SUFFIX))
    codec = _load(args) if args.model is not None else None
    args.output.mkdir(parents=True, exist_ok=True)
    for f in _progress(files, "decompress"):
        data = _read_stream(f)
        if data[:4] == MAGIC:
            img = api.decode(data, codec, **_params(args))
        else:
            if codec is None:
                raise UsageError(f"{f} is an official .cod file: it carries no model id, pass --model")
            img = codec.decode_cod(data, layout=args.layout, **_params(args))
        save_image(img, args.output / _out_name(f))
    return 0


def _info(f: Path, layout: str) -> dict[str, Any]:
    from .bitstream import MAGIC, CodecId, DecodeParams, SectionType, read_container, unpack_indices_section
    from .compat import read_cod

    data = _read_stream(f)
    if data[:4] == MAGIC:
        c = read_container(data)
        try:
            codec = CodecId(c.codec_id).name
        except ValueError:
            codec = f"unknown ({c.codec_id})"
        out: dict[str, Any] = {
            "file": str(f), "format": f"cod_fast container v{c.version}", "codec": codec,
            "fingerprint": c.fingerprint.hex(), "height": c.height, "width": c.width,
            "channels": c.channels, "bytes": len(data),
            "bpp": round(8 * len(data) / (c.height * c.width), 6),
            "sections": {(SectionType(t).name if t in SectionType._value2member_map_ else str(t)): len(p)
                         for t, p in c.sections.items()},
        }
        if SectionType.INDICES in c.sections:
            bits, rows, cols, _ = unpack_indices_section(c.sections[SectionType.INDICES])
            out["indices"] = {"bits": bits, "rows": rows, "cols": cols}
        sodec = c.sections.get(SectionType.SODEC_PARAMS, b"")
        if len(sodec) == 9:  # u8 flags, u16 z rows, u16 z cols, u32 anchor bytes (codecs/sodec.py)
            flags, zh, zw, anchor = struct.unpack("<BHHI", sodec)
            out["sodec_params"] = {"checkerboard": bool(flags & 1), "z_rows": zh, "z_cols": zw,
                                   "anchor_bytes": anchor}
        if SectionType.DECODE_PARAMS in c.sections:
            out["decode_params"] = vars(DecodeParams.from_bytes(c.sections[SectionType.DECODE_PARAMS]))
        return out
    cod = read_cod(data, layout=layout)  # type: ignore[arg-type]
    return {"file": str(f), "format": f"official .cod (layout {layout})", "height": cod.height,
            "width": cod.width, "payload_bytes": len(cod.payload), "bytes": len(data)}


def _cmd_info(args: argparse.Namespace) -> int:
    for f in _expand(args.inputs, (STREAM_SUFFIX, OFFICIAL_SUFFIX)):
        print(json.dumps(_info(f, args.layout)))
    return 0


def _cmd_selfcheck(args: argparse.Namespace) -> int:
    import importlib

    from ._ext import availability

    ok = True
    try:
        entropy = importlib.import_module("cod_fast.entropy")
    except ImportError as exc:
        print(f"entropy: not available ({exc})")
    else:
        check = getattr(entropy, "selfcheck", None)
        if check is None:
            print("entropy: no selfcheck in this build")
        else:
            try:
                result = check()
                print("entropy: ok" if result in (None, True) else f"entropy: {result}")
            except Exception as exc:  # a failed check is reported, not raised
                ok = False
                print(f"entropy: FAILED: {type(exc).__name__}: {exc}")
    for name, state in availability().items():
        print(f"{name}: {state}")
    return 0 if ok else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    import time

    import torch

    from .image_io import save_image, to_uint8_chw
    from .loading import load_model
    from .metrics import ms_ssim, psnr

    src = args.image if args.image is not None else DEMO_IMAGE
    img = to_uint8_chw(src)
    _, h, w = img.shape
    t0 = time.perf_counter()
    codec = load_model(device=args.device)
    t1 = time.perf_counter()
    data = codec.encode(img, quality=args.quality)
    t2 = time.perf_counter()
    rec = codec.decode(data)
    t3 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = Path(src).stem
    (args.out / (stem + STREAM_SUFFIX)).write_bytes(data)
    save_image(rec, args.out / (stem + "_decoded.png"))
    save_image(torch.cat([img, rec], dim=2), args.out / (stem + "_side_by_side.png"))
    print(f"image: {src} ({w}x{h})")
    print(f"quality: {args.quality:g}  bytes: {len(data)}  bpp: {8 * len(data) / (h * w):.4f}")
    print(f"PSNR: {psnr(img, rec):.2f} dB  MS-SSIM: {ms_ssim(img, rec):.4f}")
    print(f"load: {t1 - t0:.2f} s  encode: {t2 - t1:.2f} s  decode: {t3 - t2:.2f} s")
    print(f"wrote {args.out / (stem + '_decoded.png')} and {args.out / (stem + '_side_by_side.png')} "
          "(left: original, right: decoded)")
    return 0


#: The bundled demo image (CC-BY-4.0, see cod_fast/data/README.md).
DEMO_IMAGE = Path(__file__).resolve().parent / "data" / "picosdeeuropa_512x384.png"


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import run_cli  # local: import time

    return run_cli(args, _load(args))


_COMMANDS = {"compress": _cmd_compress, "decompress": _cmd_decompress, "info": _cmd_info,
             "selfcheck": _cmd_selfcheck, "demo": _cmd_demo, "eval": _cmd_eval}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        return _COMMANDS[args.command](args)
    except UsageError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"cod-fast: usage error: {exc}", file=sys.stderr)
        return 2
    except (Exception, KeyboardInterrupt) as exc:
        if args.debug:
            traceback.print_exc()
        else:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"cod-fast: error: {type(exc).__name__}: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
