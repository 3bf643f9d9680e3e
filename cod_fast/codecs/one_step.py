"""One-step codecs: one-step CoD (PixNerDiT distilled) and one-step CoD-Lite (DConv distilled).

Decode = indices -> condition map -> one network call at t = 0 from ``noise_level * N(0, I)``
(``net.inference``). The noise is drawn from a generator seeded with the stream's seed, so a
stream decodes the same on every call (the published models use noise_level 0: no noise at all).

On CUDA the whole decode after index unpacking (codebook lookup, condition decoder, the one network
call) is replayed from a CUDA graph, one per padded image size (``cod_fast.fast.graphs``); the noise
is drawn outside the graph exactly as the eager path draws it, so both paths give the same image.
Set ``codec.cuda_graphs = False`` to decode eagerly.
"""
from __future__ import annotations

import torch

from ..bitstream import CodecId, DecodeParams
from ..fast.graphs import GraphRunner
from ..models.cod.packing import unpack_bits
from .base import VQCodec


class OneStepCoDCodec(VQCodec):
    """Codec over a one-step network (``OneStepCoD`` / ``FinetunedOneStepCoD`` of CoD or CoD-Lite).

    ``codec_id`` is COD_ONE_STEP for CoD's PixNerDiT and COD_LITE_ONE_STEP for CoD-Lite's DConv.
    Recorded decode settings: sampler ``none``, steps 1, cfg 1, seed, the net's noise level.
    """

    memory_multi_step = False  # one denoiser pass, no guidance (cod_fast.memory)
    label = "a one-step model"
    encode_settings = decode_settings = frozenset({"seed"})

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        lite = type(self.net).__module__.startswith("cod_fast.models.cod_lite")
        self.codec_id = CodecId.COD_LITE_ONE_STEP if lite else CodecId.COD_ONE_STEP
        self.official_layout = "cod_lite" if lite else "cod"  # CoD-Lite's writer puts W first
        # CoD-Lite's inference draws its noise on the network's device, CoD's on the CPU.
        self._noise_device = self.device if lite else torch.device("cpu")
        #: "auto": CUDA graphs on CUDA devices; False: always eager; True: require them.
        self.cuda_graphs: bool | str = "auto"
        self._graph_capture = None  # capture hook (tests inject a CPU fake); None = CUDA graphs
        self._graphs: GraphRunner | None = None

    def default_params(self) -> DecodeParams:
        return DecodeParams(sampler="none", steps=1, cfg=1.0, seed=0,
                            noise_level=float(self.net.noise_level))

    def check_params(self, params: DecodeParams) -> str | None:
        if params.sampler != "none" or params.steps != 1:
            return f"one-step codecs take sampler 'none' and 1 step, got {params.sampler!r}, {params.steps}"
        return None

    def _noise(self, hp: int, wp: int, params: DecodeParams) -> torch.Tensor:
        """The starting noise ``noise_level * N(0, I)`` (1, 3, hp, wp), drawn as ``net.inference`` draws it."""
        shape = (1, 3, hp, wp)
        gen = torch.Generator(device=self._noise_device).manual_seed(params.seed)
        if self.codec_id == CodecId.COD_LITE_ONE_STEP:  # CoD-Lite: zeros, or drawn on the device
            if params.noise_level == 0:
                return torch.zeros(shape, device=self.device, dtype=self.dtype)
            return torch.randn(shape, generator=gen, device=self.device, dtype=self.dtype) * params.noise_level
        # CoD: drawn in float32 on the CPU, moved, then scaled
        return torch.randn(shape, generator=gen, dtype=torch.float32).to(self.device, self.dtype) * params.noise_level

    def _uses_graphs(self) -> bool:
        return self.cuda_graphs is True or (self.cuda_graphs == "auto" and self.device.type == "cuda")

    def _graph_body(self, indices: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """indices (h*w,) int64 and noise (1, 3, hp, wp) on the device -> image (1, 3, hp, wp).

        Pure tensor code, no host synchronisation: safe to capture in a CUDA graph.
        """
        codec = self.net.y_embedder
        hp, wp = noise.shape[-2:]
        h, w = codec.calculate_indices_size(hp, wp)
        cond = codec.decoder(codec.bottleneck.get_codebook_entry(indices, (h, w)))
        return self.net.inference(torch.zeros_like(noise), cond=cond, noise=noise)

    def _synthesise(self, packed: bytes, hp: int, wp: int, params: DecodeParams) -> torch.Tensor:
        net = self.net
        if self._uses_graphs():
            if self._graphs is None:
                self._graphs = GraphRunner(self._graph_body, max_graphs=4, enabled=True,
                                           capture=self._graph_capture)
            h, w = net.y_embedder.calculate_indices_size(hp, wp)
            indices = unpack_bits(packed, h * w, self.codebook_bits).to(self.device)
            return self._graphs(indices, self._noise(hp, wp, params))
        cond = net.decompress(packed, hp, wp, self.device)
        y = torch.zeros((1, 3, hp, wp), device=self.device, dtype=cond.dtype)
        gen = torch.Generator(device=self._noise_device).manual_seed(params.seed)
        saved = net.noise_level
        net.noise_level = params.noise_level  # the encoder's choice; restored below
        try:
            return net.inference(y, cond=cond, generator=gen)
        finally:
            net.noise_level = saved
