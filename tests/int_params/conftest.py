"""SODEC fixed-point entropy-parameter tests (``cod_fast/int_params``): the Triton backend runs in the CPU interpreter without a GPU.

TRITON_INTERPRET is read when ``@triton.jit`` decorates a kernel, so it is set here, at conftest
import, before any test imports ``cod_fast.kernels.int_entropy_params``.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every module here runs tiny models on one thread (tests/conftest.py explains why)."""
    yield
