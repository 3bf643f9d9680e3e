"""Determinism matrix at real sizes (issue 13 item 3): torch threads x processes x backends.

For every codec with integers that the encoder or decoder decides -- the default model (release 4)
and sodec-tiny on Kodak crops of 768x512, the tiny CoD codecs (pixel, one-step, Lite) at 256x256
and tiny DiffC at 128x128 -- this

1. encodes each image with torch threads 1, 2 and the core count (main process) and counts the
   distinct streams ("enc": 1 = byte-identical);
2. decodes every one of those streams at every thread count and checks that a stream gives the
   same integers wherever it is decoded ("dec"), with each entropy / rcc backend built here
   ("backends": reference, cpp; the Triton kernels are checked in Triton's CPU interpreter by
   tests/determinism and tests/models/default, too slow for these sizes);
3. decodes them in ``DataLoader(num_workers=2)`` workers (one torch thread each): same integers
   ("workers");
4. for the CoD codecs, records the VQ tokens whose index changed between thread counts
   ("vq flips") and the smallest relative nearest/second-nearest margin ("min margin").

Integers: default = y and z symbols; SODEC = z symbols and y_hat; DiffC = budgets, chunk indices
and the rcc samples; CoD = the VQ indices. Prints a markdown table (docs/bitstream.md,
"Determinism").

    nice python tools/determinism_check.py [--data DIR] [--images kodim01.png ...]
        [--codecs default,sodec-tiny,...] [--threads 1,2,N]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "determinism"))

import det_codecs as D  # noqa: E402
import torch  # noqa: E402

ALL = ("default", "sodec-tiny", "sodec-tiny-checkerboard", "cod-pixel", "cod-one-step", "cod-lite", "diffc-cond",
       "diffc-base-zipf")
SIZES = {"default": (512, 768), "sodec": (512, 768), "cod": (256, 256), "diffc": (128, 128)}


def _data_dir() -> Path:
    for base in (REPO, *REPO.parents):
        p = base / "shared" / "data" / "kodak"
        if p.is_dir():
            return p
    return REPO / "shared" / "data" / "kodak"


def _size(name: str) -> tuple[int, int]:
    return SIZES[name.split("-")[0]]


def _build(name: str) -> Any:
    if name == "default":
        from cod_fast.codecs.default import load_default_codec

        return load_default_codec()
    return D.build(name)


def _backends(name: str, codec: Any) -> tuple[str, ...]:
    if name == "default":
        return ("reference", "cpp") if D._has_cpp() else ("reference",)
    return D.backends(name)


def _encode(name: str, codec: Any, img: torch.Tensor) -> bytes:
    if name == "default":
        return codec.encode(img, quality=2.0)
    if name.startswith("diffc"):  # the reference rcc encoder is too slow at this size
        return D.encode(name, codec, img, D.backends(name)[-1])
    return D.encode(name, codec, img)


def _ints(name: str, codec: Any, data: bytes, backend: str | None = None) -> bytes:
    if name == "default":
        old = codec.entropy_backend
        codec.entropy_backend = backend or old
        try:
            y, z = codec.decode_symbols(data)
        finally:
            codec.entropy_backend = old
        return y.numpy().tobytes() + z.numpy().tobytes()
    return D.decoded_integers(name, codec, data, backend)


class _Items(torch.utils.data.Dataset):
    def __init__(self, items: list[tuple[str, Any, bytes]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[str, int]:
        name, codec, data = self.items[i]
        return D.digest(_ints(name, codec, data)), torch.get_num_threads()


def _crop(path: Path, h: int, w: int) -> torch.Tensor:
    from cod_fast.image_io import to_uint8_chw

    img = to_uint8_chw(path)
    if img.shape[1] > img.shape[2]:  # portrait Kodak images: turn to landscape
        img = img.transpose(1, 2)
    top, left = (img.shape[1] - h) // 2, (img.shape[2] - w) // 2
    return img[:, top: top + h, left: left + w].contiguous()


def _vq(codec: Any, img: torch.Tensor, threads: tuple[int, ...]) -> tuple[int, float]:
    from cod_fast.image_io import pad_to_multiple, uint8_to_unit

    x = pad_to_multiple(uint8_to_unit(img), codec.stride)
    idx = {}
    for t in threads:
        with D.torch_threads(t), torch.inference_mode():
            idx[t] = codec.net.y_embedder.encode_indices(x)
    flips = sum(int((idx[t] != idx[threads[0]]).sum()) for t in threads[1:])
    return flips, float(D.vq_margins(codec, img).min())


def check(name: str, images: list[Path], threads: tuple[int, ...], workers: int) -> list[dict[str, Any]]:
    """One row per image: see the module docstring."""
    codec = _build(name)
    h, w = _size(name)
    rows, items, want = [], [], []
    for path in images:
        t0 = time.perf_counter()
        img = _crop(path, h, w)
        streams = {}
        for t in threads:
            with D.torch_threads(t):
                streams[t] = _encode(name, codec, img)
        dec_ok = True
        for data in set(streams.values()):
            got = set()
            for t in threads:
                with D.torch_threads(t):
                    got.add(_ints(name, codec, data))
            dec_ok &= len(got) == 1
        data = streams[threads[0]]
        with D.torch_threads(threads[-1]):
            ref = _ints(name, codec, data)
            back = {b: _ints(name, codec, data, b) for b in _backends(name, codec)}
        items.append((name, codec, data))
        want.append(D.digest(ref))
        row = {"codec": name, "image": path.stem, "size": f"{w}x{h}", "bytes": len(data),
               "enc": len(set(streams.values())), "dec": dec_ok,
               "backends": ("/".join(back) + (" =" if len(set(back.values())) == 1 else " DIFFER")) if back else "n/a",
               "vq flips": "", "min margin": "", "s": 0.0}
        if name.startswith("cod"):
            flips, margin = _vq(codec, img, threads)
            row["vq flips"], row["min margin"] = str(flips), f"{margin:.1e}"
        row["s"] = time.perf_counter() - t0
        rows.append(row)
    loader = torch.utils.data.DataLoader(_Items(items), batch_size=None, num_workers=workers)
    for row, w_digest, (digest, wt) in zip(rows, want, loader):
        row["workers"] = f"{'=' if digest == w_digest else 'DIFFER'} ({workers}x{wt} thr)"
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=_data_dir())
    ap.add_argument("--images", nargs="*", default=["kodim01.png", "kodim23.png"])
    ap.add_argument("--codecs", default=",".join(ALL))
    ap.add_argument("--threads", default=",".join(map(str, D.THREADS)))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    threads = tuple(dict.fromkeys(int(t) for t in args.threads.split(",")))
    images = [args.data / n for n in args.images]
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise SystemExit(f"missing images: {missing} (pass --data DIR)")
    cols = ["codec", "image", "size", "bytes", "enc", "dec", "backends", "workers", "vq flips", "min margin", "s"]
    print(f"torch {torch.__version__}, threads {threads}, cpu_count {os.cpu_count()}")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    ok = True
    for name in args.codecs.split(","):
        for row in check(name, images, threads, args.workers):
            ok &= row["dec"] and "DIFFER" not in row["backends"] + row["workers"]
            row["dec"] = "=" if row["dec"] else "DIFFER"
            row["s"] = f"{row['s']:.0f}"
            print("| " + " | ".join(str(row[c]) for c in cols) + " |", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
