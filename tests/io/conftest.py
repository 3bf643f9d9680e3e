"""Fixtures of the I/O tests: tiny seeded codecs (built once per session) and a test image."""
from __future__ import annotations

import pytest
import torch
from tiny_models import TINY_LITE, TINY_ONE_STEP, TINY_PIXEL, load_seeded


@pytest.fixture(scope="session")
def pixel_codec(tmp_path_factory: pytest.TempPathFactory):
    return load_seeded(TINY_PIXEL, 1, tmp_path_factory)


@pytest.fixture(scope="session")
def one_step_codec(tmp_path_factory: pytest.TempPathFactory):
    return load_seeded(TINY_ONE_STEP, 2, tmp_path_factory)


@pytest.fixture(scope="session")
def lite_codec(tmp_path_factory: pytest.TempPathFactory):
    return load_seeded(TINY_LITE, 3, tmp_path_factory)


@pytest.fixture(scope="session")
def small_image() -> torch.Tensor:
    """A smooth 40x52 test image (uint8 [3, 40, 52]): not a multiple of the stride 32."""
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(52.0), indexing="ij")
    img = torch.stack([xx / 51 * 255, yy / 39 * 255, (xx + yy) / 90 * 255])
    return img.round().to(torch.uint8)
