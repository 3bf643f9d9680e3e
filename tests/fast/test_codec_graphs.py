"""The one-step codecs' CUDA-graph decode path, exercised on CPU through a recording capture hook
under ``host_sync_guard`` (no host sync, no host-to-device copy inside the captured body): same
pixels as the eager path, one capture per padded size, noise drawn outside the graph."""
import copy

import pytest
import torch
from fast_helpers import FakeCapture  # noqa: E402
from tiny_models import TINY_LITE, TINY_ONE_STEP, official_checkpoint  # noqa: E402

from cod_fast.loading import load_model  # noqa: E402


@pytest.mark.parametrize("config", [TINY_ONE_STEP, TINY_LITE], ids=["cod_one_step", "cod_lite"])
@pytest.mark.parametrize("noise_level", [0.0, 0.5])
def test_graph_decode_equals_eager(config: dict, noise_level: float) -> None:
    codec = load_model(copy.deepcopy(config), official_checkpoint(config, seed=11))
    gen = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 40, 64), generator=gen, dtype=torch.uint8),
              torch.randint(0, 256, (3, 40, 64), generator=gen, dtype=torch.uint8),
              torch.randint(0, 256, (3, 64, 32), generator=gen, dtype=torch.uint8)]
    streams = [codec.encode(im, noise_level=noise_level, seed=5) for im in images]
    codec.cuda_graphs = False
    eager = [codec.decode(s) for s in streams]
    hook = FakeCapture(guard=True)
    codec.cuda_graphs, codec._graph_capture = True, hook
    graphed = [codec.decode(s) for s in streams]
    for a, b in zip(eager, graphed):
        assert torch.equal(a, b)
    assert hook.captures == 2  # 40x64 and 64x32 pad to two sizes; the second 40x64 replays
    assert codec._graphs is not None and len(codec._graphs.signatures) == 2


def test_graphs_need_cuda_without_a_capture_hook() -> None:
    codec = load_model(copy.deepcopy(TINY_ONE_STEP), official_checkpoint(TINY_ONE_STEP, seed=11))
    stream = codec.encode(torch.zeros(3, 32, 32, dtype=torch.uint8))
    assert not codec._uses_graphs()  # "auto" on CPU: eager
    codec.cuda_graphs = True
    with pytest.raises(RuntimeError, match="CUDA"):
        codec.decode(stream)


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.double() - b.double()) ** 2).mean())


@pytest.mark.parametrize("config", [TINY_ONE_STEP, TINY_LITE], ids=["cod_one_step", "cod_lite"])
def test_bf16_weights_decode(config: dict) -> None:
    """bf16 weights loaded as such (``load_model(dtype=torch.bfloat16)``, no autocast): the eager and
    graph paths agree, and the optimized route's error against the fp32 decode is within 10 % of
    the reference's own bf16 error (CoD-Lite's timestep MLP used to reject bf16 weights)."""
    import cod_fast

    ckpt = official_checkpoint(config, seed=11)
    fp32 = load_model(copy.deepcopy(config), ckpt)
    bf16 = load_model(copy.deepcopy(config), ckpt, dtype=torch.bfloat16)
    assert next(bf16.net.parameters()).dtype == torch.bfloat16
    img = torch.randint(0, 256, (3, 40, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    stream = fp32.encode(img)
    exact = fp32.decode(stream)
    bf16.cuda_graphs = False
    eager = bf16.decode(stream)
    bf16.cuda_graphs, bf16._graph_capture = True, FakeCapture(guard=True)
    assert torch.equal(bf16.decode(stream), eager)
    fast = cod_fast.optimize(bf16, "cpu")
    fast.cuda_graphs, fast._graphs = False, None
    err_ref, err_fast = _mse(eager, exact), _mse(fast.decode(stream), exact)
    assert 0 < err_ref and err_fast <= 1.1 * err_ref
    assert 10 * torch.log10(torch.tensor(255.0**2 / err_ref)) >= 40  # bf16 vs fp32 on these weights
