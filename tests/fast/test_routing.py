"""Routing by measurement (cod_fast.fast.routing): each swapped block keeps whichever forward its
timer found faster, per signature, decisions shared by identical blocks, nothing measured during
a CUDA graph capture, and the decisions reported by ``replaced``. On the CPU with a scripted timer
(and the "cpu" backend's blocks); on a GPU with the real CUDA-graph timer."""
import itertools

import pytest
import torch
from fast_helpers import close_fp32, exact_fp32, randomize
from test_optimize import PIXEL

from cod_fast import fast
from cod_fast.fast import routing
from cod_fast.models.cod import PixNerDiT

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ScriptedTimer:
    """Times the fast forward as ``fast_ms`` and the reference as ``ref_ms`` (decide() times the
    fast one first), running neither; counts its calls."""

    def __init__(self, fast_ms: float, ref_ms: float) -> None:
        self.values = itertools.cycle([fast_ms, ref_ms])
        self.calls = 0

    def __call__(self, fn) -> float:
        self.calls += 1
        return next(self.values)


def _case():
    model = randomize(PixNerDiT(**PIXEL), 0)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 48, generator=gen)
    t = torch.tensor([0.3, 0.8])
    cond = torch.randn(2, 64, 2, 3, generator=gen)
    return model, (lambda m: m(x, t, None, cond)[0])


def test_reference_wins_everywhere_gives_the_reference_bits() -> None:
    model, run = _case()
    timer = ScriptedTimer(fast_ms=2.0, ref_ms=1.0)
    routed = fast.optimize(model, "cpu", route="measure", timer=timer)
    with torch.inference_mode():
        assert torch.equal(run(routed), run(model))  # every block ran its reference forward
        report = fast.replaced(routed)
        ran = [r for r in report if r.routes]  # the condition encoder does not run when cond is given
        assert ran and all(x.endswith("-> reference") for r in ran for x in r.routes)
        assert all(not r.routes for r in report if r.path.startswith("y_embedder"))
        # identical blocks share decisions: two DiT blocks, one measurement per class and signature
        table = next(m for m in routed.modules() if isinstance(m, routing.RoutedModule))._fast_routes
        assert table.measurements == len(table.routes) < len(ran)
        assert timer.calls == 2 * table.measurements
        calls = timer.calls
        run(routed)  # decided: nothing is timed again
        assert timer.calls == calls


def test_fast_wins_gives_the_static_route() -> None:
    model, run = _case()
    static = fast.optimize(model, "cpu")
    routed = fast.optimize(model, "cpu", route="measure", timer=ScriptedTimer(fast_ms=1.0, ref_ms=3.0))
    with torch.inference_mode():
        assert torch.equal(run(routed), run(static))
    names = {r.fast for r in fast.replaced(routed)}
    assert names == {r.fast for r in fast.replaced(static)}  # reported under the fast class names
    assert any("fast 1 ms, reference 3 ms -> fast" in line for r in fast.replaced(routed) for line in r.routes)
    assert list(routed.state_dict()) == list(model.state_dict())


def test_new_signature_is_measured_again() -> None:
    model, _ = _case()
    timer = ScriptedTimer(1.0, 2.0)
    routed = fast.optimize(model, "cpu", route="measure", timer=timer)
    gen = torch.Generator().manual_seed(2)
    with torch.inference_mode():
        for h in (32, 48):
            routed(torch.randn(1, 3, h, 32, generator=gen), torch.tensor([0.5]), None,
                   torch.randn(1, 64, h // 16, 2, generator=gen))
    dit = routed.blocks[0]
    assert len(dit.fast_routes()) == 2  # one decision per token-grid size


def test_nothing_is_measured_during_a_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    model, run = _case()
    timer = ScriptedTimer(2.0, 1.0)
    routed = fast.optimize(model, "cpu", route="measure", timer=timer)
    monkeypatch.setattr(routing, "_capturing", lambda: True)
    with torch.inference_mode():
        out = run(routed)
    assert timer.calls == 0
    with torch.inference_mode():
        close_fp32(out, run(fast.optimize(model, "cpu")))  # undecided blocks run their fast forward


def test_route_argument() -> None:
    model, _ = _case()
    with pytest.raises(ValueError, match="route"):
        fast.optimize(model, "cpu", route="fastest")
    static = fast.optimize(model, "cpu")  # CPU default: static
    assert not any(isinstance(m, routing.RoutedModule) for m in static.modules())


def test_wall_timer_measures() -> None:
    assert routing.wall_timer(lambda: sum(range(20000)), reps=3) > 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_default_route_measures_in_graphs() -> None:
    model, _ = _case()
    model = model.cuda()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 48, generator=gen).cuda()
    t = torch.tensor([0.3, 0.8]).cuda()
    cond = torch.randn(2, 64, 2, 3, generator=gen).cuda()
    routed = fast.optimize(model, "auto")  # Triton on CUDA: routed by measurement
    with torch.inference_mode(), exact_fp32():
        got = routed(x, t, None, cond)[0]
        ref = model(x, t, None, cond)[0]
    close_fp32(got, ref)
    report = fast.replaced(routed)
    assert report and all(r.routes for r in report)
    for r in report:
        print(r)
