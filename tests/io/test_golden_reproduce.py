"""tools/make_golden.py reproduces the committed golden files (the cheap cases): run into a
temporary folder with ``--out``, its stream bytes and golden.json records equal the committed ones
(the seeded weights and images come from tests/tiny_models.py, shared with the tests). Pixels come
from float32 maths, so the written reference PNGs are compared within ``PIXEL_TOLERANCE``, as in
tests/io/test_golden.py (on the machine that wrote them they are byte-identical)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
CHEAP = ["cod_pixel_tiny", "cod_one_step_tiny", "sodec_tiny", "sodec_tiny_checkerboard"]


def _tool():
    spec = importlib.util.spec_from_file_location("make_golden", ROOT / "tools" / "make_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_make_golden_reproduces_committed_files(tmp_path: Path, one_torch_thread: None) -> None:
    tool = _tool()
    assert set(CHEAP) <= set(tool.CASES)
    argv = ["--out", str(tmp_path)] + [a for name in CHEAP for a in ("--only", name)]
    assert tool.main(argv) == 0
    committed = json.loads((GOLDEN / "golden.json").read_text())
    written = json.loads((tmp_path / "golden.json").read_text())
    assert written["format_version"] == committed["format_version"]
    assert set(written["cases"]) == set(committed["cases"])
    for name in CHEAP:
        assert (tmp_path / f"{name}.codf").read_bytes() == (GOLDEN / f"{name}.codf").read_bytes(), name
        rec, pinned = dict(written["cases"][name]), dict(committed["cases"][name])
        rec.pop("pixels_sha256"), pinned.pop("pixels_sha256")
        assert rec == pinned, name
        tool.GOLDEN = tmp_path  # reference_pixels() reads the folder named by GOLDEN
        try:
            pixels = tool.reference_pixels(name)
        finally:
            tool.GOLDEN = GOLDEN
        reference = tool.reference_pixels(name)
        assert tool.pixels_within_tolerance(pixels, reference), (name, tool.pixel_stats(pixels, reference))

