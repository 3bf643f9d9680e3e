"""SODEC entropy-parameter tests: the Triton backend runs in the CPU interpreter without a GPU.

TRITON_INTERPRET is read when ``@triton.jit`` decorates a kernel, so it is set here, at conftest
import, before any test imports ``cod_fast.kernels.int_entropy_params``.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run on one thread: intra-op threads on tiny tensors only add synchronisation,
    and on a loaded 2-core machine spinning OpenMP workers made a 64x64 decode 50x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
