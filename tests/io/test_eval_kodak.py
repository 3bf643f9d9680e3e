"""Tests of bench/eval_kodak.py (the Kodak RD report) on small crops of the bundled demo image:
quality bisection, interpolation at matched bpp, Bjontegaard deltas, summary, report and driver."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_eval_kodak", REPO / "bench" / "eval_kodak.py")
ek = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = ek  # dataclasses look their module up by name
_spec.loader.exec_module(ek)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: see tests/conftest.py


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """A 48x64 uint8 HWC crop of the bundled demo image (textured: sizes vary with quality)."""
    with Image.open(REPO / "cod_fast" / "data" / "picosdeeuropa_512x384.png") as im:
        arr = np.asarray(im.convert("RGB"))
    return np.array(arr[200:248, 300:364])


class QualityAsLevel:
    """A stand-in codec: "level" L is Pillow JPEG at quality 10 + 20 * L (container-free)."""

    levels = 3

    def encode(self, img: np.ndarray, quality: float) -> bytes:
        return ek.JPEG.encode(img, int(10 + 20 * quality))

    def decode(self, data: bytes):
        import torch

        return torch.from_numpy(np.array(ek.JPEG.decode(data))).permute(2, 0, 1).contiguous()


def test_bisect_brackets_target_on_synthetic_sizes() -> None:
    sizes = {q: 100 + 7 * q + (q % 3) for q in range(0, 101)}  # monotone, uneven steps
    for target in (100, 101, 150, 333, 499, 700, 801):
        lo, hi = ek.bisect_quality(sizes.__getitem__, target, 0, 100)
        if target < sizes[0]:
            assert (lo, hi) == (None, 0)
        elif target >= sizes[100]:
            assert (lo, hi) == (100, None)
        else:
            assert hi == lo + 1 and sizes[lo] <= target < sizes[hi]
    assert ek.bisect_quality(sizes.__getitem__, 99, 0, 100) == (None, 0)
    assert ek.bisect_quality(sizes.__getitem__, 10**6, 0, 100) == (100, None)
    # a non-monotone size still yields an adjacent bracket with size(lo) <= target < size(hi)
    bumpy = {q: 10 * q + (25 if q == 5 else 0) for q in range(1, 11)}
    lo, hi = ek.bisect_quality(bumpy.__getitem__, 62, 1, 10)
    assert hi == lo + 1 and bumpy[lo] <= 62 < bumpy[hi]
    with pytest.raises(ValueError):
        ek.bisect_quality(sizes.__getitem__, 10, 5, 4)


@pytest.mark.parametrize("anchor", [ek.JPEG, ek.WEBP], ids=lambda a: a.name)
def test_bisect_real_codec_is_monotone_in_target(crop: np.ndarray, anchor) -> None:
    curve = ek.AnchorCurve(anchor, crop)
    smallest, largest = curve.size(anchor.q_min), curve.size(anchor.q_max)
    prev_lo = anchor.q_min
    for target in np.linspace(smallest, largest - 1, 9).astype(int):
        lo, hi = ek.bisect_quality(curve.size, int(target), anchor.q_min, anchor.q_max)
        assert lo is not None and hi == lo + 1
        assert curve.size(lo) <= target < curve.size(hi)
        assert lo >= prev_lo  # a larger budget never picks a lower quality
        prev_lo = lo
    assert curve.at_bytes(smallest - 1).matched is False
    assert curve.at_bytes(largest).matched is False


def test_interp_at() -> None:
    assert ek.interp_at(0.5, 0.0, 10.0, 1.0, 20.0) == 15.0
    assert ek.interp_at(0.0, 0.0, 10.0, 1.0, 20.0) == 10.0
    assert math.isclose(ek.interp_at(0.25, 0.2, 30.0, 0.3, 31.0), 30.5)
    with pytest.raises(ValueError):
        ek.interp_at(1.0, 2.0, 1.0, 2.0, 3.0)


def test_at_bytes_interpolates_between_brackets(crop: np.ndarray) -> None:
    curve = ek.AnchorCurve(ek.JPEG, crop)
    exact = curve.size(50)
    pt = curve.at_bytes(exact)  # a file of exactly the size of some quality: that quality's figures
    assert pt.matched and curve.size(pt.q_lo) == exact
    assert pt.psnr == pytest.approx(curve.metrics(pt.q_lo)[0], abs=1e-12)
    target = (curve.size(30) + curve.size(31)) // 2
    pt = curve.at_bytes(target)
    assert pt.matched and pt.bpp_lo <= 8 * target / (48 * 64) < pt.bpp_hi
    lo_p, hi_p = sorted((pt.psnr_lo, pt.psnr_hi))
    assert lo_p <= pt.psnr <= hi_p
    lo_m, hi_m = sorted((pt.msssim_lo, pt.msssim_hi))
    assert lo_m <= pt.msssim <= hi_m


def test_bd_metrics_known_shifts() -> None:
    rates = [0.25, 0.5, 1.0, 2.0, 4.0]
    psnr = [26.0, 28.5, 31.0, 33.0, 34.5]
    rate, dpsnr = ek.bd_metrics(rates, psnr, [0.8 * r for r in rates], psnr)
    assert rate == pytest.approx(-20.0, abs=1e-6)  # same quality at 80 % of the bits
    rate, dpsnr = ek.bd_metrics(rates, psnr, rates, [p + 1.0 for p in psnr])
    assert dpsnr == pytest.approx(1.0, abs=1e-9)
    assert rate < 0
    assert ek.bd_metrics(rates[:1], psnr[:1], rates[:1], psnr[:1]) == (None, None)
    assert ek.bd_metrics([1, 2], [20, 21], [1, 2], [30, 31])[0] is None  # PSNR ranges disjoint


def test_evaluate_summary_and_report(crop: np.ndarray) -> None:
    codec = QualityAsLevel()
    rows = ek.evaluate_image(codec, "crop.png", crop, [0.0, 1.0, 2.0], log=lambda s: None)
    rows += ek.evaluate_image(codec, "flip.png", np.array(crop[::-1]), [0.0, 1.0, 2.0], log=lambda s: None)
    assert [r.level for r in rows] == [0.0, 1.0, 2.0] * 2
    for r in rows:
        assert r.bytes == len(codec.encode(crop if r.image == "crop.png" else crop[::-1], r.level))
        assert r.bpp == 8 * r.bytes / (48 * 64)
        jp = r.anchors["JPEG"]
        # the "model" is JPEG itself: its file has an exact JPEG size, so the match lands on a
        # quality with that very size (the largest one, where neighbouring qualities tie)
        q = int(10 + 20 * r.level)
        assert jp.matched and jp.q_lo >= q and jp.bpp_lo == r.bpp and jp.bpp_hi > r.bpp
        assert jp.psnr == jp.psnr_lo and jp.msssim == jp.msssim_lo
        if jp.q_lo == q:
            assert jp.psnr == pytest.approx(r.psnr, abs=1e-9)
    summary = ek.summarize(rows, [0.0, 1.0, 2.0])
    assert [e["n"] for e in summary["levels"]] == [2, 2, 2]
    for e in summary["levels"]:
        sel = [r for r in rows if r.level == e["level"]]
        assert e["psnr"] == pytest.approx(np.mean([r.psnr for r in sel]))
        assert e["anchors"]["JPEG"]["matched"] == 2
        assert e["anchors"]["JPEG"]["d_psnr"] == pytest.approx(
            np.mean([r.psnr - r.anchors["JPEG"].psnr for r in sel]))
    assert summary["bd"]["JPEG"]["images"] == 2
    assert abs(summary["bd"]["JPEG"]["bd_psnr_db"]) < 0.5  # the same codec, up to quality ties
    meta = {"date": "2026-01-01 00:00", "n_images": 2, "overhead_bytes": "n/a", "command": "CMD --x",
            "wall_s": 6.0, "sha256": "ab" * 32, "sha256_ok": True, "step": 1, "parameters": 2,
            "fingerprint": "cd" * 16, "data": "d", "images": ["crop.png", "flip.png"], "cpu": "cpu",
            "cores": 2, "load_start": "0", "load_end": "0", "torch": "t", "threads": 1, "pillow": "p",
            "libjpeg": " 1", "libwebp": "1", "encode_s": 0.1, "decode_s": 0.2}
    md = ek.markdown_report(summary, meta, "rd.png")
    table = [ln for ln in md.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    assert [ln.split(" | ")[0] for ln in table] == ["| 0", "| 1", "| 2"]
    assert all(ln.count("|") == 11 for ln in table)  # 10 columns
    assert "CMD --x" in md and "ab" * 32 in md and "![RD curves](rd.png)" in md
    d = [e["anchors"]["JPEG"]["d_psnr"] for e in summary["levels"]]
    assert ("falls short of JPEG" in md) == any(v <= 0 for v in d)  # equal PSNR is not a win


def test_main_writes_report(tmp_path: Path, crop: np.ndarray) -> None:
    data = tmp_path / "imgs"
    data.mkdir()
    Image.fromarray(crop).save(data / "a.png")
    plot = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        plot = False
    out = tmp_path / "out"
    args = ["--levels", "0,4", "--data", str(data), "--out-dir", str(out), "--json", str(out / "r.json")]
    assert ek.main(args + ([] if plot else ["--no-plot"])) == 0
    res = json.loads((out / "r.json").read_text())
    assert [r["level"] for r in res["rows"]] == [0.0, 4.0]
    assert res["rows"][0]["bytes"] < res["rows"][1]["bytes"]
    assert res["rows"][0]["overhead_bytes"] > 0
    md = (out / ek.MD_NAME).read_text()
    assert "--levels 0,4" in md and res["meta"]["sha256"] in md
    if plot:
        with Image.open(out / ek.PNG_NAME) as im:
            assert im.size[0] > 100
    with pytest.raises(SystemExit):
        ek.main(["--levels", "9", "--data", str(data), "--out-dir", str(out), "--no-plot"])
    fast = tmp_path / "fast"
    assert ek.main(["--levels", "1", "--data", str(data), "--out-dir", str(fast), "--no-msssim",
                    "--json", str(fast / "r.json")] + ([] if plot else ["--no-plot"])) == 0
    res = json.loads((fast / "r.json").read_text())
    assert res["rows"][0]["msssim"] is None and res["rows"][0]["anchors"]["JPEG"]["msssim"] is None
    assert res["summary"]["levels"][0]["psnr"] > 0 and res["summary"]["bd"]["JPEG"]["bd_rate_pct"] is None
    assert "MS-SSIM was skipped" in (fast / ek.MD_NAME).read_text()
