"""Tests of bench/eval_kodak.py (the Kodak RD report) on small crops of the bundled demo image:
quality bisection, the non-monotone (Pareto frontier) matching, interpolation at matched bpp, the
optional anchors (AVIF, JPEG XL, HEIC; skipped where their plugin is missing), Bjontegaard
deltas, summary, report (per-image table, kept tail section) and driver (--jobs, --weights)."""
from __future__ import annotations

import importlib.util
import io
import json
import math
import shutil
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
ka = sys.modules["kodak_anchors"]  # the anchors' module, as eval_kodak imported it


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
            "cores": 2, "load_start": "0", "load_end": "0", "torch": "t", "threads": 1,
            "versions": {"pillow": "p", "jpeg": "libjpeg 1"}, "skipped": [("heic", "not installed: x")],
            "encode_s": 0.1, "decode_s": 0.2}
    md = ek.markdown_report(summary, meta, "rd.png", rows=rows)
    table = [ln for ln in md.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    assert [ln.split(" | ")[0] for ln in table] == ["| 0", "| 1", "| 2"]
    assert all(ln.count("|") == 11 for ln in table)  # 10 columns: level, bpp, model x2, 2 anchors x 3
    assert "CMD --x" in md and "ab" * 32 in md and "![RD curves](rd.png)" in md
    d = [e["anchors"]["JPEG"]["d_psnr"] for e in summary["levels"]]
    assert ("falls short of JPEG" in md) == any(v <= 0 for v in d)  # equal PSNR is not a win
    assert "Anchor `heic` skipped: not installed: x." in md
    # per-image table: one line per image and level, each anchor's PSNR at the model's bpp
    per_image = [ln for ln in md.split("## Per image")[1].splitlines() if ln.startswith("| ") and ".png" in ln]
    assert len(per_image) == 6
    first = per_image[0].strip("| ").split(" | ")
    r0 = next(r for r in rows if r.image == "crop.png" and r.level == 0.0)
    assert first == ["crop.png", "0", f"{r0.bpp:.4f}", f"{r0.psnr:.2f}", f"{r0.anchors['JPEG'].psnr:.2f}",
                     f"{r0.anchors['WebP'].psnr:.2f}"]
    # BD-rate and BD-PSNR signs are stated next to the figures
    assert "negative = the model needs fewer bits" in md and "positive = the model is better" in md


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


# ----------------------------------------------------------------------------- optional anchors

_FORMATS = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF", "jxl": "JXL", "heic": "HEIF"}


@pytest.mark.parametrize("key", ek.ANCHOR_KEYS)
def test_anchor_is_lossy_and_decodes(crop: np.ndarray, key: str) -> None:
    codec, reason = ek.make_anchor(key)
    if codec is None:
        pytest.skip(f"{key}: {reason}")
    assert reason == ""
    mid = (codec.q_min + codec.q_max) // 2
    data = {q: codec.encode(crop, q) for q in (codec.q_min, mid, codec.q_max)}
    assert len(data[codec.q_min]) < len(data[mid]) < len(data[codec.q_max])
    for q, blob in data.items():
        with Image.open(io.BytesIO(blob)) as im:  # what the report relies on: Pillow opens the bytes
            assert im.format == _FORMATS[key] and im.size == (crop.shape[1], crop.shape[0])
        rec = codec.decode(blob)
        assert rec.shape == crop.shape and rec.dtype == np.uint8
        assert not np.array_equal(rec, crop), f"{codec.name} quality {q} is lossless"
    curve = ek.AnchorCurve(codec, crop, msssim=False)
    assert 15.0 < curve.psnr(codec.q_min) < curve.psnr(codec.q_max) < 80.0
    # matched at a size between its smallest and largest files, on the frontier if not monotone
    target = (curve.size(mid) + curve.size(codec.q_max)) // 2
    pt = curve.at_bytes(target)
    assert pt.matched and pt.bpp_lo <= 8 * target / (48 * 64) < pt.bpp_hi
    assert min(pt.psnr_lo, pt.psnr_hi) <= pt.psnr <= max(pt.psnr_lo, pt.psnr_hi)
    sweep = curve.sweep()
    assert [p.q for p in sweep] == codec.grid() and sweep[0].q == codec.q_min and sweep[-1].q == codec.q_max


def test_missing_plugins_are_skipped_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ka, "_loaded_plugins", set())
    for mod in ("pillow_heif", "pillow_jxl", "pillow_avif"):
        monkeypatch.setitem(sys.modules, mod, None)  # import raises ImportError
    real_check = ka.features.check
    monkeypatch.setattr(ka.features, "check", lambda name: False if name == "avif" else real_check(name))
    found, skipped = ek.resolve_anchors(["jpeg", "avif", "jxl", "heic"])
    assert [a.name for a in found] == ["JPEG"]
    reasons = dict(skipped)
    assert list(reasons) == ["avif", "jxl", "heic"]
    assert "pip install pillow-avif-plugin" in reasons["avif"]
    assert "pip install pillow-jxl-plugin" in reasons["jxl"] and "pip install pillow-heif" in reasons["heic"]
    with pytest.raises(ValueError):
        ek.make_anchor("bpg")


def test_self_check_refuses_lossless_and_broken_formats() -> None:
    png = ek.PillowCodec("PNG", "PNG", 0, 9)  # Pillow's PNG ignores quality: lossless
    assert "lossless" in ka.self_check(png)
    assert ka.self_check(ek.PillowCodec("nope", "NO-SUCH-FORMAT", 0, 9)).startswith("self-check failed: KeyError")
    assert ka.self_check(ek.JPEG) == ""


# ----------------------------------------------------------------------------- non-monotone sizes

def test_grid_bisect_equals_bisect_on_monotone_sizes() -> None:
    sizes = {q: 100 + 7 * q + (q % 3) for q in range(0, 101)}
    grid = ek.WEBP.grid()
    for target in range(90, 820, 3):
        assert ek.grid_bisect(sizes.__getitem__, target, grid) == ek.bisect_quality(sizes.__getitem__, target, 0, 100)


def test_interpolation_search_keeps_the_bisection_bracket() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        steps = rng.integers(0, 40, size=101) * (rng.random(101) < 0.8)  # plateaus (ties) included
        sizes = (1000 + np.cumsum(steps)).tolist()
        lo_q, hi_q = sorted(rng.choice(101, size=2, replace=False).tolist())
        for target in rng.integers(sizes[lo_q], sizes[hi_q] + 1, size=5).tolist():
            if not sizes[lo_q] <= target < sizes[hi_q]:
                continue
            got = ek.interpolation_search(sizes.__getitem__, target, lo_q, hi_q)
            assert got == ek.bisect_quality(sizes.__getitem__, target, lo_q, hi_q)
    bumpy = [10 * q + (40 if q % 7 == 3 else 0) for q in range(60)]  # not monotone: still a bracket
    for target in range(0, 590, 7):
        lo, hi = ek.interpolation_search(bumpy.__getitem__, target, 0, 59)
        assert hi == lo + 1 and bumpy[lo] <= target < bumpy[hi]
    with pytest.raises(ValueError):
        ek.interpolation_search(bumpy.__getitem__, 5, 10, 20)


def test_pareto_frontier_and_bracket() -> None:
    # q 0..4: a dominated branch (larger files than q 5..6, lower PSNR), like JPEG XL below 19
    pts = [(0, 100, 20.0), (1, 120, 20.5), (2, 140, 21.0), (3, 160, 21.5), (4, 180, 22.0),
           (5, 130, 24.0), (6, 150, 24.5), (7, 200, 25.0), (8, 195, 25.2), (9, 260, 26.0)]
    front = ek.pareto_frontier(pts)
    assert [q for q, _, _ in front] == [0, 1, 5, 6, 8, 9]
    assert all(a[1] < b[1] and a[2] < b[2] for a, b in zip(front, front[1:]))
    assert ek.frontier_bracket(pts, 99) == (None, 0)
    assert ek.frontier_bracket(pts, 125) == (1, 5)
    assert ek.frontier_bracket(pts, 175) == (6, 8)  # not the dominated q 3 (160 B) or q 4
    assert ek.frontier_bracket(pts, 260) == (9, None)
    # plain bisection on the same sizes lands on a dominated file
    sizes = {q: s for q, s, _ in pts}
    lo, hi = ek.bisect_quality(sizes.__getitem__, 175, 0, 9)
    assert lo not in {q for q, _, _ in front} or hi not in {q for q, _, _ in front}


class PaddedJPEG(ek.PillowCodec):
    """A non-monotone stand-in for JPEG XL: qualities 0..9 are JPEG 5..14 padded with 600 junk bytes
    after the end of image (decoders stop at EOI): larger files than qualities 10..12, no better."""

    def encode(self, img: np.ndarray, quality: int) -> bytes:
        q = int(quality)
        return ek.JPEG.encode(img, 5 + q) + (b"\0" * 600 if q < 10 else b"")


def test_non_monotone_codec_matches_on_frontier(crop: np.ndarray) -> None:
    codec = PaddedJPEG("padded", "JPEG", 0, 60, monotone=False)
    curve = ek.AnchorCurve(codec, crop, msssim=False)
    st = curve.stats()
    assert st.encoded == 0
    sizes = [curve.size(q) for q in range(61)]
    assert any(b < a for a, b in zip(sizes, sizes[1:]))  # the stand-in is indeed not monotone
    frontier = ek.pareto_frontier([(q, curve.size(q), curve.psnr(q)) for q in range(61)])
    front = {q for q, _, _ in frontier}
    prev, matched = -math.inf, 0
    for target in range(min(sizes) - 5, max(sizes), 11):
        pt = curve.at_bytes(target)
        if not pt.matched:  # only below the smallest file or from the frontier's largest on
            assert (pt.q_lo, pt.q_hi) in {(None, frontier[0][0]), (frontier[-1][0], None)}
            assert (target < frontier[0][1]) == (pt.q_lo is None)
            continue
        matched += 1
        assert {pt.q_lo, pt.q_hi} <= front
        assert curve.size(pt.q_lo) <= target < curve.size(pt.q_hi)
        assert pt.psnr >= prev - 1e-9  # more bytes never match a lower PSNR
        prev = pt.psnr
    assert matched >= 10
    st = curve.stats()
    assert st.encoded == 61 and st.inversions >= 1 and 10 in st.inversion_qs
    # the same codec matched by bisection (monotone=True) picks a dominated file somewhere
    bis = ek.AnchorCurve(PaddedJPEG("padded", "JPEG", 0, 60), crop, msssim=False)
    picks = {q for t in range(min(sizes), max(sizes), 37) for q in bis.bracket(t) if q is not None}
    assert picks - front


def test_real_monotone_anchors_show_no_inversions(crop: np.ndarray) -> None:
    for codec in (ek.JPEG, ek.WEBP):
        curve = ek.AnchorCurve(codec, crop, msssim=False)
        for q in range(codec.q_min, codec.q_max + 1, 3):
            curve.size(q)
        assert curve.stats().inversions == 0, codec.name


# ----------------------------------------------------------------------------- report tail, driver

TAIL = ("<!-- fixed-point cost: begin (bench/default_fixed_point_cost.py) -->\n\n## Fixed point\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n<!-- fixed-point cost: end -->\n")


def test_preserved_tail(tmp_path: Path) -> None:
    assert ek.preserved_tail("# old\nno tail\n") == ""
    assert ek.preserved_tail("# old report\n\n" + TAIL) == TAIL
    md = tmp_path / "r.md"
    ek.write_markdown(md, "# new\n")
    assert md.read_text() == "# new\n"
    md.write_text("# old report\nold body\n\n" + TAIL)
    ek.write_markdown(md, "# new\n")
    ek.write_markdown(md, "# newer\n")  # rewriting again keeps one copy
    assert md.read_text() == "# newer\n\n" + TAIL


def _strip_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("encode_s", "decode_s")} for r in rows]


def test_main_jobs_weights_and_tail(tmp_path: Path, crop: np.ndarray, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "imgs"
    data.mkdir()
    Image.fromarray(crop).save(data / "a.png")
    Image.fromarray(np.array(crop[::-1, ::-1])).save(data / "b.png")
    base = ["--levels", "0,4", "--data", str(data), "--no-msssim", "--no-plot"]
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    (one / ek.MD_NAME).write_text("# old report\n\n" + TAIL)
    assert ek.main(base + ["--out-dir", str(one), "--json", str(one / "r.json")]) == 0
    log_one = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
    assert ek.main(base + ["--jobs", "2", "--out-dir", str(two), "--json", str(two / "r.json")]) == 0
    log_two = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
    r1, r2 = (json.loads((d / "r.json").read_text()) for d in (one, two))
    assert [r["image"] for r in r1["rows"]] == ["a.png", "a.png", "b.png", "b.png"]
    assert _strip_times(r2["rows"]) == _strip_times(r1["rows"])  # --jobs 2 == --jobs 1, same order
    assert r2["sweeps"] == r1["sweeps"] and r2["summary"]["bd"] == r1["summary"]["bd"]
    assert [ln.split(" (enc")[0] for ln in log_two] == [ln.split(" (enc")[0] for ln in log_one]
    assert r2["meta"]["jobs"] == 2 and r1["meta"]["jobs"] == 1
    available = [a.name for a in ek.resolve_anchors()[0]]
    assert r1["meta"]["anchors"] == available and set(r1["rows"][0]["anchors"]) == set(available)
    assert set(r1["sweeps"]["a.png"]) == set(available)
    md = (one / ek.MD_NAME).read_text()
    assert md.startswith("# Default model on Kodak") and "# old report" not in md
    assert md.endswith("\n\n" + TAIL) and md.count("fixed-point cost: begin") == 1
    assert "## Per image" in md and "| b.png | 4 |" in md

    # --weights: a copy of the installed weights gives the same figures; altered ones do not
    import cod_fast
    from cod_fast.models.default import WEIGHTS_DIR

    cand = tmp_path / "cand"
    shutil.copytree(WEIGHTS_DIR, cand)
    three = tmp_path / "three"
    args = base + ["--anchors", "jpeg", "--out-dir", str(three), "--json", str(three / "r.json")]
    try:
        assert ek.main(args + ["--weights", str(cand)]) == 0
        r3 = json.loads((three / "r.json").read_text())
        assert r3["meta"]["weights"] == str(cand.resolve())
        assert [r["bytes"] for r in r3["rows"]] == [r["bytes"] for r in r1["rows"]]
        assert r3["meta"]["fingerprint"] == r1["meta"]["fingerprint"] and r3["meta"]["sha256_ok"]
        assert "load_default_codec_from" in (three / ek.MD_NAME).read_text()
        from safetensors.torch import load_file, save_file

        state = load_file(str(cand / "default.safetensors"))
        state["g_a.base.weight"] = state["g_a.base.weight"] * 0.5
        save_file(state, str(cand / "default.safetensors"))
        assert ek.main(args + ["--weights", str(cand)]) == 0
        r4 = json.loads((three / "r.json").read_text())
        assert [r["bytes"] for r in r4["rows"]] != [r["bytes"] for r in r1["rows"]]
        assert r4["meta"]["fingerprint"] != r1["meta"]["fingerprint"] and not r4["meta"]["sha256_ok"]
        assert "hashes differently" in (three / ek.MD_NAME).read_text()
        with pytest.raises(SystemExit):
            ek.main(args + ["--weights", str(tmp_path / "missing")])
        with pytest.raises(SystemExit):
            ek.main(base + ["--anchors", "jpeg,bpg", "--out-dir", str(three)])
    finally:
        cod_fast.load_model()  # the installed codec back in the registry (the folder's replaced it)
