"""SODEC model tests (``cod_fast/models/sodec``): one torch thread per module (the Triton interpreter: tests/conftest.py)."""
import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Every module here runs tiny models on one thread (tests/conftest.py explains why)."""
    yield
