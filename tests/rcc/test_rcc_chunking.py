"""Chunk plans follow exactly from the integer KL budget; every chunk has at most 16 bits."""
import math

import pytest

from cod_fast.rcc import KL_UNITS_PER_BIT, make_plan, plan_chunks, quantize_kl


@pytest.mark.parametrize("kl_q", [1, 15, 16, 17, 14 * 16, 14 * 16 + 1, 100 * 16 + 3, 2000 * 16, 7777])
def test_plan_follows_diffc_rule(kl_q):
    dim = 100_000
    plan = plan_chunks(dim, kl_q)
    n = math.ceil(kl_q / 16)
    chunks = math.ceil(n / 14)
    assert plan.n_chunks == chunks
    assert sum(plan.bits) == n + 2 * chunks
    assert max(plan.bits) <= 16 and max(plan.bits) - min(plan.bits) <= 1
    assert list(plan.bits) == sorted(plan.bits, reverse=True)
    total = sum(plan.bits)
    assert list(plan.dims[:-1]) == [dim * b // total for b in plan.bits[:-1]]
    assert sum(plan.dims) == dim and min(plan.dims) >= 1
    assert plan.offsets[0] == 0 and plan.offsets[-1] == dim - plan.dims[-1]


def test_known_plans():
    assert plan_chunks(200, 20 * 16).bits == (12, 12)
    assert plan_chunks(200, 20 * 16).dims == (100, 100)
    assert plan_chunks(10, 16).bits == (3,)
    p = plan_chunks(1000, 29 * 16)  # 29 bits -> 3 chunks, 35 bits -> 12, 12, 11
    assert p.bits == (12, 12, 11) and p.dims == (342, 342, 316)


def test_zero_budget_is_one_prior_sample():
    p = make_plan(64, 0.0)
    assert p.bits == (0,) and p.dims == (64,)


def test_quantized_budget_round_trips_through_float():
    for q in list(range(0, 5000)) + [2**24 - 1, 2**24]:
        assert quantize_kl(q / KL_UNITS_PER_BIT) == q
    assert quantize_kl(3) == 48
    assert quantize_kl(3.01) == 49  # rounded up to the next 1/16 bit


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), 2.0**21])
def test_bad_budgets_raise(bad):
    with pytest.raises(ValueError):
        quantize_kl(bad)


def test_bad_budget_types_raise():
    with pytest.raises(TypeError):
        quantize_kl("3")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        plan_chunks(10, 1.5)  # type: ignore[arg-type]


def test_too_many_chunks_for_dim_raises():
    with pytest.raises(ValueError, match="dimensions"):
        plan_chunks(3, 100 * 16)
    with pytest.raises(ValueError):
        plan_chunks(0, 16)
