"""SODEC's entropy parameters at the codec layer: what decides how y's bits are parsed.

``entropy_parameters(model, z_hat, backend)`` returns the integer (table index, mean code) of every
y symbol from decoded z symbols, computed by the fixed-point spec of
``cod_fast.models.sodec.integer_params`` on the chosen backend ("reference": torch int64 on the
CPU; "triton": the kernels of ``cod_fast.kernels.int_entropy_params``). Every backend returns the
same integers, so an encoder on one device and a decoder on another parse the same stream.
"""
from __future__ import annotations

import torch

from ..models.sodec.hyperprior import SodecHyperprior
from ..models.sodec.integer_params import BACKENDS, IntegerEntropyParams
from ..models.sodec.integer_params import entropy_parameters as _entropy_parameters

__all__ = ["BACKENDS", "entropy_parameters"]


def entropy_parameters(
    model: SodecHyperprior | IntegerEntropyParams, z_hat: torch.Tensor, backend: str = "reference"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indexes, means): int32 CPU tensors [N, M, 4h, 4w] for integer z symbols [N, cz, h, w].

    ``model``: a ``SodecHyperprior`` after ``update()`` or its exported ``IntegerEntropyParams``.
    ``indexes`` select rows of the model's y Gaussian tables; ``means`` are on the grid
    2**-mean_frac_bits. Raises TypeError/ValueError for bad arguments, RuntimeError when the model
    has no integer state yet.
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
