"""The decoder's bucketed symbol search (bucket of the slot's top bits, one branch-free step, then
a rarely taken scan) against the plain search on adversarial CDFs.

Exhaustive: every one of the 65536 slots of every table is looked up natively
(``Tables.slot_symbols``) and compared with ``searchsorted``; then streams of symbols drawn from
those tables round-trip through the fast and the CompressAI-compatible decoders.
"""
import numpy as np
import pytest
import torch

from cod_fast import _ext
from cod_fast.entropy.tables import CdfTables

pytestmark = pytest.mark.skipif(_ext.cpu_ext() is None, reason="cod_fast._C is not built")

TOTAL = 1 << 16


def _cdf_from_freqs(freqs) -> np.ndarray:
    freqs = np.asarray(freqs, dtype=np.int64)
    assert freqs.sum() == TOTAL and (freqs >= 0).all()
    return np.concatenate([[0], np.cumsum(freqs)]).astype(np.int32)


def _adversarial_cdfs() -> list[np.ndarray]:
    rng = np.random.default_rng(1234)
    cdfs = []
    # Two symbols, all mass on one side.
    cdfs.append(_cdf_from_freqs([TOTAL - 1, 1]))
    cdfs.append(_cdf_from_freqs([1, TOTAL - 1]))
    # Escape symbol with frequency 0 (the search must never return a zero-frequency symbol).
    cdfs.append(_cdf_from_freqs([TOTAL // 2, TOTAL // 2, 0]))
    # Many frequency-1 symbols inside one bucket at the start, the end, and the middle.
    for where in ("start", "end", "middle"):
        small = [1] * 40
        big = TOTAL - 40
        if where == "start":
            f = small + [big]
        elif where == "end":
            f = [big] + small
        else:
            f = [big // 2] + small + [big - big // 2]
        cdfs.append(_cdf_from_freqs(f))
    # Runs of zero-frequency symbols (repeated CDF values) between wide ones.
    f = np.zeros(300, dtype=np.int64)
    f[::37] = 1
    f[5] += TOTAL - f.sum()
    cdfs.append(_cdf_from_freqs(f))
    # The longest table: 65536 symbols of frequency 1 (cdf_length 65537, the format's maximum).
    cdfs.append(_cdf_from_freqs(np.ones(TOTAL, dtype=np.int64)))
    # Lengths around the bucket-size steps, with random (often zero) frequencies.
    for n in (31, 32, 33, 63, 64, 65, 4095, 4097, 8191, 8193, 20000):
        w = rng.integers(0, 3, size=n) * rng.integers(1, 50, size=n)
        w[rng.integers(0, n)] += 1
        f = np.floor(w / w.sum() * TOTAL).astype(np.int64)
        f[int(np.argmax(w))] += TOTAL - f.sum()
        cdfs.append(_cdf_from_freqs(f))
    # Geometric tails (Gaussian-like tables: a few wide symbols, long tails of width 1).
    for decay in (0.5, 0.9):
        p = decay ** np.arange(200)
        f = np.maximum(np.floor(p / p.sum() * TOTAL), 1).astype(np.int64)
        f[0] += TOTAL - f.sum()
        cdfs.append(_cdf_from_freqs(f))
    return cdfs


@pytest.fixture(scope="module")
def tables():
    cdfs = _adversarial_cdfs()
    width = max(len(c) for c in cdfs)
    rows = np.zeros((len(cdfs), width), dtype=np.int32)
    for t, c in enumerate(cdfs):
        rows[t, : len(c)] = c
    lengths = np.array([len(c) for c in cdfs], dtype=np.int32)
    offsets = np.arange(len(cdfs), dtype=np.int32) - 7
    return CdfTables(rows, lengths, offsets), cdfs


def test_every_slot_matches_the_plain_search(tables):
    tab, cdfs = tables
    slots = np.arange(TOTAL)
    for t, cdf in enumerate(cdfs):
        want = np.searchsorted(cdf, slots, side="right") - 1
        got = np.asarray(tab._native.slot_symbols(t))
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, f"table {t}: slot {bad[:5]} -> {got[bad[:5]]}, want {want[bad[:5]]}"


def test_round_trip_on_adversarial_tables(tables):
    tab, cdfs = tables
    rng = np.random.default_rng(7)
    n = 20000
    idx = rng.integers(0, len(cdfs), size=n).astype(np.int32)
    sym = np.empty(n, dtype=np.int32)
    for t, cdf in enumerate(cdfs):
        sel = np.flatnonzero(idx == t)
        # Regular symbols with non-zero frequency (weighted by frequency, like real data, plus
        # uniformly chosen ones so that the rare tail symbols appear), and a few escapes.
        freqs = np.diff(cdf.astype(np.int64))[:-1]
        ok = np.flatnonzero(freqs > 0)
        if ok.size == 0:
            ok = np.array([0])
        by_freq = rng.choice(ok, size=sel.size, p=freqs[ok] / freqs[ok].sum()) if freqs[ok].sum() else ok[:1]
        uniform = rng.choice(ok, size=sel.size)
        v = np.where(rng.random(sel.size) < 0.5, by_freq, uniform)
        if np.diff(cdf.astype(np.int64))[-1] > 0:  # escape codable: a few out-of-range values
            esc = rng.random(sel.size) < 0.02
            r = rng.integers(0, 1000, size=sel.size)
            out_of_range = np.where(rng.random(sel.size) < 0.5, -1 - r, len(cdf) + r)
            v = np.where(esc, out_of_range, v)
        sym[sel] = (v + (t - 7)).astype(np.int32)
    for seg in (1, 5, 4096):
        data = tab.encode(sym, idx, threads=2, segment_symbols=seg)
        assert torch.equal(tab.decode(data, idx, threads=2), torch.from_numpy(sym))
    assert np.array_equal(tab.compat_decode(tab.compat_encode(sym, idx), idx), sym)
