"""Suite-wide safety net: a test (or code it calls, e.g. the training CLI) that changes torch's
thread count must not change the numerics of the tests that run after it. Also the tiny seeded CoD
codecs (``tests/tiny_models.py``) shared by the API, CLI and loading tests, built once per session.

Without a CUDA device, Triton kernels run in Triton's CPU interpreter: TRITON_INTERPRET is read
when ``@triton.jit`` decorates a kernel, so it is set here, when pytest imports this file, before
any test module imports a kernel module (``tests/kernels``, the "triton" backends of
``cod_fast.int_params`` and ``optimize``).
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    n = torch.get_num_threads()
    yield
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (restored after), for modules of tiny models: intra-op
    threads on tiny tensors only add synchronisation, and on a loaded 2-core machine spinning
    OpenMP workers made tiny forwards 50x slower. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def one_torch_thread_session():
    """``one_torch_thread`` for a whole folder, from a session-scoped autouse fixture in that
    folder's conftest that requests it (tests/codecs, tests/diffc)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def pixel_codec(tmp_path_factory: pytest.TempPathFactory):
    """Tiny pixel CoD (``TINY_PIXEL``, seed 1) loaded from an official-style checkpoint file."""
    from tiny_models import TINY_PIXEL, load_seeded

    return load_seeded(TINY_PIXEL, 1, tmp_path_factory)


@pytest.fixture(scope="session")
def one_step_codec(tmp_path_factory: pytest.TempPathFactory):
    """Tiny one-step CoD (``TINY_ONE_STEP``, seed 2) loaded from an official-style checkpoint file."""
    from tiny_models import TINY_ONE_STEP, load_seeded

    return load_seeded(TINY_ONE_STEP, 2, tmp_path_factory)


@pytest.fixture(scope="session")
def lite_codec(tmp_path_factory: pytest.TempPathFactory):
    """Tiny CoD-Lite (``TINY_LITE``, seed 3) loaded from an official-style checkpoint file."""
    from tiny_models import TINY_LITE, load_seeded

    return load_seeded(TINY_LITE, 3, tmp_path_factory)
