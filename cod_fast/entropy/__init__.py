"""Entropy coding for cod_fast: rANS over integer CDF tables.

* ``CdfTables``: integer tables (``quantized_cdf``, ``cdf_length``, ``offset``) with
  ``encode``/``decode`` (cod_fast's segmented, lane-interleaved, multi-threaded format) and
  ``compat_encode``/``compat_decode`` (CompressAI's byte format); built ``from_counts`` (integer
  only) or ``from_pmfs`` (CompressAI's float path).
* ``GaussianConditionalTables``: the tables of CompressAI's ``GaussianConditional``.
* ``compat_encode``/``compat_decode``: CompressAI's ``RansEncoder``/``RansDecoder`` as functions.
* ``selfcheck()``: a quick round trip for ``cod-fast selfcheck``.

Bad streams raise cod_fast.errors.BitstreamError; bad arguments ValueError/TypeError.
"""
from ..errors import BitstreamError
from .coder import compat_decode, compat_encode, selfcheck, stream_info
from .gaussian import GaussianConditionalTables, default_scale_table
from .tables import CdfTables, counts_to_quantized_cdf, pmf_to_quantized_cdf

__all__ = [
    "BitstreamError",
    "CdfTables",
    "GaussianConditionalTables",
    "compat_decode",
    "compat_encode",
    "counts_to_quantized_cdf",
    "default_scale_table",
    "pmf_to_quantized_cdf",
    "selfcheck",
    "stream_info",
]
