"""Pinned streams (tests/golden): any difference in the stream bytes or the decoded integers is a
format change and needs a version bump (see tests/golden/README.md). Decoded pixels come from
float32 maths whose last bits depend on the CPU kind and thread count: they are compared with the
committed reference pixels within ``make_golden.PIXEL_TOLERANCE``, at one and at two threads."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

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
def test_golden_stream(name: str, one_torch_thread: None) -> None:
    rec = RECORDS["cases"][name]
    committed = (GOLDEN / f"{name}.codf").read_bytes()
    assert TOOL.sha256(committed) == rec["stream_sha256"]
    c = read_container(committed)
    assert (c.height, c.width, c.fingerprint.hex()) == (rec["height"], rec["width"], rec["fingerprint"])
    codec = TOOL.golden_codec(name)
    assert codec.fingerprint_hex == rec["fingerprint"]  # weights + fingerprint definition
    # the entropy-decoded integers are pinned exactly (None: the stream bytes are the integers)
    ints = TOOL.decoded_integers(codec, committed)
    assert (None if ints is None else TOOL.sha256(ints)) == rec["integers_sha256"]
    # the committed reference pixels are the recorded ones, and decoding comes within tolerance of
    # them at one thread and at two
    reference = TOOL.reference_pixels(name)
    assert TOOL.sha256(reference) == rec["pixels_sha256"]
    assert tuple(reference.shape) == (3, rec["height"], rec["width"])
    for threads in (1, 2):
        torch.set_num_threads(threads)
        pixels = codec.decode(committed)
        assert TOOL.pixels_within_tolerance(pixels, reference), TOOL.pixel_stats(pixels, reference)
    torch.set_num_threads(1)
    # encoding the golden image again gives the committed bytes
    _, _, (h, w), params = TOOL.CASES[name]
    assert codec.encode(TOOL.golden_image(h, w), **params) == committed


def test_pixel_tolerance_separates_rounding_from_errors() -> None:
    ref = TOOL.reference_pixels("default_model_r4")
    one_off = ref.clone()
    one_off.view(-1)[:5] ^= 1  # five samples one level off: float rounding
    assert TOOL.pixels_within_tolerance(one_off, ref)
    far = ref.clone()
    far.view(-1)[0] = (int(far.view(-1)[0]) + 128) % 256  # one sample far off
    assert not TOOL.pixels_within_tolerance(far, ref)
    many = ref.clone()
    many.view(-1)[: many.numel() // 20] ^= 1  # 5 % of the samples off
    assert not TOOL.pixels_within_tolerance(many, ref)
    with pytest.raises(ValueError):
        TOOL.pixel_stats(ref[:, :-1], ref)


@pytest.mark.parametrize("name", sorted(RECORDS["retired"]))
def test_retired_default_streams_refused_naming_their_release(name: str) -> None:
    """Streams of default-model weights no longer shipped (releases 1-3, the step-450 weights)
    keep their bytes and are refused, never misdecoded: ModelMismatchError naming the stream's
    fingerprint, its release and where it still decodes, from the shipped codec and from
    ``cod_fast.decode``."""
    import cod_fast
    from cod_fast.codecs.default import load_default_codec
    from cod_fast.errors import ModelMismatchError

    rec = RECORDS["retired"][name]
    data = (GOLDEN / f"{name}.codf").read_bytes()
    assert TOOL.sha256(data) == rec["stream_sha256"]
    assert read_container(data).fingerprint.hex() == rec["fingerprint"]
    codec = load_default_codec()
    for decode in (codec.decode, cod_fast.decode):
        with pytest.raises(ModelMismatchError) as info:
            decode(data)
        msg = str(info.value)
        version = {"default_model_r3": "cod_fast 0.2.0"}.get(name, "cod_fast 0.1.0")  # where it decodes
        assert rec["fingerprint"] in msg and rec["release"].split(" (")[0] in msg and version in msg, msg
