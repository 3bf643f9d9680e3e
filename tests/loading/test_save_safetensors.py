"""``cod_fast.checkpoints.save_safetensors``: the same tensors and metadata give the same bytes."""
from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from cod_fast.checkpoints import save_safetensors


def test_bytes_do_not_depend_on_metadata_order(tmp_path: Path) -> None:
    """safetensors orders the metadata by a per-map random hash: of the 6 insertion orders of three
    keys, written twice each, every file must have the same bytes, metadata keys sorted in the
    header, and load back to the same tensors and metadata."""
    state = {"w": torch.randn(3, 5).half(), "b": torch.arange(7, dtype=torch.int32), "s": torch.zeros(())}
    items = [("model", "cod_fast.default"), ("format", "pt"), ("release", "3")]
    digests = set()
    for k, order in enumerate(itertools.permutations(items)):
        for rep in range(2):
            path = tmp_path / f"{k}_{rep}.safetensors"
            save_safetensors(state, path, metadata=dict(order))
            digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
    raw = path.read_bytes()
    assert raw[8:].startswith(b'{"__metadata__":{"format":"pt","model":"cod_fast.default","release":"3"}')
    back = load_file(str(path))
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == dict(items)
