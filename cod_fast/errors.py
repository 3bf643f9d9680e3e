"""Exception types shared by every layer of cod_fast."""


class CodFastError(Exception):
    """Base class of every error cod_fast raises on purpose."""


class BitstreamError(CodFastError, ValueError):
    """A stream is truncated, corrupted, hostile or of an unsupported format/version."""


class EntropyParameterMismatchError(BitstreamError):
    """The decoder computed different entropy parameters (table indexes) than the encoder did.

    Raised before any y symbol is parsed when a stream carries the encoder's checksum of its
    parameters and the decoder's differ. The message names the model release and what differs:
    release 1 of the default model computes them with a float32 hyper synthesis, whose rounding
    depends on the torch thread count, the CPU's kernels and the BLAS; release 2 and later with integers
    only, so there the stream was altered or written by another implementation of the spec.
    Decoding on would only produce garbage.
    """


class ModelMismatchError(CodFastError, ValueError):
    """A stream was written by a different model than the one asked to decode it."""

    def __init__(self, expected: str, found: str, message: str | None = None) -> None:
        self.expected = expected
        self.found = found
        super().__init__(
            message
            or f"stream was written by model {found}, but the decoder holds model {expected}"
        )


class ExtensionUnavailableError(CodFastError, ImportError):
    """A compiled component (cod_fast._C / _C_cuda) or Triton is needed but is not available."""


class ModelFileError(CodFastError, ValueError):
    """A model config or checkpoint file is malformed, hostile or too large; the message names it."""


class AllocationError(CodFastError, MemoryError):
    """An allocation failed during decode or encode although the memory estimate allowed it
    (``cod_fast.memory``): the machine had less free memory than the budget assumed."""
