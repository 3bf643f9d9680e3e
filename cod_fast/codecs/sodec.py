"""SODEC as a codec: image <-> container, loading, and the integer entropy parameters.

``entropy_parameters(model, z_hat, backend)`` returns the integer (table index, mean code) of every
y symbol from decoded z symbols, computed by the fixed-point spec of
``cod_fast.int_params`` on the chosen backend ("reference": torch int64 on the
CPU; "cpp": ``cod_fast._C.sodec``; "triton": the kernels of ``cod_fast.kernels.int_entropy_params``).
Every backend returns the same integers, so an encoder on one device and a decoder on another parse
the same stream.

``SodecCodec`` (codec id ``SODEC``) writes: the header with the true image size, then

* ``SODEC_PARAMS`` (9 bytes): u8 flags (bit 0: checkerboard context; other bits 0), u16 z rows,
  u16 z cols (the z grid of the image padded to multiples of the model's stride), u32 anchor bytes
  (checkerboard: length of the anchors' rANS stream at the start of ``HYPERPRIOR_Y``; else 0);
* ``HYPERPRIOR_Y``: the rANS stream of the y symbols (checkerboard: anchors' stream, then the
  non-anchors' stream);
* ``HYPERPRIOR_Z``: the rANS stream of the z symbols.

The parser checks the flags against the model, the z grid against the header's image size, the
pixel count against ``max_pixels`` and the anchor length against the section before decoding any
symbol, so a hostile stream cannot ask for a large allocation.

Checkpoints (``load_sodec``): a dict / ``.safetensors`` / torch file of the ``SODEC`` state dict
(prefixes ``hyperprior.``, ``transform.``, ``fidelity_decoder.``, ``guidance.``, ``unet.``, ``vae.``);
optionally ``integer.*`` (the hyperprior's ``integer_state_dict``, shipped so that decoders never
re-run the float export; derived with ``update()`` when absent) and PEFT LoRA factors of the UNet
(``unet.<module>.lora_A/B[.<adapter>].weight``, merged into the base weights at load with scale
``lora_alpha / rank`` from the config). VAE encoder keys (``vae.encoder.*``, ``vae.quant_conv.*``)
of a full diffusers VAE are ignored. The fingerprint hashes the config and the tensors the decoder
uses as stored (LoRA unmerged) plus the integer state.
"""
from __future__ import annotations

import json
import math
import os
import struct
import threading
from pathlib import Path
from typing import Any, Mapping, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .. import memory, registry
from ..bitstream import (
    DEFAULT_MAX_PIXELS,
    CodecId,
    Container,
    LimitExceededError,
    SectionType,
    canonical_json,
    check_owner,
    compute_fingerprint,
    read_container,
    write_container,
)
from ..checkpoints import (
    METADATA_KEY,
    check_build_size,
    check_config_file_size,
    load_weights_strict,
    parse_dtype,
    read_checkpoint,
)
from ..errors import BitstreamError, ModelFileError
from ..image_io import ImageLike, pad_to_multiple, padded_size, to_uint8_chw, uint8_to_unit, unit_to_uint8
from ..int_params.api import BACKENDS
from ..int_params.api import entropy_parameters as _entropy_parameters
from ..int_params.reference import IntegerEntropyParams
from ..models.sodec.hyperprior import MAX_Z_POSITIONS, SodecHyperprior
from ..models.sodec.lora import merge_lora, split_lora_state_dict
from ..models.sodec.model import MODEL_TAG, SODEC, TINY_SODEC, SodecConfig
from ..portable import ModelRef, PortableCodec, register_loader

__all__ = [
    "BACKENDS",
    "NAMED_MODELS",
    "SodecCodec",
    "entropy_parameters",
    "is_sodec_checkpoint",
    "is_sodec_config",
    "load_named",
    "load_sodec",
    "save_sodec",
    "seeded_state_dict",
]

_PARAMS = struct.Struct("<BHHI")  # flags, z rows, z cols, anchor bytes
_FLAG_CHECKERBOARD = 1
_SECTIONS = {SectionType.SODEC_PARAMS, SectionType.HYPERPRIOR_Y, SectionType.HYPERPRIOR_Z}
_INTEGER_PREFIX = "integer."
_VAE_ENCODER_PREFIXES = ("vae.encoder.", "vae.quant_conv.")


def entropy_parameters(
    model: SodecHyperprior | IntegerEntropyParams, z_hat: torch.Tensor, backend: str = "reference"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indexes, means): int32 CPU tensors [N, M, 4h, 4w] for integer z symbols [N, cz, h, w].

    ``model``: a ``SodecHyperprior`` after ``update()`` or its exported ``IntegerEntropyParams``.
    ``indexes`` select rows of the model's y Gaussian tables; ``means`` are on the grid
    2**-mean_frac_bits. These are the first-pass (hyperprior-only) parameters; with the
    checkerboard context the non-anchors' come from ``int_params.api.context_parameters``.
    Raises TypeError/ValueError for bad arguments, RuntimeError when the model has no integer
    state yet.
    """
    if isinstance(model, SodecHyperprior):
        if model.int_params is None:
            raise RuntimeError("the model has no integer entropy parameters: call model.update()")
        params = model.int_params
    elif isinstance(model, IntegerEntropyParams):
        params = model
    else:
        raise TypeError(f"model must be a SodecHyperprior or IntegerEntropyParams, got {type(model).__name__}")
    return _entropy_parameters(params, z_hat, backend)


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"entropy_backend must be one of {BACKENDS}, got {backend!r}")
    return backend


class SodecCodec(PortableCodec):
    """Codec over a ``SODEC`` model (see the module docstring for the stream).

    Attributes: ``net`` (the model, eval mode, integer state installed), ``fingerprint`` (16 bytes),
    ``device``, ``stride`` (images are padded to it), ``name`` (the named model, or None).
    """

    codec_id = CodecId.SODEC
    label = "SODEC"
    encode_settings = decode_settings = frozenset({"entropy_backend"})
    sections = {
        SectionType.SODEC_PARAMS: "u8 flags (bit 0: checkerboard context), u16 z rows, u16 z cols, u32 anchor bytes",
        SectionType.HYPERPRIOR_Y: "rANS stream(s) of the y symbols (anchors first with checkerboard)",
        SectionType.HYPERPRIOR_Z: "rANS stream of the z symbols",
    }

    @staticmethod
    def describe(c: Container) -> dict[str, Any]:
        """The SODEC_PARAMS fields of container ``c`` (no model needed)."""
        p = c.sections.get(SectionType.SODEC_PARAMS, b"")
        if len(p) != _PARAMS.size:
            return {}
        flags, zh, zw, anchor = _PARAMS.unpack(p)
        return {"sodec_params": {"checkerboard": bool(flags & _FLAG_CHECKERBOARD), "z_rows": zh, "z_cols": zw,
                                 "anchor_bytes": anchor}}

    def __init__(self, net: SODEC, fingerprint: bytes, device: Union[str, torch.device] = "cpu",
                 name: str | None = None) -> None:
        if not isinstance(net, SODEC):
            raise TypeError(f"net must be a SODEC model, got {type(net).__name__}")
        if len(fingerprint) != 16:
            raise ValueError("fingerprint must be 16 bytes")
        if net.hyperprior.int_params is None:
            raise ValueError("the model's hyperprior has no integer state: call net.hyperprior.update()")
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.fingerprint = bytes(fingerprint)
        self.name = name
        self.stride = int(net.stride)
        self._lock = threading.Lock()

    @property
    def fingerprint_hex(self) -> str:
        """The fingerprint as 32 hex digits."""
        return self.fingerprint.hex()

    @property
    def checkerboard(self) -> bool:
        """Whether y is coded in two checkerboard passes."""
        return bool(self.net.cfg.hyperprior.checkerboard)

    def memory_estimate(self, phase: str, height: int, width: int) -> int:
        """Peak activation bytes (``cod_fast.memory``): 2 MiB + 72 B per padded pixel to encode,
        16 MiB + ``48 * vae_ch0`` B/px to decode (the VAE decoder at full resolution). Measured
        with sodec-tiny (``vae_ch0 = 16``) at 256x256 and 384x512, C++ and reference backends:
        encode 4.3-5.9 and 10.5-13.4 MB, decode 49.8-52.7 and 100-114 MB (peak RSS, sampled);
        with the kernel's exact high-water mark (tests/test_memory.py) decode up to 58 and 155 MiB."""
        p = memory.pad(height, self.stride) * memory.pad(width, self.stride)
        if phase == "encode":
            return (2 << 20) + p * 72
        return memory.FIXED_BYTES + p * 48 * int(self.net.cfg.vae.block_out_channels[0])

    def portable_reference(self) -> ModelRef | None:
        """A named model pickles by name (``cod_fast.portable``); other SODEC codecs need the
        reference ``cod_fast.load_model`` records."""
        return ModelRef(kind="named", name=self.name) if self.name in NAMED_MODELS else None

    def __repr__(self) -> str:
        label = f"{self.name}, " if self.name else ""
        return f"SodecCodec({label}fingerprint={self.fingerprint_hex}, device={self.device})"

    # -- encode ----------------------------------------------------------------------------------
    @memory.allocation_guard
    def encode(self, image: ImageLike, entropy_backend: str = "auto", *,
               max_memory: memory.MemoryLike = None) -> bytes:
        """Image (path, PIL, numpy HWC uint8, torch CHW uint8/float [0,1]) -> container bytes.

        ``entropy_backend`` ("auto": C++ when built, else the reference; "reference", "triton",
        "cpp") computes the integer entropy parameters; every backend writes the same bytes.
        """
        backend = _check_backend(entropy_backend)
        img = to_uint8_chw(image)
        _, h, w = img.shape
        memory.check(self, "encode", h, w, max_memory)  # max_memory: see cod_fast.memory
        x = pad_to_multiple(uint8_to_unit(img) * 2.0 - 1.0, self.stride).to(self.device)
        with torch.inference_mode(), self._lock:
            strings, (_, zh, zw) = self.net.hyperprior.compress(x, backend=backend)
        if (zh, zw) != self._z_shape(h, w):  # invariant of the padding policy
            raise RuntimeError(f"model returned z grid {zh}x{zw} for a {h}x{w} image")
        z_bytes, y_strings = strings[0], strings[1:]
        anchor_bytes = len(y_strings[0]) if self.checkerboard else 0
        flags = _FLAG_CHECKERBOARD if self.checkerboard else 0
        sections = {
            SectionType.SODEC_PARAMS: _PARAMS.pack(flags, zh, zw, anchor_bytes),
            SectionType.HYPERPRIOR_Y: b"".join(bytes(s) for s in y_strings),
            SectionType.HYPERPRIOR_Z: bytes(z_bytes),
        }
        return write_container(Container(codec_id=self.codec_id, fingerprint=self.fingerprint,
                                         height=h, width=w, sections=sections))

    # -- decode ----------------------------------------------------------------------------------
    def _z_shape(self, height: int, width: int) -> tuple[int, int]:
        return -(-height // self.stride), -(-width // self.stride)

    def parse(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Container, list[bytes], tuple[int, int]]:
        """Parse and check a stream for this model: (container, [z, y...] rANS strings, z grid).

        BitstreamError for malformed streams (LimitExceededError beyond ``max_pixels``),
        ModelMismatchError for another model or codec.
        """
        c = read_container(data)
        check_owner(c, self.fingerprint, self.codec_id, "SODEC model", _SECTIONS)
        payload = c.section(SectionType.SODEC_PARAMS)
        if len(payload) != _PARAMS.size:
            raise BitstreamError(f"SODEC_PARAMS section must be {_PARAMS.size} bytes, got {len(payload)}")
        flags, zh, zw, anchor_bytes = _PARAMS.unpack(payload)
        if flags & ~_FLAG_CHECKERBOARD:
            raise BitstreamError(f"SODEC_PARAMS flags {flags:#x} set undefined bits")
        if bool(flags & _FLAG_CHECKERBOARD) != self.checkerboard:
            raise BitstreamError("SODEC_PARAMS checkerboard flag disagrees with the model")
        if (zh, zw) != self._z_shape(c.height, c.width):
            raise BitstreamError(f"SODEC_PARAMS z grid {zh}x{zw} does not fit a {c.height}x{c.width} image")
        hp, wp = padded_size(c.height, c.width, self.stride)
        if hp * wp > max_pixels:
            raise LimitExceededError(
                f"image of {c.height}x{c.width} exceeds max_pixels={max_pixels}; pass a larger limit")
        if zh * zw > MAX_Z_POSITIONS:
            raise LimitExceededError(f"z grid {zh}x{zw} exceeds {MAX_Z_POSITIONS} positions")
        y = c.section(SectionType.HYPERPRIOR_Y)
        if self.checkerboard:
            if anchor_bytes > len(y):
                raise BitstreamError(f"SODEC_PARAMS anchor length {anchor_bytes} exceeds HYPERPRIOR_Y ({len(y)} bytes)")
            y_strings = [y[:anchor_bytes], y[anchor_bytes:]]
        else:
            if anchor_bytes != 0:
                raise BitstreamError("SODEC_PARAMS anchor length must be 0 without the checkerboard context")
            y_strings = [y]
        return c, [c.section(SectionType.HYPERPRIOR_Z), *y_strings], (zh, zw)

    @memory.allocation_guard
    def decode_latents(self, data: bytes, entropy_backend: str = "auto",
                       max_pixels: int = DEFAULT_MAX_PIXELS, *, max_memory: memory.MemoryLike = None
                       ) -> tuple[Container, torch.Tensor, torch.Tensor]:
        """(container, y_hat float32 [1, M, h, w], z symbols int32 [1, cz, h/4, w/4]) of a stream,
        on the CPU: the entropy-decoded latents, identical for every backend."""
        backend = _check_backend(entropy_backend)
        c, strings, (zh, zw) = self.parse(data, max_pixels=max_pixels)
        memory.check(self, "decode", c.height, c.width, max_memory)
        try:
            with self._lock:
                y_hat, z_sym = self.net.hyperprior.decompress_latents(strings, (1, zh, zw), backend=backend)
        except BitstreamError:
            raise
        except (ValueError, RuntimeError, IndexError) as exc:  # symbols that do not fit the tables
            if memory.is_allocation_failure(exc):  # not the stream's fault: AllocationError
                raise
            raise BitstreamError(f"cannot decode the entropy-coded sections: {exc}") from None
        return c, y_hat, z_sym

    @memory.allocation_guard
    def decode(self, data: bytes, entropy_backend: str = "auto",
               max_pixels: int = DEFAULT_MAX_PIXELS, *, max_memory: memory.MemoryLike = None) -> torch.Tensor:
        """Container bytes -> ``torch.uint8`` [3, H, W] on the CPU (the true size, cropped).
        ``max_memory``: see ``cod_fast.memory`` (checked before the entropy decoding)."""
        c, y_hat, z_sym = self.decode_latents(data, entropy_backend, max_pixels, max_memory=max_memory)
        with torch.inference_mode(), self._lock:
            out = self.net.decode_latent(y_hat.to(self.device), z_sym.to(self.device, torch.float32))
        img = unit_to_uint8(out[0, :, : c.height, : c.width])  # type: ignore[index]
        return img.to("cpu").contiguous()


# ----------------------------------------------------------------------------------------------
# weights, fingerprint, loading
# ----------------------------------------------------------------------------------------------

#: Gains (x 1/sqrt(fan_in)) of ``seeded_state_dict`` that spread y, z and the scales of a
#: random model over several symbols and table rows (so that tests exercise the coder).
_SEEDED_GAINS = {"hyperprior.g_a.0.weight": 2.0, "hyperprior.g_a.2.weight": 2.0, "hyperprior.g_a.4.weight": 2.0,
                 "hyperprior.g_a.6.weight": 8.0, "hyperprior.h_a.4.weight": 4.0, "hyperprior.h_s.6.weight": 2.0}


def _skeleton(cfg: SodecConfig) -> SODEC:
    """A ``SODEC(cfg)`` whose weights are about to be replaced: built on the meta device for large
    models (no random init of ~1 B weights), on the CPU (fixed seed, global RNG untouched) for
    small ones, where building on meta costs more (a one-off import of torch's meta kernels,
    seconds) than the init."""
    if cfg.unet.block_out_channels[0] >= 128:
        with torch.device("meta"):
            return SODEC(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return SODEC(cfg)


def seeded_state_dict(cfg: SodecConfig, seed: int) -> dict[str, torch.Tensor]:
    """Deterministic float32 weights for ``cfg``, drawn in sorted key order from one CPU
    ``torch.Generator(seed)``: norm weights 1 + N(0, 0.05), 1-D tensors and embeddings N(0, 0.02),
    the z prior's logits -|k|/2 + N(0, 0.3), other weights N(0, 1) * gain / sqrt(fan_in)."""
    shapes = {k: v.shape for k, v in _skeleton(cfg).state_dict().items()}
    g = torch.Generator().manual_seed(int(seed))
    out: dict[str, torch.Tensor] = {}
    for name in sorted(shapes):
        shape = shapes[name]
        r = torch.randn(shape, generator=g, dtype=torch.float32)
        if name.endswith("prior.logits"):
            k = torch.arange(shape[1], dtype=torch.float32) - (shape[1] // 2)
            out[name] = -0.5 * k.abs().repeat(shape[0], 1) + 0.3 * r
        elif len(shape) == 1 and "norm" in name and name.endswith("weight"):
            out[name] = 1.0 + 0.05 * r
        elif len(shape) <= 1 or name.endswith(("pos_embed", "cls_token")):
            out[name] = 0.02 * r
        else:
            out[name] = r * (_SEEDED_GAINS.get(name, 1.0) / math.sqrt(r[0].numel()))
    return out


def _fingerprint(cfg: SodecConfig, stored: Mapping[str, torch.Tensor], integer: Mapping[str, torch.Tensor]) -> bytes:
    hashed = {k: v for k, v in stored.items() if not k.startswith(_INTEGER_PREFIX)}
    hashed.update({_INTEGER_PREFIX + k: v for k, v in integer.items()})
    return compute_fingerprint(cfg.to_dict(), hashed)


def is_sodec_config(config: Any) -> bool:
    """True for a ``SodecConfig``, a dict with ``"model": "sodec"``, or a ``.json`` file holding one."""
    if isinstance(config, SodecConfig):
        return True
    if isinstance(config, Mapping):
        return config.get("model") == MODEL_TAG
    if isinstance(config, (str, os.PathLike)) and Path(config).suffix.lower() == ".json" and Path(config).is_file():
        try:
            data = json.loads(Path(config).read_text(encoding="utf-8"))
        except (ValueError, OSError):
            return False
        return isinstance(data, dict) and data.get("model") == MODEL_TAG
    return False


def is_sodec_checkpoint(checkpoint: Any) -> bool:
    """True for a ``.safetensors`` path whose stored config (``save_sodec``) is a SODEC config."""
    if not isinstance(checkpoint, (str, os.PathLike)) or Path(checkpoint).suffix != ".safetensors":
        return False
    if not Path(checkpoint).is_file():
        return False
    try:
        with safe_open(str(checkpoint), framework="pt") as f:
            meta = f.metadata() or {}
        data = json.loads(meta.get(METADATA_KEY, "null"))
    except (SafetensorError, OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("model") == MODEL_TAG


def _parse_config(config: Any, source: str = "SODEC config") -> SodecConfig:
    """A ``SodecConfig`` from a config, dict or JSON path; errors (``ModelFileError``) name
    ``source`` (or the file). The network it describes is sized on the meta device first and
    refused above ``checkpoints.MAX_NET_ELEMENTS``, before anything is allocated."""
    if isinstance(config, SodecConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        source = f"config {config}"
        check_config_file_size(config, source)
    elif not isinstance(config, Mapping):
        raise TypeError(f"SODEC config must be a SodecConfig, dict or JSON path, got {type(config).__name__}")
    try:
        cfg = SodecConfig.from_dict(dict(config)) if isinstance(config, Mapping) else SodecConfig.from_json(config)
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(f"{source}: not a valid SODEC config: {exc}") from None
    check_build_size(lambda: SODEC(cfg), source)
    return cfg


def _split_checkpoint(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(model weights, integer state, UNet LoRA tensors) of a checkpoint; VAE encoder keys dropped."""
    weights, integer, lora = {}, {}, {}
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise ValueError(f"checkpoint entries must be str -> Tensor, got {k!r}")
        if k.startswith(_VAE_ENCODER_PREFIXES):
            continue
        if k.startswith(_INTEGER_PREFIX):
            integer[k[len(_INTEGER_PREFIX):]] = v
        elif k.startswith("unet.") and ".lora_" in k:
            lora[k] = v
        else:
            weights[k.replace(".base_layer.", ".") if k.startswith("unet.") else k] = v
    return weights, integer, lora


def _build(cfg: SodecConfig, weights: Mapping[str, torch.Tensor], integer: Mapping[str, torch.Tensor],
           lora: Mapping[str, torch.Tensor]) -> tuple[SODEC, dict[str, torch.Tensor]]:
    """The model with ``weights`` (strict), LoRA merged and the integer state installed (or
    derived). Returns (model, integer state)."""
    net = _skeleton(cfg)
    own = net.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = sorted(k for k in set(own) & set(weights) if tuple(own[k].shape) != tuple(weights[k].shape))
    if missing or unexpected or shapes:
        load_weights_strict(net, weights)  # raises ModelMismatchError naming the keys
    net.load_state_dict({k: v.detach().to(torch.float32).clone() for k, v in weights.items()},
                        strict=True, assign=True)
    vit = net.guidance.vit  # non-persistent buffers are not in the state dict: rebuild them
    vit.pixel_mean = torch.tensor(cfg.vit.mean, dtype=torch.float32).view(1, -1, 1, 1)
    vit.pixel_std = torch.tensor(cfg.vit.std, dtype=torch.float32).view(1, -1, 1, 1)
    if lora:
        pairs, _ = split_lora_state_dict(dict(lora))
        ranks = {int(p.A.shape[0]) for p in pairs.values()}
        if cfg.lora_alpha is None:
            raise ValueError("the checkpoint holds UNet LoRA factors but the config gives no lora_alpha")
        if len(ranks) != 1:
            raise ValueError(f"UNet LoRA factors of several ranks {sorted(ranks)}: one rank is supported")
        merge_lora(net.unet, pairs, float(cfg.lora_alpha) / ranks.pop())
    if integer:
        net.hyperprior.load_integer_state(dict(integer))
    else:
        net.hyperprior.update()
    return net.eval(), net.hyperprior.integer_state_dict()


def _cast_decoder(net: SODEC, dtype: torch.dtype) -> None:
    """Run the decoder networks in ``dtype``; the hyperprior (encoder, hyper synthesis) and the
    fidelity guidance (its ViT resizes with antialiased bicubic, which has no bf16 CPU kernel; 10 %
    of the UNet's size) stay float32."""
    for part in (net.transform, net.fidelity_decoder, net.unet, net.vae):
        part.to(dtype)


def load_sodec(config: Any = None, checkpoint: Union[str, os.PathLike, Mapping[str, Any], None] = None,
               device: Union[str, torch.device] = "cpu", dtype: Union[str, torch.dtype] = torch.float32,
               allow_pickle: bool = False, random_init_seed: int | None = None) -> SodecCodec:
    """A registered ``SodecCodec`` from a config (``SodecConfig``, dict or JSON path; optional when a
    ``.safetensors`` of ``save_sodec`` carries it) and a checkpoint (path or dict of tensors), or,
    with no checkpoint, ``seeded_state_dict(config, random_init_seed)``."""
    dt = parse_dtype(dtype)
    cfg = _parse_config(config) if config is not None else None
    if checkpoint is None and random_init_seed is not None and cfg is not None:
        checkpoint = seeded_state_dict(cfg, int(random_init_seed))
    if checkpoint is None:
        raise ValueError("a SODEC checkpoint is required (or random_init_seed=, or a named model "
                         "such as 'sodec-tiny')")
    if isinstance(checkpoint, Mapping):
        state = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
        stored_cfg = None
    else:
        state, stored_cfg = read_checkpoint(checkpoint, allow_pickle=allow_pickle)
    if cfg is None:
        if stored_cfg is None:
            raise ValueError(f"checkpoint {checkpoint} carries no config ({METADATA_KEY}); pass config=")
        cfg = _parse_config(stored_cfg, f"checkpoint {checkpoint}")
    weights, integer, lora = _split_checkpoint(state)
    net, integer_state = _build(cfg, weights, integer, lora)
    fp = _fingerprint(cfg, {**weights, **lora}, integer_state)
    if dt != torch.float32:
        _cast_decoder(net, dt)
    codec = SodecCodec(net, fp, device=device)
    registry.register(codec)
    return codec


def save_sodec(codec: SodecCodec, path: Union[str, os.PathLike]) -> None:
    """Write ``codec.net``'s weights (LoRA merged), its integer state (``integer.*``) and its config
    to a ``.safetensors`` file that ``cod_fast.load_model(checkpoint=path)`` reads alone."""
    p = Path(path)
    if p.suffix != ".safetensors":
        raise ValueError("save_sodec writes .safetensors files")
    sd = {k: v.detach().to("cpu").clone().contiguous() for k, v in codec.net.state_dict().items()}
    sd.update({_INTEGER_PREFIX + k: v.detach().clone().contiguous()
               for k, v in codec.net.hyperprior.integer_state_dict().items()})
    save_file(sd, str(p), metadata={METADATA_KEY: canonical_json(codec.net.cfg.to_dict()).decode("ascii")})


# ----------------------------------------------------------------------------------------------
# named models
# ----------------------------------------------------------------------------------------------

#: Named model -> (config, weight seed). Fixed seeded weights: tests and determinism checks.
NAMED_MODELS: dict[str, tuple[SodecConfig, int]] = {
    "sodec-tiny": (TINY_SODEC, 6),
    "sodec-tiny-checkerboard": (
        SodecConfig.from_dict({**TINY_SODEC.to_dict(),
                               "hyperprior": {**TINY_SODEC.to_dict()["hyperprior"], "checkerboard": True}}),
        7),
}

_named_cache: dict[tuple[str, str], SodecCodec] = {}
_named_lock = threading.Lock()


@register_loader("named")
def _load_reference(ref: ModelRef, device: Any, dtype: Any) -> SodecCodec:
    """Rebuild a pickled named SODEC codec (``cod_fast.portable``) on ``device``."""
    return load_named(str(ref.name), device)


@registry.named_model(*NAMED_MODELS)
def load_named(name: str, device: Union[str, torch.device] = "cpu") -> SodecCodec:
    """The named SODEC model ``name`` (see ``NAMED_MODELS``) on ``device``: built once (CPU,
    float32, weights of ``seeded_state_dict``), cached and registered."""
    if name not in NAMED_MODELS:
        raise ValueError(f"unknown SODEC model {name!r}; named models: {sorted(NAMED_MODELS)}")
    key = (name, str(torch.device(device)))
    with _named_lock:
        codec = _named_cache.get(key)
        if codec is None:
            cfg, seed = NAMED_MODELS[name]
            weights = seeded_state_dict(cfg, seed)
            net, integer_state = _build(cfg, weights, {}, {})
            codec = SodecCodec(net, _fingerprint(cfg, weights, integer_state), device=device, name=name)
            _named_cache[key] = codec
    registry.register(codec)
    return codec
