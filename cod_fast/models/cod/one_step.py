"""One-step (DMD-distilled) pixel CoD, GenCodec ``CoD/downstream/finetuned_one_step_cod.py``.

The network is a :class:`PixNerDiT` evaluated once at ``t = 0`` on ``noise * noise_level``
(``noise_level = 0`` makes decoding deterministic). Because ``t`` is always 0, the adaLN
modulation of every DiT block is a constant: :meth:`OneStepCoD.eval` computes it once and the
blocks reuse it (the official ``CacheFlattenDiTBlock``).

Difference from the official module, on purpose: the official ``eval()`` swaps each block for a
wrapper and deletes its ``adaLN_modulation``, so the state-dict keys change after ``eval()``.
Here the cache is a non-persistent buffer inside each block: the keys stay those of the
checkpoint before and after ``eval()``, ``train()`` drops the cache, and loading new weights
rebuilds it.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .layers import FlattenDiTBlock
from .pixel_dit import PixNerDiT

PREDICTIONS = ("x", "v")


class OneStepCoD(PixNerDiT):
    """One-step CoD decoder.

    Args:
        noise_level: scale of the Gaussian input noise (0: deterministic decode).
        pred: ``'x'`` (the network predicts the image) or ``'v'`` (it predicts ``x - noise``).
        **kwargs: the :class:`PixNerDiT` init_args.
    """

    def __init__(self, noise_level: float = 0.0, pred: str = "x", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if pred not in PREDICTIONS:
            raise ValueError(f"pred must be one of {PREDICTIONS}, got {pred!r}")
        self.noise_level = noise_level
        self.pred = pred
        self._cached = False

    def _dit_blocks(self) -> list[FlattenDiTBlock]:
        return [blk for blk in self.blocks if isinstance(blk, FlattenDiTBlock)]

    @torch.no_grad()
    def cache_t0(self) -> None:
        """Compute ``adaLN_modulation(silu(t_emb(0)))`` for every DiT block and keep it.

        Shapes ``(1, 1, 6*hidden)``, in the parameters' device and dtype (as officially).
        """
        param = next(self.parameters())
        t = torch.zeros((1,), device=param.device, dtype=param.dtype)
        c = F.silu(self.t_embedder(t).view(1, -1, self.hidden_size))
        for blk in self._dit_blocks():
            blk.cached_modulation = blk.adaLN_modulation(c)
        self._cached = True

    def clear_cache(self) -> None:
        """Drop the t=0 modulations; the blocks compute them from ``c`` again."""
        for blk in self._dit_blocks():
            blk.cached_modulation = None
        self._cached = False

    def train(self, mode: bool = True) -> "OneStepCoD":
        """``train()`` drops the t=0 cache; ``eval()`` (``train(False)``) builds it."""
        if mode:
            self.clear_cache()
        elif not self._cached:
            self.cache_t0()
        return super().train(mode)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        # Called on the root module before its children load: drop the cache here and rebuild
        # it in load_state_dict() once every weight is in place.
        self.clear_cache()
        super()._load_from_state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load weights (official keys, no prefix); rebuilds the t=0 cache when in eval mode."""
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if not self.training:
            self.cache_t0()
        return result

    @torch.no_grad()
    def inference(
        self,
        y: torch.Tensor,
        cond: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One-step reconstruction.

        Args:
            y: ``(B, 3, H, W)`` images in [0, 1]; only their shape, device and dtype are used
                when ``cond`` is given (the official decompress passes zeros).
            cond: precomputed codec maps ``(B, hidden, H/16, W/16)``, or None to encode ``y``.
            generator: generator for the input noise. The official code draws
                ``torch.randn_like(y)`` from the global generator of ``y``'s device; here the
                noise is drawn on the CPU from ``generator`` (default: the global CPU generator)
                and moved, so that a seed gives the same image on every device.
            noise: the starting point ``noise_level * N(0, I)`` drawn by the caller, shaped like
                ``y`` (then ``generator`` is unused); lets CUDA graphs take the noise as an input.

        Returns:
            ``(B, 3, H, W)`` in about [-1, 1].
        """
        b = y.shape[0]
        t = torch.zeros((b,), device=y.device, dtype=y.dtype)
        if noise is None:
            noise = torch.randn(y.shape, generator=generator, dtype=torch.float32).to(y.device, y.dtype)
            noise = noise * self.noise_level
        out, _ = self.forward(noise, t, y, cond=cond)
        if self.pred == "v":
            out = noise + out
        return out
