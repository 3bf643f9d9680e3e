"""Tiny codecs, test images and "decoded integers" accessors shared by the determinism tests and
``tools/determinism_check.py`` (issue 13 item 3).

Each codec here has integers that a decoder or an encoder decides:

- SODEC (``sodec-tiny``, ``sodec-tiny-checkerboard``): the rANS symbols (z symbols, y_hat), whose
  entropy parameters come from the integer spec;
- DiffC: per-step KL budgets and chunk indices (read from the stream by the decoder; chosen by
  the encoder from float network outputs);
- CoD pixel / one-step / CoD-Lite: the VQ condition indices (read from the stream by the decoder;
  chosen at encode time by the float condition encoder's nearest-codebook search).
"""
from __future__ import annotations

import copy
import hashlib
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:  # fresh subprocesses import this file by path
    sys.path.insert(0, str(_TESTS))

import tiny_models  # noqa: E402

#: Thread counts of the matrix: 1, 2 and this machine's core count (deduplicated, in order).
THREADS: tuple[int, ...] = tuple(dict.fromkeys((1, 2, os.cpu_count() or 1)))

#: Encode settings that keep the tiny CoD / DiffC decodes short.
COD_PARAMS: dict[str, dict[str, Any]] = {"cod-pixel": {"steps": 2}, "cod-one-step": {}, "cod-lite": {}}
DIFFC_KW: dict[str, Any] = {"steps": 4, "seed": 3}


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``; the previous count is restored."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def image(height: int, width: int, seed: int) -> torch.Tensor:
    """A seeded uint8 [3, H, W]: gradients plus noise (smooth enough to be an image, noisy enough
    to spread the VQ choices and the rANS symbols)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    base = torch.stack([xx, yy, (xx + yy) / 2]) * 200 + 20
    return (base + torch.randint(-40, 41, (3, height, width), generator=g)).clamp(0, 255).to(torch.uint8)


def _cod(config: dict[str, Any], seed: int):
    from cod_fast.loading import load_model

    sd = tiny_models.seeded_state_dict(config, seed)
    return load_model(copy.deepcopy(config), {"ema_denoiser." + k: v for k, v in sd.items()})


def build(name: str) -> Any:
    """The tiny codec ``name`` (see :data:`CODECS`), CPU float32."""
    from cod_fast.loading import load_model

    if name.startswith("sodec"):
        return load_model(name)
    if name == "cod-pixel":
        return _cod(tiny_models.TINY_PIXEL, 1)
    if name == "cod-one-step":
        return _cod(tiny_models.TINY_ONE_STEP, 2)
    if name == "cod-lite":
        return _cod(tiny_models.TINY_LITE, 3)
    if name.startswith("diffc"):
        from cod_fast.codecs.diffc import DiffCCodec

        return DiffCCodec(tiny_models.pixel_codec(), backend="cpp" if _has_cpp() else "reference")
    raise ValueError(f"unknown codec {name!r}")


CODECS = ("sodec-tiny", "sodec-tiny-checkerboard", "cod-pixel", "cod-one-step", "cod-lite", "diffc-cond",
          "diffc-base-zipf")


def _has_cpp() -> bool:
    from cod_fast import _ext

    return _ext.availability().get("_C") == "ok"


def encode(name: str, codec: Any, img: torch.Tensor, backend: str | None = None) -> bytes:
    """Encode ``img`` with the tiny settings of ``name``; ``backend`` picks the SODEC entropy or
    the DiffC rcc backend (None: the codec's default)."""
    if name.startswith("sodec"):
        return codec.encode(img, entropy_backend=backend or "reference")
    if name.startswith("diffc"):
        variant = "base" if "base" in name else "cond"
        coding = "zipf" if "zipf" in name else "raw"
        with _rcc_backend(codec, backend):
            return codec.encode(img, variant=variant, index_coding=coding, **DIFFC_KW)
    return codec.encode(img, **COD_PARAMS[name])


@contextmanager
def _rcc_backend(codec: Any, backend: str | None) -> Iterator[None]:
    old = codec.backend
    codec.backend = backend or old
    try:
        yield
    finally:
        codec.backend = old


def decoded_integers(name: str, codec: Any, data: bytes, backend: str | None = None) -> bytes:
    """What the decoder decides or reads, as bytes to compare exactly.

    SODEC: the z symbols and y_hat (symbols + integer means on their grid) of ``decode_latents``.
    DiffC: budgets, chunk indices (stream-given) and the rcc samples they regenerate (bit-exact
    by design, float32). CoD: the packed VQ indices (stream-given).
    """
    if name.startswith("sodec"):
        _, y_hat, z_sym = codec.decode_latents(data, backend or "reference")
        return z_sym.numpy().tobytes() + y_hat.numpy().tobytes()
    if name.startswith("diffc"):
        with _rcc_backend(codec, backend):
            trace, _ = codec.decode_trace(data, denoise=False)
        out = [repr(trace.kl_q).encode()]
        out += [i.numpy().tobytes() for i in trace.indices] + [s.numpy().tobytes() for s in trace.samples]
        return b"".join(out)
    _, packed, _ = codec.parse(data)
    return bytes(packed)


def backends(name: str) -> tuple[str, ...]:
    """Backends of the integer path of ``name`` that run on this machine (in-process):
    SODEC entropy parameters reference / cpp; DiffC rcc reference / cpp. CoD has no integer
    backend (the VQ is plain torch). Triton runs in a subprocess (interpreter mode here)."""
    if name.startswith("sodec") or name.startswith("diffc"):
        return ("reference", "cpp") if _has_cpp() else ("reference",)
    return ()


def digest(b: bytes) -> str:
    """Short SHA-256 of ``b`` for tables and messages."""
    return hashlib.sha256(b).hexdigest()[:12]


def vq_margins(codec: Any, img: torch.Tensor) -> torch.Tensor:
    """``img``: uint8 [3, H, W] or float [1, 3, H, W] in [0, 1]. Per-token relative gap ``(d2 - d1) / d1`` between the nearest and second-nearest codebook
    entries (float64 recomputation of the float32 encoder output) of a CoD codec's condition
    encoder on ``img``: a float32 rounding change can flip a token only where this is tiny."""
    from cod_fast.image_io import pad_to_multiple, uint8_to_unit

    emb = codec.net.y_embedder
    x = pad_to_multiple(uint8_to_unit(img), codec.stride) if img.dtype == torch.uint8 else img
    with torch.inference_mode():
        z = emb.encoder(x.to(codec.dtype))
        zf = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).double()
        e = emb.bottleneck.embedding.weight.double()
        d = torch.cdist(zf, e).square()
        top = d.topk(2, dim=1, largest=False).values
        return (top[:, 1] - top[:, 0]) / top[:, 0].clamp_min(1e-300)


def for_each_thread_count(fn: Callable[[int], Any], threads: tuple[int, ...] = THREADS) -> dict[int, Any]:
    """``{t: fn(t)}`` with ``fn`` run under ``t`` torch threads."""
    out = {}
    for t in threads:
        with torch_threads(t):
            out[t] = fn(t)
    return out
