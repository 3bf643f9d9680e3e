"""CoD-Lite's one-step codec model ``OneStepCoD(DConv)`` and the one-step decode.

Mirror of ``CoD_Lite/finetuned_one_step_codec/models/models.py`` (``OneStepCoD``) and of the
config class ``finetuned_one_step_codec.main_stage1.FinetunedOneStepCoD`` (same network; its
``noise_level`` defaults to 0, i.e. deterministic decoding). Only inference is mirrored.

t=0 caching: officially ``eval()`` replaces each ``DiCoBlock`` by a ``CacheDiCoBlock`` holding the
adaLN outputs for t=0 and deletes ``adaLN_modulation`` (which changes the state-dict keys and
only works for batch 1). Here ``eval()`` stores the same values in each block's non-persistent
``cached_modulation`` buffer: keys stay those of the checkpoints, batches of any size work, and
``train()`` or ``load_state_dict`` drop the cache (it is rebuilt on the next ``eval()``).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from .pixel_cnn import DConv, DiCoBlock


def _official_state(path: str) -> dict[str, Any]:
    """The flat weight dict of an official checkpoint (read with ``weights_only``; nested under
    ``module`` or ``state_dict`` in some releases)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("module", "state_dict"):
        if isinstance(state, dict) and key in state:
            return state[key]
    return state


class OneStepCoD(DConv):
    """One-step CoD-Lite: ``inference(y, cond)`` = one DConv forward at t=0 from ``noise_level`` noise.

    ``net_ckpt_path`` (official argument) loads a checkpoint's ``ema_denoiser.`` weights.
    """

    def __init__(
        self,
        noise_level: float = 1.0,
        fix_encoder: bool = True,
        net_ckpt_path: str | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.noise_level = noise_level
        self.fix_encoder = fix_encoder
        if net_ckpt_path is not None:
            self.load_pretrained(net_ckpt_path)

    # ---- t=0 adaLN cache -------------------------------------------------------------------

    @torch.no_grad()
    def cache_t0(self) -> None:
        """Compute every DiCoBlock's adaLN output for t=0 ((1, 6*hidden)) and cache it."""
        p = next(self.parameters())
        c = self.t_embedder(torch.zeros((1,), device=p.device, dtype=p.dtype))
        for block in self.blocks:
            block.cached_modulation = block.adaLN_modulation(c)

    def clear_cache(self) -> None:
        """Drop the cached t=0 modulation (the blocks compute it from ``c`` again)."""
        for module in self.modules():
            if isinstance(module, DiCoBlock):
                module.cached_modulation = None

    def train(self, mode: bool = True) -> "OneStepCoD":
        super().train(mode)
        if mode:
            self.clear_cache()
        else:
            self.cache_t0()
        return self

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        self.clear_cache()
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if not self.training:
            self.cache_t0()
        return result

    def load_pretrained(self, net_ckpt_path: str) -> None:
        """Load the ``ema_denoiser.``-prefixed weights of an official checkpoint (strict)."""
        state = _official_state(net_ckpt_path)
        prefix = "ema_denoiser."
        self.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    # ---- inference -------------------------------------------------------------------------

    def inference(
        self,
        y: torch.Tensor,
        cond: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One step: y (B, 3, H, W) sets the shape (and, without ``cond``, is the [0, 1] image to
        code); cond (B, hidden, H/16, W/16). Returns the image (B, 3, H, W), nominally [-1, 1].

        x_0 = noise_level * N(0, I) (drawn with ``generator`` on y's device; nothing is drawn when
        ``noise_level == 0``, where the official ``randn_like * 0`` gives zeros), t = 0. A caller
        may pass ``noise`` (x_0 itself, shaped like y) instead, e.g. to feed a CUDA graph.
        """
        b = y.shape[0]
        t = torch.zeros((b,), device=y.device, dtype=y.dtype)
        if noise is not None:
            pass
        elif self.noise_level == 0:
            noise = torch.zeros_like(y)
        else:
            noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype) * self.noise_level
        out = self.forward(noise, t, y, cond=cond, return_pred=True)[0]
        if self.pred == "v":
            out = noise + out
        return out


class FinetunedOneStepCoD(OneStepCoD):
    """The class the official one-step YAML configs name; ``noise_level`` defaults to 0 here.

    ``pretrain_prefix`` is the prefix of the weights in ``net_ckpt_path`` (non-strict load, as
    officially: keys with a missing name or another shape are skipped).
    """

    def __init__(
        self,
        noise_level: float = 0.0,
        fix_encoder: bool = False,
        pretrain_prefix: str = "net.",
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self.pretrain_prefix = pretrain_prefix
        super().__init__(*args, noise_level=noise_level, fix_encoder=fix_encoder, **kwargs)

    def load_pretrained(self, net_ckpt_path: str) -> None:
        state = _official_state(net_ckpt_path)
        own = self.state_dict()
        n = len(self.pretrain_prefix)
        matched = {
            k[n:]: v
            for k, v in state.items()
            if k.startswith(self.pretrain_prefix) and k[n:] in own and own[k[n:]].shape == v.shape
        }
        own.update(matched)
        self.load_state_dict(own, strict=False)
