"""Pinned streams (tests/golden): any difference is a format change and needs a version bump
(see tests/golden/README.md)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from cod_fast.bitstream import FORMAT_VERSION, read_container

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"


def _tool():
    spec = importlib.util.spec_from_file_location("make_golden", ROOT / "tools" / "make_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TOOL = _tool()
RECORDS = json.loads((GOLDEN / "golden.json").read_text())


def test_golden_format_version() -> None:
    assert RECORDS["format_version"] == FORMAT_VERSION
    assert set(RECORDS["cases"]) == set(TOOL.CASES)


@pytest.mark.parametrize("name", sorted(TOOL.CASES))
def test_golden_stream(name: str) -> None:
    rec = RECORDS["cases"][name]
    committed = (GOLDEN / f"{name}.codf").read_bytes()
    assert TOOL.sha256(committed) == rec["stream_sha256"]
    c = read_container(committed)
    assert (c.height, c.width, c.fingerprint.hex()) == (rec["height"], rec["width"], rec["fingerprint"])
    codec = TOOL.golden_codec(name)
    assert codec.fingerprint_hex == rec["fingerprint"]  # weights + fingerprint definition
    # decoding the committed bytes gives the pinned pixels
    assert TOOL.sha256(codec.decode(committed)) == rec["pixels_sha256"]
    # encoding the golden image again gives the committed bytes
    _, _, (h, w), params = TOOL.CASES[name]
    assert codec.encode(TOOL.golden_image(h, w), **params) == committed
