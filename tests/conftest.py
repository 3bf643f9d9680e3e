"""Suite-wide safety net: a test (or code it calls, e.g. the training CLI) that changes torch's
thread count must not change the numerics of the tests that run after it."""
import pytest
import torch


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
