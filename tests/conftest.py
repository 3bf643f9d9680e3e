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
