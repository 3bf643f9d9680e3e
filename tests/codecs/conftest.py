"""Fixtures of the codec tests (``cod_fast/codecs``): one torch thread and the tiny DiffC codec
with one encoded stream per session (the Triton interpreter: tests/conftest.py)."""
from __future__ import annotations

import pytest
import tiny_models


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread(one_torch_thread_session):
    """This folder's tiny networks run on one torch thread (tests/conftest.py)."""
    yield


@pytest.fixture(scope="session")
def cod_pixel():
    """The tiny pixel CoD codec under the DiffC tests (seed 11)."""
    return tiny_models.pixel_codec()


@pytest.fixture(scope="session")
def diffc_pixel(cod_pixel):
    from cod_fast.codecs.diffc import DiffCCodec

    return DiffCCodec(cod_pixel, backend="cpp")


@pytest.fixture(scope="session")
def encoded(diffc_pixel):
    """(bytes, trace, encoder reconstruction) of the 32x32 test image, 4 encoded steps, seed 7."""
    return diffc_pixel.encode_trace(tiny_models.make_image(), steps=4, seed=7)
