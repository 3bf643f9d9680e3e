"""Fixtures of the codec tests (``cod_fast/codecs``): one torch thread, the Triton backend in the
CPU interpreter without a GPU, and the tiny DiffC codec with one encoded stream per session.

TRITON_INTERPRET is read when ``@triton.jit`` decorates a kernel, so it is set here, at conftest
import, before any test of this folder imports ``cod_fast.kernels.int_entropy_params`` (SODEC's
"triton" backend).
"""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import tiny_models  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The tiny networks run fastest on one thread on the shared 2-core machines (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
