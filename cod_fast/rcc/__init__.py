"""Reverse-channel coding (DiffC channel simulation): shared randomness, chunking, selection.

- :mod:`.chunking`: the integer chunk plan of a step (KL budget in 1/16 bit).
- :mod:`.reference`: plain-torch executable specification (Philox4x32-10, normals, selection).
- :mod:`.api`: ``encode`` / ``decode`` of one step on the reference, C++ or CUDA backend.
- :mod:`.index_coding`: entropy coding of the chunk indices (truncated Zipf buckets + raw bits).
"""
from .api import BACKENDS, decode, encode, make_plan
from .chunking import KL_UNITS_PER_BIT, ChunkPlan, plan_chunks, quantize_kl

__all__ = [
    "BACKENDS",
    "KL_UNITS_PER_BIT",
    "ChunkPlan",
    "decode",
    "encode",
    "make_plan",
    "plan_chunks",
    "quantize_kl",
]
