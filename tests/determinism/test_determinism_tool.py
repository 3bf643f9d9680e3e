"""``tools/determinism_check.py`` runs its matrix (here: sodec-tiny on one 768x512 crop of a
synthetic picture, threads 1 and 2, two DataLoader workers) and reports agreement."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import det_codecs as D
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("determinism_check", ROOT / "tools" / "determinism_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tool_prints_an_agreeing_row(tool, tmp_path: Path, capsys) -> None:
    img = D.image(780, 520, 8)  # portrait: the tool turns it to landscape before cropping
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / "p.png")
    rc = tool.main(["--data", str(tmp_path), "--images", "p.png", "--codecs", "sodec-tiny", "--threads", "1,2"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| sodec-tiny")]
    assert rc == 0 and len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1:6] == ["p", "768x512", cells[3], "1", "="] and int(cells[3]) > 0
    assert cells[6] in ("reference/cpp =", "reference =") and cells[7] == "= (2x1 thr)"


def test_tool_refuses_missing_images(tool, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="missing images"):
        tool.main(["--data", str(tmp_path), "--images", "nothing.png"])
