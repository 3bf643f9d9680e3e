"""Kernel tests run in Triton's CPU interpreter when no CUDA device exists.

TRITON_INTERPRET is read when ``@triton.jit`` decorates a kernel, so it is set here, at conftest
import, before any test module of this folder imports a kernel module.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture
def device() -> str:
    """Where kernel inputs live: CUDA on a GPU machine, the CPU under the interpreter."""
    from tolerances import DEVICE

    return DEVICE
