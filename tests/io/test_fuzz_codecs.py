"""The codec-level fuzzer (tools/fuzz_container.py --codecs) for a bounded time: mutated streams
of every codec decode or raise a cod_fast error, nothing else."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_codec_fuzzer_bounded(capsys) -> None:
    path = Path(__file__).resolve().parents[2] / "tools" / "fuzz_container.py"
    spec = importlib.util.spec_from_file_location("fuzz_container", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    n, bad = mod.fuzz_codecs(seconds=7.0, seed=1, max_memory="256M")
    out = capsys.readouterr().out
    assert bad == 0, out
    for name in ("default", "sodec-tiny", "cod-pixel", "cod-one-step", "cod-lite", "diffc"):
        assert f"{name}: " in out
    assert n > 7 and "decoded" in out  # some mutants still decode (payload edits with valid CRCs)
