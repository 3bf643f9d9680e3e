"""``load_model``: official GenCodec configs/checkpoints or our safetensors -> a ready codec.

Configs (``config=``):

* an official YAML path. Three shapes are understood, as the official loaders read them:
  ``model.denoiser`` (``class_path`` + ``init_args``; multi-step CoD / CoD-Lite, weights under
  ``ema_denoiser.``), ``model.net`` (one-step CoD-Lite, weights under ``net.``), and the one-step
  CoD config (``model.init_args`` + top-level ``ckpt_prefix``; class ``OneStepCoD``);
* a preset name from the model packages' presets;
* a dict in any of the YAML shapes, or the flat form ``{"class_path", "init_args"[, "latent",
  "prefix"]}``.

``class_path`` strings are the official ones; they are mapped to our classes through the
``CLASS_PATHS`` dicts of ``cod_fast.models.cod`` and ``cod_fast.models.cod_lite``.

Checkpoints (``checkpoint=``):

* an official pickled checkpoint, read with ``torch.load(weights_only=True)``; the weights may be
  nested under ``module`` or ``state_dict`` (checked in that order, as the official loader does)
  and carry the config's prefix, which is stripped; un-prefixed keys are accepted when no key
  has the prefix;
* our own ``.safetensors`` (``save_model``): un-prefixed keys, and the config in the metadata
  entry ``cod_fast.config`` so that no ``config=`` is needed.

Loading is strict: a missing or unexpected weight, or a shape mismatch, raises
``ModelMismatchError`` naming the first offending keys. The fingerprint is computed over the
config and the checkpoint's tensors before any dtype cast (see ``bitstream.compute_fingerprint``).
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union

import torch
import yaml

from . import codecs
from .bitstream import canonical_json, compute_fingerprint
from .checkpoints import (  # noqa: F401  (re-exported: the names lived here before)
    MAX_CONFIG_BYTES,
    METADATA_KEY,
    PathLike,
    check_build_size,
    check_config_file_size,
    load_weights_strict,
    parse_dtype,
    read_checkpoint,
    unwrap_state,
)
from .codecs import sodec as _sodec
from .codecs.cod import preset_cfg_scale  # noqa: F401  (re-exported: the name lived here before)
from .codecs.default import load_default_codec
from .errors import CodFastError, ModelFileError, ModelMismatchError

_unwrap = unwrap_state  # the old private name


# init_args of the official configs that only matter for training; dropped when our class
# does not take them.
TRAINING_ONLY_ARGS = frozenset({"use_checkpoint", "fix_encoder", "net_ckpt_path", "pretrain_prefix"})

# Prefixes of the official checkpoints: multi-step models (EMA weights), one-step CoD-Lite.
KNOWN_PREFIXES = ("ema_denoiser.", "net.")

# class_path of the official one-step CoD (its YAML gives only model.init_args).
ONE_STEP_COD_CLASS_PATH = "downstream.finetuned_one_step_cod.OneStepCoD"

#: YAML aliases (``*name``) a config may use; official configs use none. Each alias can repeat a
#: whole sub-tree, so a few nested ones describe billions of nodes.
MAX_YAML_ALIASES = 32
#: Nodes (mappings, sequences and scalars, shared sub-trees counted at every use) of a config.
MAX_CONFIG_NODES = 100_000


class _BoundedYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses more than ``MAX_YAML_ALIASES`` aliases."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases (*name)")
        return super().compose_node(parent, index)


def load_yaml(path: PathLike) -> Any:
    """The YAML document of ``path``, bounded: at most ``MAX_CONFIG_BYTES``, ``MAX_YAML_ALIASES``
    aliases and ``MAX_CONFIG_NODES`` nodes once aliases are expanded. ``ModelFileError`` naming
    the file otherwise (or when it is not valid YAML)."""
    p = Path(path)
    check_config_file_size(p, f"config {p}")
    try:
        loader = _BoundedYamlLoader(p.read_text(encoding="utf-8"))
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"config {p} is not valid YAML or is refused: {exc}") from None
    check_config_size(data, f"config {p}")
    return data


def check_config_size(data: Any, source: str, limit: int = MAX_CONFIG_NODES) -> None:
    """``ModelFileError`` naming ``source`` when ``data`` (nested dicts / lists / scalars) has more
    than ``limit`` nodes, counting a shared sub-tree at each place it appears (as hashing or
    copying the config would expand it). Stops counting at the limit."""
    count = 0
    stack = [data]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            raise ModelFileError(f"{source}: the config has more than {limit} entries once its shared "
                                 "parts (YAML aliases) are expanded")
        if isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)


class NoDefaultModelError(CodFastError, ValueError):
    """``load_model()`` was called without a model and none is bundled."""


@dataclass
class ModelSpec:
    """A resolved model description.

    ``class_path``: official class path; ``init_args``: constructor arguments; ``prefix``: key
    prefix of the weights in official checkpoints; ``latent``: SD-VAE latent model;
    ``vae``: the official ``model.vae`` entry (latent models), kept for information.
    """

    class_path: str
    init_args: dict[str, Any]
    prefix: str = "ema_denoiser."
    latent: bool = False
    vae: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def fingerprint_config(self, cls: type) -> dict[str, Any]:
        """The canonical config hashed into the fingerprint: class path, init args with our
        class's defaults applied (so a YAML that omits a default equals one that states it), and
        the latent flag."""
        args = _bind_defaults(cls, self.init_args)
        return {"class_path": self.class_path, "init_args": args, "latent": self.latent}


def _bind_defaults(cls: type, init_args: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(init_args)
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return out
    for name, p in sig.parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name not in out and p.default is not p.empty:
            out[name] = p.default
    return json.loads(canonical_json(out))


# ----------------------------------------------------------------------------------------------
# class registry and presets (owned by the model packages)
# ----------------------------------------------------------------------------------------------

def class_paths() -> dict[str, type]:
    """Official class_path -> our class, merged from the model packages that are importable."""
    out: dict[str, type] = {}
    for mod in ("cod_fast.models.cod", "cod_fast.models.cod_lite"):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        out.update(getattr(m, "CLASS_PATHS", {}))
    return out


def _resolve_class(class_path: str) -> type:
    table = class_paths()
    if class_path in table:
        return table[class_path]
    # the same class name under another module path (e.g. a renamed package) is accepted only
    # when the short name is unambiguous
    short = class_path.rsplit(".", 1)[-1]
    hits = {k: v for k, v in table.items() if k.rsplit(".", 1)[-1] == short}
    if len(hits) == 1:
        return next(iter(hits.values()))
    known = ", ".join(sorted(table)) or "none (model packages not importable)"
    raise ModelMismatchError("", class_path, f"unknown model class_path {class_path!r}; known: {known}")


def presets() -> dict[str, Any]:
    """Preset name -> preset config, merged from the model packages' ``configs.PRESETS``."""
    out: dict[str, Any] = {}
    for mod in ("cod_fast.models.cod.configs", "cod_fast.models.cod_lite.configs"):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        out.update(getattr(m, "PRESETS", {}))
        out.update(getattr(m, "ONE_STEP_PRESETS", {}))
    return out


# ----------------------------------------------------------------------------------------------
# config parsing
# ----------------------------------------------------------------------------------------------

def _preset_to_dict(preset: Any) -> dict[str, Any]:
    if isinstance(preset, Mapping):
        return dict(preset)
    for attr in ("to_config", "to_dict", "as_dict"):
        fn = getattr(preset, attr, None)
        if callable(fn):
            return dict(fn())
    if dataclasses.is_dataclass(preset):
        return dataclasses.asdict(preset)
    raise TypeError(f"cannot read preset of type {type(preset).__name__}")


def parse_config(config: Union[PathLike, Mapping[str, Any]]) -> ModelSpec:
    """Resolve a YAML path, preset name or dict into a ModelSpec (see the module docstring)."""
    if isinstance(config, (str, os.PathLike)):
        p = Path(config)
        if p.suffix.lower() in (".yaml", ".yml") or p.is_file():
            if not p.is_file():
                raise ValueError(f"config file {p} does not exist")
            data = load_yaml(p)
            if not isinstance(data, Mapping):
                raise ModelFileError(f"config {p} does not hold a mapping")
            return _spec_from_dict(data, source=str(p))
        table = presets()
        if str(config) in table:
            spec = _spec_from_dict(_preset_to_dict(table[str(config)]), source=f"preset {config}")
            spec.extra["preset"] = str(config)
            return spec
        raise ValueError(
            f"{config!r} is neither a config file nor a preset; presets: {', '.join(sorted(table)) or 'none'}")
    if isinstance(config, Mapping):
        return _spec_from_dict(config, source="config dict")
    raise TypeError(f"config must be a path, preset name or dict, got {type(config).__name__}")


def _spec_from_dict(data: Mapping[str, Any], source: str) -> ModelSpec:
    check_config_size(data, source)  # before anything walks it: shared sub-trees expand when hashed
    data = copy.deepcopy(dict(data))
    model = data.get("model")
    if isinstance(model, Mapping):
        latent = bool(model.get("latent", False))
        vae = model.get("vae")
        if isinstance(model.get("denoiser"), Mapping):
            entry, prefix = model["denoiser"], "ema_denoiser."
        elif isinstance(model.get("net"), Mapping):
            entry, prefix = model["net"], "net."
        elif isinstance(model.get("init_args"), Mapping):  # official one-step CoD config
            entry = {"class_path": model.get("class_path", ONE_STEP_COD_CLASS_PATH),
                     "init_args": model["init_args"]}
            prefix = data.get("ckpt_prefix", "")
        else:
            raise ModelFileError(f"{source}: model section has none of denoiser / net / init_args")
        if "ckpt_prefix" in data:
            prefix = data["ckpt_prefix"]
    else:
        entry, vae = data, data.get("vae")
        latent = bool(data.get("latent", str(data.get("class_path", "")).endswith("latent_dit.DDT")))
        default_prefix = "net." if str(data.get("class_path", "")).startswith("finetuned_one_step_codec.") else "ema_denoiser."
        prefix = data.get("prefix", default_prefix)
    if not isinstance(entry.get("class_path"), str):
        raise ModelFileError(f"{source}: no class_path string")
    init_args = entry.get("init_args") or {}
    if not isinstance(init_args, Mapping):
        raise ModelFileError(f"{source}: init_args must be a mapping")
    if not isinstance(prefix, str):
        raise ModelFileError(f"{source}: checkpoint prefix must be a string")
    return ModelSpec(class_path=entry["class_path"], init_args=dict(init_args), prefix=prefix,
                     latent=latent, vae=dict(vae) if isinstance(vae, Mapping) else None,
                     extra={"source": source})


def build_net(spec: ModelSpec) -> tuple[torch.nn.Module, type]:
    """Instantiate our mirror of ``spec.class_path`` with ``spec.init_args`` (training-only
    arguments our class does not take are dropped; other unknown arguments are an error).

    The network is first built on the meta device and refused (``ModelFileError`` naming the
    config's source) when it would hold more than ``checkpoints.MAX_NET_ELEMENTS`` parameters and
    buffers, so that a hostile config cannot make the real build allocate without bound."""
    cls = _resolve_class(spec.class_path)
    sig = inspect.signature(cls.__init__)
    takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    args = {}
    for k, v in spec.init_args.items():
        if k == "net_ckpt_path":
            continue  # never load weights from a path named inside a config: checkpoint= does that
        if k in sig.parameters or takes_kwargs:
            args[k] = v
        elif k not in TRAINING_ONLY_ARGS:
            raise ModelFileError(f"{spec.extra.get('source', 'config')}: {cls.__name__} does not take the "
                                 f"argument {k!r} given in the config")
    source = spec.extra.get("source", "config")
    try:
        check_build_size(lambda: cls(**args), source)  # counted on the meta device first
        net = cls(**args)
    except ModelFileError:
        raise
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{source}: cannot build {cls.__name__} from the config: {exc}") from None
    return net, cls


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------

def select_weights(state: Mapping[str, torch.Tensor], prefix: str,
                   model_keys: set[str]) -> dict[str, torch.Tensor]:
    """Weights for the model: the keys under ``prefix`` with it stripped; if no key has the
    prefix, the keys as they are (our own files). Raises ModelMismatchError when nothing fits."""
    if prefix:
        picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if picked:
            return picked
    if model_keys & set(state):
        return dict(state)
    # the config named no prefix (or another one): try the official ones, first that fits
    for other in KNOWN_PREFIXES:
        picked = {k[len(other):]: v for k, v in state.items() if k.startswith(other)}
        if model_keys & set(picked):
            return picked
    tops = sorted({k.split(".", 1)[0] + "." for k in state})[:8]
    raise ModelMismatchError(
        "", "", f"checkpoint has no weights under the prefix {prefix!r} and none of the model's "
        f"keys; its top-level prefixes are {tops}")


# ----------------------------------------------------------------------------------------------
# public entry points
# ----------------------------------------------------------------------------------------------

def load_model(config: Union[PathLike, Mapping[str, Any], None] = None,
               checkpoint: Union[PathLike, Mapping[str, Any], None] = None, device: Union[str, torch.device] = "cpu",
               dtype: Union[str, torch.dtype] = torch.float32, *, vae: PathLike | None = None,
               allow_pickle: bool = False, random_init_seed: int | None = None) -> Any:
    """Load a model and wrap it in its codec (``CoDCodec`` or ``OneStepCoDCodec``).

    Args:
        config: official YAML path, preset name or dict (optional with our safetensors).
        checkpoint: official pickled checkpoint or our ``.safetensors`` (a path), or a dict of
            tensors in memory (same nesting and prefix rules).
        device, dtype: where and in which float dtype the networks run.
        vae: diffusers-format SD-VAE folder (``config.json`` + weights; latent CoD only).
        allow_pickle: read a pickled checkpoint with ``weights_only=False`` (trusted files only).
        random_init_seed: with no checkpoint, build the model with weights from
            ``torch.manual_seed(random_init_seed)`` (tests and benchmarks); without it a
            checkpoint is required.

    With no config and no checkpoint, returns the bundled default model's ``DefaultCodec``
    (``cod_fast.codecs.default``; cached, registered).
    SODEC (``cod_fast.codecs.sodec``): a named model ("sodec-tiny", "sodec-tiny-checkerboard"), a
    config with ``"model": "sodec"`` (dict or ``.json``) with a checkpoint, or a ``.safetensors``
    written by ``save_sodec`` give a ``SodecCodec``.

    Returns a codec with ``.net``, ``.encode(image) -> bytes``, ``.decode(data) -> uint8 [3,H,W]``
    and ``.fingerprint`` (16 bytes); the codec is registered for ``cod_fast.decode``.
    """
    dt = parse_dtype(dtype)
    sodec = _load_sodec(config, checkpoint, device, dt, vae, allow_pickle, random_init_seed)
    if sodec is not None:
        return sodec
    if config is None and checkpoint is None and random_init_seed is None:
        if vae is not None or dt != torch.float32:
            raise ValueError("the bundled default model runs in float32 and takes no vae=")
        return load_default_codec(device)  # cached per device and registered
    if config is None and checkpoint is None:
        raise NoDefaultModelError(
            "random_init_seed= needs a config (YAML, preset or dict): the bundled default model "
            "has trained weights only")
    stored_cfg = None
    state = None
    spec = parse_config(config) if config is not None else None  # cheap checks first
    if isinstance(checkpoint, Mapping):  # weights already in memory (same nesting/prefix rules)
        state = _unwrap(checkpoint, "checkpoint dict")
    elif checkpoint is not None:
        state, stored_cfg = read_checkpoint(checkpoint, allow_pickle=allow_pickle)
    if spec is None and stored_cfg is not None:
        spec = _spec_from_dict(stored_cfg, source=str(checkpoint))
    elif spec is None:
        raise ValueError(f"checkpoint {checkpoint} carries no config; pass config= (YAML, preset or dict)")
    if state is None and random_init_seed is None:
        raise ValueError("a checkpoint is required (or random_init_seed= for random weights)")
    vae_model, vae_weights = _load_vae(spec, vae)  # before the (slow) denoiser build: fail fast

    if state is None:
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(int(random_init_seed))  # type: ignore[arg-type]
            net, cls = build_net(spec)
    else:
        net, cls = build_net(spec)
    if state is not None:
        weights = select_weights(state, spec.prefix, set(net.state_dict()))
        load_weights_strict(net, weights)
    else:
        weights = net.state_dict()
    hashed = dict(weights)
    if vae_weights is not None:
        hashed.update({"vae." + k: v for k, v in vae_weights.items()})
    fp = compute_fingerprint(spec.fingerprint_config(cls), hashed)
    return codecs.make_codec(spec, net, cls, fingerprint=fp, vae=vae_model, device=device, dtype=dt)


def _load_sodec(config: Any, checkpoint: Any, device: Union[str, torch.device], dtype: torch.dtype,
                vae: PathLike | None, allow_pickle: bool, random_init_seed: int | None) -> Any:
    """A ``SodecCodec`` when the arguments name SODEC (a named model such as "sodec-tiny", a config
    with ``"model": "sodec"``, or a ``.safetensors`` of ``save_sodec``); None otherwise."""
    if config is None and checkpoint is None:
        return None
    sodec = _sodec
    named = isinstance(config, str) and config in sodec.NAMED_MODELS
    if not (named or sodec.is_sodec_config(config) or (config is None and sodec.is_sodec_checkpoint(checkpoint))):
        return None
    if vae is not None:
        raise ValueError("SODEC models carry their VAE decoder in the checkpoint; vae= is for latent CoD")
    if named:
        if checkpoint is not None or random_init_seed is not None or dtype != torch.float32:
            raise ValueError(f"{config!r} is a named model with fixed float32 weights: pass no checkpoint, "
                             "random_init_seed or dtype")
        return sodec.load_named(config, device)
    return sodec.load_sodec(config, checkpoint, device=device, dtype=dtype, allow_pickle=allow_pickle,
                            random_init_seed=random_init_seed)


def _load_vae(spec: ModelSpec, vae: PathLike | None) -> tuple[Any, dict[str, torch.Tensor] | None]:
    if not spec.latent:
        if vae is not None:
            raise ValueError("vae= is only for latent models; this config is a pixel model")
        return None, None
    if vae is None:
        raise ValueError(
            "latent CoD needs the SD-VAE (stabilityai/sd-vae-ft-ema): pass vae= with its diffusers "
            "folder (config.json + diffusion_pytorch_model.safetensors)")
    try:
        from .models.vae import load_diffusers_vae  # local: import time (latent CoD only)
    except ImportError as exc:
        raise ValueError(f"the SD-VAE model is not available in this build: {exc}") from None
    try:
        model = load_diffusers_vae(str(vae))
    except FileNotFoundError as exc:
        raise ValueError(f"cannot load the SD-VAE from {vae}: {exc}") from None
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}


def save_model(codec: Any, path: PathLike) -> None:
    """Save ``codec.net``'s weights and config to a ``.safetensors`` that ``load_model`` reads
    alone. The weights are saved in the dtype they have now (a model loaded in bf16 from fp32
    weights is saved in bf16, and gets another fingerprint)."""
    from safetensors.torch import save_file  # local: import time (saving only)

    p = Path(path)
    if p.suffix != ".safetensors":
        raise ValueError("save_model writes .safetensors files")
    spec: ModelSpec = codec.spec
    cfg = {"class_path": spec.class_path, "init_args": spec.init_args, "latent": spec.latent,
           "prefix": spec.prefix}
    sd = {k: v.detach().to("cpu").clone().contiguous() for k, v in codec.net.state_dict().items()}
    save_file(sd, str(p), metadata={METADATA_KEY: canonical_json(cfg).decode("ascii")})
