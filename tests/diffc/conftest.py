"""Fixtures of the DiffC tests (``cod_fast/diffc`` and the DiffC golden stream; the codec's own
tests are in tests/codecs): one torch thread and the tiny pixel CoD codec."""
from __future__ import annotations

import pytest
import tiny_models


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The tiny networks run fastest on one thread on the shared 2-core machines (restored after)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def cod_pixel():
    """The tiny pixel CoD codec of the DiffC golden stream (seed 11)."""
    return tiny_models.pixel_codec()
