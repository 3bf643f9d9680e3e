"""CUDA graphs around the multi-step sampling loop (25-step adam2/euler with CFG), checked on CPU
through a fake capture backend: the captured loop computes what the eager samplers compute, has no
host sync inside, and graphs are keyed by shapes, dtype, autocast, sampler, steps and guidance.

What "the same" means here: the captured loop issues the eager sampler's operations in the eager
order, so on a CPU whose BLAS returns the same bits for the same call it is bit-identical (seen on the
2-core AMD EPYC development machines, AVX2 and AVX-512). On the 16-core Intel host of the H200 the
float32 PixNerDiT loop differed from eager in the last bits although the operations are the same
(tools/gpu_diag_bitwise.py probes why), so the float loops are compared within float32 rounding
(``assert_same_loop``); decoded uint8 pixels are still compared exactly."""
import copy

import pytest
import torch
from fast_helpers import FakeCapture  # noqa: E402
from tiny_models import LATENT_NET_ARGS as TINY_LATENT  # noqa: E402
from tiny_models import PIXEL_NET_ARGS as TINY_PIXEL  # noqa: E402
from tiny_models import TINY_PIXEL as IO_TINY_PIXEL  # noqa: E402
from tiny_models import (
    build_seeded,  # noqa: E402
    official_checkpoint,  # noqa: E402
)

from cod_fast.diffusion import create_sampler  # noqa: E402
from cod_fast.diffusion.sampling import CapturableSampling, SamplingGraphs  # noqa: E402
from cod_fast.fast.graphs import GraphRunner, HostSyncError, host_sync_guard  # noqa: E402
from cod_fast.loading import load_model  # noqa: E402
from cod_fast.models.cod import DDT, PixNerDiT  # noqa: E402

MODELS = {
    # PixNerDiT: pixel space, 3 x 32 x 32, patch 16 -> 2 x 2 tokens; DDT: latent 4 x 8 x 8, patch 2.
    "pixnerdit": (PixNerDiT, TINY_PIXEL, (1, 3, 32, 32), 2),
    "ddt": (DDT, TINY_LATENT, (1, 4, 8, 8), 4),
}


@pytest.fixture(scope="module", params=list(MODELS))
def model_case(request):
    cls, args, shape, grid = MODELS[request.param]
    net = build_seeded(cls, args, seed=7)
    gen = torch.Generator().manual_seed(3)
    codec_cond = torch.randn(2, args["hidden_size"], grid, grid, generator=gen)
    return net, shape, codec_cond


def assert_same_loop(got: torch.Tensor, eager: torch.Tensor) -> None:
    """The same float32 loop: equal up to float32 rounding of the BLAS (see the module docstring).
    A different operation order, step, scale or time would move the result by far more."""
    torch.testing.assert_close(got, eager, rtol=0, atol=1e-5 * max(1.0, float(eager.abs().max())))


def _noise(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: see tests/conftest.py


@pytest.mark.parametrize("sampler, steps, cfg", [("adam2", 25, 3.0), ("euler", 25, 3.0), ("adam2", 4, 1.0),
                                                 ("euler", 3, 1.0), ("adam2", 5, 1.25)])
def test_graph_loop_bit_identical_to_eager(model_case, sampler: str, steps: int, cfg: float) -> None:
    net, shape, codec_cond = model_case
    fake = FakeCapture(guard=True)
    graphs = SamplingGraphs(capture=fake)
    with torch.inference_mode():
        for seed in (0, 1):  # first call captures, second replays from the static buffers
            noise = _noise(shape, seed)
            eager = create_sampler(sampler, steps, cfg)(net, noise, codec_cond=codec_cond)
            graphed = graphs(net, noise, codec_cond, sampler, steps, cfg)
            assert_same_loop(graphed, eager)
    assert fake.captures == 1 and graphs.runner.captures == 1
    entry = graphs.runner._graphs[graphs.runner.signatures[0]]
    assert entry.replays == 2


def test_plan_scales_follow_the_cfg_window() -> None:
    plan = CapturableSampling(create_sampler("adam2", 25, 3.0), 1, "cpu", torch.float32)
    assert plan.scales == (1.0,) * 3 + (3.0,) * 22  # t = 0, 0.04, 0.08 outside (0.1, 1.0)
    euler = CapturableSampling(create_sampler("euler", 25, 3.0), 1, "cpu", torch.float32)
    assert euler.scales == plan.scales
    assert euler.times is not None and torch.equal(euler.times, euler.sampler.timesteps)
    assert CapturableSampling(create_sampler("euler", 25, 1.0), 1, "cpu", torch.float32).scales == (1.0,) * 25
    assert plan.key != euler.key


def test_eager_sampler_syncs_but_capturable_loop_does_not(model_case) -> None:
    net, shape, codec_cond = model_case
    noise = _noise(shape, 0)
    with torch.inference_mode():
        for name in ("adam2", "euler"):
            sampler = create_sampler(name, 3, 3.0)
            with pytest.raises(HostSyncError), host_sync_guard():
                sampler(net, noise, codec_cond=codec_cond)  # reads t on the host / copies timesteps
            plan = CapturableSampling(sampler, 1, "cpu", torch.float32)
            with host_sync_guard():
                out = plan(net, noise, codec_cond)
            assert_same_loop(out, sampler(net, noise, codec_cond=codec_cond))


def test_host_sync_guard_catches_reads_and_moves() -> None:
    x = torch.ones(3)
    for bad in (lambda: x.sum().item(), lambda: bool(x[0] > 0), lambda: x.tolist(), lambda: x.cpu(),
                lambda: x.to("cpu"), lambda: torch.tensor([1.0]), lambda: float(x[1])):
        with pytest.raises(HostSyncError), host_sync_guard():
            bad()
    with host_sync_guard():
        y = (x * 2).to(torch.float64)  # dtype-only .to is fine
        x.clone().copy_(y)  # so is a same-device copy
    assert y.dtype == torch.float64
    # Copies between devices at the aten level, however they are spelled (the meta device stands
    # in for a GPU): copy_ of a host tensor into a device tensor, a slice assignment from the host.
    dev = torch.empty(3, device="meta")
    for bad in (lambda: dev.copy_(x), lambda: dev.__setitem__(slice(0, 3), x)):
        with pytest.raises(HostSyncError, match="between devices"), host_sync_guard():
            bad()


def test_keys_shapes_steps_cfg_sampler_and_lru() -> None:
    calls = []

    def net(x, t, y, cond):
        calls.append(x.shape)
        return x * 0.5 + t.view(-1, 1, 1, 1), cond

    fake = FakeCapture(guard=True)
    graphs = SamplingGraphs(capture=fake, max_graphs=3)
    cond = torch.zeros(2, 1, 1, 1)
    small, big = torch.ones(1, 1, 2, 2), torch.ones(1, 1, 4, 2)
    graphs(net, small, cond, "adam2", 5, 3.0)
    graphs(net, small * 2, cond, "adam2", 5, 3.0)  # same key: replay
    assert fake.captures == 1
    graphs(net, big, cond, "adam2", 5, 3.0)  # new shape
    assert fake.captures == 2
    graphs(net, small, cond, "adam2", 6, 3.0)  # new step count
    graphs(net, small, cond, "adam2", 5, 1.25)  # new guidance
    graphs(net, small, cond, "euler", 5, 3.0)  # new sampler
    assert fake.captures == 5
    assert len(graphs.runner.signatures) == 3  # LRU: the oldest keys were evicted
    graphs(net, small, cond, "adam2", 5, 3.0)  # evicted earlier: captured again
    assert fake.captures == 6
    graphs(net, small.double(), cond.double(), "adam2", 5, 3.0)  # new dtype
    assert fake.captures == 7
    # each captured graph keeps its own loop function (and through it the plan and the net) alive
    assert all(graphs.runner._graphs[s].fn is not None for s in graphs.runner.signatures)


def test_autocast_state_is_keyed_and_capture_skips_the_cast_cache() -> None:
    seen = []

    def fn(x):
        seen.append((torch.is_autocast_enabled("cpu"), torch.is_autocast_cache_enabled()))
        return x + 1

    fake = FakeCapture(guard=True)
    runner = GraphRunner(fn, capture=fake, warmup=1)
    x = torch.ones(2)
    runner(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        runner(x)
        assert torch.is_autocast_cache_enabled()  # restored after the capture
    assert fake.captures == 2 and len(runner.signatures) == 2
    # warm-up, capture and the first replay of each call; under autocast the cast cache is off
    assert seen == [(False, True)] * 3 + [(True, False)] * 3


def test_capturable_sampling_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError):
        CapturableSampling(object(), 1, "cpu", torch.float32)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CapturableSampling(create_sampler("euler", 2, 1.0), 0, "cpu", torch.float32)
    plan = CapturableSampling(create_sampler("euler", 2, 1.0), 1, "cpu", torch.float32)
    with pytest.raises(ValueError, match="does not match"):
        plan(lambda *a: None, torch.zeros(2, 1, 2, 2), torch.zeros(4, 1, 1, 1))
    with pytest.raises(ValueError, match="does not match"):
        plan(lambda *a: None, torch.zeros(1, 1, 2, 2, dtype=torch.float64), torch.zeros(2, 1, 1, 1))
    with pytest.raises(ValueError):
        SamplingGraphs(capture=FakeCapture(guard=True))(lambda *a: None, torch.zeros(1, 1, 2, 2),
                                                        torch.zeros(2, 1, 1, 1), "heun", 3, 1.0)


@pytest.fixture(scope="module")
def pixel_codec():
    return load_model({"model": {"denoiser": copy.deepcopy(IO_TINY_PIXEL)}},
                      official_checkpoint(IO_TINY_PIXEL, seed=11))


def test_codec_decode_graph_equals_eager(pixel_codec) -> None:
    codec = pixel_codec
    gen = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 40, 64), generator=gen, dtype=torch.uint8),
              torch.randint(0, 256, (3, 40, 64), generator=gen, dtype=torch.uint8),
              torch.randint(0, 256, (3, 64, 32), generator=gen, dtype=torch.uint8)]
    streams = [codec.encode(im, steps=4, seed=s) for s, im in enumerate(images)]
    streams.append(codec.encode(images[0], steps=3, sampler="euler", cfg=1.25))
    codec.cuda_graphs, codec._graphs = False, None
    eager = [codec.decode(s) for s in streams]
    assert codec._graphs is None
    hook = FakeCapture(guard=True)
    codec.cuda_graphs, codec._graph_capture = True, hook
    try:
        graphed = [codec.decode(s) for s in streams]
        again = codec.decode(streams[1])
        codec_graph_signatures = codec._graphs.runner.signatures
    finally:
        codec.cuda_graphs, codec._graph_capture, codec._graphs = "auto", None, None
    for a, b in zip(eager, graphed):
        assert torch.equal(a, b)
    assert torch.equal(again, eager[1])
    # 40x64 (two streams, one graph), 64x32, 40x64 with other sampler settings; the codec keeps
    # 2 graphs, so the last decode (40x64, first settings) was evicted and is captured again
    assert hook.captures == 4
    assert len(codec_graph_signatures) == 2


def test_codec_graphs_need_cuda_without_a_capture_hook(pixel_codec) -> None:
    codec = pixel_codec
    stream = codec.encode(torch.zeros(3, 32, 32, dtype=torch.uint8), steps=2)
    assert not codec._uses_graphs()  # "auto" on CPU: eager
    codec.cuda_graphs = True
    try:
        with pytest.raises(RuntimeError, match="CUDA"):
            codec.decode(stream)
    finally:
        codec.cuda_graphs, codec._graphs = "auto", None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("sampler", ["adam2", "euler"])
def test_cuda_graph_loop_matches_eager(sampler: str) -> None:
    # A real capture fails on any host sync or pageable host-to-device copy inside the loop.
    net = build_seeded(PixNerDiT, TINY_PIXEL, seed=7).cuda()
    codec_cond = torch.randn(2, TINY_PIXEL["hidden_size"], 2, 2, device="cuda")
    graphs = SamplingGraphs()
    with torch.inference_mode():
        for seed in (0, 1):
            noise = _noise((1, 3, 32, 32), seed).cuda()
            graphed = graphs(net, noise, codec_cond, sampler, 25, 3.0)
            eager = create_sampler(sampler, 25, 3.0)(net, noise, codec_cond=codec_cond)
            torch.testing.assert_close(graphed, eager, rtol=1e-5, atol=1e-5)
    assert graphs.runner.captures == 1


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_cuda_codec_decode_uses_graphs() -> None:
    codec = load_model({"model": {"denoiser": copy.deepcopy(IO_TINY_PIXEL)}},
                       official_checkpoint(IO_TINY_PIXEL, seed=11), device="cuda")
    stream = codec.encode(torch.zeros(3, 32, 32, dtype=torch.uint8), steps=5)
    codec.cuda_graphs = False
    eager = codec.decode(stream).int()
    codec.cuda_graphs = "auto"
    graphed = codec.decode(stream).int()
    assert codec._graphs is not None and codec._graphs.runner.captures == 1
    assert (graphed - eager).abs().max() <= 1  # uint8 pixels; kernels may differ in the last ulp


def test_graph_runner_needs_an_input() -> None:
    with pytest.raises(TypeError, match="at least one tensor"):
        GraphRunner(lambda: torch.ones(1), capture=FakeCapture(guard=True))()
