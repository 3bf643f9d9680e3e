"""Tiny model configurations and seeded weights: the one copy shared by the tests and the golden
generators (``tools/make_golden.py``, ``tests/diffc/make_diffc_golden.py``,
``tests/models/data/make_sodec_golden.py``).

Import it by plain name (``from tiny_models import ...``): ``tests/`` is on ``sys.path`` under
pytest (``tests/conftest.py`` is a rootdir conftest in a folder without ``__init__.py``, pytest's
default "prepend" import mode puts its folder first); the golden tools insert ``tests/`` themselves.
It lives under ``tests/`` rather than in the package (``cod_fast.testing``) so that test fixtures
are not shipped in the wheel and stay outside the package's layering rules.

Every number here is part of committed golden data (the streams and reference pixels in
``tests/golden``, the official-module outputs in ``tests/models/data``): the configurations, the
seeds, the distributions and the order in which the weights are drawn. Change nothing without
regenerating the goldens (``tests/io/test_golden_reproduce.py`` checks the cheap ones byte for
byte).

Weight generators, by the golden data that pins them:

- :func:`seeded_state_dict` (codec configs: golden streams, I/O, DiffC, batch, determinism tests);
- :func:`fan_in_state_dict`, :func:`build_seeded` (CoD networks vs the official modules,
  ``tests/models/data/cod_golden_*.pt``);
- :func:`shape_state_dict` (CoD-Lite and VAE vs the official modules / diffusers);
- :func:`sodec_state_dict` (SODEC UNet and ViT vs diffusers / timm, ``sodec_golden.json``).
"""
from __future__ import annotations

import copy
import functools
import json
import math
from pathlib import Path
from typing import Any

import torch

TESTS_DIR = Path(__file__).resolve().parent
GOLDEN_DIR = TESTS_DIR / "golden"

# --- codec configurations (what cod_fast.load_model takes) -------------------------------------
# Tiny versions of the official configs: the condition encoder keeps its fixed width (128 base),
# everything else is shrunk. Sizes must be multiples of 32 (ds=32, up2x) after padding.
TINY_PIXEL: dict[str, Any] = {
    "class_path": "cod.models.pixel_dit.PixNerDiT",
    "init_args": dict(in_channels=3, patch_size=16, num_groups=2, hidden_size=64, hidden_size_x=8,
                      num_blocks=2, num_cond_blocks=1, nerf_mlpratio=1, ds=32, codebook_bits=4,
                      up2x=True),
}
TINY_ONE_STEP: dict[str, Any] = {
    "class_path": "downstream.finetuned_one_step_cod.OneStepCoD",
    "init_args": {**TINY_PIXEL["init_args"], "noise_level": 0.0},
}
TINY_LITE: dict[str, Any] = {
    "class_path": "finetuned_one_step_codec.main_stage1.FinetunedOneStepCoD",
    "init_args": dict(pred="x", in_channels=3, patch_size=16, hidden_size_x=8, hidden_size=64,
                      num_blocks=2, num_cond_blocks=1, light=True, up2x=True, ds=32,
                      codebook_bits=4),
}
TINY_DDT: dict[str, Any] = {
    "class_path": "cod.models.latent_dit.DDT",
    "init_args": dict(in_channels=4, patch_size=2, num_groups=2, hidden_size=64, num_blocks=2,
                      num_cond_blocks=1, ds=32, codebook_bits=4, up2x=True),
}
#: diffusers ``AutoencoderKL`` config of the tiny SD-VAE of the latent CoD codec.
TINY_VAE: dict[str, Any] = dict(
    block_out_channels=[32, 32, 32, 32], layers_per_block=1, latent_channels=4, norm_num_groups=32,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    scaling_factor=0.18215)

# --- network init_args of the CoD model goldens (tests/models/data/cod_golden_*.pt) -------------
# Keys exactly as in the official YAMLs; the goldens were produced by the official modules.
PIXEL_NET_ARGS: dict[str, Any] = dict(
    in_channels=3, patch_size=16, num_groups=2, hidden_size_x=16, hidden_size=64,
    num_blocks=3, num_cond_blocks=2, nerf_mlpratio=2, ds=32, codebook_bits=4, up2x=True,
)
LATENT_NET_ARGS: dict[str, Any] = dict(
    in_channels=4, patch_size=2, num_groups=2, hidden_size=64,
    num_blocks=3, num_cond_blocks=2, ds=32, codebook_bits=4, up2x=True,
)
ONE_STEP_NET_ARGS: dict[str, Any] = dict(PIXEL_NET_ARGS, codebook_bits=8, ds=16, noise_level=0.5, pred="v")
#: Codec variants: (ch, codebook_bits, ds, up2x, light); keys/shapes are checked for all of them.
CODEC_VARIANTS: dict[str, dict[str, Any]] = {
    "ds32_up2x": dict(ch=64, codebook_bits=4, ds=32, up2x=True),
    "ds32": dict(ch=64, codebook_bits=4, ds=32, up2x=False),
    "ds32_light": dict(ch=64, codebook_bits=4, ds=32, up2x=True, light=True),
    "ds128_up2x": dict(ch=64, codebook_bits=4, ds=128, up2x=True),
    "ds128": dict(ch=64, codebook_bits=4, ds=128, up2x=False),
    "ds16_up2x": dict(ch=64, codebook_bits=8, ds=16, up2x=True),
    "ds8_up2x": dict(ch=64, codebook_bits=8, ds=8, up2x=True),
    "ds4_up2x": dict(ch=64, codebook_bits=8, ds=4, up2x=True),
}


# --- seeded weights ------------------------------------------------------------------------------
@functools.cache
def _shapes(config_json: str) -> tuple[tuple[str, tuple[int, ...], torch.dtype], ...]:
    """(key, shape, dtype) of the network of a codec config, in sorted key order (built once per
    config; the global RNG is left untouched)."""
    from cod_fast.loading import build_net, parse_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net, _ = build_net(parse_config(json.loads(config_json)))
    return tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(net.state_dict().items()))


def seeded_state_dict(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """Deterministic non-trivial weights for the codec ``config``'s network, drawn in sorted key
    order from one CPU generator: codebook (``embedding``) N(0, 1), norm weights 1 + N(0, 0.05),
    everything else N(0, 0.05); integer buffers zero (drawing nothing). The official inits zero
    some output layers, which would make every decoded image flat. Fresh tensors on every call."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape, dtype in _shapes(json.dumps(config, sort_keys=True)):
        if not dtype.is_floating_point:
            out[name] = torch.zeros(shape, dtype=dtype)
            continue
        r = torch.randn(shape, generator=g, dtype=torch.float32)
        if "embedding" in name:
            v = r
        elif "norm" in name and name.endswith("weight"):
            v = 1 + 0.05 * r
        else:
            v = 0.05 * r
        out[name] = v.to(dtype)
    return out


def fan_in_state_dict(reference: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Random fp32 weights with the keys and shapes of ``reference`` (a state dict), drawn in
    sorted key order: matrices and conv kernels ``N(0, 1/fan_in)``; 1D ``*weight`` (norm gains)
    ``1 + N(0, 0.1^2)``; other 1D tensors (biases) ``N(0, 0.1^2)``; codebooks
    (``embedding.weight``) ``N(0, 1)``. Pins ``tests/models/data/cod_golden_*.pt``."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = {}
    for key in sorted(reference):
        shape = tuple(reference[key].shape)
        noise = torch.randn(shape, generator=gen, dtype=torch.float32)
        if key.endswith("embedding.weight"):
            value = noise
        elif len(shape) >= 2:
            value = noise / math.sqrt(math.prod(shape[1:]))
        elif key.endswith("weight"):
            value = 1.0 + 0.1 * noise
        else:
            value = 0.1 * noise
        out[key] = value
    return out


# (class name, init_args, seed) -> seeded state dict: the same tiny models recur across test files.
_SEEDED_CACHE: dict[tuple[str, str, int], dict[str, torch.Tensor]] = {}


def build_seeded(cls: type[torch.nn.Module], args: dict, seed: int) -> torch.nn.Module:
    """``cls(**args)`` built on the meta device (no random init), materialised on the CPU and
    loaded with :func:`fan_in_state_dict` weights (``strict=True``); returned in eval mode. Each
    call returns a new module that owns its weights."""
    with torch.device("meta"):
        model = cls(**args)
    key = (cls.__name__, repr(sorted(args.items())), seed)
    if key not in _SEEDED_CACHE:
        _SEEDED_CACHE[key] = fan_in_state_dict(model.state_dict(), seed)
    model = model.to_empty(device="cpu")
    model.load_state_dict(_SEEDED_CACHE[key], strict=True)
    return model.eval()


def shape_state_dict(shapes: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    """Deterministic weights from a ``{key: shape}`` listing, keys in sorted order: matrices
    ~ N(0, 1/fan_in), 1D ``*weight`` gains 1 + 0.1 N, everything else 0.05 N. Pins the CoD-Lite
    and VAE goldens (``tests/models/data``, produced by the official modules / diffusers)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in sorted(shapes):
        shape = tuple(shapes[k])
        if k.endswith("weight") and len(shape) >= 2:
            out[k] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        elif k.endswith("weight"):
            out[k] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            out[k] = 0.05 * torch.randn(shape, generator=g)
    return out


def sodec_state_dict(shapes: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    """N(0, 0.3^2) tensors drawn in sorted key order from one CPU generator (SODEC UNet / ViT
    goldens, ``tests/models/data/sodec_golden.json``).

    std 0.3 rather than a realistic init: small weights make the output insensitive to details
    such as the GELU variant (0.1 would hide tanh-vs-erf GELU below fp32 noise; 0.3 shows it 75x
    above).
    """
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shapes[k], generator=g) * 0.3 for k in sorted(shapes)}


def seeded_inputs(seed: int, **shapes: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Named ``N(0, 1)`` fp32 tensors drawn in argument order from a CPU generator seeded with ``seed``."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return {name: torch.randn(shape, generator=gen, dtype=torch.float32) for name, shape in shapes.items()}


def seeded_images(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Smooth-ish images in [0, 1]: a seeded uniform field, ``shape = (B, 3, H, W)``."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.rand(shape, generator=gen, dtype=torch.float32)


# --- checkpoints and codecs ----------------------------------------------------------------------
def official_checkpoint(config: dict[str, Any], seed: int, prefix: str = "ema_denoiser.",
                        nest: str | None = "state_dict") -> dict[str, Any]:
    """An official-style checkpoint dict: :func:`seeded_state_dict` weights under ``prefix`` (plus
    decoy non-EMA copies of three weights under ``denoiser.`` and a non-tensor entry), optionally
    nested under ``nest``."""
    sd = seeded_state_dict(config, seed)
    flat: dict[str, Any] = {prefix + k: v for k, v in sd.items()}
    flat.update({"denoiser." + k: torch.zeros_like(v) for k, v in list(sd.items())[:3]})
    return {nest: flat, "global_step": 7} if nest else flat


def load_seeded(config: dict[str, Any], seed: int, tmp_path_factory: Any, **kw: Any):
    """The codec of ``config`` loaded from an :func:`official_checkpoint` file written under a
    fresh ``tmp_path_factory`` folder (so that it carries a reference)."""
    from cod_fast.loading import load_model

    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save(official_checkpoint(config, seed), path)
    return load_model(copy.deepcopy(config), path, **kw)


def pixel_codec(seed: int = 11):
    """The tiny pixel CoD codec (float32, CPU) with :func:`seeded_state_dict` weights."""
    from cod_fast.loading import load_model

    return load_model(copy.deepcopy(TINY_PIXEL), {"ema_denoiser." + k: v
                                                  for k, v in seeded_state_dict(TINY_PIXEL, seed).items()})


def latent_codec(folder: Path, seed: int = 12):
    """The tiny latent CoD codec with a tiny seeded SD-VAE written under ``folder``."""
    from safetensors.torch import save_file

    from cod_fast.loading import load_model
    from cod_fast.models.vae import AutoencoderKL

    vae_dir = folder / "vae"
    vae_dir.mkdir(parents=True, exist_ok=True)
    (vae_dir / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", **TINY_VAE}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**TINY_VAE)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()},
              str(vae_dir / "diffusion_pytorch_model.safetensors"))
    cfg = {"model": {"latent": True, "denoiser": TINY_DDT,
                     "vae": {"class_path": "cod.models.autoencoder.LatentAE",
                             "init_args": {"weight_path": "stabilityai/sd-vae-ft-ema"}}}}
    ckpt = {"ema_denoiser." + k: v for k, v in seeded_state_dict(TINY_DDT, seed).items()}
    return load_model(cfg, ckpt, vae=vae_dir)


# --- images --------------------------------------------------------------------------------------
def make_image(height: int = 32, width: int = 32) -> torch.Tensor:
    """Deterministic uint8 [3, H, W]: gradients plus a checkerboard (the golden image)."""
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    r = xx * 255 // max(width - 1, 1)
    g = yy * 255 // max(height - 1, 1)
    b = ((xx // 4 + yy // 4) % 2) * 200 + 20
    return torch.stack([r, g, b]).to(torch.uint8)


# --- subprocess checks ---------------------------------------------------------------------------
def run_triton_check(script: str) -> None:
    """Run ``script`` in a fresh Python (Triton's interpreter must be chosen before the kernels are
    decorated; on a CUDA machine ``COD_FAST_TEST_CUDA=1`` asks for the compiled kernels) and
    assert that it exits 0 and prints "identical"."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    if torch.cuda.is_available():
        env["COD_FAST_TEST_CUDA"] = "1"
    r = subprocess.run([sys.executable, "-c", script], check=False, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "identical" in r.stdout, r.stderr[-2000:]


# --- the default model's fixed-point tests -------------------------------------------------------
def small_default_net() -> Any:
    """A tiny ``DefaultCodecModel`` (widths 8, Nz 4, 3 rate levels; seed 0) whose hyper synthesis
    and gains are randomised away from their initial values, so the fixed-point export sees
    non-trivial weights."""
    from cod_fast.models.default.model import DefaultCodecModel, DefaultConfig

    cfg = DefaultConfig(enc=(8, 8, 8), hyper=8, hyper_latent=4, dec=(8, 8, 8, 8), dec_blocks=(1, 1, 1, 1),
                        lambdas=(0.005, 0.01, 0.02), unit_hyper=True)
    torch.manual_seed(0)
    net = DefaultCodecModel(cfg).eval()
    with torch.no_grad():
        for p in net.h_s.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        net.log_gain.copy_(torch.randn_like(net.log_gain) * 0.5)
    return net


@functools.cache
def shipped_plain_codecs() -> tuple[Any, Any]:
    """(release 1, release 2) ``DefaultCodec``s of the shipped float weights with the checkerboard
    context removed (``remove_checkerboard_context``): release 1 codes with the float32 hyper
    synthesis, release 2 with integers exported as ``tools/export_default_int.py`` does (the same
    calibration images). The shipped model is release 4 (layout 3); these keep the two context-free code paths
    (``load_default_codec_from`` of a model without a context, old-release semantics) under test
    at real widths. Registered (``cod_fast.decode`` finds them); cached for the session."""
    import importlib.util

    from cod_fast import registry
    from cod_fast.codecs.default import DefaultCodec, default_fingerprint
    from cod_fast.models.default import load_default_model
    from cod_fast.models.default.integer_params import IntegerEntropyModel, export_integer_params
    from cod_fast.models.default.model import remove_checkerboard_context

    spec = importlib.util.spec_from_file_location("export_default_int",
                                                  TESTS_DIR.parent / "tools" / "export_default_int.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    net = remove_checkerboard_context(load_default_model())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the export tool: the calibration picks power-of-two grids only
    try:
        integer = export_integer_params(net, tool.calibration_z(net))
    finally:
        torch.set_num_threads(threads)
    config = net.cfg.to_dict()
    stored = {k: v.to(torch.float16) for k, v in net.state_dict().items()}
    r1 = DefaultCodec(net, default_fingerprint(config, stored))
    r2 = DefaultCodec(net, default_fingerprint(config, stored, integer.state_dict()),
                      integer=IntegerEntropyModel(integer))
    r1._lock = r2._lock  # they share the model (and its lazily built release-1 tables)
    for c in (r1, r2):
        registry.register(c)
    return r1, r2
