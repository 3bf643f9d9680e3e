"""DiffC schedules and the DDPM <-> rectified-flow mapping, against the official formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest

from cod_fast.diffc import schedule as S


def _official_snr(tau: int) -> float:
    # CoD.py: snr_values = [(1 - s) / s for s in arange(1000) / 1000]; get_timestep_snr(0) = inf
    if tau == 0:
        return math.inf
    sig = np.arange(1000, dtype=np.float64)[tau - 1] / 1000
    with np.errstate(divide="ignore"):
        return float((1 - sig) / sig)


def test_presets_are_the_official_config_lists() -> None:
    pix, lat, den = S.COD_PIXEL_ENCODING, S.COD_LATENT_ENCODING, S.COD_DENOISING
    assert len(pix) == 142 and pix[:4] == (972, 949, 929, 897) and pix[-1] == 20
    assert len(lat) == 160 and lat[:142] == pix and lat[-3:] == (4, 3, 2)
    assert len(den) == 52 and den[:3] == (981, 961, 941) and den[-5:] == (41, 21, 10, 5, 0)
    for sched in (pix, lat, den[:-1]):
        S.check_schedule(sched)
    with pytest.raises(ValueError):
        S.check_schedule((900, 950))


@pytest.mark.parametrize("tau", [0, 1, 2, 20, 500, 972, 1000])
def test_snr_alpha_and_flow_time(tau: int) -> None:
    assert S.snr(tau) == _official_snr(tau)
    r = _official_snr(tau)
    a = 1.0 if math.isinf(r) else r**2 / (1 + r**2)
    assert S.alpha_bar(tau) == a
    assert S.flow_time(tau) == 1 - tau / 1000
    if not math.isinf(r):  # flow state = DDPM state * sigma / sqrt(1 - alpha_bar): same SNR
        s = S.ot_sigma(tau)
        assert (1 - s) / s == pytest.approx(math.sqrt(a) / math.sqrt(1 - a), rel=1e-6)
    with pytest.raises(ValueError):
        S.snr(1001)


@pytest.mark.parametrize("tau,prev", [(1000, 972), (500, 491), (21, 20), (3, 2), (21, 0)])
def test_step_coefficients_are_the_ddpm_posterior(tau: int, prev: int) -> None:
    c = S.step_coefficients(tau, prev)
    a_t, a_p = S.alpha_bar(tau), S.alpha_bar(prev)
    beta = 1 - a_t / a_p
    # official utils/q.py and p.py written out independently
    assert c.c_x0 == pytest.approx(math.sqrt(a_p) * beta / (1 - a_t), rel=1e-12)
    assert c.c_x == pytest.approx(math.sqrt(1 - beta) * (1 - a_p) / (1 - a_t), rel=1e-12)
    assert c.std == pytest.approx(math.sqrt((1 - a_p) / (1 - a_t) * beta), rel=1e-12)
    # marginal consistency: x_prev = c_x0 x0 + c_x x_t + std z has variance 1 - a_p around sqrt(a_p) x0
    assert c.c_x0 + c.c_x * math.sqrt(a_t) == pytest.approx(math.sqrt(a_p), rel=1e-9)
    assert c.c_x**2 * (1 - a_t) + c.std**2 == pytest.approx(1 - a_p, rel=1e-9, abs=1e-15)
    with pytest.raises(ValueError):
        S.step_coefficients(prev, tau)
