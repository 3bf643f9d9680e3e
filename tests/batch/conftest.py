"""Fixtures of the batch / portability tests: tiny seeded codecs loaded from checkpoint *files*
(so that they carry a reference and pickle), small test images, one torch thread."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from tiny_models import TINY_LITE, TINY_ONE_STEP, TINY_PIXEL, official_checkpoint


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    """Tiny models: one torch thread (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _from_file(config, seed: int, folder: Path):
    import cod_fast

    path = folder / "model.pt"
    torch.save(official_checkpoint(config, seed), path)
    return cod_fast.load_model(copy.deepcopy(config), path)


@pytest.fixture(scope="session")
def pixel_codec(tmp_path_factory):
    return _from_file(TINY_PIXEL, 1, tmp_path_factory.mktemp("pixel"))


@pytest.fixture(scope="session")
def one_step_codec(tmp_path_factory):
    return _from_file(TINY_ONE_STEP, 2, tmp_path_factory.mktemp("one_step"))


@pytest.fixture(scope="session")
def lite_codec(tmp_path_factory):
    return _from_file(TINY_LITE, 3, tmp_path_factory.mktemp("lite"))


@pytest.fixture(scope="session")
def sodec_codec():
    import cod_fast

    return cod_fast.load_model("sodec-tiny")


@pytest.fixture(scope="session")
def default_codec():
    import cod_fast

    return cod_fast.load_model()
