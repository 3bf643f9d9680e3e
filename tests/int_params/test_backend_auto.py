""""auto" for SODEC's integer entropy parameters (and the default model's, which use the same
kernels): C++ when the extension has it, else the reference; the codecs' default; same bytes."""
from __future__ import annotations

import pytest
import torch

import cod_fast
from cod_fast.int_params import api


def test_auto_resolves_by_what_can_run(monkeypatch) -> None:
    assert api.resolve_backend("reference") == "reference"
    assert api.resolve_backend("auto", torch.zeros(1)) == ("cpp" if api._can_run("cpp") else "reference")
    monkeypatch.setitem(api._available, "cpp", False)
    assert api.resolve_backend("auto", torch.zeros(1)) == "reference"
    with pytest.raises(ValueError, match="backend must be one of"):
        api.resolve_backend("gpu")


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("name", ["sodec-tiny-checkerboard", "default"])
def test_codecs_default_to_auto_and_write_the_reference_bytes(name: str) -> None:
    codec = cod_fast.load_model(name) if name != "default" else cod_fast.load_model()
    img = (torch.arange(3 * 64 * 96) % 251).reshape(3, 64, 96).to(torch.uint8)
    if name == "default":
        assert codec.entropy_backend == "auto"
        data = codec.encode(img)
        ref = cod_fast.load_model()
        ref_codec = type(ref)(ref.net, ref.fingerprint, integer=ref.integer, entropy_backend="reference")
        assert ref_codec.encode(img) == data
        assert torch.equal(ref_codec.decode_symbols(data)[0], codec.decode_symbols(data)[0])
    else:
        data = codec.encode(img)
        assert codec.encode(img, entropy_backend="reference") == data
        assert torch.equal(codec.decode(data, entropy_backend="reference"), codec.decode(data))
