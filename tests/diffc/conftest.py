"""Fixtures of the DiffC tests (``cod_fast/diffc`` and the DiffC golden stream; the codec's own
tests are in tests/codecs): one torch thread and the tiny pixel CoD codec."""
from __future__ import annotations

import pytest
import tiny_models


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread(one_torch_thread_session):
    """This folder's tiny networks run on one torch thread (tests/conftest.py)."""
    yield


@pytest.fixture(scope="session")
def cod_pixel():
    """The tiny pixel CoD codec of the DiffC golden stream (seed 11)."""
    return tiny_models.pixel_codec()
