"""``cod-fast`` command line: compress / decompress / info over files and folders, selfcheck,
``models`` (the names ``--model`` takes) and ``demo`` (a round trip of a bundled image through the
bundled default model).

Batches are safe to rerun and to interrupt:

* an existing output file is never replaced unless ``--overwrite`` (``--skip-existing`` skips
  it); without either the run is refused before anything is written. An output that is one of
  the run's inputs is always refused.
* each output is written to a temporary file in its folder and renamed into place, so a file is
  either complete or absent; Ctrl-C removes the temporary file and exits with 130.
* output names: a file argument keeps its name, a folder argument its files' paths relative to
  the folder (``--recursive`` descends into subfolders). File arguments with the same name keep
  their paths relative to their common folder (``a/x.png b/x.png`` -> ``out/a/x.png.codf``,
  ``out/b/x.png.codf``); two inputs that would still write the same file refuse the run.
* a file that fails is reported on stderr and the batch goes on; a summary line follows (files,
  bytes, mean bpp, failures, time) and the exit code is 1 when any file failed.

Exit codes: 0 success, 2 usage error (argparse, or a flag the model or stream does not take),
1 bad input or a failed check (one-line error on stderr; ``--debug`` shows the traceback
instead), 130 interrupted (SIGINT).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ._version import __version__

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
STREAM_SUFFIX = ".codf"  # our container
OFFICIAL_SUFFIX = ".cod"  # GenCodec's files


class UsageError(Exception):
    """Bad combination of arguments (exit code 2)."""


class ExistingOutputError(Exception):
    """An output file exists and neither --overwrite nor --skip-existing was given (exit code 1)."""


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

    def batch_args(sp: argparse.ArgumentParser) -> None:
        g = sp.add_mutually_exclusive_group()
        g.add_argument("--overwrite", action="store_true", help="replace existing output files")
        g.add_argument("--skip-existing", action="store_true",
                       help="leave existing output files alone and skip their inputs")
        sp.add_argument("--recursive", "-r", action="store_true",
                        help="descend into subfolders of folder inputs (outputs keep the subfolders)")
        sp.add_argument("--max-memory", metavar="SIZE",
                        help="refuse images whose estimated peak memory exceeds SIZE (e.g. 4G, 512M; "
                             "default: 80%% of the RAM, 90%% of the GPU's free memory on CUDA)")

    def params(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--steps", type=int, help="sampler steps (multi-step models)")
        sp.add_argument("--cfg", type=float, help="classifier-free guidance scale")
        sp.add_argument("--sampler", choices=["adam2", "euler"], help="sampler (multi-step models)")
        sp.add_argument("--seed", type=int, help="seed of the starting noise")
        sp.add_argument("--entropy-backend", choices=["auto", "reference", "triton", "cpp"],
                        help="SODEC: backend of the integer entropy parameters (same bytes on every one)")

    c = sub.add_parser("compress", help="images (files or folders) -> .codf streams")
    c.add_argument("inputs", nargs="+", type=Path)
    c.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    c.add_argument("--official", nargs="?", const="auto", choices=["auto", "cod", "cod_lite"],
                   help="write official .cod files instead of .codf, in the given writer's layout "
                        "(auto: the layout of the model family's official writer)")
    model_args(c, required=False)
    params(c)
    batch_args(c)
    c.add_argument("--quality", type=float,
                   help="rate level of the default model, 0..4 (default 3; higher = more bits)")
    c.add_argument("--refine", type=int,
                   help="default model: steps of encoder-side latent refinement (20: a few percent fewer "
                        "bytes at the same quality, about 0.7 s per step per Kodak image on two cores; default 0)")

    d = sub.add_parser("decompress", help=".codf (or official .cod) files or folders -> PNG images")
    d.add_argument("inputs", nargs="+", type=Path)
    d.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    d.add_argument("--layout", choices=["cod", "cod_lite"],
                   help="layout of official .cod inputs, i.e. which official writer made them "
                        "(default: the model family's)")
    model_args(d, required=False)
    params(d)
    batch_args(d)

    m = sub.add_parser("demo", help="compress and decompress a bundled image with the default model, "
                                    "write the result and print bpp, PSNR, MS-SSIM and times")
    m.add_argument("--image", type=Path, help="image to use instead of the bundled one")
    m.add_argument("--out", type=Path, default=Path("cod_fast_demo"), help="output folder (default ./cod_fast_demo)")
    m.add_argument("--quality", type=float, default=3.0, help="rate level 0..4 (default 3)")
    m.add_argument("--refine", type=int, default=DEMO_REFINE_STEPS,
                   help=f"steps of encoder-side latent refinement (default {DEMO_REFINE_STEPS}: the encoder of "
                        "docs/kodak_refine; 0: the fast encoder, about 50x quicker, about 0.4 dB lower at a few percent fewer bytes)")
    m.add_argument("--device", default="cpu")

    from .evaluate import add_parser as add_eval_parser  # local: a light module (no torch import)

    add_eval_parser(sub, model_args)
    i = sub.add_parser("info", help="print the header of .codf or official .cod files")
    i.add_argument("inputs", nargs="+", type=Path)
    i.add_argument("--layout", choices=["cod", "cod_lite"], default="cod",
                   help="layout of official .cod inputs")
    i.add_argument("--recursive", "-r", action="store_true", help="descend into subfolders of folder inputs")

    sub.add_parser("models", help="list the model names --model takes (presets, named models)")
    return p


def _expand(inputs: Iterable[Path], suffixes: tuple[str, ...], recursive: bool = False) -> list[tuple[Path, Path]]:
    """(input file, output path relative to the output folder, before the new suffix) of every
    input: see the module docstring for the naming rule. ValueError for missing inputs,
    UsageError when two inputs would write the same output."""
    entries: list[tuple[Path, Path]] = []
    direct: list[Path] = []
    seen: set[Path] = set()
    for path in inputs:
        if path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            for f in sorted(f for f in found if f.is_file() and f.suffix.lower() in suffixes):
                if f.resolve() not in seen:
                    seen.add(f.resolve())
                    entries.append((f, f.relative_to(path)))
        elif path.is_file():
            if path.resolve() not in seen:
                seen.add(path.resolve())
                direct.append(path)
        else:
            raise ValueError(f"{path} does not exist")
    by_name: dict[str, list[Path]] = {}
    for f in direct:
        by_name.setdefault(f.name, []).append(f)
    for name, group in by_name.items():
        if len(group) == 1:
            entries.append((group[0], Path(name)))
            continue
        common = Path(os.path.commonpath([str(f.resolve()) for f in group]))
        entries += [(f, f.resolve().relative_to(common)) for f in group]
    if not entries:
        raise ValueError(f"no input files (looked for {', '.join(suffixes)})")
    return entries


def _plan_outputs(entries: list[tuple[Path, Path]], out_dir: Path, name: Callable[[Path], Path],
                  args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """(input, output path) pairs to process: refuses (UsageError) two inputs writing one output
    and outputs that are inputs; existing outputs are skipped (``--skip-existing``), kept for
    replacing (``--overwrite``) or refuse the run (neither) -- all before anything is written."""
    plan = [(src, out_dir / name(rel)) for src, rel in entries]
    writers: dict[Path, Path] = {}
    inputs = {src.resolve() for src, _ in plan}
    for src, dst in plan:
        key = dst.resolve()
        if key in writers:
            raise UsageError(f"{writers[key]} and {src} would both write {dst}; compress them in "
                             "separate runs or into separate folders")
        writers[key] = src
        if key in inputs:
            raise UsageError(f"output {dst} would replace the input {dst}; choose another output folder")
    existing = [dst for _, dst in plan if dst.exists()]
    if existing and not (args.overwrite or args.skip_existing):
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise ExistingOutputError(f"output {existing[0]}{more} exists; pass --overwrite to replace or "
                                  "--skip-existing to keep existing files")
    if args.skip_existing:
        skipped = [(src, dst) for src, dst in plan if dst.exists()]
        for src, dst in skipped:
            print(f"cod-fast: skipping {src}: {dst} exists", file=sys.stderr)
        plan = [(src, dst) for src, dst in plan if not dst.exists()]
    return plan


def _atomic_write(dst: Path, data: bytes, overwrite: bool) -> None:
    """Write ``data`` to ``dst`` through a temporary file in ``dst``'s folder and a rename: ``dst``
    is either absent/unchanged or complete, also when interrupted (the temporary file is removed).
    Without ``overwrite`` an existing ``dst`` (also one created meanwhile) is never replaced."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, dst)
        else:
            try:
                os.link(tmp, dst)  # fails if dst exists: never replaces a file made meanwhile
            except FileExistsError:
                raise ExistingOutputError(f"output {dst} exists (created during the run)") from None
            except OSError:  # a file system without hard links
                if dst.exists():
                    raise ExistingOutputError(f"output {dst} exists (created during the run)") from None
                os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


class _Batch:
    """Counts of a batch run and its summary line."""

    def __init__(self, verb: str, total: int) -> None:
        self.verb, self.total = verb, total
        self.done = self.failed = self.bytes = 0
        self.bpp: list[float] = []
        self.t0 = time.perf_counter()

    def ok(self, stream_bytes: int, height: int, width: int) -> None:
        self.done += 1
        self.bytes += stream_bytes
        self.bpp.append(8 * stream_bytes / (height * width))

    def fail(self, src: Path, exc: BaseException, debug: bool) -> None:
        self.failed += 1
        if debug:
            traceback.print_exc()
        msg = str(exc).splitlines()[0] if str(exc) else ""
        print(f"cod-fast: error: {src}: {type(exc).__name__}: {msg}", file=sys.stderr)

    def summary(self) -> str:
        mean = f"{sum(self.bpp) / len(self.bpp):.4f}" if self.bpp else "-"
        return (f"cod-fast: {self.verb} {self.done} of {self.total} files, {self.bytes} stream bytes, "
                f"mean {mean} bpp, {self.failed} failed, {time.perf_counter() - self.t0:.2f} s")


def _run_batch(batch: _Batch, plan: list[tuple[Path, Path]], work: Callable[[Path, Path], None],
               debug: bool) -> int:
    """Run ``work(src, dst)`` over ``plan``: a failing file is reported and the batch goes on;
    UsageError and KeyboardInterrupt stop it. Prints the summary; 1 when any file failed."""
    for src, dst in _progress(plan, batch.verb):
        try:
            work(src, dst)
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001  (one bad file does not stop the batch)
            batch.fail(src, exc, debug)
    print(batch.summary(), file=sys.stderr)
    return 1 if batch.failed else 0


def _read_stream(f: Path) -> bytes:
    """A stream file's bytes, refusing files larger than any valid container or .cod file."""
    from .bitstream import MAX_CONTAINER_BYTES  # local: import time (the CLI's --help path stays torch-free)
    from .errors import BitstreamError  # local: import time

    size = f.stat().st_size
    if size > MAX_CONTAINER_BYTES:
        raise BitstreamError(f"{f} is {size} bytes, larger than any valid stream")
    return f.read_bytes()


def _progress(files: list[Any], desc: str) -> Iterable[Any]:
    from tqdm import tqdm  # local: import time

    return tqdm(files, desc=desc, unit="img", disable=len(files) < 2, file=sys.stderr)


def _model_list() -> str:
    """The names --model takes, for error messages."""
    from .codecs.sodec import NAMED_MODELS  # local: import time
    from .loading import presets  # local: import time

    return (f"named models: {', '.join(sorted(NAMED_MODELS))}; presets (with --checkpoint): "
            f"{', '.join(sorted(presets()))}; or a YAML/JSON config or .safetensors file "
            "(no --model: the bundled default model; `cod-fast models` lists them)")


def _load(args: argparse.Namespace) -> Any:
    from .loading import load_model  # local: import time

    model = args.model
    if model is None and args.checkpoint is None:  # the bundled default model
        if args.vae is not None or args.dtype not in ("float32", "fp32"):
            raise UsageError("the default model runs in float32 and takes no --vae; pass --model for others")
        return load_model(device=args.device)
    if model is not None and Path(model).suffix == ".safetensors" and args.checkpoint is None:
        return load_model(checkpoint=model, device=args.device, dtype=args.dtype, vae=args.vae,
                          allow_pickle=args.allow_pickle)
    from .codecs.sodec import NAMED_MODELS  # local: import time

    if model in NAMED_MODELS and args.checkpoint is None:  # named SODEC models: seeded weights
        return load_model(model, device=args.device, dtype=args.dtype)
    if model is not None and Path(model).suffix in (".pt", ".pth", ".ckpt", ".bin"):
        raise UsageError("--model takes a preset, YAML or .safetensors; give official weights with --checkpoint")
    if model is not None and not Path(model).exists() and model not in NAMED_MODELS:
        from .loading import presets  # local: import time

        if model not in presets():
            raise UsageError(f"unknown model {model!r}; {_model_list()}")
    if args.checkpoint is None:
        raise UsageError("--checkpoint is required with a YAML or preset --model")
    return load_model(model, args.checkpoint, device=args.device, dtype=args.dtype, vae=args.vae,
                      allow_pickle=args.allow_pickle)


_FLAGS = {"steps": "--steps", "cfg": "--cfg", "sampler": "--sampler", "seed": "--seed",
          "entropy_backend": "--entropy-backend", "quality": "--quality", "refine": "--refine"}
#: The settings only an encoder takes (the default model's rate level and latent refinement).
_ENCODE_ONLY = ("quality", "refine")


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("steps", "cfg", "sampler", "seed", "entropy_backend")
            if getattr(args, k) is not None}


def _takes(codec: Any, role: str) -> tuple[str, frozenset[str]]:
    """(what the codec is, the CLI settings its ``role`` ("encode"/"decode") takes), from the
    codec protocol's ``label`` and ``encode_settings``/``decode_settings`` (``codecs/protocol.py``)."""
    label = getattr(codec, "label", type(codec).__name__)
    takes = getattr(codec, f"{role}_settings", None)
    if takes is None:  # an object outside the protocol: let it see every flag
        takes = frozenset({"steps", "cfg", "sampler", "seed", "entropy_backend"}
                          | (set(_ENCODE_ONLY) if role == "encode" else set()))
    return label, frozenset(takes)


def _settings(args: argparse.Namespace, codec: Any, role: str) -> dict[str, Any]:
    """The CLI settings given for ``codec``; UsageError naming the flags it does not take."""
    given = _params(args)
    if role == "encode":
        given.update({k: getattr(args, k) for k in _ENCODE_ONLY if getattr(args, k, None) is not None})
    what, takes = _takes(codec, role)
    bad = sorted(set(given) - takes)
    if bad:
        verb = "streams" if role == "decode" else "encoding"
        allowed = ", ".join(_FLAGS[k] for k in sorted(takes)) or "none of the model flags"
        raise UsageError(f"{', '.join(_FLAGS[k] for k in bad)} do(es) not apply to {what} {verb} "
                         f"(it takes {allowed})")
    return given


def _max_memory(args: argparse.Namespace) -> int | None:
    """--max-memory in bytes (None: the codecs' default budget); UsageError when unreadable."""
    if args.max_memory is None:
        return None
    from .memory import parse_bytes  # local: import time

    try:
        return parse_bytes(args.max_memory)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--max-memory: {exc}") from None


def _stream_hw(data: bytes, layout: str) -> tuple[int, int]:
    """(height, width) a stream (container or .cod in ``layout``) records."""
    from .bitstream import MAGIC, read_header  # local: import time

    if data[:4] == MAGIC:
        h = read_header(data)
        return h.height, h.width
    first, second = struct.unpack_from("<HH", data)
    return (first, second) if layout == "cod" else (second, first)


def _cmd_compress(args: argparse.Namespace) -> int:
    mm = _max_memory(args)
    entries = _expand(args.inputs, IMAGE_SUFFIXES, args.recursive)
    suffix = OFFICIAL_SUFFIX if args.official else STREAM_SUFFIX
    codec = _load(args)  # usage errors (model, flags) come before the output checks
    if args.official and not hasattr(codec, "encode_cod"):
        raise UsageError("--official writes GenCodec .cod files: it needs a CoD --model")
    enc_params = _settings(args, codec, "encode")
    plan = _plan_outputs(entries, args.output, lambda rel: rel.with_name(rel.name + suffix), args)
    layout = None if args.official in (None, "auto") else args.official
    batch = _Batch("compressed", len(plan))

    def work(src: Path, dst: Path) -> None:
        if args.official:
            data = codec.encode_cod(src, layout=layout, max_memory=mm)
            hw = _stream_hw(data, layout or codec.official_layout)
        else:
            data = codec.encode(src, max_memory=mm, **enc_params)
            hw = _stream_hw(data, "cod")
        _atomic_write(dst, data, args.overwrite)
        batch.ok(len(data), *hw)

    return _run_batch(batch, plan, work, args.debug)


def _out_name(rel: Path) -> Path:
    """Output path of a stream's relative path: ``x.png.codf`` -> ``x.png``, ``y.cod`` -> ``y.png``."""
    name = rel.name
    stem = name[: -len(rel.suffix)] if rel.suffix.lower() in (STREAM_SUFFIX, OFFICIAL_SUFFIX) else name
    return rel.with_name(stem if Path(stem).suffix.lower() == ".png" else stem + ".png")


#: Leading bytes of image files that are certainly not streams (for a clearer message).
_IMAGE_MAGICS = {b"\x89PNG\r\n\x1a\n": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF87a": "a GIF image",
                 b"GIF89a": "a GIF image", b"II*\x00": "a TIFF image", b"MM\x00*": "a TIFF image"}


def _plausible_cod(data: bytes, layout: str) -> bool:
    """Whether ``data`` can be an official .cod file of some model geometry (token stride 4..256,
    with or without up2x, 1..16 bits per index): its payload length fits its header's size."""
    from .compat import indices_bytes  # local: import time

    if len(data) <= 4:
        return False
    h, w = _stream_hw(data, layout)
    if h == 0 or w == 0:
        return False
    n = len(data) - 4
    return any(indices_bytes(h, w, ds, up2x, bits) == n
               for ds in (4, 8, 16, 32, 64, 128, 256) for up2x in (True, False) for bits in range(1, 17))


def _check_stream(f: Path, data: bytes, layout: str) -> bool:
    """True for a cod_fast container, False for a plausible official .cod; BitstreamError otherwise."""
    from .bitstream import MAGIC  # local: import time
    from .errors import BitstreamError  # local: import time

    if data[:4] == MAGIC:
        return True
    for magic, what in _IMAGE_MAGICS.items():
        if data.startswith(magic):
            raise BitstreamError(f"{f} is {what}, not a cod_fast container or official .cod file")
    if not _plausible_cod(data, layout):
        raise BitstreamError(f"{f} is neither a cod_fast container (no CODF magic) nor an official .cod "
                             "file (its length does not fit the size in its first 4 bytes)")
    return False


def _cmd_decompress(args: argparse.Namespace) -> int:
    from . import api  # local: import time
    from .image_io import encode_image  # local: import time

    mm = _max_memory(args)
    entries = _expand(args.inputs, (STREAM_SUFFIX, OFFICIAL_SUFFIX), args.recursive)
    plan = _plan_outputs(entries, args.output, _out_name, args)
    given = _load(args) if args.model is not None else None
    layout = args.layout or (given.official_layout if given is not None and hasattr(given, "official_layout")
                             else "cod")
    batch = _Batch("decompressed", len(plan))

    def work(src: Path, dst: Path) -> None:
        data = _read_stream(src)
        if _check_stream(src, data, layout):
            codec = api.codec_for_stream(data, given)
            img = codec.decode(data, max_memory=mm, **_settings(args, codec, "decode"))
        else:
            if given is None:
                raise UsageError(f"{src} is an official .cod file: it carries no model id, pass --model")
            if not hasattr(given, "decode_cod"):
                raise UsageError(f"{src} is an official .cod file: --model must be a CoD model")
            img = given.decode_cod(data, layout=args.layout, max_memory=mm, **_settings(args, given, "decode"))
        _atomic_write(dst, encode_image(img, "PNG"), args.overwrite)
        batch.ok(len(data), int(img.shape[1]), int(img.shape[2]))

    return _run_batch(batch, plan, work, args.debug)


def _info(f: Path, layout: str) -> dict[str, Any]:
    from .bitstream import (  # local: import time
        CodecId,
        DecodeParams,
        SectionType,
        read_container,
        unpack_indices_section,
    )
    from .compat import read_cod  # local: import time

    data = _read_stream(f)
    if _check_stream(f, data, layout):
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
    failed = 0
    for f, _ in _expand(args.inputs, (STREAM_SUFFIX, OFFICIAL_SUFFIX), args.recursive):
        try:
            print(json.dumps(_info(f, args.layout)))
        except Exception as exc:  # noqa: BLE001  (reported; the other files are still described)
            failed += 1
            if args.debug:
                traceback.print_exc()
            msg = str(exc).splitlines()[0] if str(exc) else ""
            print(f"cod-fast: error: {f}: {type(exc).__name__}: {msg}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .codecs.sodec import NAMED_MODELS  # local: import time
    from .loading import presets  # local: import time

    print("default\tthe bundled default model (used when --model is not given)")
    for name in sorted(NAMED_MODELS):
        print(f"{name}\tnamed SODEC model (fixed seeded weights, no checkpoint)")
    for name in sorted(presets()):
        print(f"{name}\tofficial preset (needs --checkpoint)")
    return 0


def _cmd_selfcheck(args: argparse.Namespace) -> int:
    from ._ext import availability  # local: import time

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
    import torch  # local: import time

    from .image_io import save_image, to_uint8_chw  # local: import time
    from .loading import load_model  # local: import time
    from .metrics import ms_ssim, psnr  # local: import time

    src = args.image if args.image is not None else DEMO_IMAGE
    img = to_uint8_chw(src)
    _, h, w = img.shape
    t0 = time.perf_counter()
    codec = load_model(device=args.device)
    t1 = time.perf_counter()
    data = codec.encode(img, quality=args.quality, refine=args.refine)
    t2 = time.perf_counter()
    rec = codec.decode(data)
    t3 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = Path(src).stem
    (args.out / (stem + STREAM_SUFFIX)).write_bytes(data)
    save_image(rec, args.out / (stem + "_decoded.png"))
    save_image(torch.cat([img, rec], dim=2), args.out / (stem + "_side_by_side.png"))
    print(f"model: {codec!r}")
    print(f"image: {src} ({w}x{h})")
    print(f"quality: {args.quality:g}{f'  refine: {args.refine}' if args.refine else ''}  bytes: {len(data)}  bpp: {8 * len(data) / (h * w):.4f}")
    print(f"PSNR: {psnr(img, rec):.2f} dB  MS-SSIM: {ms_ssim(img, rec):.4f}")
    print(f"load: {t1 - t0:.2f} s  encode: {t2 - t1:.2f} s  decode: {t3 - t2:.2f} s")
    print(f"wrote {args.out / (stem + '_decoded.png')} and {args.out / (stem + '_side_by_side.png')} "
          "(left: original, right: decoded)")
    return 0


#: Latent refinement steps of ``cod-fast demo``: the encoder measured on Kodak in docs/kodak_refine.
DEMO_REFINE_STEPS = 20

#: The bundled demo image (CC-BY-4.0, see cod_fast/data/README.md).
DEMO_IMAGE = Path(__file__).resolve().parent / "data" / "picosdeeuropa_512x384.png"


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import run_cli  # local: import time

    return run_cli(args, _load(args))


_COMMANDS = {"compress": _cmd_compress, "decompress": _cmd_decompress, "info": _cmd_info,
             "selfcheck": _cmd_selfcheck, "demo": _cmd_demo, "models": _cmd_models, "eval": _cmd_eval}


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
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print("cod-fast: interrupted (no partial output file was left)", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        else:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"cod-fast: error: {type(exc).__name__}: {msg}", file=sys.stderr)
        return 1

if __name__ == "__main__":
    sys.exit(main())
