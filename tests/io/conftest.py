"""Fixtures of the I/O tests: a test image (the tiny seeded codecs are in tests/conftest.py)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def small_image() -> torch.Tensor:
    """A smooth 40x52 test image (uint8 [3, 40, 52]): not a multiple of the stride 32."""
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(52.0), indexing="ij")
    img = torch.stack([xx / 51 * 255, yy / 39 * 255, (xx + yy) / 90 * 255])
    return img.round().to(torch.uint8)
