"""GraphRunner: the signature cache, buffers and eviction on CPU (fake capture), and on CUDA."""
import pytest
import torch
from fast_helpers import FakeCapture

from cod_fast.fast.graphs import GraphRunner, signature_of


def test_signature_distinguishes_shape_dtype_and_extra() -> None:
    a = torch.zeros(2, 3)
    assert signature_of([a]) == signature_of([torch.ones(2, 3)])
    assert signature_of([a]) != signature_of([torch.zeros(3, 2)])
    assert signature_of([a]) != signature_of([a.double()])
    assert signature_of([a], extra=25) != signature_of([a], extra=4)
    with pytest.raises(TypeError):
        signature_of([1.0])


def test_replay_uses_static_buffers_and_matches_eager() -> None:
    fake = FakeCapture()
    runner = GraphRunner(lambda x, y: (x * 2 + y, x - y), capture=fake, warmup=2)
    x, y = torch.randn(4, 5), torch.randn(4, 5)
    out1 = runner(x, y)
    assert fake.captures == 1 and fake.warmups == 2
    torch.testing.assert_close(out1[0], x * 2 + y, rtol=0, atol=0)
    x2, y2 = torch.randn(4, 5), torch.randn(4, 5)
    static_ptr = runner._graphs[runner.signatures[0]].static_inputs[0].data_ptr()
    out2 = runner(x2, y2)
    assert fake.captures == 1, "same signature must replay, not recapture"
    assert runner._graphs[runner.signatures[0]].static_inputs[0].data_ptr() == static_ptr
    torch.testing.assert_close(out2[1], x2 - y2, rtol=0, atol=0)
    # outputs are copies by default: a later replay does not change what the caller holds
    torch.testing.assert_close(out1[0], x * 2 + y, rtol=0, atol=0)


def test_static_outputs_without_copy_are_overwritten() -> None:
    runner = GraphRunner(lambda x: x + 1, capture=FakeCapture(), copy_outputs=False)
    a = runner(torch.zeros(3))
    runner(torch.ones(3))
    torch.testing.assert_close(a, torch.full((3,), 2.0))


def test_lru_eviction_and_key_extra() -> None:
    fake = FakeCapture()
    runner = GraphRunner(lambda x: x.sum(0), capture=fake, max_graphs=2)
    runner(torch.ones(1, 2))
    runner(torch.ones(2, 2))
    runner(torch.ones(1, 2))  # refreshes the first signature
    runner(torch.ones(3, 2))  # evicts (2, 2)
    shapes = [sig[0][0] for sig in runner.signatures]
    assert shapes == [(1, 2), (3, 2)]
    runner(torch.ones(3, 2), key_extra="steps=4")
    assert fake.captures == 4
    runner.clear()
    assert runner.signatures == []


def test_eager_when_disabled_or_on_cpu_without_capture_hook() -> None:
    calls = []

    def fn(x):
        calls.append(1)
        return x * 3

    assert not GraphRunner(fn).uses_graphs([torch.ones(2)])  # "auto" on CPU tensors
    torch.testing.assert_close(GraphRunner(fn, enabled=False)(torch.ones(2)), torch.full((2,), 3.0))
    with pytest.raises(RuntimeError):
        GraphRunner(fn, enabled=True)(torch.ones(2))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        GraphRunner(lambda x: x, max_graphs=0)
    with pytest.raises(ValueError):
        GraphRunner(lambda x: x, warmup=0)
    with pytest.raises(TypeError):
        GraphRunner(lambda x: 3, capture=FakeCapture())(torch.ones(1))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_graph_matches_eager() -> None:
    lin = torch.nn.Linear(16, 16).cuda()
    runner = GraphRunner(lambda x: torch.relu(lin(x)), enabled=True)
    with torch.inference_mode():
        for _ in range(3):
            x = torch.randn(8, 16, device="cuda")
            torch.testing.assert_close(runner(x), torch.relu(lin(x)))
    assert runner.captures == 1
