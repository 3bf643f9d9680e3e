"""SODEC's fixed-point entropy parameters, shaped like :mod:`cod_fast.rcc`.

- :mod:`.reference`: the executable specification (plain torch int64): ``IntegerConv``,
  ``IntegerEntropyParams``, the reference functions, symbol (de)quantization, checkerboard masks.
- :mod:`.backends`: the same operations on ``cod_fast._C.sodec`` (C++, "cpp") and on the Triton
  kernels of ``cod_fast.kernels.int_entropy_params`` ("triton").
- :mod:`.api`: ``entropy_parameters``, ``entropy_head``, ``head_parameters`` and
  ``context_parameters`` on a backend chosen by name (``BACKENDS``).

The layers point down: ``api`` -> ``backends`` -> (extension, kernels) -> ``reference``. This
package's ``__init__`` imports nothing, so that the kernels can import ``reference`` without
pulling in the dispatch above them. ``cod_fast.models.sodec.integer_params`` re-exports every
name for older imports.
"""
