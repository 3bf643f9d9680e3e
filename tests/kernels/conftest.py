"""Kernel tests run in Triton's CPU interpreter when no CUDA device exists (TRITON_INTERPRET is
set by tests/conftest.py before any kernel module is imported)."""

import pytest


@pytest.fixture
def device() -> str:
    """Where kernel inputs live: CUDA on a GPU machine, the CPU under the interpreter."""
    from tolerances import DEVICE

    return DEVICE
