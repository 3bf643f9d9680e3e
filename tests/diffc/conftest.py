"""Fixtures of the DiffC tests: one tiny pixel CoD codec and one encoded stream per session."""
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
    return tiny_models.pixel_codec()


@pytest.fixture(scope="session")
def diffc_pixel(cod_pixel):
    from cod_fast.codecs.diffc import DiffCCodec

    return DiffCCodec(cod_pixel, backend="cpp")


@pytest.fixture(scope="session")
def encoded(diffc_pixel):
    """(bytes, trace, encoder reconstruction) of the 32x32 test image, 4 encoded steps, seed 7."""
    return diffc_pixel.encode_trace(tiny_models.make_image(), steps=4, seed=7)
