"""Compatibility names: SODEC's fixed-point entropy parameters now live in :mod:`cod_fast.int_params`.

The spec and its torch reference are in :mod:`cod_fast.int_params.reference`, the C++ and Triton
backends in :mod:`cod_fast.int_params.backends`, the dispatch by backend name in
:mod:`cod_fast.int_params.api`. Every name this module used to define is re-exported here.
"""
from __future__ import annotations

from ...int_params.api import (
    BACKENDS,
    backend_conv,
    backend_scale_index,
    context_parameters,
    entropy_head,
    entropy_parameters,
    head_parameters,
)
from ...int_params.backends import entropy_parameters_cpp
from ...int_params.backends import triton_device as _triton_device
from ...int_params.reference import (
    ACT_MAX,
    INT32_MAX,
    INT32_MIN,
    MAX_ABS_BIAS,
    MAX_ABS_SYMBOL,
    MAX_ABS_YQ,
    MAX_MULT,
    MAX_REDUCTION,
    MAX_SHIFT,
    IntegerConv,
    IntegerEntropyParams,
    _checkerboard_zero,
    anchor_mask,
    check_z,
    checkerboard_taps,
    context_input,
    dequantize_y,
    entropy_parameters_reference,
    integer_conv_reference,
    quantize_y,
    round_shift,
    scale_index_reference,
    thresholds_from_table,
)

__all__ = [
    "ACT_MAX",
    "INT32_MAX",
    "INT32_MIN",
    "MAX_ABS_BIAS",
    "MAX_ABS_SYMBOL",
    "MAX_ABS_YQ",
    "MAX_MULT",
    "MAX_REDUCTION",
    "MAX_SHIFT",
    "_checkerboard_zero",
    "_triton_device",
    "IntegerConv",
    "IntegerEntropyParams",
    "dequantize_y",
    "BACKENDS",
    "check_z",
    "thresholds_from_table",
    "entropy_parameters",
    "entropy_parameters_cpp",
    "entropy_parameters_reference",
    "integer_conv_reference",
    "quantize_y",
    "round_shift",
    "scale_index_reference",
    "anchor_mask",
    "backend_conv",
    "backend_scale_index",
    "checkerboard_taps",
    "context_input",
    "context_parameters",
    "entropy_head",
    "head_parameters",
]
